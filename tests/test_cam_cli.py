"""cam / localize / crops / units / discover verbs: pictures, reports and their errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import sample_root, write_features, write_image
from PIL import Image

from featkit.cli import main


def _err(capsys: pytest.CaptureFixture[str]) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


@pytest.fixture(scope="module")
def cub_svm(cub_features: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("svm") / "svm.h5"
    assert main(["svm-train", str(cub_features), "-o", str(out)]) == 0
    return out


@pytest.mark.slow
def test_cam_draws_overlays_and_a_gallery(cub_features: Path, cub_svm: Path, tmp_path: Path) -> None:
    out = tmp_path / "cams"
    assert main(["cam", str(cub_features), str(cub_svm), "-o", str(out), "--limit", "3", "--raw", "npy"]) == 0
    pictures = sorted(out.glob("*.png"))
    assert len(pictures) == 3
    page = (out / "index.html").read_text()
    assert page.count("<img") == 3 and "Albatross" in page
    assert np.load(out / "cams.npy").shape[:2] == (3, 1)
    picture = np.asarray(Image.open(pictures[0]).convert("RGB"))
    red = (picture[..., 0] > 200) & (picture[..., 1] < 40) & (picture[..., 2] < 40)
    green = (picture[..., 1] > 200) & (picture[..., 0] < 40) & (picture[..., 2] < 40)
    assert red.sum() > 100 and green.sum() > 100  # predicted box in red, ground truth in green


@pytest.mark.slow
def test_cam_of_a_named_class_and_bad_names(cub_features: Path, cub_svm: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cams"
    assert main(["cam", str(cub_features), str(cub_svm), "-o", str(out), "--images", "*Laysan*", "--limit", "2",
                 "--class", "002.Laysan_Albatross"]) == 0
    assert len(list(out.glob("*.png"))) == 2
    capsys.readouterr()
    assert main(["cam", str(cub_features), str(cub_svm), "-o", str(out), "--class", "Laysan"]) == 2
    assert "is not one of the classifier's classes; did you mean 002.Laysan_Albatross" in _err(capsys)


@pytest.mark.slow
def test_localize_reports_the_paper_numbers(cub_features: Path, cub_svm: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "loc"
    # the threshold sweep (35 s on these 243 images) is checked on the Stanford40 sample below
    assert main(["localize", str(cub_features), str(cub_svm), "-o", str(out), "--multi-threshold", "--no-sweep"]) == 0
    text = capsys.readouterr().out
    assert "Localization of 243 images" in text and "centre box" in text
    summary = json.loads((out / "localization.json").read_text())["summary"]
    assert summary["gt_known_loc"] >= 0.38 and summary["top1_loc"] <= summary["gt_known_loc"]
    assert summary["full_image_baseline"] < summary["gt_known_loc"]
    assert len((out / "localization.csv").read_text().splitlines()) == 244
    # positive evidence only (w_k^c > 0): tighter boxes, GT-known >= 55 % on the 243 test images
    assert main(["localize", str(cub_features), str(cub_svm), "--no-sweep", "--cam-weights", "positive",
                 "-o", str(tmp_path / "pos")]) == 0
    positive = json.loads((tmp_path / "pos" / "localization.json").read_text())["summary"]
    assert positive["weights"] == "positive" and positive["gt_known_loc"] >= 0.55
    assert "from positive weights only" in capsys.readouterr().out


@pytest.mark.slow
def test_localize_wsol_protocol(cub_features: Path, cub_svm: Path, tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "wsol"
    assert main(["localize", str(cub_features), str(cub_svm), "--protocol", "wsol", "-o", str(out)]) == 0
    assert "wsolevaluation protocol" in capsys.readouterr().out
    summary = json.loads((out / "localization.json").read_text())["summary"]
    assert summary["sweep_protocol"] == "wsol" and summary["sweep_cam_curve_interval"] == 0.01
    assert 0.38 <= summary["max_box_acc"] <= summary["max_box_acc_v2"] <= 0.7
    assert main(["localize", str(cub_features), str(cub_svm), "--cam-curve-interval", "0.001"]) == 2
    assert "--cam-curve-interval applies to --protocol wsol only" in _err(capsys)


@pytest.mark.slow
def test_units_ranks_by_the_svm_weight(cub_features: Path, cub_svm: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "units"
    assert main(["units", str(cub_features), str(cub_svm), "--class", "004.Groove_billed_Ani", "--top-units", "2",
                 "--images", "3", "-o", str(out)]) == 0
    table = capsys.readouterr().out
    weights = [float(w) for w in re.findall(r"^\d+\s+([+-]\d\.\d+)", table, re.M)]
    assert len(weights) == 2 and weights[0] >= weights[1] > 0
    assert len(list(out.glob("unit_*.png"))) == 2


def test_svm_of_other_features_is_refused_by_cam(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(0)
    gap = np.abs(rng.normal(size=(8, 4))).astype(np.float32)
    labels, splits = [0, 1] * 4, ["train"] * 4 + ["test"] * 4
    mine = write_features(tmp_path / "a.h5", gap, labels, splits, ["a", "b"])
    other = write_features(tmp_path / "b.h5", gap, labels, splits, ["a", "b"], backbone="resnet18")
    assert main(["svm-train", str(other), "-o", str(tmp_path / "svm.h5"), "--C", "1"]) == 0
    for verb in (["cam", "-o", str(tmp_path / "c")], ["localize"]):
        capsys.readouterr()
        assert main([verb[0], str(mine), str(tmp_path / "svm.h5"), *verb[1:]]) == 2
        assert "trained on other features (backbone" in _err(capsys)


def test_no_maps_and_no_root_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(0)
    gap = np.abs(rng.normal(size=(8, 4))).astype(np.float32)
    boxes = [((1.0, 1.0, 5.0, 5.0),)] * 8
    path = write_features(tmp_path / "a.h5", gap, [0, 1] * 4, ["train"] * 4 + ["test"] * 4, ["a", "b"], boxes=boxes,
                          dataset_root=str(tmp_path / "moved_away"))
    assert main(["svm-train", str(path), "-o", str(tmp_path / "svm.h5"), "--C", "1"]) == 0
    capsys.readouterr()
    assert main(["localize", str(path), str(tmp_path / "svm.h5")]) == 2
    assert "has no conv maps and no dataset root to recompute them" in _err(capsys)
    assert main(["localize", str(path), str(tmp_path / "svm.h5"), "--root", str(tmp_path / "nope")]) == 2
    assert "pass --root DATASET_ROOT" in _err(capsys)


def test_localize_without_boxes_prints_the_predicted_boxes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Nothing to score against: the predicted class's CAM box of each image, printed and in boxes.csv."""
    rng = np.random.default_rng(0)
    gap = np.abs(rng.normal(size=(8, 4))).astype(np.float32)
    maps = np.abs(rng.normal(size=(8, 4, 2, 2))).astype(np.float32)
    path = write_features(tmp_path / "a.h5", gap, [0, 1] * 4, ["train"] * 4 + ["test"] * 4, ["a", "b"], maps=maps)
    assert main(["svm-train", str(path), "-o", str(tmp_path / "svm.h5"), "--C", "1"]) == 0
    capsys.readouterr()
    assert main(["localize", str(path), str(tmp_path / "svm.h5"), "-o", str(tmp_path / "loc")]) == 0
    out = capsys.readouterr().out
    assert "no ground-truth boxes in the 4 images" in out and "no localization score" in out
    lines = (tmp_path / "loc" / "boxes.csv").read_text().splitlines()
    assert lines[0] == "path,predicted_class,x0,y0,x1,y1" and len(lines) == 5


