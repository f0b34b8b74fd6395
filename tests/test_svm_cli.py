"""svm-train / svm-eval: svm.h5 contents, exact weights, protocol errors, real CUB accuracy."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import write_features

from featkit.cli import main
from featkit.features.store import FeatureFile
from featkit.linear import load_svm
from featkit.linear.svm import OneVsAllLinearSVM


def _separable(n_classes: int = 3, per_class: int = 20, k: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(n_classes), per_class)
    gap = np.abs(rng.normal(0, 0.3, (len(labels), k)))
    gap[np.arange(len(labels)), labels] += 3.0  # class c lights unit c
    return gap.astype(np.float32), labels


def _features(tmp_path: Path, n_classes: int = 3, name: str = "f.h5", **kwargs: object) -> Path:
    gap, labels = _separable(n_classes)
    splits = np.where(np.arange(len(labels)) % 2 == 0, "train", "test")
    return write_features(tmp_path / name, gap, labels, splits, [f"class_{c}" for c in range(n_classes)], **kwargs)


def _err(capsys: pytest.CaptureFixture[str]) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_train_then_eval_on_separable_features(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    features = _features(tmp_path)
    svm_path = tmp_path / "svm.h5"
    assert main(["svm-train", str(features), "-o", str(svm_path)]) == 0
    with h5py.File(svm_path) as h5:
        assert h5["weight"].shape == (3, 16) and h5["bias"].shape == (3,)
        assert list(h5["classes"].asstr()[:]) == ["class_0", "class_1", "class_2"]
        a = h5.attrs
        assert a["features_backbone"] == "efficientnet_lite0" and a["normalize"] == "l2"
        assert a["trained_split"] == "train" and a["trained_n_images"] == 30 and "liblinear" in a["solver"]
        assert h5["C"].shape == (3,)
    capsys.readouterr()
    confusion = tmp_path / "cm.png"
    assert main(["svm-eval", str(features), str(svm_path), "--per-class", "--confusion", str(confusion)]) == 0
    out = capsys.readouterr().out
    assert "accuracy                 100.00 %" in out and "class_2" in out
    assert confusion.stat().st_size > 1000


def test_train_says_how_C_was_chosen(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    features = _features(tmp_path)
    assert main(["svm-train", str(features), "-o", str(tmp_path / "auto.h5")]) == 0
    line = capsys.readouterr().out.splitlines()[1]
    m = re.fullmatch(r"  C=([\d.]+): cross-validated \(3-fold on the training rows, shared, by CV accuracy\) over "
                     r"C = 2\^-6\.\.2\^6 \(13 values\), rule cv-argmax, ties to the smaller C; "
                     r"CV accuracy at that C ([\d.]+) %", line)
    assert m, line
    with h5py.File(tmp_path / "auto.h5") as h5:
        grid, scores = h5["cv/C_grid"][:], h5["cv/scores"][:]
        assert h5.attrs["C_rule"] == "cv-argmax, ties to the smaller C"
        assert h5.attrs["cv_score"] == scores.max() == pytest.approx(float(m.group(2)) / 100, abs=5e-5)
        # the rule: the smallest C of the grid that reaches the highest CV score
        assert float(m.group(1)) == grid[np.flatnonzero(scores == scores.max())[0]] == h5["C"][0]
    assert main(["svm-train", str(features), "-o", str(tmp_path / "fixed.h5"), "--C", "0.5"]) == 0
    assert capsys.readouterr().out.splitlines()[1] == "  C=0.5: fixed (no cross-validation)"
    with h5py.File(tmp_path / "fixed.h5") as h5:
        assert h5.attrs["C_rule"] == "fixed" and "cv_score" not in h5.attrs


@pytest.mark.parametrize("normalize", ["l2", "none"])
def test_stored_weights_reproduce_the_decision_values(tmp_path: Path, normalize: str) -> None:
    features = _features(tmp_path)
    svm_path = tmp_path / "svm.h5"
    assert main(["svm-train", str(features), "-o", str(svm_path), "--normalize", normalize, "--C", "0.5"]) == 0
    stored = load_svm(svm_path)
    with FeatureFile(features) as f:
        train = f.splits[:, 0] == "train"
        reference = OneVsAllLinearSVM(C=0.5, normalize=normalize).fit(f.gap[train], f.labels[train])
        np.testing.assert_allclose(stored.decision_function(f.gap), reference.decision_function(f.gap),
                                   rtol=0, atol=1e-10)
        x = f.gap.astype(np.float64)
        if normalize == "l2":
            x = x / np.linalg.norm(x, axis=1, keepdims=True)
        np.testing.assert_allclose(stored.decision_function(f.gap), x @ stored.weight.T + stored.bias, atol=1e-12)


def test_two_classes_still_get_one_row_each(tmp_path: Path) -> None:
    features = _features(tmp_path, n_classes=2)
    assert main(["svm-train", str(features), "-o", str(tmp_path / "svm.h5"), "--C", "1"]) == 0
    assert load_svm(tmp_path / "svm.h5").weight.shape == (2, 16)


def test_incomplete_features_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    features = _features(tmp_path, complete=False)
    assert main(["svm-train", str(features), "-o", str(tmp_path / "svm.h5")]) == 2
    assert "incomplete" in _err(capsys) and not (tmp_path / "svm.h5").exists()


def test_one_class_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gap, _ = _separable(2)
    labels = np.zeros(len(gap), int)
    features = write_features(tmp_path / "f.h5", gap, labels, ["train"] * len(gap), ["a", "b"])
    assert main(["svm-train", str(features), "-o", str(tmp_path / "svm.h5")]) == 2
    assert "only one class" in _err(capsys)


def test_missing_training_split_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gap, labels = _separable(2)
    features = write_features(tmp_path / "f.h5", gap, labels, [""] * len(gap), ["a", "b"])
    assert main(["svm-train", str(features), "-o", str(tmp_path / "svm.h5")]) == 2
    assert "no usable images in split 'train'" in _err(capsys)


def test_nan_features_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gap, labels = _separable(2)
    gap[4, 3] = np.nan
    features = write_features(tmp_path / "f.h5", gap, labels, ["train"] * len(gap), ["a", "b"])
    assert main(["svm-train", str(features), "-o", str(tmp_path / "svm.h5")]) == 2
    assert "NaN" in _err(capsys)


def test_existing_svm_is_kept(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    features = _features(tmp_path)
    svm_path = tmp_path / "svm.h5"
    assert main(["svm-train", str(features), "-o", str(svm_path), "--C", "1"]) == 0
    before = hashlib.sha256(svm_path.read_bytes()).hexdigest()
    assert main(["svm-train", str(features), "-o", str(svm_path), "--C", "2"]) == 2
    assert "already exists" in _err(capsys)
    assert hashlib.sha256(svm_path.read_bytes()).hexdigest() == before


@pytest.mark.parametrize("mismatch", ["backbone", "classes"])
def test_eval_refuses_an_svm_of_other_features(mismatch: str, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    features = _features(tmp_path)
    assert main(["svm-train", str(features), "-o", str(tmp_path / "svm.h5"), "--C", "1"]) == 0
    if mismatch == "backbone":
        other = _features(tmp_path, name="other.h5", backbone="resnet50")
        expected = "trained on other features (backbone"
    else:
        gap, labels = _separable(3)
        other = write_features(tmp_path / "other.h5", gap, labels, ["test"] * len(gap), ["x", "y", "z"])
        expected = "another class list"
    capsys.readouterr()
    assert main(["svm-eval", str(other), str(tmp_path / "svm.h5")]) == 2
    assert expected in _err(capsys)


@pytest.mark.slow
def test_real_cub_accuracy_and_reproducibility(cub_features: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    first, second = tmp_path / "a.h5", tmp_path / "b.h5"
    assert main(["svm-train", str(cub_features), "-o", str(first)]) == 0
    assert main(["svm-train", str(cub_features), "-o", str(second)]) == 0
    np.testing.assert_array_equal(load_svm(first).weight, load_svm(second).weight)
    capsys.readouterr()
    assert main(["svm-eval", str(cub_features), str(first)]) == 0
    out = capsys.readouterr().out
    assert "243 images" in out
    accuracy = float(re.search(r"^  accuracy\s+([\d.]+) %", out, re.M).group(1))
    assert accuracy >= 84.0  # 84.77 % (C=0.5 by the CV arg-max) on the sample's features; a few images of slack
