"""Foreground maps learned from the TRAIN split's boxes (featkit.cam.foreground) through the one CamBoxer path."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import BOXED_CLASSES as CLASSES
from conftest import BOXED_GRID as GRID
from conftest import BOXED_K as K
from conftest import BOXED_SIDE as SIDE
from conftest import boxed_classifier as classifier
from conftest import boxed_store, write_features

from featkit.cam.boxer import CamBoxer
from featkit.cam.calibration import _halves, calibrate
from featkit.cam.foreground import fit_foreground, inside_cells
from featkit.cam.localization import localize
from featkit.cam.maps import CamOptions
from featkit.cli import main
from featkit.errors import FeatkitError
from featkit.features import FeatureFile


def test_inside_cells_are_the_cells_whose_centre_lies_in_a_box() -> None:
    inside = inside_cells((4, 4), (0.0, 0.0, 80.0, 80.0), np.array([[0.0, 0.0, 40.0, 20.0], [70.0, 70.0, 80.0, 80.0]]))
    expected = np.zeros((4, 4), bool)
    expected[0, :2] = True  # centres (10, 10) and (30, 10)
    expected[3, 3] = True  # centre (70, 70) on the second box's corner
    assert np.array_equal(inside, expected)
    # A frame (crop files) shifts the cell centres into original pixels.
    assert inside_cells((1, 2), (100.0, 0.0, 140.0, 20.0), np.array([[100.0, 0.0, 119.0, 20.0]])).tolist() == [[True, False]]


def test_the_svm_learns_the_unit_that_marks_the_boxes(tmp_path: Path) -> None:
    path, boxes = boxed_store(tmp_path)
    with FeatureFile(path) as features:
        model = fit_foreground(features, np.arange(16))
        assert model.weight.shape == (1, K) and not model.per_class and model.n_images == 16
        assert model.n_cells == 16 * GRID * GRID
        assert int(np.argmax(model.weight[0])) == 0 and model.weight[0, 0] > 3 * np.abs(model.weight[0, 1:]).max()
        per_class = fit_foreground(features, np.arange(16), classes=features.labels[:16], n_classes=2)
        assert per_class.weight.shape == (2, K) and per_class.per_class
        maps = features.maps(np.arange(16, 24)).astype(np.float32)
        assert per_class.maps(maps, np.array([[0, 1]] * 8)).shape == (8, 2, GRID, GRID)
        # Held-out images: the learned map's boxes hit where the mean of all units does not.
        learned = CamBoxer(np.eye(2, K), CamOptions(method="foreground", threshold=0.5, upsample="nearest"), model)
        hits = [learned.boxes(maps[j : j + 1], np.array([0]), [(SIDE, SIDE)])[0] for j in range(8)]
        ious = [_iou(box, boxes[16 + j]) for j, box in enumerate(hits)]
        assert np.mean(np.array(ious) >= 0.5) >= 0.75
        mean_map = CamBoxer(np.eye(2, K), CamOptions(method="objectness", threshold=0.5, upsample="nearest"))
        plain = [_iou(mean_map.boxes(maps[j : j + 1], np.array([0]), [(SIDE, SIDE)])[0], boxes[16 + j])
                 for j in range(8)]
        assert np.mean(np.array(plain) >= 0.5) < np.mean(np.array(ious) >= 0.5)


def _iou(a: np.ndarray, b: tuple[float, float, float, float]) -> float:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_threshold_is_chosen_by_cross_fitting_on_train_and_the_test_boxes_are_never_read(tmp_path: Path) -> None:
    path, _ = boxed_store(tmp_path)
    train, test = np.arange(16), np.arange(16, 24)
    halves = _halves(np.arange(16) % 2)
    assert sorted(np.concatenate(halves).tolist()) == list(range(16)) and all(len(h) == 8 for h in halves)
    assert all((np.arange(16)[h] % 2 == 0).sum() == 4 for h in halves)  # each class split evenly
    with FeatureFile(path) as features:
        options = CamOptions(method="cam-foreground", upsample="nearest")
        chosen = calibrate(features, classifier(), train, options)
        assert chosen.foreground is not None and chosen.foreground.n_images == 16
        assert chosen.to_dict()["threshold_by"] == "2-fold cross-fitting on the calibration images"
        report = localize(features, classifier(), test, cam_options=options, sweep=False, calibration=chosen)
        assert report.summary["gt_known_loc"] >= 0.75
        assert "uses the train split's boxes, never the scored images' boxes" in report.to_markdown()
        with pytest.raises(FeatkitError, match="learns where objects are from the training boxes; pass calibration="):
            localize(features, classifier(), test, cam_options=options, sweep=False)
    # The same file with the test images' boxes removed gives the same model and threshold.
    blind, _ = boxed_store(tmp_path / "blind", test_boxes=False)
    with FeatureFile(blind) as features:
        again = calibrate(features, classifier(), train, options)
    assert again.options.threshold == chosen.options.threshold
    assert np.array_equal(again.foreground.weight, chosen.foreground.weight)  # type: ignore[union-attr]


def test_no_training_box_is_a_clear_error(tmp_path: Path) -> None:
    path = write_features(tmp_path / "nobox.h5", np.ones((4, K), np.float32), [0, 1, 0, 1], ["train"] * 4, CLASSES,
                          maps=np.ones((4, K, 2, 2), np.float32))
    with FeatureFile(path) as features, pytest.raises(FeatkitError, match="has a ground-truth box to learn"):
        fit_foreground(features, np.arange(4))


def test_cli_fits_the_foreground_on_train_for_localize_cam_and_crops(
    fake_cub: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = fake_cub(n_classes=2, per_class=6)
    features, svm = tmp_path / "f.h5", tmp_path / "svm.h5"
    assert main(["extract", str(root), "--dataset", "cub200", "--maps", "-o", str(features), "--model", "tiny_test"]) == 0
    assert main(["svm-train", str(features), "-o", str(svm), "--C", "1"]) == 0
    out = tmp_path / "loc"
    assert main(["localize", str(features), str(svm), "--method", "foreground-class", "--no-sweep", "-o", str(out)]) == 0
    summary = json.loads((out / "localization.json").read_text())["summary"]
    assert summary["calibration"]["learned"].endswith("one per class") and summary["calibration"]["n_images"] == 6
    capsys.readouterr()
    assert main(["cam", str(features), str(svm), "--method", "cam,cam-foreground", "-o", str(tmp_path / "pics")]) == 0
    assert len(list((tmp_path / "pics").glob("*.png"))) == 6
    assert main(["localize", str(features), str(svm), "--method", "foreground", "--calibrate", "none"]) == 2
    err = capsys.readouterr().err
    assert "use --calibrate train and leave the threshold unset" in err and "Traceback" not in err
    crops = tmp_path / "crops.h5"
    assert main(["crops", str(root), str(features), str(svm), "--method", "foreground", "-o", str(crops)]) == 0
    with FeatureFile(crops) as made:
        assert made.attrs["crop_map_method"] == "foreground" and len(made) == 12
    # A learned method in a list calibrates itself on train without turning the paper's cam into a calibrated one.
    from featkit.cli.main import _calibrations, build_parser
    from featkit.linear import classifier_for

    args = build_parser().parse_args(["cam", str(features), str(svm), "-o", str(tmp_path / "x"),
                                      "--method", "foreground,cam"])
    args.fold, args.method = 0, "foreground"  # as _cmd_cam sets them
    with FeatureFile(features) as opened:
        chosen = _calibrations(opened, classifier_for(opened, svm), args, ["foreground", "cam"])
    assert list(chosen) == ["foreground"] and args.calibrate == "auto"


def test_cells_are_sampled_per_image_beyond_the_cap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Memory stays bounded on full datasets: past MAX_CELLS every image gives an equal seeded share of its cells."""
    import featkit.cam.foreground as foreground

    path, _ = boxed_store(tmp_path)
    monkeypatch.setattr(foreground, "MAX_CELLS", 16 * 10)
    with FeatureFile(path) as features:
        model = fit_foreground(features, np.arange(16))
        again = fit_foreground(features, np.arange(16))
    assert model.n_cells == 16 * 10 and np.array_equal(model.weight, again.weight)
    assert int(np.argmax(model.weight[0])) == 0  # still finds the unit that marks the boxes


