"""Localization with SVM-weighted CAMs and the CAM pictures, on maps whose answers are known by hand.

Synthetic files: 4 classes, 4 x 4 maps, 80 x 80 images, so a map cell is a
20-pixel square; the classifier is the identity, so class c's CAM is unit c's
map, which is lit exactly inside the image's ground-truth box.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from featkit.cam.boxes import max_box_acc
from featkit.cam.localization import _merge_sweeps, localize
from featkit.cam.maps import CamOptions
from featkit.cam.wsol import wsol_max_box_acc
from featkit.data import open_dataset
from featkit.data.base import ImageRecord
from featkit.errors import FeatkitError
from featkit.features import STATUS_OK, ExtractOptions, FeatureFile, FeatureWriter, Head, Provenance, extract
from featkit.features.mapsource import MapSource
from featkit.linear import LinearClassifier, classifier_for
from featkit.linear.protocol import split_rows, train_svm
from featkit.viz.camviz import render_cams
from featkit.viz.overlay import PRED_COLOR
from featkit.viz.plots import threshold_curve_plot

CLASSES = ["class_0", "class_1", "class_2", "class_3"]
SIDE, CELL = 80, 20
NEAREST = CamOptions(upsample="nearest")
FAST_SWEEP = np.array([0.0, 0.5])

# (label, boxes, lit cells per unit: {unit: (row0, row1, col0, col1, value)}); rows/cols inclusive.
IMAGES: list[tuple[int, tuple, dict[int, tuple[int, int, int, int, float]]]] = [
    (0, ((20.0, 20.0, 60.0, 80.0),), {0: (1, 3, 1, 2, 1.0)}),
    (1, ((0.0, 0.0, 40.0, 40.0),), {1: (0, 1, 0, 1, 1.0)}),
    (2, ((40.0, 0.0, 80.0, 40.0),), {2: (0, 1, 2, 3, 1.0)}),
    (3, ((0.0, 0.0, 80.0, 60.0),), {3: (0, 2, 0, 3, 1.0)}),
    # A class-0 bird with two GT boxes, but unit 1 is lit more strongly elsewhere: classified as class 1.
    (0, ((0.0, 40.0, 40.0, 80.0), (60.0, 0.0, 80.0, 20.0)), {0: (2, 3, 0, 1, 1.0), 1: (2, 3, 2, 3, 3.0)}),
    # No ground-truth box: skipped and counted.
    (2, (), {2: (0, 0, 0, 0, 1.0)}),
]
# Centre box of half the area: 56.57 px side from 11.72 to 68.28. Its IoU with the GT boxes above is
# 0.526, 0.2, 0.2, 0.518 and 0.2 (image 4's best box), so it hits images 0 and 3 only.
CENTRE_HITS = [True, False, False, True, False]
# The full image: IoU 0.375, 0.25, 0.25, 0.75, 0.25: only image 3.
FULL_HITS = [False, False, False, True, False]


def synthetic_maps() -> np.ndarray:
    maps = np.zeros((len(IMAGES), len(CLASSES), 4, 4), np.float32)
    for i, (_, _, lit) in enumerate(IMAGES):
        for unit, (r0, r1, c0, c1, value) in lit.items():
            maps[i, unit, r0 : r1 + 1, c0 : c1 + 1] = value
    return maps


def write_synthetic(
    folder: Path,
    *,
    with_maps: bool = True,
    dataset_root: Path | None = None,
    boxes: bool = True,
    head: Head | None = None,
    images: bool = False,
) -> Path:
    """features.h5 through the real writer; optionally the 80 x 80 pictures under ``dataset_root``."""
    maps = synthetic_maps()
    root = dataset_root or folder / "absent-root"
    records = [ImageRecord(f"img_{i}.png", label, "test", gt if boxes else ()) for i, (label, gt, _) in
               enumerate(IMAGES)]
    if images:
        root.mkdir(parents=True, exist_ok=True)
        for record in records:
            Image.new("RGB", (SIDE, SIDE), (120, 120, 120)).save(root / record.path)
    provenance = Provenance(backbone="synthetic", weights="synthetic", weights_sha256="0" * 64,
                            feature_layer="test", channels=len(CLASSES), map_size=(4, 4), input_size=64,
                            mean=(0.5,) * 3, std=(0.5,) * 3, dataset="synthetic", dataset_root=str(root),
                            maps=with_maps)
    n = len(records)
    path = folder / "features.h5"
    splits = np.array([["test"]] * n, dtype=object)
    with FeatureWriter.open(path, provenance, records, CLASSES, splits, head=head) as writer:
        writer.write_batch(0, maps.mean(axis=(2, 3)), np.full((n, 2), SIDE, np.int32),
                           np.full(n, STATUS_OK, np.int8), [""] * n, maps if with_maps else None)
        writer.finish()
    return path


def identity_classifier() -> LinearClassifier:
    return LinearClassifier(np.eye(len(CLASSES)), np.zeros(len(CLASSES)), list(CLASSES), "none", "identity")


ALL_ROWS = np.arange(len(IMAGES))


# ------------------------------------------------------------------ localize


def test_known_boxes_are_found_and_scored(tmp_path: Path) -> None:
    with FeatureFile(write_synthetic(tmp_path)) as features:
        calls: list[tuple[int, int]] = []
        report = localize(features, identity_classifier(), ALL_ROWS, cam_options=NEAREST, batch=2,
                          sweep_thresholds=FAST_SWEEP, multi_threshold=True, progress=lambda d, t: calls.append((d, t)))
    assert calls == [(0, 5), (2, 5), (4, 5), (5, 5)]  # the CLI's progress line: at the start, after every batch
    s = report.summary
    assert s["n_images"] == 5 and s["n_skipped_no_box"] == 1 and s["maps"] == "stored"
    assert s["gt_known_loc"] == 1.0 and s["mean_iou"] == pytest.approx(1.0)
    assert s["top1_loc"] == pytest.approx(4 / 5)  # image 4: class right only for the GT-known map
    assert s["top5_loc"] == 1.0 and s["top1_cls"] == pytest.approx(4 / 5) and s["top5_cls"] == 1.0
    assert s["center_baseline"] == pytest.approx(np.mean(CENTRE_HITS))
    assert s["full_image_baseline"] == pytest.approx(np.mean(FULL_HITS))
    assert s["max_box_acc"] == 1.0 and s["max_box_acc_threshold"] == 0.5 and s["max_box_acc_v2"] == 1.0
    assert s["multi_box1"] == 1.0
    for record, (label, gt, _) in zip(report.per_image, IMAGES):
        assert record["box"] == gt[0] and record["hit"] and record["true_class"] == CLASSES[label]
    odd = report.per_image[4]
    assert odd["pred_class"] == "class_1" and odd["top1_box"] == (40.0, 40.0, 80.0, 80.0)
    assert not odd["top1_loc"] and odd["top5_loc"] and odd["n_gt_boxes"] == 2
    assert [c["n"] for c in report.per_class] == [2, 1, 1, 1]
    assert report.curves is not None and report.curves.n_images == 5


def test_batched_sweep_equals_one_sweep() -> None:
    rng = np.random.default_rng(1)
    cams = [rng.random((12, 16)).astype(np.float32) for _ in range(9)]
    gts = [np.array([[2.0, 1.0, 9.0, 8.0]]) for _ in range(9)]
    whole = max_box_acc(cams, gts, thresholds=np.arange(0, 1, 0.1))
    parts = [max_box_acc(cams[a:b], gts[a:b], thresholds=np.arange(0, 1, 0.1)) for a, b in ((0, 4), (4, 9))]
    merged = _merge_sweeps(parts, [4, 5])
    np.testing.assert_allclose(merged.curves_largest, whole.curves_largest)
    np.testing.assert_allclose(merged.curves_any, whole.curves_any)
    assert (merged.max_box_acc, merged.best_threshold, merged.n_images) == (whole.max_box_acc, whole.best_threshold, 9)
    assert merged.max_box_acc_v2 == pytest.approx(whole.max_box_acc_v2)


def test_wsol_protocol_scores_the_raw_true_class_maps(tmp_path: Path) -> None:
    with FeatureFile(write_synthetic(tmp_path)) as features:
        default = localize(features, identity_classifier(), ALL_ROWS, cam_options=NEAREST,
                           sweep_thresholds=FAST_SWEEP)
        report = localize(features, identity_classifier(), ALL_ROWS, cam_options=NEAREST, batch=2,
                          protocol="wsol", cam_curve_interval=0.05)
    s = report.summary
    assert s["sweep_protocol"] == "wsol" and s["sweep_cam_curve_interval"] == 0.05 and s["sweep_frame"] == 224
    assert default.summary["sweep_protocol"] == "featkit" and "sweep_frame" not in default.summary
    # The protocol changes the sweep only: the paper's numbers are those of the default run.
    for key in ("gt_known_loc", "top1_loc", "top5_loc", "mean_iou", "center_baseline"):
        assert s[key] == default.summary[key]
    # The same numbers as the evaluator run directly on the true class's raw 4 x 4 maps.
    scored = [i for i, (_, gt, _) in enumerate(IMAGES) if gt]
    direct = wsol_max_box_acc([synthetic_maps()[i, IMAGES[i][0]] for i in scored], [IMAGES[i][1] for i in scored],
                              [(SIDE, SIDE)] * len(scored), cam_curve_interval=0.05)
    assert report.curves is not None and report.curves.protocol == "wsol"
    np.testing.assert_array_equal(report.curves.curves_any, direct.curves_any)
    np.testing.assert_array_equal(report.curves.curves_largest, direct.curves_largest)
    assert (s["max_box_acc"], s["max_box_acc_v2"]) == (direct.max_box_acc, direct.max_box_acc_v2)
    assert s["max_box_acc"] == 1.0  # block maps: some threshold boxes every lit block within IoU 0.5
    assert "wsolevaluation protocol" in report.to_markdown() and "featkit protocol" in default.to_markdown()


def test_protocol_arguments_are_checked(tmp_path: Path) -> None:
    with FeatureFile(write_synthetic(tmp_path)) as features:
        for kwargs, message in (({"protocol": "choe"}, "unknown sweep protocol 'choe'"),
                                ({"protocol": "wsol", "sweep": False}, "keep sweep=True"),
                                ({"cam_curve_interval": 0.001}, "applies to protocol='wsol' only"),
                                ({"protocol": "wsol", "cam_curve_interval": 1.5}, "cam_curve_interval must be")):
            with pytest.raises(FeatkitError, match=re.escape(message)):
                localize(features, identity_classifier(), ALL_ROWS, **kwargs)


def test_bilinear_boxes_still_hit(tmp_path: Path) -> None:
    with FeatureFile(write_synthetic(tmp_path)) as features:
        report = localize(features, identity_classifier(), ALL_ROWS, sweep=False)
    assert report.summary["gt_known_loc"] == 1.0 and report.curves is None
    # Bilinear (align_corners=False) falls from 0.5 at a block's edge to 0 half a cell (10 px) outside, so
    # pixels whose centre lies within 6 px of the edge pass 0.2: every box grows by 6 px per side.
    for record, (_, gt, _) in zip(report.per_image, IMAGES):
        grown = np.clip(np.array(gt[0]) + [-6, -6, 6, 6], 0, SIDE)
        np.testing.assert_array_equal(record["box"], grown)


def test_report_files(tmp_path: Path) -> None:
    with FeatureFile(write_synthetic(tmp_path)) as features:
        report = localize(features, identity_classifier(), ALL_ROWS, cam_options=NEAREST,
                          sweep_thresholds=FAST_SWEEP)
    table = report.to_markdown()
    assert "| CAM (SVM weights) | 100.0 | 80.0 | 100.0 |" in table and "Skipped 1 images" in table
    report.write_csv(tmp_path / "loc.csv")
    with (tmp_path / "loc.csv").open() as handle:
        lines = list(csv.DictReader(handle))
    assert len(lines) == 5 and lines[0]["box_x1"] == "60.0" and lines[0]["path"] == "img_0.png"
    report.write_json(tmp_path / "loc.json")
    document = json.loads((tmp_path / "loc.json").read_text())
    assert document["summary"]["gt_known_loc"] == 1.0 and len(document["curves"]["thresholds"]) == 2
    assert threshold_curve_plot(report.curves, tmp_path / "curve.png").stat().st_size > 0
    with pytest.raises(FeatkitError, match="does not exist"):
        report.write_csv(tmp_path / "missing" / "loc.csv")


def test_rows_without_any_box_are_an_error(tmp_path: Path) -> None:
    with FeatureFile(write_synthetic(tmp_path, boxes=False)) as features:
        with pytest.raises(FeatkitError, match="images without boxes.*needs ground-truth boxes"):
            localize(features, identity_classifier(), ALL_ROWS)


def test_missing_maps_without_root_is_an_error(tmp_path: Path) -> None:
    with FeatureFile(write_synthetic(tmp_path, with_maps=False)) as features:
        with pytest.raises(FeatkitError, match="has no conv maps and no dataset root.*maps=True or pass root="):
            localize(features, identity_classifier(), ALL_ROWS)
        with pytest.raises(FeatkitError, match="is not a folder"):
            MapSource.of(features, tmp_path / "nowhere")


def test_classifier_of_other_classes_is_refused(tmp_path: Path) -> None:
    other = LinearClassifier(np.eye(4), np.zeros(4), ["a", "b", "c", "d"], "none", "other.h5")
    with FeatureFile(write_synthetic(tmp_path)) as features:
        with pytest.raises(FeatkitError, match="does not predict class 'class_0'"):
            localize(features, other, ALL_ROWS)


def test_head_without_dataset_classes_scores_the_top1_map(tmp_path: Path) -> None:
    head = Head(np.eye(4, dtype=np.float32), np.zeros(4, np.float32), ["tench", "goldfish", "shark", "ray"])
    with FeatureFile(write_synthetic(tmp_path, head=head)) as features:
        report = localize(features, classifier_for(features, None), ALL_ROWS, cam_options=NEAREST, sweep=False)
    s = report.summary
    assert s["gt_known_loc"] is None and s["top1_loc"] is None and s["top1_cls"] is None
    assert s["top1_cam_loc"] == pytest.approx(4 / 5)  # image 4's top-1 map lights the wrong place
    assert "–" in report.to_markdown()


def test_missing_maps_are_recomputed_from_the_root(fake_cub: Callable[..., Path], tmp_path: Path) -> None:
    root = fake_cub(n_classes=2, per_class=2)
    dataset = open_dataset("cub200", root)
    plain, stored = tmp_path / "plain.h5", tmp_path / "stored.h5"
    extract(dataset, plain, ExtractOptions(workers=0, image_size=64))
    extract(dataset, stored, ExtractOptions(workers=0, image_size=64, maps=True))
    with FeatureFile(plain) as features, FeatureFile(stored) as reference:
        rows = split_rows(features, "test")
        rng = np.random.default_rng(0)
        classifier = LinearClassifier(rng.normal(size=(2, 1280)), np.zeros(2), features.classes, "none", "random")
        report = localize(features, classifier, rows, root=root, sweep=False)
        assert report.summary["maps"] == "recomputed" and report.summary["n_images"] == 2
        # the default geometry, stated in the report: the whole image, so boxes reach every border
        assert ("Input geometry: short-side: the whole image, aspect ratio kept (short side at the input size, "
                "long side at most 2x); boxes can reach every border of the image.") in report.to_markdown()
        (_, recomputed), = MapSource.of(features, root).batches(rows, batch=8)
        (_, kept), = MapSource.of(reference).batches(rows, batch=8)
        np.testing.assert_allclose(recomputed, kept, rtol=1e-2, atol=1e-2)


# ------------------------------------------------------------------ pictures


@pytest.fixture
def pictured(tmp_path: Path) -> Path:
    return write_synthetic(tmp_path, dataset_root=tmp_path / "data", images=True)


def test_render_gt_overlays_gallery_and_raw(pictured: Path, tmp_path: Path) -> None:
    out = tmp_path / "cams"
    with FeatureFile(pictured) as features:
        calls: list[tuple[int, int]] = []
        page = render_cams(features, identity_classifier(), ALL_ROWS[:4], out, cam_options=NEAREST,
                           save_raw="npy", batch=3, progress=lambda d, t: calls.append((d, t)))
    assert calls == [(0, 4), (3, 4), (4, 4)]
    pngs = sorted(out.glob("*.png"))
    assert page == out / "index.html" and len(pngs) == 4 and pngs[0].name == "000000_img_0.png"
    assert all(p.name in page.read_text() for p in pngs)
    picture = np.asarray(Image.open(pngs[0]))
    band = picture.shape[0] - SIDE
    assert picture.shape[1] == SIDE and tuple(picture[band + 50, 20]) == PRED_COLOR  # left edge of (20, 20, 60, 80)
    cams = np.load(out / "cams.npy")
    assert cams.shape == (4, 1, 4, 4)
    np.testing.assert_array_equal(cams[:, 0], synthetic_maps()[np.arange(4), np.arange(4)])
    assert np.load(out / "cams_classes.npy")[:, 0].tolist() == [0, 1, 2, 3]


def test_render_top5_strip_and_named_class(pictured: Path, tmp_path: Path) -> None:
    with FeatureFile(pictured) as features:
        render_cams(features, identity_classifier(), [0, 4], tmp_path / "top5", which="top5", save_raw="h5")
        render_cams(features, identity_classifier(), [1], tmp_path / "named", which="class_2")
    strip = Image.open(tmp_path / "top5" / "000000_img_0.png")
    assert strip.width > 5 * SIDE  # the input plus one panel per class (4 classes)
    with h5py.File(tmp_path / "top5" / "cams.h5") as h5:
        assert h5["cams"].shape == (2, 4, 4, 4) and h5["classes"][1, 0] == 1 and h5["rows"][:].tolist() == [0, 4]
    assert len(list((tmp_path / "named").glob("*.png"))) == 1


def test_render_refuses_unknown_class_and_missing_image(pictured: Path, tmp_path: Path) -> None:
    with FeatureFile(pictured) as features:
        with pytest.raises(FeatkitError, match="'heron' is not one of"):
            render_cams(features, identity_classifier(), [0], tmp_path / "x", which="heron")
        with pytest.raises(FeatkitError, match="save_raw"):
            render_cams(features, identity_classifier(), [0], tmp_path / "x", save_raw="mat")
        (tmp_path / "data" / "img_1.png").unlink()
        with pytest.raises(FeatkitError, match=r"img_1\.png not found; pass root="):
            render_cams(features, identity_classifier(), [0, 1], tmp_path / "x")
    assert not (tmp_path / "x").exists()  # refused before anything was written


# ------------------------------------------------------------------ real CUB sample


@pytest.mark.slow
def test_cub_sample_localization(cub_features: Path) -> None:
    """SVM CAMs on the CUB test split, and the ImageNet head's top-1 CAM on all 543 images.

    Measured (efficientnet_lite0, 224 px, SVM C=auto on 300 train images):
    GT-known 42.8 % on the 243 test images with the paper's rule, close to
    the paper's 41.0 % for GoogLeNet-GAP SVM CAMs on CUB. The ~59 % often
    quoted for this sample is the backbone head's top-1 CAM over all 543
    images (58.6 %), checked below: SVM maps of 10 similar bird classes
    light up the discriminating parts and spill into the background, so their
    0.2-of-max boxes are too large (median area 1.4 x the GT box).
    """
    with FeatureFile(cub_features) as features:
        svm, _ = train_svm(features)
        classifier = LinearClassifier.from_estimator(svm, features.classes)
        report = localize(features, classifier, split_rows(features, "test"),
                          sweep_thresholds=np.arange(0.0, 1.0, 0.05))
        s = report.summary
        assert s["n_images"] == 243 and s["n_skipped_no_box"] == 0
        assert s["gt_known_loc"] >= 0.38
        assert s["gt_known_loc"] > s["full_image_baseline"]
        assert s["top1_loc"] <= s["gt_known_loc"] and s["top5_loc"] <= s["gt_known_loc"]
        assert s["top1_cls"] >= 0.75 and 0.35 <= s["max_box_acc"] <= 1.0
        head = localize(features, classifier_for(features, None), np.arange(len(features)), sweep=False)
        assert head.summary["top1_cam_loc"] >= 0.55