def test_discover_ranks_the_positive_set_first(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for i in range(4):  # bright red squares vs. dark green noise: linearly separable concepts
        img = np.zeros((64, 64, 3), np.uint8)
        img[16:48, 16:48, 0] = 230
        (tmp_path / "pos").mkdir(exist_ok=True)
        Image.fromarray(np.roll(img, 4 * i, axis=1)).save(tmp_path / "pos" / f"red_{i}.png")
        write_image(tmp_path / "neg" / f"noise_{i}.jpg", (64, 64), seed=i)
    out = tmp_path / "out"
    assert main(["discover", str(tmp_path / "pos"), str(tmp_path / "neg"), "-o", str(out), "--top", "3",
                 "--image-size", "64"]) == 0
    ranking = (out / "ranking.csv").read_text().splitlines()
    assert [line.split(",")[2] for line in ranking[1:5]] == ["positive"] * 4
    assert len(list((out / "cams").glob("*.png"))) == 3
    capsys.readouterr()
    assert main(["discover", str(tmp_path / "pos"), str(tmp_path / "missing"), "-o", str(out)]) == 2
    assert "negative folder" in _err(capsys)


@pytest.mark.slow
def test_crops_reclassify_from_cam_and_gt_boxes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """On the Stanford40 sample (120 images, one person box each); CUB's numbers are in benchmarks/table4."""
    root = sample_root("Stanford40")
    features, svm = tmp_path / "f.h5", tmp_path / "svm.h5"
    assert main(["extract", str(root), "--dataset", "stanford40", "--maps", "-o", str(features)]) == 0
    assert main(["svm-train", str(features), "-o", str(svm)]) == 0
    for boxes in ("cam", "gt"):
        out = tmp_path / f"{boxes}.h5"
        capsys.readouterr()
        assert main(["crops", str(root), str(features), str(svm), "-o", str(out), "--boxes", boxes]) == 0
        text = capsys.readouterr().out
        full = float(re.search(r"full image\s+accuracy\s+([\d.]+)", text).group(1))
        crop = float(re.search(r"crops\s+accuracy\s+([\d.]+)", text).group(1))
        assert 40.0 <= full <= 100.0 and 40.0 <= crop <= 100.0
        with h5py.File(out) as h5:
            assert h5.attrs["complete"] and str(h5.attrs["crop"]).startswith(boxes)
            assert h5["features/gap"].shape == (120, 1280)


@pytest.mark.slow
@pytest.mark.parametrize("name,dataset,split", [("Stanford40", "stanford40", "test"),
                                                ("Caltech101", "caltech101", "train")])
def test_cam_and_localize_on_other_samples(name: str, dataset: str, split: str, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    root = sample_root(name)
    features, svm = tmp_path / "f.h5", tmp_path / "svm.h5"
    assert main(["extract", str(root), "--dataset", dataset, "--maps", "-o", str(features)]) == 0
    assert main(["svm-train", str(features), "-o", str(svm)]) == 0
    assert main(["cam", str(features), str(svm), "-o", str(tmp_path / "cams"), "--split", split, "--limit", "2"]) == 0
    capsys.readouterr()
    if split == "train":  # the Caltech101 sample is all training images: the SVM may not score them
        assert main(["localize", str(features), str(svm), "--split", split, "--no-sweep"]) == 2
        assert "are training images of" in _err(capsys)
        with h5py.File(features, "r+") as h5:  # hold every other image out, train on the rest
            table = h5["images/split"].asstr()[:].astype(object)
            table[1::2, 0] = "test"
            h5["images/split"][:] = table
        assert main(["svm-train", str(features), "-o", str(svm), "--overwrite"]) == 0
        split = "test"
        capsys.readouterr()
    assert main(["localize", str(features), str(svm), "--split", split, "--sweep", "-o", str(tmp_path / "loc")]) == 0
    text = capsys.readouterr().out
    assert "GT-known loc." in text and "centre box" in text and "MaxBoxAccV2" in text
    assert (tmp_path / "loc" / "threshold_curve.png").stat().st_size > 5000
