"""Named localization maps through the one CamBoxer path, and thresholds chosen on training rows only."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_localize import ALL_ROWS, CLASSES, NEAREST, identity_classifier, synthetic_maps, write_synthetic

from featkit.cam.boxer import CamBoxer
from featkit.cam.calibration import calibrate
from featkit.cam.localization import localize
from featkit.cam.maps import CamOptions, class_activation_maps
from featkit.cam.methods import METHODS, method_maps, method_names, objectness
from featkit.cli import main
from featkit.errors import FeatkitError
from featkit.features import FeatureFile, Head
from featkit.linear import classifier_for

RNG = np.random.default_rng(3)
MAPS = RNG.random((3, 6, 5, 5), dtype=np.float32)
WEIGHT = RNG.normal(size=(4, 6)).astype(np.float32)
CLASS_ROWS = np.array([[0, 1], [2, 2], [3, 0]])


def test_cam_method_is_the_papers_cam_bit_for_bit() -> None:
    boxer = CamBoxer(WEIGHT, CamOptions(method="cam"))
    assert np.array_equal(boxer.cams(MAPS, CLASS_ROWS), class_activation_maps(MAPS, WEIGHT, CLASS_ROWS))
    positive = CamBoxer(WEIGHT, CamOptions(weights="positive")).cams(MAPS, CLASS_ROWS)
    assert np.allclose(method_maps("cam-positive", MAPS, WEIGHT, CLASS_ROWS), positive, atol=1e-6)


def test_objectness_ignores_the_class_and_gating_keeps_both_supports() -> None:
    agnostic = method_maps("objectness", MAPS, WEIGHT, CLASS_ROWS)
    assert agnostic.shape == (3, 2, 5, 5)
    assert np.allclose(agnostic[:, 0], MAPS.mean(axis=1)) and np.allclose(agnostic[:, 1], agnostic[:, 0])
    maps = np.zeros((1, 2, 4, 4), np.float32)
    maps[0, 0, :2, :2] = 1.0  # unit 0: class evidence top-left
    maps[0, 1, :, :2] = 3.0  # unit 1: an object on the whole left half, weight 0 for the class
    gated = method_maps("cam-objectness", maps, np.array([[1.0, 0.0]]), 0)[0, 0]
    assert gated.max() == pytest.approx(1.0) and (gated[:, 2:] == 0).all() and (gated[2:] == 0).all()
    assert np.allclose(objectness(maps)[0], maps[0].mean(axis=0))


def test_unknown_method_names_the_choices() -> None:
    with pytest.raises(FeatkitError, match="unknown localization method 'gradcam'; use one of cam, cam-positive"):
        CamOptions(method="gradcam")
    assert {"cam", "cam-positive", "objectness", "cam-objectness"} <= set(method_names())


def test_every_method_localizes_through_the_same_path(tmp_path: Path) -> None:
    with FeatureFile(write_synthetic(tmp_path)) as features:
        for name in METHODS:  # every stored-maps method (dgl needs the images: see the CLI test)
            report = localize(features, identity_classifier(), ALL_ROWS,
                              cam_options=CamOptions(upsample="nearest", method=name), sweep=False)
            assert report.summary["method"] == name and report.summary["n_images"] == 5
            assert f"| {'CAM' if name == 'cam' else name} (SVM weights) |" in report.to_markdown()


def test_calibration_looks_only_at_the_rows_it_is_given(tmp_path: Path) -> None:
    """The threshold chosen on images 0-3 is then applied to image 4; image 4's boxes never enter the choice."""
    with FeatureFile(write_synthetic(tmp_path)) as features:
        train, test = np.arange(4), np.array([4])
        chosen = calibrate(features, identity_classifier(), train, NEAREST, split="train", grid=(0.3, 0.6, 0.9))
        assert chosen.n_images == 4 and chosen.split == "train" and chosen.grid == (0.3, 0.6, 0.9)
        # Images 0-3 have maps lit exactly on their boxes: every threshold hits all of them; ties go low.
        assert chosen.curve == (1.0, 1.0, 1.0) and chosen.options.threshold == 0.3
        report = localize(features, identity_classifier(), test, cam_options=NEAREST, sweep=False,
                          calibration=chosen)
        s = report.summary
        assert s["threshold"] == 0.3 and s["calibration"]["n_images"] == 4
        assert s["threshold_chosen_on"] == "train (4 images)"
        assert "Threshold 0.3 chosen on 4 train images only" in report.to_markdown()
        with pytest.raises(FeatkitError, match="no image of split 'train'.*has a ground-truth box"):
            calibrate(features, identity_classifier(), np.array([5]), NEAREST)


def test_head_scores_its_top1_map_when_it_knows_only_some_classes(tmp_path: Path) -> None:
    """The ImageNet head on a dataset where only one class name is an ImageNet class: class-agnostic, no error."""
    head = Head(np.eye(4, dtype=np.float32), np.zeros(4, np.float32), [CLASSES[0], "goldfish", "shark", "ray"])
    with FeatureFile(write_synthetic(tmp_path, head=head)) as features:
        report = localize(features, classifier_for(features, None), ALL_ROWS, cam_options=NEAREST, sweep=False)
    assert report.summary["gt_known_loc"] is None
    assert report.summary["top1_cam_loc"] == pytest.approx(4 / 5)


