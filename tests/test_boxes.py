"""Box extraction, IoU and localization metrics on maps whose answers are known by hand."""

from __future__ import annotations

import numpy as np
import pytest

from featkit.cam.boxes import (
    BoxAccuracy,
    box_from_cam,
    boxes_from_cams,
    center_box,
    full_image_box,
    iou,
    iou_matrix,
    localization_accuracy,
    max_box_acc,
    multi_threshold_boxes,
)
from featkit.cam.maps import class_activation_maps, upsample
from featkit.errors import FeatkitError

# Golden setup: unit 2 lit on cells rows 3..7, cols 5..10 of a 14 x 14 grid; 224 px image, 16 px cells.
LIT_ROWS, LIT_COLS, CELL = slice(3, 8), slice(5, 11), 16
CELL_BOX = (5 * CELL, 3 * CELL, 11 * CELL, 8 * CELL)  # (80, 48, 176, 128)


def golden_cam() -> np.ndarray:
    maps = np.zeros((1, 4, 14, 14), dtype=np.float32)
    maps[0, 2, LIT_ROWS, LIT_COLS] = 1.0
    weight = np.eye(4, dtype=np.float32)  # class c reads unit c only
    return class_activation_maps(maps, weight, classes=np.array([2]))[0, 0]


def test_golden_box_nearest_is_exactly_the_lit_cells():
    cam = upsample(golden_cam(), (224, 224), mode="nearest")
    box = box_from_cam(cam, threshold=0.2)
    assert box == CELL_BOX
    assert iou(box, CELL_BOX)[0] == 1.0


def test_golden_box_bilinear_grows_five_pixels_each_side():
    # align_corners=False: output pixel i reads source s = (i + 0.5) / 16 - 0.5. Outside the lit cells
    # the value ramps linearly to 0 one cell away, so value >= 0.2 <=> s >= c0 - 0.8 on the left, i.e.
    # i >= 16 * c0 - 5.3 -> first pixel 16 * c0 - 5; symmetrically the last pixel is 16 * (c1 + 1) + 4.
    # The 2-D value is the product of the 1-D ramps, so corners are cut but the extreme rows and
    # columns (where the other factor is 1) still reach these bounds.
    cam = upsample(golden_cam(), (224, 224))
    box = box_from_cam(cam, threshold=0.2)
    assert box == (80 - 5, 48 - 5, 176 + 5, 128 + 5)
    # At 0.5 the ramp crosses half-way between cell centres, i.e. on the cell edge itself:
    # s >= c0 - 0.5 <=> i >= 16 * c0 - 0.5, so the box is exactly the lit cells.
    assert box_from_cam(cam, threshold=0.5) == CELL_BOX


def test_lit_region_at_the_border_is_clamped_to_the_image():
    maps = np.zeros((1, 1, 14, 14), dtype=np.float32)
    maps[0, 0, 0:4, 10:14] = 1.0
    cam = upsample(class_activation_maps(maps, np.ones((1, 1)))[0, 0], (224, 224))
    assert box_from_cam(cam) == (160 - 5, 0, 224, 64 + 5)


def test_non_square_image_box_in_original_pixels():
    cam = np.zeros((2, 4), dtype=np.float32)
    cam[1, 2] = 1.0
    box = box_from_cam(upsample(cam, (400, 100), mode="nearest"))  # cells are 100 x 50 px
    assert box == (200, 50, 300, 100)


def test_largest_component_wins():
    cam = np.zeros((20, 30), dtype=np.float32)
    cam[2:5, 2:5] = 1.0  # 9 px, brighter
    cam[10:16, 12:20] = 0.5  # 48 px
    assert box_from_cam(cam, 0.2) == (12, 10, 20, 16)


def test_diagonal_pixels_join_one_component():
    cam = np.zeros((10, 10), dtype=np.float32)
    cam[1, 1] = cam[2, 2] = cam[3, 3] = 1.0  # a diagonal chain, 3 px, 8-connected
    cam[6, 6] = cam[6, 7] = 1.0  # 2 px
    assert box_from_cam(cam) == (1, 1, 4, 4)


