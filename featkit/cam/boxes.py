"""From CAMs to boxes, IoU, and the localization metrics.

Boxes are ``(x0, y0, x1, y1)`` floats in ORIGINAL image pixels with continuous
corners: pixel columns ``a..b`` and rows ``c..d`` (inclusive) make the box
``(a, c, b + 1, d + 1)`` and a W x H image is ``(0, 0, W, H)``. So areas and
IoUs need no ``+1`` and a box maps to pixel slices ``[y0:y1, x0:x1]``.
Sizes are ``(width, height)`` as PIL reports them.

Three box generators live here:

* :func:`box_from_cam`: the paper's rule (Sec. 4: keep the pixels above 20 %
  of the CAM's maximum, box the largest connected component);
* :func:`max_box_acc`: the threshold sweep of Choe et al., CVPR 2020
  (MaxBoxAcc and MaxBoxAccV2);
* :func:`multi_threshold_boxes`: a port of the authors' released ILSVRC box
  generator (``bboxgenerator/dt_box.cpp`` in the CAM repository).

The same sweep as wsolevaluation computes it (OpenCV contours in a 224 px
frame) lives in :mod:`featkit.cam.wsol`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from scipy import ndimage

from featkit.cam.maps import normalize_cam, upsample
from featkit.errors import FeatkitError

Box = tuple[float, float, float, float]
"""(x0, y0, x1, y1) in original-image pixels, continuous corners."""

EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)
"""Diagonal neighbours join a component, as in MATLAB bwlabel and OpenCV contours."""

RELATIVE_TO: tuple[str, ...] = ("max", "minmax", "absolute")
"""How a threshold is read: a fraction of the map's max (the paper), a fraction
of its [min, max] range (Choe et al.), or a raw value."""

DEFAULT_SWEEP = np.arange(0.0, 1.0, 0.01)
"""CAM thresholds of Choe et al.'s sweep (0.00, 0.01, ..., 0.99)."""


# ----------------------------------------------------------------- helpers


def _as_cam(cam: object, ndim: int | tuple[int, ...] = 2) -> np.ndarray:
    """float32 numpy copy of a CAM, with a clear error for wrong shapes or NaN."""
    array = cam.detach().cpu().numpy() if hasattr(cam, "detach") else np.asarray(cam)
    array = array.astype(np.float32, copy=False)
    allowed = (ndim,) if isinstance(ndim, int) else ndim
    if array.ndim not in allowed:
        raise FeatkitError(
            f"expected a CAM with {' or '.join(map(str, allowed))} axes, got shape {array.shape}; "
            "pass one upsampled (H, W) map (or a stack of them)"
        )
    if array.size == 0:
        raise FeatkitError(f"the CAM is empty (shape {array.shape}); upsample it to the image size first")
    if np.isnan(array).any():
        raise FeatkitError("the CAM contains NaN; check the features and weights that produced it")
    return array


def _as_boxes(boxes: object, name: str) -> np.ndarray:
    """(N, 4) float64 array of boxes; one box is promoted to (1, 4)."""
    array = np.asarray(boxes, dtype=np.float64)
    if array.size == 0:
        return np.empty((0, 4))
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2 or array.shape[1] != 4:
        raise FeatkitError(f"{name} must be (N, 4) boxes (x0, y0, x1, y1), got shape {array.shape}")
    return array


def _absolute_thresholds(cam: np.ndarray, thresholds: np.ndarray, relative_to: str) -> np.ndarray:
    """Turn relative thresholds into values of ``cam``'s own scale."""
    if relative_to == "max":
        return thresholds * float(cam.max())
    if relative_to == "minmax":
        low, high = float(cam.min()), float(cam.max())
        return low + thresholds * (high - low)
    if relative_to == "absolute":
        return thresholds
    raise FeatkitError(f"unknown relative_to {relative_to!r}; use one of {', '.join(RELATIVE_TO)}")


