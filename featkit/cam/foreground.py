"""A foreground map learned from the training images' boxes: a linear SVM on conv-map cells.

Why: the one-vs-all SVMs that classify (and give the paper's CAM) were
trained against *other classes of the same kind*, so they weigh down the
evidence all classes share, which lies on the object (issue 10). When the
training split carries boxes, featkit can ask the maps directly where
objects are: every cell ``f(x, y)`` (a K-vector, exactly what a CAM weighs)
of a training image is labelled inside / outside its ground-truth boxes, and
a linear SVM on those cells gives weights ``v`` whose map ``v . f(x, y) + b``
is a CAM for "object versus its own background". It runs on the stored maps
through the same maps -> map -> box path as every other method.

This is few-shot box supervision on the TRAIN split (Choe et al., CVPR 2020,
show it is a strong baseline for weakly supervised localization); test boxes
are never read. Its settings are fixed a priori: C = 1 on cells divided by
the mean cell norm (scale-free), a cell is "inside" when its centre lies in
a box, at most :data:`MAX_CELLS` cells (a seeded sample), and a class with
no training box falls back to the class-agnostic weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from featkit.cam.placement import trim_padding
from featkit.errors import FeatkitError
from featkit.features.mapsource import MapSource
from featkit.features.store import FeatureFile
from featkit.linear.svm import fit_row_subsets

FOREGROUND_C = 1.0
"""SVM cost on cells scaled to unit mean norm; fixed a priori, not tuned."""

MAX_CELLS = 200_000
"""Cells kept for training, about: beyond it each image gives a seeded sample of its cells (200k x 1280 float64
is 2 GB of LIBLINEAR nodes at most; ReLU cells are sparse, so less)."""


@dataclass(frozen=True)
class ForegroundModel:
    """Linear weights on map cells: one row (class-agnostic) or one per classifier class."""

    weight: np.ndarray
    """(1, K) class-agnostic or (C, K) per class, in the units of the raw maps."""
    bias: np.ndarray
    """(1,) or (C,)."""
    per_class: bool
    n_images: int
    n_cells: int

    def maps(self, maps: np.ndarray, classes: np.ndarray) -> np.ndarray:
        """Foreground maps (n, T, h, w) of ``classes`` (n, T) on conv maps (n, K, h, w)."""
        maps = np.asarray(maps, dtype=np.float32)
        if maps.shape[1] != self.weight.shape[1]:
            raise FeatkitError(f"the foreground model has {self.weight.shape[1]} channels but the maps have "
                               f"{maps.shape[1]}; fit it on maps of the same backbone and layer")
        index = np.zeros_like(classes) if not self.per_class else np.asarray(classes, dtype=np.int64)
        weight = self.weight.astype(np.float32)[index]  # (n, T, K)
        out = np.einsum("ntk,nkhw->nthw", weight, maps)
        return (out + self.bias.astype(np.float32)[index][..., None, None]).astype(np.float32)


def inside_cells(shape: tuple[int, int], frame: Sequence[float], boxes: np.ndarray) -> np.ndarray:
    """(h, w) bool: which cells of a ``shape`` grid spread over ``frame`` (x0, y0, x1, y1) have their centre in a box."""
    h, w = shape
    x0, y0, x1, y1 = (float(v) for v in frame)
    xs = x0 + (np.arange(w) + 0.5) / w * (x1 - x0)
    ys = y0 + (np.arange(h) + 0.5) / h * (y1 - y0)
    inside = np.zeros((h, w), dtype=bool)
    for bx0, by0, bx1, by1 in np.asarray(boxes, dtype=np.float64).reshape(-1, 4):
        inside |= ((ys >= by0) & (ys <= by1))[:, None] & ((xs >= bx0) & (xs <= bx1))[None, :]
    return inside


def _cells(
    features: FeatureFile, source: MapSource, rows: np.ndarray, batch: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cells (M, K) float32, their labels (M,) bool and their image's position in ``rows`` (M,).

    At most ``ceil(MAX_CELLS / len(rows))`` cells per image (a seeded sample), so memory stays bounded
    on full datasets while every image contributes.
    """
    per_image = -(-MAX_CELLS // max(1, len(rows)))
    rng = np.random.default_rng(seed)
    boxes, sizes = features.boxes_of(), features.sizes
    cells: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    owner: list[np.ndarray] = []
    position = {int(r): i for i, r in enumerate(rows)}
    for chunk, maps in source.batches(rows, batch):
        frames = source.frames(chunk)
        for j, row in enumerate(chunk):
            grid = trim_padding(np.asarray(maps[j], dtype=np.float32))  # (K, h, w) of this image
            width, height = float(sizes[row][0]), float(sizes[row][1])
            frame = (0.0, 0.0, width, height) if frames is None else frames[j]
            inside = inside_cells(grid.shape[1:], frame, np.asarray(boxes[int(row)])).reshape(-1)
            flat = grid.reshape(grid.shape[0], -1).T
            if inside.size > per_image:
                keep = np.sort(rng.choice(inside.size, per_image, replace=False))
                flat, inside = flat[keep], inside[keep]
            cells.append(flat)
            labels.append(inside)
            owner.append(np.full(inside.size, position[int(row)], dtype=np.int64))
    return np.concatenate(cells), np.concatenate(labels), np.concatenate(owner)


def fit_foreground(
    features: FeatureFile,
    rows: Sequence[int] | np.ndarray,
    *,
    classes: np.ndarray | None = None,
    n_classes: int = 0,
    source: MapSource | None = None,
    batch: int = 32,
    seed: int = 0,
) -> ForegroundModel:
    """Fit the foreground SVM on the cells of ``rows`` (training images with boxes).

    ``classes`` (one classifier class index per row) asks for one model per
    class, each trained on the cells of its own images only (object against
    its own background, never against other classes' objects, which would
    bring back the cancellation of the one-vs-all SVMs); ``n_classes`` is the
    classifier's class count. Without ``classes`` one class-agnostic model
    is fitted on all cells.
    """
    idx = np.asarray(rows, dtype=np.int64)
    all_boxes = features.boxes_of()
    keep = np.array([len(all_boxes[int(r)]) > 0 for r in idx], dtype=bool)
    if not keep.any():
        raise FeatkitError(f"none of the {idx.size} training images of {features.path} has a ground-truth box to "
                           "learn the foreground from; use a method that needs no boxes (objectness, cam-positive)")
    idx = idx[keep]
    cells, inside, owner = _cells(features, source or MapSource.of(features), idx, batch, seed)
    scale = float(np.linalg.norm(cells, axis=1).mean()) or 1.0
    scaled = cells / scale
    problems = [(np.arange(len(inside)), inside)]
    if classes is not None:
        cls = np.asarray(classes, dtype=np.int64)[keep][owner]
        problems += [(np.flatnonzero(cls == c), inside[cls == c]) for c in range(n_classes)]
    fitted = fit_row_subsets(scaled, problems, FOREGROUND_C)
    weight, bias = fitted[:, :-1] / scale, fitted[:, -1]
    if classes is not None:
        # A class without training cells on both sides falls back to the class-agnostic weights.
        for c, (_, labels) in enumerate(problems[1:], start=1):
            if not labels.any() or labels.all():
                weight[c], bias[c] = weight[0], bias[0]
        weight, bias = weight[1:], bias[1:]
    return ForegroundModel(weight=weight.astype(np.float32), bias=bias.astype(np.float32),
                           per_class=classes is not None, n_images=int(idx.size), n_cells=int(len(inside)))