def test_gated_map_is_zero_where_no_unit_fires() -> None:
    maps = synthetic_maps()
    gated = method_maps("cam-objectness", maps, np.eye(4, dtype=np.float32), np.array([0, 1, 2, 3, 0, 2]))
    assert gated.shape == (len(maps), 1, 4, 4) and float(gated.min()) >= 0.0
    assert ((gated[:, 0] > 0) <= (maps.max(axis=1) > 0)).all()


TINY = ["--model", "tiny_test", "--workers", "0", "--batch-size", "4"]


def test_cli_methods_calibration_and_dgl_on_a_tiny_store(fake_cub: Callable[..., Path], tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    root = fake_cub(n_classes=2, per_class=6)
    features, svm = tmp_path / "f.h5", tmp_path / "svm.h5"
    assert main(["extract", str(root), "--dataset", "cub200", "--maps", "-o", str(features), *TINY]) == 0
    assert main(["svm-train", str(features), "-o", str(svm), "--C", "1"]) == 0
    capsys.readouterr()

    def run(*extra: str) -> dict:
        out = tmp_path / "out"
        assert main(["localize", str(features), str(svm), "--no-sweep", "-o", str(out), *extra]) == 0
        return json.loads((out / "localization.json").read_text())["summary"]

    paper = run()
    assert paper["method"] == "cam" and paper["threshold"] == 0.2 and paper["threshold_chosen_on"] == "a priori"
    calibrated = run("--method", "cam-positive")
    assert calibrated["calibration"]["split"] == "train" and calibrated["calibration"]["n_images"] == 6
    assert calibrated["threshold"] in calibrated["calibration"]["grid"]
    assert "chosen on 6 train images only" in capsys.readouterr().out
    # DGL at the last layer is the CAM times 1/(h w): the same boxes under the same threshold.
    dgl = run("--method", "dgl", "--calibrate", "none")
    assert dgl["maps"].startswith("gradients on layer last") and dgl["gt_known_loc"] == paper["gt_known_loc"]
    assert dgl["mean_iou"] == pytest.approx(paper["mean_iou"], abs=1e-6)
    inner = run("--method", "dgl", "--layer", "0,last", "--calibrate", "none")
    assert inner["n_images"] == paper["n_images"]
    capsys.readouterr()
    assert main(["localize", str(features), str(svm), "--method", "dgl", "--layer", "nope"]) == 2
    assert "no layer 'nope'" in capsys.readouterr().err
    assert main(["localize", str(features), str(svm), "--method", "gradcam"]) == 2
    assert "unknown localization method 'gradcam'" in capsys.readouterr().err


def test_cam_draws_methods_side_by_side(tmp_path: Path) -> None:
    """One strip per image: the input, then one panel per method, predicted box red, ground truth green."""
    from featkit.viz.camviz import render_cams

    root = tmp_path / "images"
    with FeatureFile(write_synthetic(tmp_path, dataset_root=root, images=True)) as features:
        # Image 4: class 0's map sits on a GT box (cam), the mean map also covers a brighter unit beside it.
        index = render_cams(features, identity_classifier(), np.array([4]), tmp_path / "strips",
                            cam_options=NEAREST, methods=("cam", "objectness", "cam-objectness"))
    (path,) = sorted((tmp_path / "strips").glob("*.png"))
    assert index.read_text().count("<img") == 1
    picture = np.asarray(Image.open(path).convert("RGB"))
    assert picture.shape[1] == 4 * 80 + 3 * 4  # the input and three method panels
    red = (picture[..., 0] > 200) & (picture[..., 1] < 40) & (picture[..., 2] < 40)
    green = (picture[..., 1] > 200) & (picture[..., 0] < 40) & (picture[..., 2] < 40)
    panels = [slice(84 * k, 84 * k + 80) for k in range(1, 4)]
    assert all(red[:, p].sum() > 40 for p in panels)
    assert green[:, panels[1]].sum() > 40  # objectness' box is larger than the GT box: both visible


@pytest.mark.slow
def test_cub_sample_methods_with_train_thresholds(cub_features: Path) -> None:
    """CUB sample, 224 px: --method cam is the default bit for bit (42.8 % GT-known with C=auto); the
    mean of positive-weight CAM and mean map, threshold chosen on the 300 train images, measured 66.3 %
    on the 243 test images, above the centre box (59.7 %) and the head's top-1 CAM (58.0 %)."""
    from featkit.linear import LinearClassifier
    from featkit.linear.protocol import split_rows, train_svm

    with FeatureFile(cub_features) as features:
        svm, _ = train_svm(features)
        classifier = LinearClassifier.from_estimator(svm, features.classes)
        test, train = split_rows(features, "test"), split_rows(features, "train")
        default = localize(features, classifier, test, sweep=False)
        paper = localize(features, classifier, test, cam_options=CamOptions(method="cam"), sweep=False)
        assert paper.per_image == default.per_image
        options = CamOptions(method="cam-objectness-mean")
        chosen = calibrate(features, classifier, train, options)
        assert chosen.n_images == 300 and chosen.split == "train"
        best = localize(features, classifier, test, cam_options=options, sweep=False, calibration=chosen).summary
        head = localize(features, classifier_for(features, None), test, sweep=False).summary
        assert best["gt_known_loc"] >= 0.62
        assert best["gt_known_loc"] > best["center_baseline"] and best["gt_known_loc"] > head["top1_cam_loc"]