def _components(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Boxes (M, 4) and pixel counts (M,) of the 8-connected components of ``mask``.

    A lone component gets a placeholder count of 1: only the ranking matters.
    """
    labels, count = ndimage.label(mask, structure=EIGHT_CONNECTED)
    if count == 0:
        return np.empty((0, 4)), np.empty((0,), dtype=np.int64)
    # find_objects' slices are exactly the continuous box: start inclusive, stop exclusive.
    slices = ndimage.find_objects(labels)
    boxes = np.array([(s[1].start, s[0].start, s[1].stop, s[0].stop) for s in slices], dtype=np.float64)
    if count == 1:  # the common case for smooth CAMs: no need to count pixels
        return boxes, np.ones(1, dtype=np.int64)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    return boxes, sizes


def full_image_box(size: tuple[int, int]) -> Box:
    """The whole image, ``(0, 0, W, H)``: the trivial baseline and the 'no evidence' answer."""
    width, height = size
    return (0.0, 0.0, float(width), float(height))


def center_box(size: tuple[int, int], area_fraction: float = 0.5) -> Box:
    """The centre baseline: a centred box covering ``area_fraction`` of the image area.

    Each side is ``sqrt(area_fraction)`` of the image's side (0.707 W x 0.707 H
    for the default half of the area), so the aspect ratio is the image's. It
    tells how much of a localization score comes from objects simply being
    large and central.
    """
    if not 0.0 < area_fraction <= 1.0:
        raise FeatkitError(f"area_fraction must be in (0, 1], got {area_fraction}; 0.5 is the usual centre baseline")
    width, height = float(size[0]), float(size[1])
    side = float(np.sqrt(area_fraction))
    margin_x, margin_y = width * (1 - side) / 2, height * (1 - side) / 2
    return (margin_x, margin_y, width - margin_x, height - margin_y)


# ------------------------------------------------------------ the paper's rule


def close_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """Morphological closing of a boolean (H, W) mask with a ``size`` x ``size`` square (0 or 1: unchanged).

    Closing (dilate, then erode) bridges gaps narrower than ``size`` pixels,
    so a map split by a thin valley (two wings, a bird behind a branch) gives
    one component instead of two (DGL, Tan et al., closes its maps). OpenCV's
    default border never erodes from the image edge, so a mask touching the
    edge keeps its extent.
    """
    if size <= 1:
        return mask
    kernel = np.ones((int(size), int(size)), dtype=np.uint8)
    return cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_CLOSE, kernel).astype(bool)


def box_from_cam(cam: object, threshold: float = 0.2, relative_to: str = "max", close: int = 0) -> Box:
    """The paper's box: pixels >= ``threshold`` x max, box of the largest 8-connected component.

    ``cam`` is ONE map already upsampled to the original image (H, W). Ties
    between equally large components go to the first in raster order. With
    ``relative_to="max"`` a map whose maximum is <= 0 carries no positive
    evidence: the full image box is returned, as it is whenever no pixel
    passes the threshold. ``close`` > 1 closes the thresholded mask with a
    ``close`` x ``close`` pixel square before the components are found
    (:func:`close_mask`); 0 is the paper's rule.
    """
    largest, _ = _sweep_boxes(_as_cam(cam), np.array([threshold], dtype=np.float64), relative_to, keep_all=False,
                              close=close)
    x0, y0, x1, y1 = largest[0]
    return (float(x0), float(y0), float(x1), float(y1))


def boxes_from_cams(
    cam: object, thresholds: Sequence[float] | np.ndarray, relative_to: str = "max", close: int = 0
) -> np.ndarray:
    """Largest-component boxes of one (H, W) CAM at many thresholds: (T, 4).

    A stack (N, H, W) gives (N, T, 4). Each threshold costs one C-level
    labelling pass over the map, which is what the threshold sweep runs.
    ``close`` is :func:`box_from_cam`'s.
    """
    array = _as_cam(cam, ndim=(2, 3))
    if array.ndim == 3:
        return np.stack([boxes_from_cams(single, thresholds, relative_to, close) for single in array])
    largest, _ = _sweep_boxes(array, np.asarray(thresholds, dtype=np.float64), relative_to, keep_all=False,
                              close=close)
    return largest


def _sweep_boxes(
    cam: np.ndarray, thresholds: np.ndarray, relative_to: str, keep_all: bool, close: int = 0
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Largest-component box per threshold (T, 4), plus every component's boxes if asked (mask closed if asked)."""
    if relative_to not in RELATIVE_TO:
        raise FeatkitError(f"unknown relative_to {relative_to!r}; use one of {', '.join(RELATIVE_TO)}")
    height, width = cam.shape
    full = np.array(full_image_box((width, height)))
    largest = np.tile(full, (len(thresholds), 1))
    every: list[np.ndarray] = [full[None, :] for _ in thresholds]
    if relative_to == "max" and float(cam.max()) <= 0:
        return largest, every
    for index, level in enumerate(_absolute_thresholds(cam, thresholds, relative_to)):
        boxes, sizes = _components(close_mask(cam >= level, close))
        if len(sizes) == 0:
            continue
        largest[index] = boxes[int(np.argmax(sizes))]
        if keep_all:
            every[index] = boxes
    return largest, every


