"""A readable summary of a features.h5 (``featkit info``)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from featkit.features.integrity import damage
from featkit.features.schema import STATUS_FAILED, STATUS_OK
from featkit.features.store import FeatureFile


def describe(path: str | Path, check: bool = False) -> tuple[str, list[str]]:
    """The summary text and the damage found (:func:`~featkit.features.integrity.damage`).

    The plain summary checks the shapes, the per-image tables and every GAP
    feature; ``check`` also decompresses and checks every stored conv map.
    """
    with FeatureFile(path) as f:
        problems = damage(f, maps=check)
        if problems:
            return _damaged(f, problems, check), problems
        a = f.attrs
        n = len(f)
        lines = [f"{f.path}  (featkit {a.get('featkit_version')}, schema {a.get('schema_version')})"]
        done = int(a.get("rows_done", 0))
        state = "complete" if f.complete else f"INCOMPLETE: {done} of {n} rows (re-run the extract command to resume)"
        lines.append(f"  state        {state}")
        lines.append(f"  dataset      {a.get('dataset')} at {a.get('dataset_root')}")
        if a.get("split_protocol") not in (None, "official", "none"):
            lines.append(f"  protocol     {a['split_protocol']}")
        lines.append(f"  backbone     {a.get('backbone')}  layer {a.get('feature_layer')}  pooling {a.get('pooling')}")
        sha = str(a.get("weights_sha256") or "")
        lines.append(f"  weights      {a.get('weights')}" + (f"  sha256 {sha[:12]}..." if sha else ""))
        lines.append(
            f"  input        {a.get('input_size')} px ({a.get('resize')}, tta {a.get('tta', 'none')}, {a.get('decode')}), "
            f"mean {_fmt(a.get('mean'))}, std {_fmt(a.get('std'))}, precision {a.get('precision')}"
        )
        gap = f.h5["features/gap"]
        lines.append(f"  features/gap {gap.shape[0]} x {gap.shape[1]} {gap.dtype}")
        if f.has_maps:
            maps = f.h5["features/maps"]
            stored = maps.id.get_storage_size()
            per_image = stored / max(done, 1)
            lines.append(
                f"  features/maps {' x '.join(map(str, maps.shape))} {maps.dtype}, "
                f"{stored / 2**20:.1f} MiB on disk ({per_image / 1024:.1f} KiB per image)"
            )
        else:
            lines.append("  features/maps none (extract again with maps to store them)")
        classes = f.classes
        shown = ", ".join(classes[:5]) + (", ..." if len(classes) > 5 else "")
        lines.append(f"  classes      {len(classes)}: {shown}")
        labels = f.labels
        lines.append(f"  images       {n} ({int((labels >= 0).sum())} labelled)")
        splits = f.splits
        for fold in range(splits.shape[1]):
            counts = Counter(s for s in splits[:, fold] if s)
            if counts:
                desc = ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), reverse=True))
                prefix = "split" if splits.shape[1] == 1 else f"split[{fold}]"
                lines.append(f"  {prefix:<12} {desc}")
            if fold >= 2 and splits.shape[1] > 4:
                lines.append(f"  ...          ({splits.shape[1]} folds)")
                break
        box = f.box
        with_box = int((~np.isnan(box).any(axis=1)).sum())
        total_boxes = f.h5["images/boxes"].shape[0]
        lines.append(f"  boxes        {with_box} images with a box, {total_boxes} boxes in all (original pixels)")
        lines.extend(_crop_lines(f))
        status = f.status
        lines.append(f"  status       {int((status == STATUS_OK).sum())} ok, {int((status == STATUS_FAILED).sum())} unreadable")
        for err in [e for e in f.errors if e][:5]:
            lines.append(f"    unreadable: {err}")
        head = f.head()
        if head is not None:
            lines.append(f"  head         {head.weight.shape[0]} x {head.weight.shape[1]} ({head.classes[0]}, ...)")
        if f.attributes is not None:
            lines.append(f"  attributes   {f.attributes.shape[1]} per image (multi-label)")
        checked = "every GAP feature and conv map" if check and f.has_maps else "every GAP feature"
        lines.append(f"  integrity    ok ({checked} read" + ("" if check or not f.has_maps else
                                                           "; check=True also reads the maps") + ")")
        return "\n".join(lines), []


def summary(path: str | Path, check: bool = False) -> dict[str, Any]:
    """What :func:`describe` says, as a JSON-ready document: provenance attributes, counts, damage found."""
    with FeatureFile(path) as f:
        problems = damage(f, maps=check)
        document: dict[str, Any] = {"path": str(f.path), "attrs": dict(f.attrs), "problems": problems}
        if problems:
            return document
        labels, status, box = f.labels, f.status, f.box
        head = f.head()
        document.update(
            complete=f.complete, n_images=len(f), labelled=int((labels >= 0).sum()), classes=f.classes,
            gap_shape=list(f.h5["features/gap"].shape),
            maps_shape=list(f.h5["features/maps"].shape) if f.has_maps else None,
            splits=[dict(Counter(s for s in f.splits[:, fold] if s)) for fold in range(f.splits.shape[1])],
            images_with_box=int((~np.isnan(box).any(axis=1)).sum()), boxes=int(f.h5["images/boxes"].shape[0]),
            status={"ok": int((status == STATUS_OK).sum()), "unreadable": int((status == STATUS_FAILED).sum())},
            head_shape=list(head.weight.shape) if head is not None else None,
        )
        return document


def _damaged(f: FeatureFile, problems: list[str], check: bool) -> str:
    """The header lines that still read, then every problem found."""
    a = f.attrs
    lines = [f"{f.path}  (featkit {a.get('featkit_version')}, schema {a.get('schema_version')})",
             f"  dataset      {a.get('dataset')} at {a.get('dataset_root')}",
             f"  backbone     {a.get('backbone')}  layer {a.get('feature_layer')}  pooling {a.get('pooling')}",
             f"  DAMAGED      {len(problems)} problem{'s' if len(problems) > 1 else ''} found:"]
    lines += [f"    {p}" for p in problems]
    return "\n".join(lines)


_CROP_OPTIONS = (("map_method", "method"), ("close", "close"), ("scales", "scales"), ("layer", "layer"),
                 ("enhance", "enhance"), ("threshold_chosen_on", "threshold chosen on"))
"""Box options a crops file records beyond threshold, normalization and weights (attribute suffix, label)."""


def _crop_lines(f: FeatureFile) -> list[str]:
    """How a crops file's boxes were made and what they cover (nothing for a whole-image file)."""
    a = f.attrs
    crop = f.crop_box
    if crop is None and "crop" not in a:
        return []
    method = str(a.get("crop_method") or str(a.get("crop", "")).split(":")[0])
    if method == "cam":
        sha = str(a.get("crop_svm_sha256") or "")
        trained = (f", trained on {a.get('crop_svm_split')} fold {a.get('crop_svm_fold')}"
                   if "crop_svm_fold" in a else "")
        source = (f"CAM boxes of {a.get('crop_svm', '?')}" + (f" (sha256 {sha[:12]}...{trained})" if sha else trained)
                  + f"; threshold {a.get('crop_threshold')}, normalization {a.get('crop_normalization')}, "
                  f"weights {a.get('crop_cam_weights')}"
                  + "".join(f", {name} {a.get('crop_' + key)}" for key, name in _CROP_OPTIONS if f"crop_{key}" in a))
    elif method == "gt":
        source = "ground-truth boxes (images/box)"
    else:
        source = str(a.get("crop"))
    lines = [f"  crops        {source}"]
    if crop is None:
        lines.append("  crop boxes   not stored (file written before images/crop_box existed)")
        return lines
    sizes = f.sizes.astype(np.float64)
    known = (sizes > 0).all(axis=1) & np.isfinite(crop).all(axis=1)
    area = (crop[:, 2] - crop[:, 0]).clip(min=0) * (crop[:, 3] - crop[:, 1]).clip(min=0)
    fraction = area[known] / (sizes[known, 0] * sizes[known, 1])
    mean = f"{float(fraction.mean()):.3f}" if fraction.size else "-"
    lines.append(f"  crop boxes   {len(crop)} (images/crop_box, original pixels), mean area {mean} of the image")
    return lines


def _fmt(values: object) -> str:
    if values is None:
        return "-"
    return "(" + ", ".join(f"{float(v):.3f}" for v in np.ravel(np.asarray(values))) + ")"
