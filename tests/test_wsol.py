"""``protocol="wsol"`` against a reference written here from clovaai/wsolevaluation's published algorithm.

The reference below is deliberately plain: per image and per threshold it
thresholds the 8-bit map with ``cv2.threshold``, takes ``cv2.findContours``,
picks the largest contour with Python's ``max`` and scores boxes with a
pixel-counting IoU loop, then counts hits per IoU threshold as the
evaluator does. It shares nothing with featkit.cam.wsol but OpenCV itself.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from featkit.cam.wsol import (
    WsolBoxEvaluator,
    inclusive_iou_matrix,
    wsol_gt_boxes,
    wsol_max_box_acc,
    wsol_scoremap,
    wsol_thresholds,
)
from featkit.errors import FeatkitError

# ------------------------------------------------------------- the reference


def reference_iou(a: list[int], b: list[int]) -> float:
    """IoU of two boxes with inclusive pixel corners, as the published evaluator defines it."""
    width = min(a[2], b[2]) - max(a[0], b[0]) + 1
    height = min(a[3], b[3]) - max(a[1], b[1]) + 1
    intersection = max(0, width) * max(0, height)
    area_a = (a[2] - a[0] + 1) * (a[3] - a[1] + 1)
    area_b = (b[2] - b[0] + 1) * (b[3] - b[1] + 1)
    union = area_a + area_b - intersection
    return 0.0 if union <= 0 else intersection / union


def reference_scores(cams, gt_boxes_list, sizes, interval=0.01, ious=(30, 50, 70), side=224):
    """(MaxBoxAcc %, MaxBoxAccV2 %, accuracy % per [IoU][threshold] largest, same for all contours)."""
    thresholds = list(np.arange(0, 1, interval))
    hits_largest = {iou: [0] * len(thresholds) for iou in ious}
    hits_all = {iou: [0] * len(thresholds) for iou in ious}
    for cam, gts, (image_w, image_h) in zip(cams, gt_boxes_list, sizes):
        resized = cv2.resize(np.asarray(cam).astype(np.float64), (side, side), interpolation=cv2.INTER_CUBIC)
        if np.isnan(resized).any() or resized.min() == resized.max():
            resized = np.zeros_like(resized)
        else:
            resized -= resized.min()
            resized /= resized.max()
        gray = (resized * 255).astype(np.uint8)
        frame_gts = [[int(float(v) * side / float(s)) for v, s in zip(box, (image_w, image_h, image_w, image_h))]
                     for box in gts]
        for k, threshold in enumerate(thresholds):
            _, binary = cv2.threshold(gray, int(threshold * np.max(gray)), 255, cv2.THRESH_TOZERO)
            contours = cv2.findContours(binary, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[0]
            if len(contours) == 0:
                boxes, largest = [[0, 0, 0, 0]], [0, 0, 0, 0]
            else:
                boxes = []
                for contour in contours:
                    x, y, w, h = cv2.boundingRect(contour)
                    boxes.append([x, y, min(x + w, side - 1), min(y + h, side - 1)])
                biggest = max(contours, key=cv2.contourArea)
                largest = boxes[[c is biggest for c in contours].index(True)]
            best_largest = max(reference_iou(largest, gt) for gt in frame_gts)
            best_all = max(reference_iou(box, gt) for box in boxes for gt in frame_gts)
            for iou in ious:
                hits_largest[iou][k] += best_largest >= iou / 100
                hits_all[iou][k] += best_all >= iou / 100
    n = len(cams)
    curves_largest = {iou: [100.0 * h / n for h in hits_largest[iou]] for iou in ious}
    curves_all = {iou: [100.0 * h / n for h in hits_all[iou]] for iou in ious}
    box_acc = max(curves_largest[50])
    box_acc_v2 = sum(max(curves_all[iou]) for iou in ious) / len(ious)
    return box_acc, box_acc_v2, curves_largest, curves_all


# --------------------------------------------------------- synthetic CAMs


def synthetic_set(seed: int, count: int):
    """Raw CAMs at feature-map size with blobs, rings (holes), mirrored twins (ties), plateaus and flat maps,
    for non-square images with 1-3 GT boxes (fractional corners, some on the image border)."""
    rng = np.random.default_rng(seed)
    cams, gts, sizes = [], [], []
    shapes = [(7, 7), (14, 14), (7, 10), (10, 7), (8, 12)]
    for index in range(count):
        h, w = shapes[index % len(shapes)]
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
        kind = index % 6
        cam = rng.normal(0, 0.05, (h, w))
        if kind in (0, 1):  # several blobs, some negative
            for _ in range(rng.integers(1, 4)):
                cy, cx, s = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(0.7, 2.5)
                cam += rng.uniform(-0.5, 1.5) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
        elif kind == 2:  # a ring: its hole has a contour of its own
            radius = np.hypot(yy - (h - 1) / 2, xx - (w - 1) / 2)
            cam += np.exp(-((radius - min(h, w) / 3) ** 2) / 0.8)
        elif kind == 3:  # mirrored twins: equally large contours
            cam = np.exp(-((yy - h / 2) ** 2 + (xx - w / 4) ** 2) / 2.0)
            cam = cam + cam[:, ::-1]
        elif kind == 4:  # plateaus: few distinct values, many ties at a level
            cam = np.round(np.exp(-((yy - h / 3) ** 2 + (xx - w / 2) ** 2) / 6.0) * 4) / 4
        else:  # flat map (no evidence) or a strong corner
            cam = np.full((h, w), 0.3) if index % 12 == 5 else np.exp(-(yy**2 + xx**2) / 8.0)
        width, height = int(rng.integers(80, 600)), int(rng.integers(80, 600))
        boxes = []
        for _ in range(rng.integers(1, 4)):
            x0, x1 = sorted(rng.uniform(0, width, 2))
            y0, y1 = sorted(rng.uniform(0, height, 2))
            if rng.random() < 0.25:
                x1, y1 = float(width), float(height)
            boxes.append((round(x0, 1), round(y0, 1), round(x1, 1), round(y1, 1)))
        cams.append(cam.astype(np.float32))
        gts.append(np.array(boxes))
        sizes.append((width, height))
    return cams, gts, sizes


@pytest.mark.parametrize(("seed", "count", "interval"), [(0, 48, 0.01), (1, 24, 0.01), (2, 6, 0.001)])
def test_wsol_protocol_equals_the_reference(seed: int, count: int, interval: float) -> None:
    cams, gts, sizes = synthetic_set(seed, count)
    box_acc, box_acc_v2, largest, every = reference_scores(cams, gts, sizes, interval)
    result = wsol_max_box_acc(cams, gts, sizes, cam_curve_interval=interval)
    assert result.protocol == "wsol" and result.n_images == count
    assert abs(100 * result.max_box_acc - box_acc) <= 0.1
    assert abs(100 * result.max_box_acc_v2 - box_acc_v2) <= 0.1
    for row, iou in enumerate((30, 50, 70)):
        np.testing.assert_allclose(100 * result.curves_largest[row], largest[iou], atol=1e-9)
        np.testing.assert_allclose(100 * result.curves_any[row], every[iou], atol=1e-9)
    # The set is not trivial: neither score is 0 or 100, and the curves move with the threshold.
    assert 0 < box_acc < 100 and 0 < box_acc_v2 < 100 and len(set(every[50])) > 3


# ------------------------------------------------------- known by hand


def two_squares() -> np.ndarray:
    """224 x 224 map (the frame size, so the resize is the identity): square A = 1.0, smaller B = 0.5."""
    cam = np.zeros((224, 224))
    cam[20:100, 20:100] = 1.0  # pixels 20..99: box (20, 20, 100, 100) with the evaluator's x + w corner
    cam[150:190, 150:190] = 0.5  # 8-bit value int(127.5) = 127
    return cam


def test_known_answer_two_squares() -> None:
    # Images of 448 x 448: GT corners halve. Image 0's GT is B, image 1's is A.
    gts = [[(300, 300, 380, 380)], [(40, 40, 200, 200)]]
    result = wsol_max_box_acc([two_squares(), two_squares()], gts, [(448, 448)] * 2)
    half = result.iou_thresholds.index(0.5)
    # Largest contour is always A: image 1 hits at every threshold, image 0 never.
    assert result.max_box_acc == 0.5 and result.best_threshold == 0.0
    np.testing.assert_array_equal(result.curves_largest[half], 0.5)
    # Any contour: B is foreground while its 127 is STRICTLY above int(t * 255): t <= 0.49 (level 124), not 0.50.
    thresholds = list(np.round(result.thresholds, 2))
    assert result.curves_any[half][thresholds.index(0.49)] == 1.0
    assert result.curves_any[half][thresholds.index(0.5)] == 0.5
    assert result.max_box_acc_v2 == 1.0 and result.best_thresholds_v2 == (0.0, 0.0, 0.0)
    assert reference_scores([two_squares()] * 2, gts, [(448, 448)] * 2)[:2] == (50.0, 100.0)


def test_known_answer_hole_and_inclusive_iou() -> None:
    cam = np.zeros((224, 224))
    cam[40:160, 40:160] = 1.0
    cam[80:120, 80:120] = 0.0  # a hole of pixels 80..119
    # The hole's contour runs on the ring pixels around it (79..120): box (79, 79, 121, 121).
    result = wsol_max_box_acc([cam], [[(79, 79, 121, 121)]], [(224, 224)], iou_thresholds=(0.5, 0.99))
    assert result.max_box_acc == 0.0  # the largest contour is the outer one, (40, 40, 160, 160)
    assert result.max_box_acc_v2 == 1.0  # the hole's box matches exactly, even at IoU 0.99
    # +1 areas: (0, 0, 1, 1) covers 4 pixels, (1, 1, 2, 2) overlaps it in one: IoU 1/7.
    assert inclusive_iou_matrix(np.array([[0, 0, 1, 1]]), np.array([[1, 1, 2, 2]]))[0, 0] == pytest.approx(1 / 7)
    assert reference_iou([0, 0, 1, 1], [1, 1, 2, 2]) == pytest.approx(1 / 7)


def test_frame_mapping_and_quantisation() -> None:
    # GT corners: int(x * 224 / W) coordinate by coordinate, on a non-square image.
    np.testing.assert_array_equal(wsol_gt_boxes([(60, 27, 385, 331)], (500, 335)), [[26, 18, 172, 221]])
    flat = wsol_scoremap(np.full((7, 7), 2.5))
    assert flat.dtype == np.uint8 and flat.shape == (224, 224) and not flat.any()
    nan = np.ones((7, 7))
    nan[3, 3] = math.nan
    assert not wsol_scoremap(nan).any()
    ramp = wsol_scoremap(np.linspace(0, 1, 224 * 224).reshape(224, 224))
    assert ramp.max() == 255 and ramp.min() == 0
    # A flat map has no contour: the (0, 0, 0, 0) box, one pixel, hits a one-pixel GT box at the origin.
    result = wsol_max_box_acc([np.zeros((7, 7))], [[(0, 0, 0, 0)]], [(224, 224)])
    assert result.max_box_acc == 1.0
    assert len(wsol_thresholds(0.001)) == 1000 and len(wsol_thresholds()) == 100


def test_wsol_errors_name_the_keyword() -> None:
    with pytest.raises(FeatkitError, match="cam_curve_interval"):
        WsolBoxEvaluator(cam_curve_interval=0.0)
    with pytest.raises(FeatkitError, match="accumulate"):
        WsolBoxEvaluator().compute()
    with pytest.raises(FeatkitError, match="one of each per image"):
        wsol_max_box_acc([np.zeros((7, 7))], [], [(10, 10)])


# ------------------------------------------- through localize, on crop and short-side files


def _blob_maps(rng: np.random.Generator, n: int, k: int, h: int, w: int) -> np.ndarray:
    """(n, k, h, w) maps: a few Gaussian blobs per channel on noise (so boxes depend on the threshold)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    maps = rng.normal(0, 0.05, (n, k, h, w))
    for i in range(n):
        for c in range(k):
            for _ in range(rng.integers(1, 3)):
                cy, cx, s = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(0.8, 2.2)
                maps[i, c] += rng.uniform(0.2, 1.5) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
    return maps.astype(np.float32)