# ------------------------------------------------------------------------ IoU


def iou(a: object, b: object) -> np.ndarray:
    """Row-wise IoU of two (N, 4) box arrays (or two single boxes): (N,).

    Boxes with no area overlap nothing: IoU 0 rather than NaN.
    """
    boxes_a, boxes_b = _as_boxes(a, "a"), _as_boxes(b, "b")
    if boxes_a.shape != boxes_b.shape:
        raise FeatkitError(
            f"iou pairs boxes row by row but got {len(boxes_a)} and {len(boxes_b)} boxes; use iou_matrix for all pairs"
        )
    return _iou_broadcast(boxes_a, boxes_b)


def iou_matrix(a: object, b: object) -> np.ndarray:
    """IoU of every box in ``a`` (N, 4) with every box in ``b`` (M, 4): (N, M)."""
    boxes_a, boxes_b = _as_boxes(a, "a"), _as_boxes(b, "b")
    return _iou_broadcast(boxes_a[:, None, :], boxes_b[None, :, :])


def _iou_broadcast(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    overlap_w = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    overlap_h = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    intersection = overlap_w * overlap_h
    area_a = np.clip(a[..., 2] - a[..., 0], 0, None) * np.clip(a[..., 3] - a[..., 1], 0, None)
    area_b = np.clip(b[..., 2] - b[..., 0], 0, None) * np.clip(b[..., 3] - b[..., 1], 0, None)
    union = area_a + area_b - intersection
    return np.divide(intersection, union, out=np.zeros_like(intersection), where=union > 0)


# -------------------------------------------------------------------- metrics


def _flatten_ground_truth(gt_boxes_list: Sequence[object], n_images: int) -> tuple[np.ndarray, np.ndarray]:
    """All GT boxes (G, 4) and the image each belongs to (G,)."""
    if len(gt_boxes_list) != n_images:
        raise FeatkitError(
            f"got {n_images} predictions but ground truth for {len(gt_boxes_list)} images; pass one entry per image"
        )
    per_image = [_as_boxes(boxes, f"ground-truth boxes of image {i}") for i, boxes in enumerate(gt_boxes_list)]
    empty = [i for i, boxes in enumerate(per_image) if len(boxes) == 0]
    if empty:
        raise FeatkitError(
            f"image {empty[0]} has no ground-truth box ({len(empty)} such images); drop them before scoring localization"
        )
    owner = np.repeat(np.arange(n_images), [len(boxes) for boxes in per_image])
    return np.concatenate(per_image), owner


def localization_accuracy(pred_boxes: object, gt_boxes_list: Sequence[object], iou_thr: float = 0.5) -> float:
    """Fraction of images whose predicted box has IoU >= ``iou_thr`` with ANY of their GT boxes.

    The ILSVRC rule: an image may carry several instances, one good box is enough.
    """
    predictions = _as_boxes(pred_boxes, "pred_boxes")
    gt, owner = _flatten_ground_truth(gt_boxes_list, len(predictions))
    best = np.zeros(len(predictions))
    np.maximum.at(best, owner, iou(predictions[owner], gt))
    return float(np.mean(best >= iou_thr))


@dataclass(frozen=True)
class BoxAccuracy:
    """A threshold sweep: accuracy curves for the plot and the summary numbers.

    Curves are indexed ``[iou threshold, CAM threshold]``. "largest" boxes the
    largest component only (the paper's rule, MaxBoxAcc); "any" counts a hit
    if any component's box hits (MaxBoxAccV2).
    """

    thresholds: np.ndarray
    iou_thresholds: tuple[float, ...]
    curves_largest: np.ndarray
    curves_any: np.ndarray
    max_box_acc: float
    """MaxBoxAcc: best accuracy over CAM thresholds, largest component, IoU >= 0.5."""
    best_threshold: float
    """The CAM threshold that attains ``max_box_acc``."""
    max_box_acc_v2: float
    """MaxBoxAccV2: mean over ``iou_thresholds`` of the best any-component accuracy."""
    best_thresholds_v2: tuple[float, ...]
    """The CAM threshold that attains the best accuracy, per IoU threshold."""
    n_images: int
    normalization: str
    protocol: str = "featkit"
    """'featkit' (:func:`max_box_acc`) or 'wsol' (wsolevaluation's evaluator, :mod:`featkit.cam.wsol`)."""

    def summary(self) -> dict[str, float | int | str | list[float]]:
        """JSON-ready numbers (curves left out)."""
        return {
            "max_box_acc": self.max_box_acc,
            "best_threshold": self.best_threshold,
            "max_box_acc_v2": self.max_box_acc_v2,
            "best_thresholds_v2": list(self.best_thresholds_v2),
            "iou_thresholds": list(self.iou_thresholds),
            "n_images": self.n_images,
            "normalization": self.normalization,
            "protocol": self.protocol,
        }


def max_box_acc(
    cams_norm_list: Sequence[object],
    gt_boxes_list: Sequence[object],
    sizes: Sequence[tuple[int, int]] | None = None,
    thresholds: Sequence[float] | np.ndarray = DEFAULT_SWEEP,
    iou_thrs: Sequence[float] = (0.3, 0.5, 0.7),
    normalization: str = "minmax",
    close: int = 0,
) -> BoxAccuracy:
    """MaxBoxAcc and MaxBoxAccV2 (Choe et al., CVPR 2020) over a CAM-threshold sweep.

    Each CAM is bilinearly upsampled to its image's ``sizes[i] = (W, H)`` when
    its shape differs (``sizes=None``: CAMs are already at image size), then
    normalised (``"minmax"`` in Choe et al.'s protocol) and thresholded with
    ``>=`` at every value of ``thresholds``. MaxBoxAcc takes the largest
    8-connected component's box at IoU 0.5; MaxBoxAccV2 lets any component's
    box hit and averages the best accuracy over ``iou_thrs``. Differences from
    the reference code (OpenCV contours): components are pixel-connected
    regions, the largest is the one with most pixels (not contour polygon
    area), holes give no boxes, and boxes use continuous corners (no +1).
    :mod:`featkit.cam.wsol` follows the reference step by step instead (224 px
    bicubic frame, 8-bit map, contours, ``+1`` IoU) for numbers comparable to
    published WSOL tables. ``close`` closes every thresholded mask as
    :func:`box_from_cam` does (0: not at all, Choe et al.'s protocol).
    """
    n_images = len(cams_norm_list)
    if n_images == 0:
        raise FeatkitError("no CAMs to evaluate; pass at least one image")
    if sizes is not None and len(sizes) != n_images:
        raise FeatkitError(f"got {n_images} CAMs but {len(sizes)} image sizes; pass one (width, height) per CAM")
    sweep = np.asarray(thresholds, dtype=np.float64).reshape(-1)
    if sweep.size == 0:
        raise FeatkitError("thresholds is empty; use e.g. np.arange(0, 1, 0.01)")
    gt, owner = _flatten_ground_truth(gt_boxes_list, n_images)
    gt_start = np.searchsorted(owner, np.arange(n_images + 1))

    best_iou_largest = np.zeros((n_images, sweep.size))
    best_iou_any = np.zeros((n_images, sweep.size))
    for image_index, raw in enumerate(cams_norm_list):
        cam = _as_cam(raw)
        if sizes is not None and (cam.shape[1], cam.shape[0]) != tuple(sizes[image_index]):
            width, height = sizes[image_index]
            cam = upsample(cam, (int(width), int(height)))
        cam = normalize_cam(cam, normalization)
        largest, every = _sweep_boxes(cam, sweep, "absolute", keep_all=True, close=close)
        image_gt = gt[gt_start[image_index] : gt_start[image_index + 1]]
        best_iou_largest[image_index] = iou_matrix(largest, image_gt).max(axis=1)
        # All components at all thresholds against the GT in one matrix, then max per threshold.
        threshold_of_box = np.repeat(np.arange(sweep.size), [len(boxes) for boxes in every])
        any_iou = iou_matrix(np.concatenate(every), image_gt).max(axis=1)
        np.maximum.at(best_iou_any[image_index], threshold_of_box, any_iou)

    return box_accuracy_from_ious(best_iou_largest, best_iou_any, sweep, iou_thrs, normalization)


def box_accuracy_from_ious(
    best_iou_largest: np.ndarray,
    best_iou_any: np.ndarray,
    thresholds: np.ndarray,
    iou_thrs: Sequence[float],
    normalization: str,
    protocol: str = "featkit",
) -> BoxAccuracy:
    """The sweep's curves and maxima from each image's best IoU (n_images, T) at every CAM threshold.

    ``best_iou_largest`` scores the largest component's box, ``best_iou_any``
    the best of all boxes. Both protocols (featkit's and wsolevaluation's,
    :mod:`featkit.cam.wsol`) end here, so a hit is ``IoU >= level`` in both and
    the best threshold is the first one attaining the maximum.
    """
    sweep = np.asarray(thresholds, dtype=np.float64)
    iou_levels = tuple(float(level) for level in iou_thrs)
    levels = np.asarray(iou_levels)[:, None, None]
    curves_largest = (best_iou_largest[None] >= levels).mean(axis=1)
    curves_any = (best_iou_any[None] >= levels).mean(axis=1)
    accuracy_at_half = (best_iou_largest >= 0.5).mean(axis=0)
    best_index = int(np.argmax(accuracy_at_half))
    best_any = curves_any.argmax(axis=1)
    return BoxAccuracy(
        thresholds=sweep,
        iou_thresholds=iou_levels,
        curves_largest=curves_largest,
        curves_any=curves_any,
        max_box_acc=float(accuracy_at_half[best_index]),
        best_threshold=float(sweep[best_index]),
        max_box_acc_v2=float(curves_any.max(axis=1).mean()),
        best_thresholds_v2=tuple(float(sweep[i]) for i in best_any),
        n_images=len(best_iou_largest),
        normalization=normalization,
        protocol=protocol,
    )


# ---------------------------------------------- the authors' released heuristic

CAM_REPO_THRESHOLDS: tuple[int, int, int] = (20, 100, 110)
"""``bbox_threshold`` of the CAM repository's ILSVRC scripts, on the 0..255 map."""


def multi_threshold_boxes(
    cam: object,
    thresholds: Sequence[int] = CAM_REPO_THRESHOLDS,
    erosion_level: int = 10,
    border_margin: int = 5,
    merge_overlap: float = 0.5,
    reproduce_merge_skip: bool = True,
) -> list[Box]:
    """Port of the authors' ILSVRC box generator (``bboxgenerator/dt_box.cpp``).

    This, not the 20 %-of-max rule of the paper's text, is what the released
    code ran for the ILSVRC numbers; it yields several boxes, loose to tight,
    and the scripts scored the first ("bbox1") and the second ("bbox2"). Steps:

    1. the upsampled CAM becomes the 8-bit heatmap the scripts saved:
       ``round(255 * clip(cam / max, 0, 1))`` (MATLAB ``imwrite`` clips);
    2. for each threshold ``t`` in ``thresholds`` (default 20, 100, 110 of 255,
       i.e. about 8 %, 39 % and 43 % of the max), keep pixels ``> t``;
    3. thin parts are shaved off: the Euclidean distance to the background is
       rescaled to 0..255 by its maximum and pixels ``<= erosion_level`` dropped;
    4. each 8-connected component gives a box, clipped so that it ends at
       least ``border_margin`` pixels before the right/bottom edge;
    5. boxes of all thresholds are ranked by area, and a box overlapping an
       earlier one by more than ``merge_overlap`` x the larger area is removed.
       The original loop steps past the box that follows a removed one, so
       e.g. three identical boxes leave two; ``reproduce_merge_skip=False``
       checks every pair instead (plain greedy suppression).

    Returns the surviving boxes, largest first (empty if the map is <= 0
    everywhere). Left out: the JPEG round trip of the saved heatmap and boxes
    of contour holes, which the OpenCV version also emits.
    """
    array = _as_cam(cam)
    height, width = array.shape
    peak = float(array.max())
    if peak <= 0:
        return []
    heatmap = np.floor(np.clip(array / peak, 0.0, 1.0) * 255.0 + 0.5)

    candidates: list[tuple[int, int, int, int]] = []  # (x, y, w, h) as the C++ code keeps them
    for level in thresholds:
        foreground = heatmap > level
        if not foreground.any():
            continue
        if not foreground.all():
            distance = ndimage.distance_transform_edt(foreground)
            scaled = np.floor(distance * (255.0 / distance.max()) + 0.5)
            foreground = scaled > erosion_level
        boxes, _ = _components(foreground)
        for x0, y0, x1, y1 in boxes.astype(int):
            box_w, box_h = x1 - x0, y1 - y0
            candidates.append(
                (
                    int(np.clip(x0, 0, width - border_margin)),
                    int(np.clip(y0, 0, height - border_margin)),
                    int(np.clip(box_w, 0, width - x0 - border_margin)),
                    int(np.clip(box_h, 0, height - y0 - border_margin)),
                )
            )

    candidates.sort(key=lambda box: box[2] * box[3], reverse=True)
    kept = _merge_like_dt_box(candidates, merge_overlap, reproduce_merge_skip)
    return [(float(x), float(y), float(x + w), float(y + h)) for x, y, w, h in kept]


def _merge_like_dt_box(
    boxes: list[tuple[int, int, int, int]], merge_overlap: float, skip_after_removal: bool
) -> list[tuple[int, int, int, int]]:
    """dt_box.cpp's ``mergeBBox``; with ``skip_after_removal`` j still advances after an erase, as there."""
    boxes = list(boxes)
    i = 0
    while i < len(boxes):
        j = i + 1
        while j < len(boxes):
            if _big_overlap(boxes[i], boxes[j], merge_overlap):
                del boxes[j]
                if not skip_after_removal:
                    continue
            j += 1
        i += 1
    return boxes


def _big_overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int], merge_overlap: float) -> bool:
    limit = int(max(a[2] * a[3], b[2] * b[3]) * merge_overlap)
    overlap_w = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    overlap_h = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    return overlap_w * overlap_h > limit
