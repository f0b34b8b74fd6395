"""Choose the box threshold on TRAINING images, never on the images that are scored.

The paper fixes 20 % of the max a priori; a map that is not the paper's CAM
(see :mod:`featkit.cam.methods`) has its own best threshold. Choosing it on
the test images (MaxBoxAcc) is an oracle; :func:`calibrate` picks it on
training images that carry boxes, with the same maps, classes and box rule
that :func:`~featkit.cam.localization.localize` then applies to the test
images, and says what it chose and on how many images.

A calibration remembers its images (rows, image list, content fingerprints):
:func:`refuse_calibration_rows` refuses to score any of them, in the same file
by row and in any file by content, so a threshold (or a learned map) is never
scored on the boxes it was chosen (or fitted) on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from featkit.cam.boxer import CamBoxer, single_threaded_torch
from featkit.cam.boxes import boxes_from_cams, iou_matrix
from featkit.cam.foreground import ForegroundModel, fit_foreground
from featkit.cam.maps import CamOptions
from featkit.cam.methods import LEARNED_METHODS
from featkit.errors import FeatkitError
from featkit.features.mapsource import MapSource
from featkit.features.overlap import FittedImages, Overlap, refuse_fitted
from featkit.features.store import FeatureFile
from featkit.linear.classifier import LinearClassifier, top_classes

CALIBRATION_GRID: tuple[float, ...] = (0.01, 0.02, 0.03) + tuple(round(0.05 * i, 2) for i in range(1, 20))
"""Thresholds tried on the training images: 0.01, 0.02, 0.03, 0.05, 0.10, ..., 0.95 (of the map's max, or of
its min-max range); the low end is for products of maps (cam-objectness), whose values shrink."""

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
    foreground: ForegroundModel | None = None
    """The learned method's model, fitted on all ``n_images`` (its threshold was chosen by 2-fold cross-fitting)."""
    images: FittedImages | None = None
    """The calibration images (rows, image list, fingerprints): scoring refuses them."""

    def boxer(self, weight: np.ndarray) -> CamBoxer:
        """The CamBoxer of class weights ``weight`` under the chosen setting (and the learned method's model)."""
        return CamBoxer(weight, self.options, self.foreground)

    def to_dict(self) -> dict[str, Any]:
        return {"split": self.split, "n_images": self.n_images, "threshold": self.options.threshold,
                "method": self.options.method, "accuracy": self.accuracy, "scored": self.scored,
                "grid": list(self.grid), "curve": list(self.curve),
                **({} if self.foreground is None else {
                    "learned": f"foreground SVM on map cells of the {self.split} split's boxes"
                               + (", one per class" if self.foreground.per_class else ", class-agnostic"),
                    "learned_cells": self.foreground.n_cells,
                    "threshold_by": "2-fold cross-fitting on the calibration images"})}


def refuse_calibration_rows(calibration: Calibration, features: FeatureFile, rows: Sequence[int] | np.ndarray,
                            what: str) -> Overlap | None:
    """FeatkitError when any of ``rows`` (``what``) is an image ``calibration`` chose its threshold on (or fitted
    its learned map on): the same row of the same image list, or the same content in any file."""
    if calibration.images is None:
        return None
    fitted = " and its map fitted" if calibration.foreground is not None else ""
    who = f"{calibration.split} images the threshold was chosen{fitted} on"
    fix = (f"calibrate on another split than the scored one (calibrate='test' to score train; now "
           f"calibrate={calibration.split!r}) or score another split")
    return refuse_fitted(calibration.images, features, rows, what, who, fix, fix)


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
    source = MapSource.of(features, root, device=device)
    relative = relative_to(options)
    foreground = None
    if options.method in LEARNED_METHODS:
        per_class = LEARNED_METHODS[options.method][0]

        def fit(part: np.ndarray) -> ForegroundModel:
            """The learned method's model on the calibration images at positions ``part``."""
            return fit_foreground(features, idx[part], classes=scored[part] if per_class else None,
                                  n_classes=classifier.weight.shape[0], source=source, batch=batch)

        # The map is learned from these images' boxes: each half is scored by a model fitted on the other
        # half (2-fold cross-fitting), so the threshold is chosen on maps of images the model did not see.
        hits = np.zeros((idx.size, levels.size), dtype=bool)
        for held in _halves(scored):
            boxer = CamBoxer(classifier.weight, options, fit(np.setdiff1d(np.arange(idx.size), held)))
            hits[held] = _hits(features, boxer, source, idx[held], scored[held], levels, relative, iou_threshold,
                               batch)
        foreground = fit(np.arange(idx.size))
    else:
        hits = _hits(features, CamBoxer(classifier.weight, options), source, idx, scored, levels, relative,
                     iou_threshold, batch)
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
        foreground=foreground,
        images=FittedImages.of(features, idx),
    )


def relative_to(options: CamOptions) -> str:
    """What a threshold is a fraction of under ``options``: the min-max range or the maximum."""
    return "minmax" if options.normalization == "minmax" else "max"


def _halves(classes: np.ndarray, seed: int = 0) -> list[np.ndarray]:
    """Two disjoint halves of ``range(len(classes))``, each class split evenly between them (seeded)."""
    rng = np.random.default_rng(seed)
    first: list[int] = []
    for c in np.unique(classes):
        members = rng.permutation(np.flatnonzero(classes == c))
        first += members[::2].tolist()
    held = np.sort(np.asarray(first, dtype=np.int64))
    return [held, np.setdiff1d(np.arange(len(classes)), held)]


def _hits(
    features: FeatureFile, boxer: CamBoxer, source: MapSource, idx: np.ndarray, scored: np.ndarray,
    levels: np.ndarray, relative: str, iou_threshold: float, batch: int,
) -> np.ndarray:
    """(len(idx), len(levels)) bool: whether the box of ``scored``'s map at each threshold hits a GT box."""
    all_boxes = features.boxes_of()
    position = {int(r): i for i, r in enumerate(idx)}
    hits = np.zeros((idx.size, levels.size), dtype=bool)
    for chunk, maps in boxer.batches(source, idx, batch):
        pos = np.array([position[int(r)] for r in chunk])
        cams = boxer.row_cams(source, chunk, maps, scored[pos])[:, 0]
        frames = source.frames(chunk)
        with single_threaded_torch():
            for j, row in enumerate(chunk):
                size = (int(features.sizes[row][0]), int(features.sizes[row][1]))
                # At full size, exactly as localize boxes (a smaller map moved the chosen threshold: issue 10).
                up = boxer.upsample(cams[j], size, None if frames is None else frames[j])
                boxes = boxes_from_cams(up, levels, relative, boxer.options.close)
                gts = np.asarray(all_boxes[int(row)], dtype=np.float64)
                hits[pos[j]] = iou_matrix(boxes, gts).max(axis=1) >= iou_threshold
    return hits
