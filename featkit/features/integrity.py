"""Is a features file whole? Shapes, row tables, feature values, maps, and the images behind them.

Every consumer of a features file (SVM training and scoring, CAMs, localization,
crops, units) calls :func:`require_usable` before any work: the extraction
must be complete, the arrays must have the shapes the row count says, and the
GAP features of every extracted row must be finite and of a plausible size.
``featkit info`` lists the same problems (:func:`damage`), and with
``check=True`` also reads every conv map.

Rows whose status is pending or unreadable hold the NaN fill value by design
and are never counted as damage.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from featkit.data.picture import MAX_PIXELS, exif_orientation, open_image, upright_size
from featkit.errors import FeatkitError
from featkit.features.schema import STATUS_FAILED, STATUS_OK, STATUS_PENDING
from featkit.features.store import FeatureFile, check_images, layout_problems, padding_of

GARBAGE_LIMIT = 1e6
"""Largest plausible |value| of a pooled feature or a conv map, fixed a priori: pooled activations
of the supported backbones are in the tens to thousands, while corrupted float32 bytes mostly
decode to magnitudes far beyond 1e6 (or to NaN/inf)."""

CHUNK_ROWS = 4096
"""Rows of features/gap read at a time by the damage scan (bounded memory on big files)."""

_checked: weakref.WeakSet[FeatureFile] = weakref.WeakSet()


def _rows_text(features: FeatureFile, rows: np.ndarray, limit: int = 3) -> str:
    """'rows 3 (a.jpg), 7 (b.jpg) and 5 more' for messages."""
    paths = features.paths
    named = ", ".join(f"{int(r)} ({paths[int(r)]})" for r in rows[:limit])
    more = f" and {rows.size - limit} more" if rows.size > limit else ""
    return f"row{'s' if rows.size > 1 else ''} {named}{more}"


def bad_value_rows(block: np.ndarray) -> np.ndarray:
    """Mask of the rows of ``block`` (n, ...) holding NaN, inf or |x| > GARBAGE_LIMIT."""
    flat = np.asarray(block, dtype=np.float32).reshape(len(block), -1)
    with np.errstate(invalid="ignore"):
        return np.asarray(~np.isfinite(flat).all(axis=1) | (np.abs(flat) > GARBAGE_LIMIT).any(axis=1))


def _read(features: FeatureFile, name: str, problems: list[str]) -> np.ndarray | None:
    try:
        return np.asarray(features.h5[name][:])
    except (OSError, KeyError, ValueError) as exc:
        problems.append(f"{name} cannot be read ({exc})")
        return None


def shape_problems(features: FeatureFile) -> list[str]:
    """Arrays whose dtype, length or width disagrees with ``n_images`` / ``channels``, and a bad run state."""
    return layout_problems(features.h5)


def row_problems(features: FeatureFile) -> list[str]:
    """Bad values in the per-image tables: status, labels, boxes, sizes."""
    problems: list[str] = []
    status = _read(features, "images/status", problems)
    labels = _read(features, "images/label", problems)
    box = _read(features, "images/box", problems)
    boxes = _read(features, "images/boxes", problems) if "images/boxes" in features.h5 else None
    sizes = _read(features, "images/size", problems)
    if problems:
        return problems
    assert status is not None and labels is not None and box is not None and sizes is not None
    unknown = np.flatnonzero(~np.isin(status, (STATUS_PENDING, STATUS_OK, STATUS_FAILED)))
    if unknown.size:
        problems.append(f"images/status holds unknown values in {_rows_text(features, unknown)}")
    if features.complete:
        pending = np.flatnonzero(status == STATUS_PENDING)
        if pending.size:
            problems.append(f"the file says complete but {_rows_text(features, pending)} were never extracted")
    n_classes = features.h5["classes"].shape[0]
    wrong = np.flatnonzero((labels < -1) | (labels >= n_classes))
    if wrong.size:
        problems.append(f"images/label lies outside -1..{n_classes - 1} in {_rows_text(features, wrong)}")
    with np.errstate(invalid="ignore"):
        partly = np.isnan(box).any(axis=1) & ~np.isnan(box).all(axis=1)
        broken = np.flatnonzero(np.isinf(box).any(axis=1) | partly | (np.abs(np.nan_to_num(box)) > GARBAGE_LIMIT)
                                .any(axis=1))
    if broken.size:
        problems.append(f"images/box holds infinite or partial boxes in {_rows_text(features, broken)}")
    if boxes is not None and boxes.size and not np.isfinite(boxes).all():
        problems.append(f"images/boxes holds {int((~np.isfinite(boxes)).any(axis=1).sum())} non-finite boxes")
    with np.errstate(invalid="ignore"):
        inverted = np.flatnonzero((box[:, 2] < box[:, 0]) | (box[:, 3] < box[:, 1]))
    if inverted.size:
        problems.append(f"images/box holds inverted boxes (x1 < x0 or y1 < y0) in {_rows_text(features, inverted)}")
    if boxes is not None and boxes.size and ((boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])).any():
        problems.append("images/boxes holds inverted boxes (x1 < x0 or y1 < y0)")
    ok = status == STATUS_OK
    no_size = np.flatnonzero(ok & ((sizes[:, 0] <= 0) | (sizes[:, 1] <= 0)))
    if no_size.size:
        problems.append(f"images/size is not positive in extracted {_rows_text(features, no_size)}")
    huge = np.flatnonzero(sizes[:, 0].astype(np.float64) * sizes[:, 1] > MAX_PIXELS)
    if huge.size:
        problems.append(f"images/size is over the pixel budget ({MAX_PIXELS / 1e6:.0f} Mpx) in "
                        f"{_rows_text(features, huge)}")
    return problems


def _blocks(features: FeatureFile, name: str, batch: int) -> Iterator[tuple[int, np.ndarray | Exception]]:
    dataset = features.h5[name]
    for lo in range(0, dataset.shape[0], batch):
        try:
            yield lo, dataset[lo: lo + batch]
        except (OSError, ValueError) as exc:
            yield lo, exc


def value_problems(features: FeatureFile, name: str, batch: int) -> list[str]:
    """NaN, inf or garbage in ``name`` (features/gap or features/maps) on extracted rows, read by blocks."""
    status = features.status
    bad: list[int] = []
    unreadable: list[str] = []
    for lo, block in _blocks(features, name, batch):
        if isinstance(block, Exception):
            unreadable.append(f"rows {lo}..{lo + batch - 1} ({block})")
            continue
        if name == "features/maps" and features.geometry[0] == "short-side":  # NaN padding is not damage
            block = np.where(padding_of(np.asarray(block, dtype=np.float32))[:, None] == 1, 0.0, block)
        mask = bad_value_rows(block) & (status[lo: lo + len(block)] == STATUS_OK)
        bad += (lo + np.flatnonzero(mask)).tolist()
    problems = [f"{name} cannot be read in {'; '.join(unreadable[:3])}"] if unreadable else []
    if bad:
        problems.append(f"{name} holds NaN, inf or |x| > {GARBAGE_LIMIT:g} in extracted "
                        f"{_rows_text(features, np.asarray(bad))}")
    return problems


def damage(features: FeatureFile, maps: bool = False,
           progress: Callable[[int, int], None] | None = None) -> list[str]:
    """Every problem found: shapes, tables, GAP values, and with ``maps`` every stored conv map."""
    problems = shape_problems(features)
    if problems:
        return problems
    problems += row_problems(features)
    if problems:
        return problems
    problems += value_problems(features, "features/gap", CHUNK_ROWS)
    if maps and features.has_maps:
        problems += value_problems(features, "features/maps", 64)
    return problems


def require_usable(features: FeatureFile) -> None:
    """Refuse (one line) an incomplete file, inconsistent shapes, or non-finite GAP features.

    Checked once per open file. The stored maps are checked as they are read
    (:meth:`FeatureFile.maps`), not here: reading them all would cost more than the work.
    """
    if features in _checked:
        return
    features.require_complete()
    problems = shape_problems(features) or row_problems(features)
    if not problems:
        gap = features.gap
        bad = np.flatnonzero(bad_value_rows(gap) & (features.status == STATUS_OK))
        if bad.size:
            problems = [f"features/gap holds NaN, inf or |x| > {GARBAGE_LIMIT:g} in {_rows_text(features, bad)}"]
    if problems:
        raise FeatkitError(f"{features.path} is damaged: {problems[0]}; re-extract it (overwrite=True)")
    _checked.add(features)


def require_same_images(features: FeatureFile, root: str | Path, rows: np.ndarray | None = None) -> None:
    """Refuse a ``root`` whose images are not those the features were extracted from.

    Compares each image's (width, height) with ``images/size`` (read from the
    file header, no decoding), then, where the file records them, the content
    fingerprints taken at extraction (:func:`~featkit.features.store.check_images`),
    before any work that would use the images.
    """
    image_root = Path(root)
    idx = np.flatnonzero(features.status == STATUS_OK) if rows is None else np.asarray(rows)
    paths, sizes = features.paths, features.sizes
    upright = features.attrs.get("orientation") == "exif"
    missing, differ = [], []
    for row in idx:
        path = image_root / paths[int(row)]
        try:
            with open_image(path) as img:
                size = upright_size(img.size, exif_orientation(img) if upright else 1)
        except (OSError, ValueError):
            missing.append(int(row))
            continue
        if tuple(size) != (int(sizes[row][0]), int(sizes[row][1])):
            differ.append((int(row), size))
    recorded = features.attrs.get("dataset_root")
    if missing:
        raise FeatkitError(
            f"{len(missing)} images of {features.path} are not readable under {image_root} "
            f"(e.g. {paths[missing[0]]}); give root=the folder they were extracted from ({recorded})"
        )
    if differ:
        row, size = differ[0]
        raise FeatkitError(
            f"{image_root} holds other images than {features.path} was extracted from: {len(differ)} differ in size "
            f"(e.g. {paths[row]} is {size[0]}x{size[1]} there, {int(sizes[row][0])}x{int(sizes[row][1])} when "
            f"extracted); give root=the folder they were extracted from ({recorded})"
        )
    check_images(features, image_root, idx)
