"""Weakly supervised localization with SVM-weighted CAMs (Zhou et al., CVPR 2016, Sec. 4).

The one-vs-all SVM weights trained on GAP features play the role of the
network's last linear layer: ``M_c = sum_k w_k^c f_k`` on the conv maps of an
image is its class activation map for class ``c``. For every batch the CAMs of
the true class (GT-known) and of the top-1 predicted class are built in one
batched contraction, upsampled to the ORIGINAL image, and boxed by the
paper's rule (keep >= 20 % of the max, largest 8-connected component). Top-5
localization needs no other maps (see :func:`localize`).

Metrics (IoU >= 0.5 with ANY ground-truth box of the image):

* GT-known localization: the box of the true class's CAM hits;
* top-1 localization: the top-1 class is right AND its box hits;
* top-5 localization: one of the top-5 classes is right and its box hits;
* baselines: a centred box of half the image area, and the whole image;
* optionally MaxBoxAcc / MaxBoxAccV2 (Choe et al., CVPR 2020) over a sweep of
  thresholds on the same GT-known CAMs, and the authors' released
  multi-threshold box heuristic (first and second box).

The sweep runs under one of two protocols (``protocol=``):

* ``"featkit"`` (default): the CAM upsampled bilinearly to the ORIGINAL image,
  normalised in float, thresholds with ``>=``, 8-connected components,
  continuous-corner IoU (:func:`~featkit.cam.boxes.max_box_acc`);
* ``"wsol"``: clovaai/wsolevaluation's evaluator step by step (the CAM of the
  whole image resized bicubically to 224 x 224, min-max, 8-bit, strict ``>``,
  OpenCV contours with holes, ``+1`` IoU in the 224 frame;
  :mod:`featkit.cam.wsol`), whose numbers sit next to published WSOL tables.

Both sweeps see a CAM where the network looked: a ``crop`` file's map placed
on its centre square, a ``short-side`` map without its padding
(:meth:`~featkit.cam.boxer.CamBoxer.in_frame`). Rows the classifier was
trained on, and rows a ``calibration`` chose its threshold (or fitted its
learned map) on, are refused, by row and by content fingerprint.

Conv maps come from a :class:`~featkit.features.mapsource.MapSource` (stored,
or the backbone run again on the images); every box comes from the one
:class:`~featkit.cam.boxer.CamBoxer` path.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from featkit.cam.boxer import CamBoxer, single_threaded_torch
from featkit.cam.boxes import (
    DEFAULT_SWEEP,
    BoxAccuracy,
    center_box,
    full_image_box,
    iou_matrix,
    max_box_acc,
    multi_threshold_boxes,
)
from featkit.cam.calibration import Calibration, class_agnostic, refuse_calibration_rows
from featkit.cam.maps import NORMALIZATIONS, CamOptions
from featkit.cam.wsol import PROTOCOLS, WsolBoxEvaluator
from featkit.data.geometry import describe
from featkit.errors import FeatkitError
from featkit.features.extractor import Progress
from featkit.features.integrity import require_usable
from featkit.features.mapsource import MapSource
from featkit.features.store import FeatureFile
from featkit.linear.classifier import LinearClassifier, top_classes
from featkit.linear.protocol import refuse_training_rows
from featkit.outputs import atomic_output, jsonable, write_text
from featkit.progress import progress_callback

SWEEP_IOUS: tuple[float, ...] = (0.3, 0.5, 0.7)
"""IoU thresholds of MaxBoxAccV2 (Choe et al.)."""


# ------------------------------------------------------------------ the report


@dataclass
class LocalizationReport:
    """Localization numbers of one classifier on one set of images.

    ``summary`` holds the headline numbers (fractions in [0, 1]),
    ``per_class`` one dict per class (GT-known accuracy), ``per_image`` one
    dict per scored image (for the CSV), ``curves`` the threshold sweep or None.
    """

    summary: dict[str, Any]
    per_class: list[dict[str, Any]] = field(default_factory=list)
    per_image: list[dict[str, Any]] = field(default_factory=list)
    curves: BoxAccuracy | None = None

    def curves_dict(self) -> dict[str, Any] | None:
        """The sweep as JSON-ready lists."""
        if self.curves is None:
            return None
        return {
            "thresholds": [round(float(t), 6) for t in self.curves.thresholds],
            "iou_thresholds": list(self.curves.iou_thresholds),
            "largest": self.curves.curves_largest.tolist(),
            "any": self.curves.curves_any.tolist(),
            **self.curves.summary(),
        }

    def to_markdown(self) -> str:
        """A paper-style table (accuracies in %), then the per-class accuracies."""
        s = self.summary

        def pct(value: Any) -> str:
            return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.1f}"

        closing = f"mask closed with a {s['close']} px square, " if s.get("close") else ""
        lines = [
            f"Localization of {s['n_images']} images (IoU ≥ {s['iou_threshold']:g} with any GT box; "
            f"{'CAM' if s.get('method', 'cam') == 'cam' else 'map ' + repr(s['method'])} of the "
            f"{s['cam_class']}{'' if s.get('weights', 'all') == 'all' else ' from positive weights only'}; "
            f"{s['normalization']} normalisation, threshold {s['threshold']:g} "
            f"(chosen {s.get('threshold_chosen_on', 'a priori')}), "
            f"{closing}"
            f"{s['upsample']} upsampling; weights: {s['classifier']}; maps: {s['maps']})",
            "",
            *([f"Input geometry: {s['geometry']}.", ""] if s.get("geometry") else []),
            "| method | GT-known loc. | top-1 loc. | top-5 loc. | top-1 CAM, any class | mean IoU |",
            "|---|---:|---:|---:|---:|---:|",
            f"| {'CAM' if s.get('method', 'cam') == 'cam' else s['method']} ({s['classifier_kind']}) | {pct(s['gt_known_loc'])} | {pct(s['top1_loc'])} | "
            f"{pct(s['top5_loc'])} | {pct(s['top1_cam_loc'])} | {pct(s['mean_iou'])} |",
            f"| centre box (half the area) | {pct(s['center_baseline'])} | | | | |",
            f"| full image | {pct(s['full_image_baseline'])} | | | | |",
        ]
        if "multi_box1" in s:
            lines += [
                f"| CAM, released heuristic, 1st box | {pct(s['multi_box1'])} | | | | |",
                f"| CAM, released heuristic, 2nd box | {pct(s['multi_box2'])} | | | | |",
                f"| CAM, released heuristic, best of 2 | {pct(s['multi_best_of_2'])} | | | | |",
            ]
        lines.append("")
        if s["top1_cls"] is not None:
            lines.append(f"Classification: top-1 {pct(s['top1_cls'])} %, top-5 {pct(s['top5_cls'])} %.")
        if "max_box_acc" in s:
            if s.get("sweep_protocol") == "wsol":
                how = (f"wsolevaluation protocol: CAM resized bicubically to {s['sweep_frame']} x {s['sweep_frame']}, "
                       f"min-max, 8-bit, OpenCV contours, +1-pixel IoU; cam_curve_interval "
                       f"{s['sweep_cam_curve_interval']:g}")
            else:
                how = f"featkit protocol, {s['sweep_normalization']} normalisation"
            lines.append(
                f"Oracle threshold sweep on these same images ({how}; the threshold is chosen on the scored "
                f"images, not a fair score): MaxBoxAcc {pct(s['max_box_acc'])} % "
                f"at {s['max_box_acc_threshold']:g}, MaxBoxAccV2 {pct(s['max_box_acc_v2'])} % "
                f"(IoU {', '.join(f'{v:g}' for v in SWEEP_IOUS)})."
            )
        if s.get("classifier_trained_on", "").startswith("test"):
            lines.append(f"Note: {s['classifier']} was trained on the {s['classifier_trained_on']}: "
                         "its scores on that split are not held-out estimates.")
        if "calibration" in s:
            c = s["calibration"]
            repeats = (f" ({c['scored_repeats']} scored images repeat the content of calibration images under "
                       "other paths: the dataset lists them twice)") if c.get("scored_repeats") else ""
            lines.append(f"Threshold {c['threshold']:g} chosen on {c['n_images']} {c['split']} images only "
                         f"({c['scored']} class maps; accuracy there {pct(c['accuracy'])} %); none of them is a "
                         f"scored image, by row or by content{repeats}.")
            if "learned" in c:
                lines.append(f"The map is a {c['learned']} ({c['learned_cells']} cells of those {c['split']} "
                             f"images; threshold by {c['threshold_by']}): it uses the {c['split']} split's boxes, "
                             "never the scored images' boxes.")
        if s.get("n_skipped_no_box"):
            lines.append(f"Skipped {s['n_skipped_no_box']} images without a ground-truth box.")
        if self.per_class:
            label = "GT-known loc." if s["gt_known_loc"] is not None else "top-1 CAM loc."
            lines += ["", f"| class | images | {label} |", "|---|---:|---:|"]
            lines += [f"| {c['class']} | {c['n']} | {pct(c['loc'])} |" for c in self.per_class]
        return "\n".join(lines) + "\n"

    def write_csv(self, path: str | Path) -> Path:
        """One line per image: classes, scores, boxes (x0 y0 x1 y1 in original pixels), IoUs, hits."""
        target = Path(path)
        if not target.parent.exists():
            raise FeatkitError(f"cannot write {target}: folder {target.parent} does not exist; create it first")
        columns = _csv_columns(self.per_image)
        with atomic_output(target) as tmp, tmp.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            for record in self.per_image:
                writer.writerow(_flatten(record))
        return target

    def write_json(self, path: str | Path, per_image: bool = False) -> Path:
        """Summary, per-class numbers and the sweep curves (and per-image rows if asked)."""
        target = Path(path)
        if not target.parent.exists():
            raise FeatkitError(f"cannot write {target}: folder {target.parent} does not exist; create it first")
        document: dict[str, Any] = {"summary": self.summary, "per_class": self.per_class, "curves": self.curves_dict()}
        if per_image:
            document["per_image"] = self.per_image
        return write_text(target, json.dumps(jsonable(document), indent=2) + "\n")


_BOX_FIELDS = ("gt_box", "box", "top1_box", "multi_box1", "multi_box2")


def _csv_columns(records: list[dict[str, Any]]) -> list[str]:
    if not records:
        return ["row", "path"]
    return list(_flatten(records[0]))


def _flatten(record: dict[str, Any]) -> dict[str, Any]:
    """Boxes become four columns; lists (top-5 classes) become ';'-joined text."""
    flat: dict[str, Any] = {}
    for key, value in record.items():
        if key in _BOX_FIELDS:
            for name, v in zip(("x0", "y0", "x1", "y1"), value):
                flat[f"{key}_{name}"] = round(float(v), 2)
        elif isinstance(value, (list, tuple)):
            flat[key] = ";".join(str(v) for v in value)
        elif isinstance(value, float):
            flat[key] = round(value, 6)
        else:
            flat[key] = value
    return flat


# ------------------------------------------------------------------ localize


def _best_iou(box: Sequence[float], gts: np.ndarray) -> tuple[float, int]:
    """Highest IoU of ``box`` with any of ``gts`` and which GT box gave it."""
    values = iou_matrix(np.asarray(box, dtype=np.float64)[None], gts)[0]
    best = int(np.argmax(values))
    return float(values[best]), best


def _merge_sweeps(parts: list[BoxAccuracy], counts: list[int]) -> BoxAccuracy:
    """One sweep over all images from per-batch sweeps.

    The curves are hit rates, so they are turned back into hit counts and
    summed: exact, and ties between thresholds resolve as in one big sweep.
    """
    total = float(sum(counts))
    largest = sum(np.rint(p.curves_largest * n) for p, n in zip(parts, counts)) / total
    anyc = sum(np.rint(p.curves_any * n) for p, n in zip(parts, counts)) / total
    first = parts[0]
    half = first.iou_thresholds.index(0.5)
    best = int(np.argmax(largest[half]))
    best_any = anyc.argmax(axis=1)
    return BoxAccuracy(
        thresholds=first.thresholds,
        iou_thresholds=first.iou_thresholds,
        curves_largest=largest,
        curves_any=anyc,
        max_box_acc=float(largest[half, best]),
        best_threshold=float(first.thresholds[best]),
        max_box_acc_v2=float(anyc.max(axis=1).mean()),
        best_thresholds_v2=tuple(float(first.thresholds[i]) for i in best_any),
        n_images=int(sum(counts)),
        normalization=first.normalization,
    )


def _maps_origin(options: CamOptions, stored: str) -> str:
    """Where the scored maps came from, for the summary."""
    scales = "" if not options.multi_scale else f" at scales {', '.join(f'{s:g}' for s in options.scales)}"
    if options.method == "dgl":
        enhanced = f", enhanced (step {options.enhance:g})" if options.enhance else ""
        return f"gradients on layer {options.layer} of the images{scales}{enhanced}"
    return f"recomputed from the images{scales}" if scales else stored


def _localize_one(
    boxer: CamBoxer,
    cams: np.ndarray,
    size: tuple[int, int],
    gts: np.ndarray,
    scored: int,
    top: np.ndarray,
    agnostic: bool,
    iou_threshold: float,
    multi_threshold: bool,
    frame: np.ndarray | None = None,
) -> tuple[dict[str, Any], np.ndarray]:
    """Boxes, IoUs and hits of one image from its (2, h, w) CAMs (scored class, top-1 class).

    Returns the per-image record and the scored class's upsampled CAM (for the sweep).
    """
    same = scored == int(top[0])
    up = boxer.upsample(cams[:1] if same else cams, size, frame)
    box = boxer.box(up[0])
    top1_box = box if same else boxer.box(up[1])
    box_iou, gt_which = _best_iou(box, gts)
    top1_iou = box_iou if same else _best_iou(top1_box, gts)[0]
    hit = box_iou >= iou_threshold
    record: dict[str, Any] = {
        "correct": None if agnostic else same,
        "n_gt_boxes": len(gts),
        "gt_box": tuple(float(v) for v in gts[gt_which]),
        "box": box,
        "iou": box_iou,
        "hit": hit,
        "top1_box": top1_box,
        "top1_iou": top1_iou,
        "top1_loc": None if agnostic else same and hit,
        # A top-5 guess counts only if its class is the truth, and then its box is the GT-known box.
        "top5_loc": None if agnostic else scored in top.tolist() and hit,
        "center_hit": _best_iou(center_box(size), gts)[0] >= iou_threshold,
        "full_hit": _best_iou(full_image_box(size), gts)[0] >= iou_threshold,
    }
    if multi_threshold:
        candidates = multi_threshold_boxes(up[0])
        first = candidates[0] if candidates else full_image_box(size)
        second = candidates[1] if len(candidates) > 1 else first
        record.update(multi_box1=first, multi_box2=second,
                      multi_hit1=_best_iou(first, gts)[0] >= iou_threshold,
                      multi_hit2=_best_iou(second, gts)[0] >= iou_threshold)
    return record, up[0]


def localize(
    features: FeatureFile,
    classifier: LinearClassifier,
    rows: Sequence[int] | np.ndarray,
    *,
    cam_options: CamOptions = CamOptions(),
    root: str | Path | None = None,
    batch: int = 32,
    sweep: bool = True,
    multi_threshold: bool = False,
    iou_threshold: float = 0.5,
    sweep_normalization: str = "minmax",
    sweep_thresholds: Sequence[float] | np.ndarray = DEFAULT_SWEEP,
    protocol: str = "featkit",
    cam_curve_interval: float | None = None,
    device: str = "auto",
    progress: Progress | bool | None = True,
    calibration: Calibration | None = None,
) -> LocalizationReport:
    """Score CAM boxes of ``rows`` against their ground-truth boxes.

    Rows without any GT box are skipped and counted (``n_skipped_no_box``);
    if none has a box it is an error. Per batch ONE contraction builds the
    CAMs of the true and the top-1 class; the true class's map feeds the
    paper's rule, the sweep (normalised with ``sweep_normalization``, min-max
    in Choe et al.'s protocol) and the released heuristic alike. Top-5
    localization needs no further maps: a top-5 guess can only count when
    its class is the true one, and then its box is the GT-known box.

    A classifier that does not know the dataset's classes (the backbone's
    ImageNet head) gives class-agnostic numbers only: the top-1 class's CAM
    is scored, and GT-known, top-1/top-5 localization and classification are
    None. Rows the classifier was trained on are refused (FeatkitError).
    ``progress``: True draws a ``tqdm.auto`` bar, False is silent, a function ``progress(done, total)``
    is called after every batch of maps.

    ``protocol`` picks how the sweep scores the scored class's CAM:
    ``"featkit"`` (default; ``sweep_normalization`` and ``sweep_thresholds``
    apply) or ``"wsol"``, clovaai/wsolevaluation's evaluator
    (:mod:`featkit.cam.wsol`; thresholds every ``cam_curve_interval``, 0.01 by
    default, 0.001 as in its own default). The protocol changes the sweep
    only; the paper's GT-known/top-1/top-5 numbers are the same under both.

    ``calibration`` (from :func:`~featkit.cam.calibration.calibrate` on
    rows of another split) replaces ``cam_options`` by the setting it chose
    and is recorded in the summary; scoring any of its own images is refused.
    The sweep is an oracle: its best threshold is picked on the scored images
    themselves.
    """
    if calibration is not None:
        cam_options = calibration.options
    if not 0.0 < iou_threshold <= 1.0:
        raise FeatkitError(f"IoU threshold must be in (0, 1], got {iou_threshold}; the paper uses 0.5")
    if sweep_normalization not in NORMALIZATIONS:
        raise FeatkitError(
            f"unknown sweep normalization {sweep_normalization!r}; use one of {', '.join(NORMALIZATIONS)}"
        )
    if protocol not in PROTOCOLS:
        raise FeatkitError(f"unknown sweep protocol {protocol!r}; use one of {', '.join(PROTOCOLS)}")
    if protocol == "wsol" and not sweep:
        raise FeatkitError("protocol='wsol' scores the threshold sweep, but sweep=False; keep sweep=True")
    if protocol == "featkit" and cam_curve_interval is not None:
        raise FeatkitError("cam_curve_interval applies to protocol='wsol' only; add protocol='wsol' or drop it")
    wsol = WsolBoxEvaluator(0.01 if cam_curve_interval is None else cam_curve_interval, SWEEP_IOUS) \
        if protocol == "wsol" else None
    require_usable(features)
    idx = features.check_rows(rows)
    refuse_training_rows(classifier, features, idx, "images to localize")
    calibration_overlap = None if calibration is None else \
        refuse_calibration_rows(calibration, features, idx, "images to localize")
    progress = progress_callback(progress, "localize")
    labels = features.labels[idx]
    agnostic = class_agnostic(features, classifier, idx)
    mapping = None if agnostic else classifier.class_mapping(features)
    if not agnostic and (labels < 0).any():
        raise FeatkitError(
            f"{int((labels < 0).sum())} selected images of {features.path} have no class label; "
            "GT-known localization needs labelled images"
        )
    all_boxes = features.boxes_of()
    has_box = np.array([len(all_boxes[i]) > 0 for i in idx])
    if not has_box.any():
        raise FeatkitError(
            f"images without boxes: none of the {idx.size} selected images of {features.path} has a ground-truth "
            "box; localize needs ground-truth boxes (CUB, Stanford40, Caltech101 airplanes…)"
        )
    skipped = int((~has_box).sum())
    idx, labels = idx[has_box], labels[has_box]
    source = MapSource.of(features, root, device=device)
    boxer = CamBoxer(classifier.weight, cam_options) if calibration is None else calibration.boxer(classifier.weight)

    scores_all = classifier.decision_function(features.gap[idx])
    top_all = top_classes(scores_all)
    # The class whose CAM is scored: the truth (GT-known), or the top-1 guess when the truth is unknown.
    scored_all = top_all[:, 0] if mapping is None else mapping[labels]
    sizes, paths = features.sizes, features.paths
    position = {int(r): i for i, r in enumerate(idx)}

    per_image: list[dict[str, Any]] = []
    sweep_parts: list[BoxAccuracy] = []
    sweep_counts: list[int] = []
    if progress:
        progress(0, idx.size)
    for chunk, maps in boxer.batches(source, idx, batch):
        pos = np.array([position[int(r)] for r in chunk])
        wanted = np.stack([scored_all[pos], top_all[pos, 0]], axis=1)  # (n, 2): scored class, top-1 class
        cams = boxer.row_cams(source, chunk, maps, wanted)
        frames = source.frames(chunk)
        sweep_cams: list[np.ndarray] = []
        sweep_gts: list[np.ndarray] = []
        with single_threaded_torch():
            for j, row in enumerate(chunk):
                i = int(pos[j])
                gts = np.asarray(all_boxes[row], dtype=np.float64)
                size = (int(sizes[row][0]), int(sizes[row][1]))
                record, scored_cam = _localize_one(boxer, cams[j], size, gts, int(scored_all[i]), top_all[i],
                                                   agnostic, iou_threshold, multi_threshold,
                                                   None if frames is None else frames[j])
                names = {"row": int(row), "path": paths[row],
                         "true_class": features.classes[int(labels[i])] if labels[i] >= 0 else "",
                         "pred_class": classifier.classes[int(top_all[i, 0])],
                         "score": float(scores_all[i, top_all[i, 0]]),
                         "top5_classes": [classifier.classes[int(c)] for c in top_all[i]]}
                per_image.append({**names, **record})
                if wsol is not None:
                    # The map over the whole image (a crop map placed on its centre square, padding trimmed):
                    # the protocol resizes it to its frame itself.
                    wsol.accumulate(boxer.in_frame(cams[j][0], size, None if frames is None else frames[j]),
                                    gts, size)
                elif sweep:
                    sweep_cams.append(scored_cam)
                    sweep_gts.append(gts)
            if sweep and wsol is None:
                sweep_parts.append(max_box_acc(sweep_cams, sweep_gts, None, sweep_thresholds, SWEEP_IOUS,
                                               sweep_normalization, cam_options.close))
                sweep_counts.append(len(sweep_cams))
        if progress:
            progress(len(per_image), idx.size)

    def rate(key: str) -> float | None:
        return None if agnostic else float(np.mean([bool(r[key]) for r in per_image]))

    hits = np.array([r["hit"] for r in per_image])
    summary: dict[str, Any] = {
        "n_images": len(per_image),
        "n_skipped_no_box": skipped,
        "iou_threshold": iou_threshold,
        "cam_class": "top-1 prediction (classifier does not know the dataset classes)" if agnostic else "ground truth",
        "gt_known_loc": rate("hit"),
        "top1_loc": rate("top1_loc"),
        "top5_loc": rate("top5_loc"),
        "top1_cam_loc": float(np.mean([r["top1_iou"] >= iou_threshold for r in per_image])),
        "mean_iou": float(np.mean([r["iou"] for r in per_image])),
        "center_baseline": float(np.mean([r["center_hit"] for r in per_image])),
        "full_image_baseline": float(np.mean([r["full_hit"] for r in per_image])),
        "top1_cls": rate("correct"),
        "top5_cls": None if agnostic else float((top_all == scored_all[:, None]).any(axis=1).mean()),
        **cam_options.to_dict(),
        "classifier": classifier.source,
        "classifier_trained_on": classifier.trained_on(),
        "classifier_kind": "backbone head" if classifier.is_head else "SVM weights",
        "maps": _maps_origin(cam_options, source.kind),
        "geometry": describe(*features.geometry),
        "features": str(features.path),
        "threshold_chosen_on": (f"{calibration.split} ({calibration.n_images} images)" if calibration is not None
                                else "a priori"),
    }
    if calibration is not None:
        repeats = 0 if calibration_overlap is None else int(calibration_overlap.repeats.size)
        summary["calibration"] = {**calibration.to_dict(), "scored_repeats": repeats}
    if multi_threshold:
        first_hits = np.array([r["multi_hit1"] for r in per_image])
        second_hits = np.array([r["multi_hit2"] for r in per_image])
        summary.update(
            multi_box1=float(first_hits.mean()),
            multi_box2=float(second_hits.mean()),
            multi_best_of_2=float((first_hits | second_hits).mean()),
        )
    curves = None
    if sweep:
        curves = wsol.compute() if wsol is not None else _merge_sweeps(sweep_parts, sweep_counts)
        summary.update(
            max_box_acc=curves.max_box_acc,
            max_box_acc_threshold=curves.best_threshold,
            max_box_acc_v2=curves.max_box_acc_v2,
            max_box_acc_v2_thresholds=list(curves.best_thresholds_v2),
            sweep_protocol=protocol,
            sweep_normalization="minmax" if wsol is not None else sweep_normalization,
        )
        if wsol is not None:
            summary.update(sweep_cam_curve_interval=wsol.cam_curve_interval, sweep_frame=wsol.frame)

    per_class = []
    group = np.array([r["pred_class"] if agnostic else r["true_class"] for r in per_image], dtype=object)
    for name in (sorted(set(group)) if agnostic else features.classes):
        members = group == name
        if members.any():
            per_class.append({"class": name, "n": int(members.sum()), "loc": float(hits[members].mean())})
    return LocalizationReport(summary, per_class, per_image, curves)