def _file_of(tmp_path, resize: str, maps: np.ndarray, sizes: np.ndarray, boxes: list) -> object:
    """A features file of ``resize`` geometry holding ``maps`` (rows all 'test', classes a/b alternating)."""
    import h5py
    from conftest import write_features

    n = len(maps)
    gap = np.nan_to_num(maps).mean(axis=(2, 3))
    path = write_features(tmp_path / f"{resize}.h5", gap, np.arange(n) % 2, ["test"] * n, ["a", "b"], maps=maps,
                          boxes=[tuple(map(tuple, b)) for b in boxes], sizes=sizes)
    with h5py.File(path, "r+") as h5:
        h5.attrs["resize"] = resize
    return path


def _localized(path, weight: np.ndarray):
    from featkit.cam import localize
    from featkit.features import FeatureFile
    from featkit.linear import LinearClassifier

    classifier = LinearClassifier(weight.astype(np.float64), np.zeros(2), ["a", "b"], "none", "weights")
    with FeatureFile(path) as features:
        return localize(features, classifier, np.arange(len(features)), protocol="wsol")


def _stored_cams(path, weight: np.ndarray) -> list[np.ndarray]:
    """Each image's raw CAM of its true class, from the file's own float16 maps (read with h5py)."""
    import h5py

    with h5py.File(path) as h5:
        maps = h5["features/maps"][:].astype(np.float32)
        labels = h5["images/label"][:]
    return [np.tensordot(weight[int(c)].astype(np.float32), m, axes=1) for m, c in zip(maps, labels)]


