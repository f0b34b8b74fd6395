"""featkit export (npz / parquet / csv), FeatureFile.to_numpy / to_pandas, and every --json output."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import make_fake_cub

from featkit.cli.main import main
from featkit.errors import FeatkitError
from featkit.features import FeatureFile
from featkit.features.export import export

pd = pytest.importorskip("pandas", reason="pandas is the optional extra featkit[export] (in dev)")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A boxed CUB-layout features file with maps (tiny_test) and an SVM trained on it."""
    tmp = tmp_path_factory.mktemp("exportjson")
    root = make_fake_cub(tmp / "CUB_200_2011", n_classes=6, per_class=4)
    features, svm = tmp / "f.h5", tmp / "svm.h5"
    assert main(["extract", str(root), "-o", str(features), "--maps", "--model", "tiny_test"]) == 0
    assert main(["svm-train", str(features), "-o", str(svm), "--C", "1"]) == 0
    return features, svm


def test_export_round_trips_to_numpy_and_pandas_exactly(files: tuple[Path, Path], tmp_path: Path) -> None:
    with FeatureFile(files[0]) as features:
        arrays = features.to_numpy()
        table = features.to_pandas()
        assert arrays["features"].shape == (24, 32) and arrays["splits"].shape == (24, 1)
        assert table.shape == (24, 11 + 32) and list(table.columns[:4]) == ["path", "label", "class", "split"]
        assert (table["class"] == np.array(features.classes)[features.labels]).all()
        np.testing.assert_array_equal(table[[f"f{j}" for j in range(32)]].to_numpy(), features.gap)
        np.testing.assert_array_equal(table[["x0", "y0", "x1", "y1"]].to_numpy(), features.box)
        gap, paths, splits = np.array(features.gap), features.paths, features.splits[:, 0].tolist()
    assert main(["export", str(files[0]), "-o", str(tmp_path / "f.npz")]) == 0
    with np.load(tmp_path / "f.npz") as loaded:
        assert set(loaded.files) == set(arrays)
        for name, value in arrays.items():
            np.testing.assert_array_equal(loaded[name], value, err_msg=name)
        assert loaded["features"].dtype == np.float32
    assert main(["export", str(files[0]), "-o", str(tmp_path / "f.parquet")]) == 0
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "f.parquet"), table)
    assert main(["export", str(files[0]), "-o", str(tmp_path / "f.csv")]) == 0
    csv = pd.read_csv(tmp_path / "f.csv", keep_default_na=False)
    np.testing.assert_array_equal(csv[[f"f{j}" for j in range(32)]].to_numpy(np.float32), gap)
    assert csv["path"].tolist() == paths and csv["split"].tolist() == splits
    assert (csv["label"].to_numpy() == table["label"].to_numpy()).all()


def test_export_refuses_unknown_suffix_and_existing_file(files: tuple[Path, Path], tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", str(files[0]), "-o", str(tmp_path / "f.xlsx")]) == 2
    assert "ending in .npz or .parquet or .csv" in capsys.readouterr().err
    (tmp_path / "f.npz").write_bytes(b"keep")
    with FeatureFile(files[0]) as features, pytest.raises(FeatkitError, match="already exists"):
        export(features, tmp_path / "f.npz")
    assert (tmp_path / "f.npz").read_bytes() == b"keep"


def _json(argv: list[str], capsys: pytest.CaptureFixture[str]) -> object:
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def _text(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(argv) == 0
    return capsys.readouterr().out


def _pct(text: str, label: str) -> float:
    match = re.search(rf"{label}\s+([0-9.]+) %", text)
    assert match, (label, text)
    return float(match.group(1))


def test_json_outputs_parse_and_hold_the_text_numbers(files: tuple[Path, Path],
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    features, svm = (str(p) for p in files)
    info = _json(["info", features], capsys)
    text = _text(["info", features], capsys)
    assert isinstance(info, dict) and info["n_images"] == 24 and f"images       {info['n_images']} (24 labelled)" in text
    assert info["splits"] == [{"train": 12, "test": 12}] and "split        train 12, test 12" in text
    assert info["attrs"]["backbone"] == "tiny_test" and info["gap_shape"] == [24, 32]

    evaluated = _json(["svm-eval", features, svm], capsys)
    text = _text(["svm-eval", features, svm], capsys)
    assert isinstance(evaluated, dict) and evaluated["n_images"] == 12
    assert round(100 * evaluated["accuracy"], 2) == _pct(text, "accuracy")
    assert round(100 * evaluated["mean_per_class_accuracy"], 2) == _pct(text, "mean per-class accuracy")
    assert round(100 * evaluated["top5"], 2) == _pct(text, "top-5 accuracy")  # 6 classes: top-5 is shown
    assert np.array(evaluated["confusion"]).sum() == 12

    located = _json(["localize", features, svm], capsys)
    text = _text(["localize", features, svm], capsys)
    assert isinstance(located, dict)
    row = next(line for line in text.splitlines() if line.startswith("| CAM"))
    cells = [c.strip() for c in row.split("|")[2:4]]
    assert cells == [f"{100 * located['summary']['gt_known_loc']:.1f}", f"{100 * located['summary']['top1_loc']:.1f}"]

    protocol = _json(["protocol", features, "--C", "1"], capsys)
    text = _text(["protocol", features, "--C", "1"], capsys)
    assert isinstance(protocol, dict) and len(protocol["folds"]) == 1
    assert f"{100 * protocol['mean']:.2f}" in text.splitlines()[-1]

    models = _json(["models"], capsys)
    text = _text(["models"], capsys)
    assert isinstance(models, list) and [m["name"] for m in models] == [
        line.split()[0] for line in text.splitlines()[2:] if not line.startswith("timm CNNs")]
    assert "tiny_test" not in text  # for tests only: not listed
    datasets = _json(["datasets"], capsys)
    text = _text(["datasets"], capsys)
    assert isinstance(datasets, list) and [d["name"] for d in datasets] == [line.split()[0] for line in text.splitlines()[2:]]


def test_svm_eval_hides_top5_with_five_classes_or_fewer(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_fake_cub(tmp_path / "cub", n_classes=3, per_class=4)
    assert main(["extract", str(root), "-o", str(tmp_path / "f.h5"), "--model", "tiny_test"]) == 0
    assert main(["svm-train", str(tmp_path / "f.h5"), "-o", str(tmp_path / "s.h5"), "--C", "1"]) == 0
    capsys.readouterr()
    text = _text(["svm-eval", str(tmp_path / "f.h5"), str(tmp_path / "s.h5")], capsys)
    assert "accuracy" in text and "top-5" not in text
