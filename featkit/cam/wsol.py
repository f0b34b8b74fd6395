"""MaxBoxAcc / MaxBoxAccV2 exactly as clovaai/wsolevaluation scores them (Choe et al., CVPR 2020).

WSOL papers report box accuracies computed by that evaluator, and featkit's own
sweep (:func:`featkit.cam.boxes.max_box_acc`: CAM bilinearly upsampled to the
original image, float thresholds with ``>=``, pixel-connected components,
continuous-corner IoU) lands 1-3 points away from it on the same CAMs. This
module follows the published algorithm step by step instead, so numbers can be
put next to published tables (``localize(..., protocol="wsol")``):

1. the CAM of the whole image is resized to the evaluator's 224 x 224 frame
   with bicubic interpolation (OpenCV ``INTER_CUBIC``, in float64), whatever
   the image's aspect ratio: the test images are warped to 224 x 224 there
   too. The CAM is the raw map (h, w) when it covers the whole image (warp;
   short-side with its NaN padding trimmed); a crop map covers only the
   centre square, so it is first placed there at the original size, as the
   featkit sweep places it (:meth:`featkit.cam.boxer.CamBoxer.in_frame`);
2. it is min-max normalised (a constant or NaN map becomes all zeros) and
   quantised to 8 bits by truncation, ``uint8(255 * map)``;
3. a CAM threshold ``t`` of the sweep ``0, i, 2i, ... < 1`` (``i`` the
   ``cam_curve_interval``, 0.01 by default; the evaluator's own default is
   0.001) becomes the 8-bit level ``int(t * max)`` and pixels STRICTLY above
   it are foreground;
4. OpenCV contours of the foreground (``RETR_TREE``, so the inner boundaries
   of holes count too) each give their bounding rectangle as a box
   ``(x, y, min(x + w, 223), min(y + h, 223))``; no contour gives the box
   ``(0, 0, 0, 0)``;
5. ground-truth boxes are mapped to the frame coordinate by coordinate,
   ``int(x * 224 / W)``, and IoU counts inclusive pixels (``+1`` on widths
   and heights);
6. MaxBoxAcc: the box of the largest contour (polygon area, first one on
   ties) must reach IoU >= 0.5 with some GT box; best accuracy over ``t``.
   MaxBoxAccV2: every contour's box may hit (multi-contour evaluation), the
   best accuracy over ``t`` is taken separately at IoU 0.3, 0.5 and 0.7, and
   the three are averaged.

Both maxima are over CAM thresholds on the very images scored: that is the
metric's definition (it measures the best any threshold could do), not a
choice of featkit. The reported "best" thresholds are the first ``t`` that
attains each maximum.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from featkit.cam.boxes import BoxAccuracy, box_accuracy_from_ious, iou_matrix
from featkit.errors import FeatkitError

WSOL_FRAME = 224
"""Side of the square frame the evaluator scores in (its resize length)."""

WSOL_IOUS: tuple[float, ...] = (0.3, 0.5, 0.7)
"""IoU thresholds of MaxBoxAccV2."""

PROTOCOLS: tuple[str, ...] = ("featkit", "wsol")
"""Sweep protocols of :func:`featkit.cam.localization.localize`."""


MIN_CURVE_INTERVAL = 0.001
"""Finest threshold step (wsolevaluation's own finest; an 8-bit map has only 256 levels anyway)."""


def wsol_thresholds(cam_curve_interval: float = 0.01) -> np.ndarray:
    """The sweep's CAM thresholds ``0, i, 2i, ... < 1`` (numpy ``arange``, as the evaluator builds them)."""
    if not MIN_CURVE_INTERVAL <= cam_curve_interval < 1.0:
        raise FeatkitError(
            f"cam_curve_interval must be in [{MIN_CURVE_INTERVAL:g}, 1), got {cam_curve_interval}; wsolevaluation "
            "uses 0.01 or 0.001"
        )
    return np.arange(0, 1, cam_curve_interval)


def wsol_scoremap(cam: np.ndarray, frame: int = WSOL_FRAME) -> np.ndarray:
    """The 8-bit score map (frame, frame) of one raw CAM (h, w): bicubic resize, min-max, truncation."""
    array = np.asarray(cam, dtype=np.float64)
    if array.ndim != 2 or array.size == 0:
        raise FeatkitError(f"expected one raw CAM (h, w), got shape {array.shape}; pass the class's map of one image")
    resized = cv2.resize(array, (frame, frame), interpolation=cv2.INTER_CUBIC)
    if np.isnan(resized).any():
        return np.zeros((frame, frame), dtype=np.uint8)
    low, high = float(resized.min()), float(resized.max())
    if low == high:
        return np.zeros((frame, frame), dtype=np.uint8)
    scaled = (resized - low) / (high - low)
    return (scaled * 255).astype(np.uint8)


def wsol_gt_boxes(boxes: object, size: tuple[int, int], frame: int = WSOL_FRAME) -> np.ndarray:
    """GT boxes (G, 4) of an image of ``size = (W, H)`` in frame pixels: ``int(coordinate * frame / side)``."""
    array = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    width, height = float(size[0]), float(size[1])
    sides = np.array([width, height, width, height])
    # (coordinate * frame) / side, in this order, then truncation: the evaluator's arithmetic.
    return np.trunc(array * float(frame) / sides).astype(np.int64)


def contour_boxes(scoremap: np.ndarray, level: int) -> tuple[np.ndarray, int]:
    """Boxes (M, 4) of every contour of ``scoremap > level`` and the index of the largest contour.

    Boxes are inclusive pixel corners clipped to the map. Holes have contours
    of their own (``RETR_TREE``). No foreground gives one box ``(0, 0, 0, 0)``.
    """
    height, width = scoremap.shape
    foreground = (scoremap > level).astype(np.uint8)
    contours, _ = cv2.findContours(foreground, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)
    if len(contours) == 0:
        return np.zeros((1, 4), dtype=np.int64), 0
    boxes = np.empty((len(contours), 4), dtype=np.int64)
    areas = np.empty(len(contours))
    for index, contour in enumerate(contours):
        x, y, w, h = cv2.boundingRect(contour)
        boxes[index] = (x, y, min(x + w, width - 1), min(y + h, height - 1))
        areas[index] = cv2.contourArea(contour)
    return boxes, int(np.argmax(areas))


def inclusive_iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU (N, M) of integer boxes whose corners are inclusive pixels (area ``(x1 - x0 + 1) * (y1 - y0 + 1)``).

    Inclusive corners ``x1`` are the continuous corner ``x1 + 1``, so this is
    featkit's IoU on shifted boxes; the same integers give the same quotient.
    """
    shift = np.array([0, 0, 1, 1], dtype=np.float64)
    return iou_matrix(np.asarray(a, dtype=np.float64) + shift, np.asarray(b, dtype=np.float64) + shift)


class WsolBoxEvaluator:
    """Accumulates images one by one, then gives MaxBoxAcc / MaxBoxAccV2 by the wsolevaluation protocol.

    ``accumulate(cam, gt_boxes, size)`` takes the CAM of the scored class over
    the WHOLE image (the raw (h, w) map, or a crop map placed on its frame:
    :meth:`~featkit.cam.boxer.CamBoxer.in_frame`), the image's GT boxes in original pixels
    and its original ``(W, H)``; :meth:`compute` returns a
    :class:`~featkit.cam.boxes.BoxAccuracy` whose "largest" curves are the
    largest-contour accuracies (MaxBoxAcc) and "any" curves the multi-contour
    ones (MaxBoxAccV2), with ``protocol="wsol"``.
    """

    def __init__(
        self,
        cam_curve_interval: float = 0.01,
        iou_thresholds: Sequence[float] = WSOL_IOUS,
        frame: int = WSOL_FRAME,
    ) -> None:
        if frame < 2:
            raise FeatkitError(f"frame must be at least 2 pixels, got {frame}; wsolevaluation uses 224")
        self.thresholds = wsol_thresholds(cam_curve_interval)
        self.cam_curve_interval = float(cam_curve_interval)
        self.iou_thresholds = tuple(float(v) for v in iou_thresholds)
        self.frame = int(frame)
        self._largest: list[np.ndarray] = []
        self._any: list[np.ndarray] = []

    def accumulate(self, cam: np.ndarray, gt_boxes: object, size: tuple[int, int]) -> None:
        """Score one image's CAM at every threshold of the sweep."""
        gts = wsol_gt_boxes(gt_boxes, size, self.frame)
        if len(gts) == 0:
            raise FeatkitError("an image without ground-truth boxes cannot be scored; drop it before accumulate")
        scoremap = wsol_scoremap(cam, self.frame)
        peak = int(scoremap.max())
        levels = np.array([int(float(t) * peak) for t in self.thresholds])
        # Many thresholds share one 8-bit level: contour each level once, score all boxes in one IoU matrix.
        distinct, level_of_threshold = np.unique(levels, return_inverse=True)
        boxes, owner, largest, offset = [], [], [], 0
        for index, level in enumerate(distinct):
            level_boxes, level_largest = contour_boxes(scoremap, int(level))
            largest.append(offset + level_largest)
            offset += len(level_boxes)
            boxes.append(level_boxes)
            owner.append(np.full(len(level_boxes), index))
        ious = inclusive_iou_matrix(np.concatenate(boxes), gts).max(axis=1)
        best_any = np.zeros(len(distinct))
        np.maximum.at(best_any, np.concatenate(owner), ious)
        self._largest.append(ious[np.array(largest)][level_of_threshold])
        self._any.append(best_any[level_of_threshold])

    @property
    def n_images(self) -> int:
        return len(self._largest)

    def compute(self) -> BoxAccuracy:
        """MaxBoxAcc (IoU 0.5, largest contour) and MaxBoxAccV2 (mean over the IoU thresholds, any contour)."""
        if not self._largest:
            raise FeatkitError("no image was accumulated; call accumulate(cam, gt_boxes, size) first")
        return box_accuracy_from_ious(
            np.stack(self._largest),
            np.stack(self._any),
            self.thresholds,
            self.iou_thresholds,
            normalization="minmax",
            protocol="wsol",
        )


def wsol_max_box_acc(
    cams: Sequence[np.ndarray],
    gt_boxes_list: Sequence[object],
    sizes: Sequence[tuple[int, int]],
    cam_curve_interval: float = 0.01,
    iou_thresholds: Sequence[float] = WSOL_IOUS,
) -> BoxAccuracy:
    """MaxBoxAcc / MaxBoxAccV2 of raw CAMs by the wsolevaluation protocol (see the module docstring)."""
    if not len(cams) == len(gt_boxes_list) == len(sizes):
        raise FeatkitError(
            f"got {len(cams)} CAMs, {len(gt_boxes_list)} GT box lists and {len(sizes)} sizes; pass one of each per image"
        )
    evaluator = WsolBoxEvaluator(cam_curve_interval, iou_thresholds)
    for cam, gts, size in zip(cams, gt_boxes_list, sizes):
        evaluator.accumulate(cam, gts, size)
    return evaluator.compute()