def _assert_same_sweep(result, reference) -> None:
    box_acc, box_acc_v2, largest, every = reference
    assert abs(100 * result.max_box_acc - box_acc) <= 1e-6 and abs(100 * result.max_box_acc_v2 - box_acc_v2) <= 1e-6
    for row, iou in enumerate((30, 50, 70)):
        np.testing.assert_allclose(100 * result.curves_largest[row], largest[iou], atol=1e-6)
        np.testing.assert_allclose(100 * result.curves_any[row], every[iou], atol=1e-6)
    assert 0 < box_acc < 100 and 0 < box_acc_v2 < 100


def _peak_boxes(maps: np.ndarray, weight: np.ndarray, sizes: np.ndarray, frames: list) -> list:
    """One GT box per image around its true class's CAM peak (a few cells wide), so hits depend on the threshold."""
    boxes = []
    for i, ((width, height), (x0, y0, x1, y1)) in enumerate(zip(sizes, frames)):
        valid_w = int((~np.isnan(maps[i, 0])).all(axis=0).sum())
        cam = np.tensordot(weight[i % 2], maps[i, :, :, :valid_w], axes=1)
        r, c = np.unravel_index(int(np.argmax(cam)), cam.shape)
        cell_w, cell_h = (x1 - x0) / valid_w, (y1 - y0) / cam.shape[0]
        boxes.append([(max(0.0, x0 + (c - 1.3) * cell_w), max(0.0, y0 + (r - 1.6) * cell_h),
                       min(float(width), x0 + (c + 2.2) * cell_w), min(float(height), y0 + (r + 1.9) * cell_h))])
    return boxes


