"""Choose the box threshold on TRAINING images, never on the images that are scored.

The paper fixes 20 % of the max a priori; a map that is not the paper's CAM
(see :mod:`featkit.cam.methods`) has its own best threshold. Choosing it on
the test images (MaxBoxAcc) is an oracle; :func:`calibrate` picks it on
training images that carry boxes, with the same maps, classes and box rule
that :func:`~featkit.cam.localization.localize` then applies to the test
images, and says what it chose and on how many images.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from featkit.cam.boxer import CamBoxer, single_threaded_torch
from featkit.cam.boxes import boxes_from_cams, iou_matrix
from featkit.cam.maps import CamOptions
from featkit.errors import FeatkitError
from featkit.features.mapsource import MapSource
from featkit.features.store import FeatureFile
from featkit.linear.classifier import LinearClassifier, top_classes

CALIBRATION_GRID: tuple[float, ...] = (0.01, 0.02, 0.03) + tuple(round(0.05 * i, 2) for i in range(1, 20))
"""Thresholds tried on the training images: 0.01, 0.02, 0.03, 0.05, 0.10, ..., 0.95 (of the map's max, or of
its min-max range); the low end is for products of maps (cam-objectness), whose values shrink."""

CALIBRATION_SIDE = 160
"""Calibration boxes the map upsampled to at most this many pixels on the long side, then scales the box
back: 19 labelling passes per image stay cheap, and a threshold (not a box) is what is chosen. With
``CamOptions.close`` the map is boxed at full size instead, since the closing's square is in pixels of the
original image: the same rule as the boxes then scored."""


@dataclass(frozen=True)
class Calibration:
    """The setting chosen on ``n_images`` images of ``split`` and the accuracy curve it was chosen from."""

    options: CamOptions
    split: str
    n_images: int
    accuracy: float
    """Accuracy (IoU >= iou_threshold) on the calibration images at the chosen threshold."""
    grid: tuple[float, ...]
    curve: tuple[float, ...]
    scored: str
    """Which class's map was scored on the calibration images ("ground truth" or "top-1 prediction")."""

    def to_dict(self) -> dict[str, Any]:
        return {"split": self.split, "n_images": self.n_images, "threshold": self.options.threshold,
                "method": self.options.method, "accuracy": self.accuracy, "scored": self.scored,
                "grid": list(self.grid), "curve": list(self.curve)}


def class_agnostic(features: FeatureFile, classifier: LinearClassifier, rows: np.ndarray) -> bool:
    """Whether only the top-1 prediction's map can be scored on ``rows`` (no GT-known map).

    So for the backbone's ImageNet head on a dataset with any class it does
    not predict, or on unlabelled images: its class-agnostic top-1 CAM works
    on any store. An SVM from ``svm-train`` always knows the dataset's classes.
    """
    if not classifier.is_head:
        return False
    return not set(features.classes) <= set(classifier.classes) or bool((features.labels[rows] < 0).any())


def calibrate(
    features: FeatureFile,
    classifier: LinearClassifier,
    rows: Sequence[int] | np.ndarray,
    options: CamOptions = CamOptions(),
    *,
    split: str = "train",
    root: str | Path | None = None,
    grid: Sequence[float] = CALIBRATION_GRID,
    iou_threshold: float = 0.5,
    batch: int = 32,
    device: str = "auto",
) -> Calibration:
    """The threshold of ``grid`` whose boxes hit most often on ``rows`` (images of ``split``).

    Rows without boxes are left out; ties go to the lowest threshold. Only
    these rows are looked at, so pass training rows to keep the test split
    untouched.
    """
    idx = features.check_rows(rows)
    all_boxes = features.boxes_of()
    idx = np.array([int(r) for r in idx if len(all_boxes[int(r)]) > 0], dtype=np.int64)
    if idx.size == 0:
        raise FeatkitError(
            f"no image of split {split!r} in {features.path} has a ground-truth box to choose the threshold on; "
            "give the threshold yourself (threshold=...) or calibrate on a split with boxes"
        )
    levels = np.asarray(grid, dtype=np.float64)
    if levels.size == 0 or (levels <= 0).any() or (levels > 1).any():
        raise FeatkitError(f"calibration thresholds must lie in (0, 1], got {list(grid)}")
    labels = features.labels[idx]
    scores = classifier.decision_function(features.gap[idx])
    if not classifier.is_head and (labels < 0).any():
        raise FeatkitError(f"{int((labels < 0).sum())} images of split {split!r} have no label; "
                           "calibration needs labelled images")
    agnostic = class_agnostic(features, classifier, idx)
    scored = top_classes(scores, 1)[:, 0] if agnostic else classifier.class_mapping(features)[labels]
    relative_to = "minmax" if options.normalization == "minmax" else "max"
    boxer = CamBoxer(classifier.weight, options)
    source = MapSource.of(features, root, device=device)
    position = {int(r): i for i, r in enumerate(idx)}
    hits = np.zeros((idx.size, levels.size), dtype=bool)
    for chunk, maps in boxer.batches(source, idx, batch):
        pos = np.array([position[int(r)] for r in chunk])
        cams = boxer.row_cams(source, chunk, maps, scored[pos])[:, 0]
        with single_threaded_torch():
            for j, row in enumerate(chunk):
                width, height = int(features.sizes[row][0]), int(features.sizes[row][1])
                # closing counts pixels of the original image: the mask is closed at full size, as localize does
                scale = 1.0 if options.close else min(1.0, CALIBRATION_SIDE / max(width, height))
                small = (max(1, round(width * scale)), max(1, round(height * scale)))
                boxes = boxes_from_cams(boxer.upsample(cams[j], small), levels, relative_to, options.close)
                boxes *= np.array([width / small[0], height / small[1]] * 2)
                gts = np.asarray(all_boxes[int(row)], dtype=np.float64)
                hits[pos[j]] = iou_matrix(boxes, gts).max(axis=1) >= iou_threshold
    curve = hits.mean(axis=0)
    best = int(np.argmax(curve))
    return Calibration(
        options=replace(options, threshold=float(levels[best])),
        split=split,
        n_images=int(idx.size),
        accuracy=float(curve[best]),
        grid=tuple(float(v) for v in levels),
        curve=tuple(float(v) for v in curve),
        scored="top-1 prediction" if agnostic else "ground truth",
    )