def test_calibration_never_scores_its_own_images(tmp_path: Path, fake_cub: Callable[..., Path],
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """The issue's case: an SVM trained on test, localize on train: the foreground map and its threshold would
    be fitted on the scored boxes. Refused; --calibrate test calibrates on the other split and says so."""
    root = fake_cub(n_classes=2, per_class=6)
    features, svm = tmp_path / "f.h5", tmp_path / "svm.h5"
    assert main(["extract", str(root), "--dataset", "cub200", "--maps", "-o", str(features), "--model", "tiny_test"]) == 0
    assert main(["svm-train", str(features), "--split", "test", "-o", str(svm), "--C", "1"]) == 0
    capsys.readouterr()
    for classifier_file, method in ((svm, "foreground-class"), ("head", "objectness")):
        assert main(["localize", str(features), str(classifier_file), "--method", method, "--split", "train"]) == 2
        err = capsys.readouterr().err.strip()
        assert "6 of the 6 images to localize are train images the threshold was chosen" in err, err
        assert "--calibrate test" in err and len(err.splitlines()) == 1
    out = tmp_path / "loc"
    assert main(["localize", str(features), str(svm), "--method", "foreground-class", "--split", "train",
                 "--calibrate", "test", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "chosen on 6 test images only" in text and "none of them is a scored image, by row or by content" in text
    assert "foreground SVM on map cells of the test split's boxes, one per class" in text
    summary = json.loads((out / "localization.json").read_text())["summary"]
    assert summary["calibration"]["split"] == "test" and summary["threshold_chosen_on"] == "test (6 images)"
    assert main(["localize", str(features), str(svm), "--method", "objectness", "--calibrate", "val"]) == 2
    assert "has no val split to calibrate on (splits: test, train)" in capsys.readouterr().err


def test_a_calibration_refuses_its_images_in_another_file(tmp_path: Path) -> None:
    """Content fingerprints: the calibration images listed again elsewhere are still refused."""
    import h5py

    path, _ = boxed_store(tmp_path)
    prints = np.array([f"{i}:{i:032x}" for i in range(24)], dtype=object)
    with h5py.File(path, "r+") as h5:
        h5["images/fingerprint"][:] = prints
    copy = tmp_path / "copy.h5"
    copy.write_bytes(path.read_bytes())
    with h5py.File(copy, "r+") as h5:
        h5["images/path"][:] = np.array([f"again/{i}.jpg" for i in range(24)], dtype=object)
        h5["images/split"][:] = np.array([["test"]] * 24, dtype=object)
    with FeatureFile(path) as features:
        chosen = calibrate(features, classifier(), np.arange(16), CamOptions(method="foreground"))
        with pytest.raises(FeatkitError, match="16 of the 24 images to localize are train images the threshold was "
                                               "chosen and its map fitted on; calibrate on another split"):
            localize(features, classifier(), np.arange(24), calibration=chosen, sweep=False)
    with FeatureFile(copy) as again:
        with pytest.raises(FeatkitError, match="16 of the 24 images to localize are train images .* by their content"):
            localize(again, classifier(), np.arange(24), calibration=chosen, sweep=False)
        assert localize(again, classifier(), np.arange(16, 24), calibration=chosen, sweep=False).summary["n_images"] == 8