def test_no_evidence_gives_full_image():
    assert box_from_cam(np.zeros((5, 7))) == full_image_box((7, 5)) == (0, 0, 7, 5)
    assert box_from_cam(-np.ones((5, 7))) == (0, 0, 7, 5)


def test_boxes_from_cams_sweep_matches_single_calls():
    rng = np.random.default_rng(1)
    cam = upsample(rng.random((7, 7)).astype(np.float32), (56, 48))
    thresholds = np.array([0.0, 0.3, 0.6, 0.9])
    sweep = boxes_from_cams(cam, thresholds)
    assert sweep.shape == (4, 4)
    for row, level in zip(sweep, thresholds):
        assert tuple(row) == box_from_cam(cam, level)
    assert tuple(sweep[0]) == (0, 0, 56, 48)
    assert boxes_from_cams(np.stack([cam, cam]), thresholds).shape == (2, 4, 4)


def test_iou_hand_computed():
    a = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 0, 5]], dtype=float)
    b = np.array([[5, 0, 15, 10], [0, 0, 10, 10], [20, 20, 30, 30], [0, 0, 0, 5]], dtype=float)
    np.testing.assert_allclose(iou(a, b), [50 / 150, 1.0, 0.0, 0.0])
    assert iou((0, 0, 4, 4), (2, 2, 6, 6))[0] == pytest.approx(4 / 28)
    matrix = iou_matrix(a[:2], b)
    assert matrix.shape == (2, 4)
    np.testing.assert_allclose(matrix[0], [50 / 150, 1.0, 0.0, 0.0])
    with pytest.raises(FeatkitError, match="iou_matrix"):
        iou(a, b[:2])


def test_localization_accuracy_counts_any_gt_box():
    predictions = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]], dtype=float)
    ground_truth = [
        [(50, 50, 60, 60), (0, 0, 10, 10)],  # second instance matches
        [(0, 0, 10, 20)],  # IoU exactly 0.5: a hit
        [(5, 5, 15, 15), (40, 40, 41, 41)],  # best IoU 25/175: a miss
    ]
    assert localization_accuracy(predictions, ground_truth) == pytest.approx(2 / 3)
    assert localization_accuracy(predictions, ground_truth, iou_thr=0.1) == pytest.approx(1.0)
    with pytest.raises(FeatkitError, match="no ground-truth"):
        localization_accuracy(predictions, [[(0, 0, 1, 1)], [], [(0, 0, 1, 1)]])


def test_baselines():
    assert full_image_box((640, 480)) == (0, 0, 640, 480)
    x0, y0, x1, y1 = center_box((640, 480))
    assert (x1 - x0) * (y1 - y0) == pytest.approx(0.5 * 640 * 480)
    assert (x0 + x1) / 2 == pytest.approx(320) and (y0 + y1) / 2 == pytest.approx(240)
    assert (x1 - x0) / (y1 - y0) == pytest.approx(640 / 480)


def two_level_cam() -> np.ndarray:
    """A 0.3 plateau over (20, 10, 80, 60) with a peak of 1 over (30, 20, 40, 30)."""
    cam = np.zeros((80, 100), dtype=np.float32)
    cam[10:60, 20:80] = 0.3
    cam[20:30, 30:40] = 1.0
    return cam


def test_max_box_acc_finds_the_known_best_threshold():
    # GT is the plateau: thresholds <= 0.3 box it exactly (IoU 1); above 0.3 only the peak
    # survives (IoU 100/3000 < 0.3). Min-max normalisation keeps 0.3 as 0.3.
    result = max_box_acc([two_level_cam()], [[(20, 10, 80, 60)]], sizes=[(100, 80)])
    assert isinstance(result, BoxAccuracy)
    assert result.max_box_acc == 1.0
    # Threshold 0 boxes the whole image (IoU 3000 / 8000 < 0.5); the first threshold that hits wins.
    assert result.best_threshold == pytest.approx(0.01)
    at_half = result.curves_largest[result.iou_thresholds.index(0.5)]
    hits = result.thresholds[at_half == 1.0]
    assert hits.min() == pytest.approx(0.01) and hits.max() == pytest.approx(0.3)
    assert at_half[0] == 0.0
    assert result.max_box_acc_v2 == 1.0