def test_wsol_on_a_crop_file_scores_the_map_placed_on_its_centre_square(tmp_path) -> None:
    """The reference places each raw CAM on the centre square itself (cv2 bilinear onto the square, the rest of
    the image at min(CAM min, 0), no evidence), then runs wsolevaluation's procedure on the whole image."""
    rng = np.random.default_rng(3)
    # Short sides that are multiples of 256 / 224's denominator: the centre square has whole-pixel corners.
    sizes = np.array([(256, 320), (320, 256), (256, 384), (400, 320), (320, 480), (512, 256)] * 2, np.int32)
    maps, weight = _blob_maps(rng, len(sizes), 3, 7, 7), rng.normal(0, 1, (2, 3))
    centre = [((w - min(w, h) * 7 / 8) / 2, (h - min(w, h) * 7 / 8) / 2) for w, h in sizes]
    boxes = _peak_boxes(maps, weight, sizes, [(x, y, x + min(w, h) * 7 / 8, y + min(w, h) * 7 / 8)
                                              for (x, y), (w, h) in zip(centre, sizes)])
    path = _file_of(tmp_path, "crop", maps, sizes, boxes)
    placed = []
    for cam, (width, height) in zip(_stored_cams(path, weight), sizes):
        side = min(width, height) * 224 // 256
        x0, y0 = (width - side) // 2, (height - side) // 2
        whole = np.full((height, width), min(float(cam.min()), 0.0), np.float32)
        whole[y0 : y0 + side, x0 : x0 + side] = cv2.resize(cam, (side, side), interpolation=cv2.INTER_LINEAR)
        placed.append(whole)
    report = _localized(path, weight)
    assert report.summary["sweep_protocol"] == "wsol" and report.curves is not None
    assert "Input geometry: crop: only the centre square (87.5 % of the short side) is seen; no box can leave " \
        "that square" in report.to_markdown()
    _assert_same_sweep(report.curves, reference_scores(placed, boxes, [tuple(s) for s in sizes]))


def test_wsol_on_a_short_side_file_scores_the_map_without_its_padding(tmp_path) -> None:
    """Short-side maps are stored top-left in a NaN-padded canvas: the reference cuts each to its own width."""
    rng = np.random.default_rng(4)
    widths = [7, 10, 14, 9, 12, 7, 14, 11, 8, 13]
    maps = _blob_maps(rng, len(widths), 3, 7, 14)
    for i, w in enumerate(widths):
        maps[i, :, :, w:] = np.nan
    sizes = np.array([(32 * w, 224) for w in widths], np.int32)
    weight = rng.normal(0, 1, (2, 3))
    boxes = _peak_boxes(maps, weight, sizes, [(0, 0, w, h) for w, h in sizes])
    path = _file_of(tmp_path, "short-side", maps, sizes, boxes)
    cams = [cam[:, :w] for cam, w in zip(_stored_cams(path, weight), widths)]
    report = _localized(path, weight)
    assert report.curves is not None and "boxes can reach every border" in report.summary["geometry"]
    _assert_same_sweep(report.curves, reference_scores(cams, boxes, [tuple(s) for s in sizes]))
