"""Smoke tests of the benchmark scripts on tiny inputs: they run and write their tables."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from conftest import sample_root, write_features, write_image

from benchmarks import geometry_cv, perf_geometry, table5


def _fake_scene15(root: Path, classes: int = 3, per_class: int = 6) -> Path:
    for c in range(classes):
        for j in range(per_class):
            write_image(root / f"Scene_{c}" / f"image_{j:04d}.jpg", (64 + 4 * j, 48), seed=100 * c + j, mode="L")
    return root


@pytest.mark.slow  # the real EfficientNet-Lite0 weights
def test_table5_writes_paper_rows_beside_featkit(tmp_path: Path) -> None:
    root = _fake_scene15(tmp_path / "Scene15")
    out = tmp_path / "results"
    code = table5.main(["--root", f"scene15={root}", "--train-per-class", "3", "--out", str(out),
                        "--cache", str(tmp_path / "cache"), "--image-size", "64", "--workers", "0"])
    assert code == 0
    text = (out / "table5.md").read_text()
    assert "| gap from GoogLeNet-GAP (paper) | 51.31 | 66.61 | 88.3 |" in text
    featkit_row = next(line for line in text.splitlines() if "(featkit)" in line)
    cells = [c.strip() for c in featkit_row.strip("|").split("|")]
    assert cells[1] == "missing" and cells[3].endswith("*") and "+-" in cells[3]
    assert (out / "table5.csv").is_file()
    by_geometry = (out / "table5_geometry.md").read_text().splitlines()
    assert by_geometry[0] == "| model | dataset | warp | short-side | crop |"
    assert by_geometry[2].startswith("| efficientnet_lite0 | 15-Scene |") and by_geometry[2].count("+-") == 3


@pytest.mark.slow  # the real EfficientNet-Lite0 weights
def test_table5_on_the_stanford40_sample(tmp_path: Path) -> None:
    root = sample_root("Stanford40")
    out = tmp_path / "results"
    assert table5.main(["--root", f"stanford40={root}", "--out", str(out), "--cache", str(tmp_path),
                        "--geometries", "warp"]) == 0
    featkit_row = next(line for line in (out / "table5.md").read_text().splitlines() if "(featkit)" in line)
    accuracy = float(featkit_row.strip("|").split("|")[7])
    assert 50.0 <= accuracy <= 100.0


def test_svm_design_scores_configurations_inside_the_train_split(tmp_path: Path) -> None:
    from benchmarks import svm_design

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 12)
    gap = np.abs(rng.normal(0, 0.3, (36, 8)))
    gap[np.arange(36), labels] += 2.0
    splits = np.where(np.arange(36) % 3 == 0, "test", "train")
    gap[splits == "test"] = np.nan  # the test rows must never be read: NaN there would fail every fit
    features = write_features(tmp_path / "f.h5", gap, labels, splits, ["a", "b", "c"])
    out = tmp_path / "results"
    assert svm_design.main(["--features", str(features), "--folds", "2", "--repeats", "2", "--out", str(out)]) == 0
    text = (out / "svm_design.md").read_text()
    assert "| C=auto, l2, shared C (default) | 100.00 +- 0.00 | - |" in text
    assert "(24 images, 3 classes)" in text and (out / "svm_design.csv").is_file()


def test_perf_svm_writes_ratios_at_the_same_grid_and_folds(tmp_path: Path) -> None:
    from benchmarks import perf_svm

    rng = np.random.default_rng(12)
    means = 2.0 * rng.standard_normal((4, 10))
    y = np.arange(80) % 4
    X = np.maximum(means[y] + rng.standard_normal((80, 10)), 0.0)
    features = tmp_path / "tiny.npz"
    np.savez(features, X_train=X[:48], y_train=y[:48], X_test=X[48:], y_test=y[48:])
    out = tmp_path / "results"
    code = perf_svm.main(["--synthetic", "90,8,6,1", "--features", str(features), "--test-per-class", "4",
                          "--out", str(out), "--C", "0.5", "--repeats", "1", "--n-jobs", "1"])
    assert code == 0
    with (out / "perf_svm.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    tiny = [r for r in rows if r["problem"] == "tiny"]
    assert [r["C selection"] for r in tiny] == ["3-fold CV over 13 C, same folds"] * 2 + ["fixed C"] * 2
    assert [r["method"].startswith("scikit-learn") for r in tiny] == [False, True] * 2
    for row in rows:
        assert float(row["fit s"]) > 0 and 0.0 <= float(row["score %"]) <= 100.0
        if row["method"].startswith("scikit-learn"):
            assert row["speedup ratio"] == "1.00" and row["score - baseline"] == "+0.00"
    synthetic = [r for r in rows if r["problem"].startswith("synthetic")]
    assert {r["test metric"] for r in synthetic} == {"mAP (timed classes)"}
    assert {r["SVMs timed"] for r in synthetic} == {"1"} and synthetic[0]["classes"] == "6"
    assert "speedup ratio" in (out / "perf_svm.md").read_text()


def test_geometry_cv_scores_every_geometry_on_train_images_only(tmp_path: Path) -> None:
    _fake_scene15(tmp_path / "data" / "Scene15")
    out = tmp_path / "results"
    assert geometry_cv.main(["--data-dir", str(tmp_path / "data"), "--out", str(out), "--cache",
                             str(tmp_path / "cache"), "--model", "tiny_test"]) == 0
    lines = (out / "geometry_cv.md").read_text().splitlines()
    assert [line.split("|")[1].strip() for line in lines[2:6]] == ["warp", "short-side", "crop", "short-side + flip"]
    assert all("n=18)" in line for line in lines[2:6])  # a random-protocol sample: its whole pool
    assert sum("(best; n=18)" in line for line in lines[2:5]) >= 1  # differences are to the best geometry
    assert lines[-1].endswith(("-> **warp**.", "-> **short-side**."))  # only whole-image policies can win


def _cv(per_split: list[float]) -> geometry_cv.CvScore:
    return geometry_cv.CvScore(np.array(per_split), 100, 0.25, 1.0)


def test_geometry_rule_keeps_whole_image_policies_within_one_standard_error() -> None:
    """The a-priori rule: crop cannot win; a candidate more than one SE under the best is out; two within
    it are separated by train-box localization; none within it: the best mean CV among the candidates."""
    warp, short, crop = ("warp", "none"), ("short-side", "none"), ("crop", "none")
    geometries = [warp, short, crop]
    best = [0.90, 0.92, 0.88, 0.91, 0.89, 0.90]
    noisy = [v - 0.005 + 0.01 * (-1) ** i for i, v in enumerate(best)]  # 0.5 points under, SE ~0.6
    scores = {(crop, "a"): _cv(best), (short, "a"): _cv(noisy),
              (warp, "a"): _cv([v - 0.05 + 0.002 * (i % 2) for i, v in enumerate(best)])}
    decision = geometry_cv.decide(scores, {}, ["a"], geometries)
    assert decision.default == "short-side" and decision.qualifying == [short]
    both = {**scores, (warp, "a"): _cv([v - 0.004 + 0.01 * (-1) ** i for i, v in enumerate(best)])}
    loc = {(warp, "a"): 0.6, (short, "a"): 0.5}
    decision = geometry_cv.decide(both, loc, ["a"], geometries)
    assert decision.default == "warp" and set(decision.qualifying) == {warp, short}
    far = {**scores, (short, "a"): _cv([v - 0.04 + 0.002 * (i % 2) for i, v in enumerate(best)])}
    decision = geometry_cv.decide(far, {}, ["a"], geometries)
    assert decision.default == "short-side" and decision.qualifying == []


def test_perf_geometry_reports_img_per_s_beside_warp(tmp_path: Path) -> None:
    root = _fake_scene15(tmp_path / "Scene15", classes=2, per_class=4)
    out = tmp_path / "results"
    assert perf_geometry.main(["--root", str(root), "--dataset", "scene15", "--model", "tiny_test", "--workers", "0",
                               "--repeats", "1", "--out", str(out)]) == 0
    rows = [[c.strip() for c in line.split("|")[1:-1]]
            for line in (out / "perf_geometry.md").read_text().splitlines()[2:7]]
    assert [tuple(r[:3]) for r in rows] == [
        ("warp", "none", "-"), ("short-side", "none", "1"), ("short-side", "none", "128 (default)"),
        ("crop", "none", "-"), ("short-side", "flip", "128 (default)")]
    assert rows[0][5] == "1.00x" and rows[0][7] == "1.00x" and all(float(r[4]) > 0 and float(r[6]) > 0 for r in rows)


def test_table4_best_method_is_the_highest_calibration_accuracy_on_train(tmp_path: Path) -> None:
    from conftest import boxed_classifier, boxed_store

    from benchmarks import table4
    from featkit.features import FeatureFile
    from featkit.linear.protocol import split_rows

    path, _ = boxed_store(tmp_path)
    classifier = boxed_classifier()
    with FeatureFile(path) as features:
        train = split_rows(features, "train")
        chosen, calibrations = table4.choose_method(features, classifier, train, "best")
        assert list(calibrations) == list(table4.BEST_CANDIDATES)
        assert all(c.split == "train" and c.n_images == len(train) == 16 for c in calibrations.values())
        assert chosen.accuracy == max(c.accuracy for c in calibrations.values())
        assert chosen is calibrations[chosen.options.method]
        # A named method is calibrated alone.
        single, only = table4.choose_method(features, classifier, train, "cam-positive")
        assert list(only) == ["cam-positive"] and single.options.method == "cam-positive"
