"""Smoke tests of the benchmark scripts on tiny inputs: they run and write their tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from conftest import sample_root, write_features, write_image

from benchmarks import table5


def _fake_scene15(root: Path, classes: int = 3, per_class: int = 6) -> Path:
    for c in range(classes):
        for j in range(per_class):
            write_image(root / f"Scene_{c}" / f"image_{j:04d}.jpg", (64 + 4 * j, 48), seed=100 * c + j, mode="L")
    return root


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


def test_table5_on_the_stanford40_sample(tmp_path: Path) -> None:
    root = sample_root("Stanford40")
    out = tmp_path / "results"
    assert table5.main(["--root", f"stanford40={root}", "--out", str(out), "--cache", str(tmp_path)]) == 0
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