def test_max_box_acc_v2_counts_any_component():
    # Two separated objects, each with its own GT box; at a middle threshold both components
    # exist and the smaller one is the GT of image 1, which only V2 (any component) can hit.
    cam = np.zeros((60, 60), dtype=np.float32)
    cam[5:35, 5:35] = 1.0  # 900 px, the largest component
    cam[45:55, 45:55] = 0.8  # 100 px
    ground_truth = [[(5, 5, 35, 35)], [(45, 45, 55, 55)]]
    result = max_box_acc([cam, cam], ground_truth, thresholds=np.array([0.5, 0.9]), iou_thrs=(0.5,))
    np.testing.assert_allclose(result.curves_largest[0], [0.5, 0.5])
    np.testing.assert_allclose(result.curves_any[0], [1.0, 0.5])
    assert result.max_box_acc == 0.5 and result.max_box_acc_v2 == 1.0
    assert result.best_thresholds_v2 == (0.5,)


def test_any_component_curves_dominate_largest_component_curves():
    rng = np.random.default_rng(3)
    cams = [upsample(rng.random((6, 6)).astype(np.float32), (48, 40)) for _ in range(6)]
    ground_truth = [[(rng.integers(0, 20), rng.integers(0, 20), 30, 35)] for _ in cams]
    result = max_box_acc(cams, ground_truth, sizes=[(48, 40)] * 6, thresholds=np.arange(0, 1, 0.05))
    assert np.all(result.curves_any >= result.curves_largest)
    half = result.iou_thresholds.index(0.5)
    assert result.curves_any[half].max() >= result.max_box_acc
    best_per_iou = result.curves_any.max(axis=1)
    assert np.all(np.diff(best_per_iou) <= 0)  # stricter IoU never helps
    assert set(result.summary()) >= {"max_box_acc", "max_box_acc_v2", "best_threshold"}


def test_max_box_acc_upsamples_feature_sized_cams():
    cam = np.zeros((14, 14), dtype=np.float32)
    cam[LIT_ROWS, LIT_COLS] = 1.0
    result = max_box_acc([cam], [[CELL_BOX]], sizes=[(224, 224)], thresholds=np.array([0.2]), iou_thrs=(0.9,))
    assert result.max_box_acc == 1.0  # (75, 43, 181, 133) vs (80, 48, 176, 128): IoU 0.81
    assert result.curves_any[0, 0] == 0.0


def test_multi_threshold_single_plateau_is_shaved_by_one_pixel():
    # Every threshold keeps the rectangle (cols 50..149, rows 40..99). The distance transform peaks
    # at 30; pixels at distance 1 scale to round(255 / 30) = 9 <= 10 and go, distance 2 (17) stays.
    cam = np.zeros((150, 200), dtype=np.float32)
    cam[40:100, 50:150] = 1.0
    shaved = (51, 41, 149, 99)
    # The original merge loop skips the box after each removal: three identical boxes leave two.
    assert multi_threshold_boxes(cam) == [shaved, shaved]
    assert multi_threshold_boxes(cam, reproduce_merge_skip=False) == [shaved]


def test_multi_threshold_gives_loose_then_tight_box():
    boxes = multi_threshold_boxes(two_level_cam())
    # 0.3 of max is 77/255: only threshold 20 keeps the plateau; 100 and 110 keep the peak.
    assert len(boxes) == 2
    loose, tight = boxes
    assert loose == (21, 11, 79, 59)
    assert tight[0] >= 30 and tight[1] >= 20 and tight[2] <= 40 and tight[3] <= 30
    assert multi_threshold_boxes(np.zeros((10, 10))) == []


def test_multi_threshold_keeps_border_margin():
    cam = np.ones((50, 60), dtype=np.float32)
    cam[:, :5] = 0.0
    x0, y0, x1, y1 = multi_threshold_boxes(cam)[0]
    assert x1 <= 60 - 5 and y1 <= 50 - 5
