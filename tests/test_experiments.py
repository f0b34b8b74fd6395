"""Crops (Table 4) and units (Sec. 5) end to end on a fake CUB tree with the seeded tiny backbone (seconds)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest

from featkit.cli import main
from featkit.features import FeatureFile

TINY = ["--model", "tiny_test", "--workers", "0", "--batch-size", "4"]


@pytest.fixture
def tiny_cub(fake_cub: Callable[..., Path], tmp_path: Path) -> tuple[Path, Path, Path]:
    """(dataset root, features with maps, svm.h5) of a 2-class fake CUB tree."""
    root = fake_cub(n_classes=2, per_class=6)
    features = tmp_path / "f.h5"
    assert main(["extract", str(root), "--dataset", "cub200", "--maps", "-o", str(features), *TINY]) == 0
    svm = tmp_path / "svm.h5"
    assert main(["svm-train", str(features), "-o", str(svm), "--C", "1"]) == 0
    return root, features, svm


@pytest.mark.parametrize("boxes", ["cam", "gt"])
def test_crops_reextract_every_image_and_retrain(tiny_cub: tuple[Path, Path, Path], tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str], boxes: str) -> None:
    root, features, svm = tiny_cub
    out = tmp_path / f"crops_{boxes}.h5"
    capsys.readouterr()
    assert main(["crops", str(root), str(features), str(svm), "-o", str(out), "--boxes", boxes,
                 "--workers", "0"]) == 0
    text = capsys.readouterr().out
    assert re.search(rf"{boxes}\s+crops\s+accuracy\s+\d+\.\d\d %", text), text
    with FeatureFile(out) as crops, FeatureFile(features) as full:
        assert crops.complete and len(crops) == len(full) == 12
        assert crops.paths == full.paths and crops.labels.tolist() == full.labels.tolist()
        assert str(crops.attrs["crop"]).startswith(boxes)
        assert crops.attrs["backbone"] == "tiny_test" and not crops.has_maps
        # the features of a crop are not those of the whole image
        assert not np.allclose(crops.gap, full.gap)


def test_crops_refuse_an_existing_output(tiny_cub: tuple[Path, Path, Path], tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    root, features, svm = tiny_cub
    before = features.read_bytes()
    assert main(["crops", str(root), str(features), str(svm), "-o", str(features)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    # the output is the input features: refused as such, without advice to overwrite them
    assert len(err) == 1 and "would destroy the input" in err[0] and "--overwrite" not in err[0]
    assert features.read_bytes() == before


@pytest.mark.parametrize("stored", [True, False])
def test_units_rank_by_weight_from_stored_or_recomputed_maps(
    fake_cub: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], stored: bool
) -> None:
    root = fake_cub(n_classes=2, per_class=4)
    features = tmp_path / "f.h5"
    maps = ["--maps"] if stored else []
    assert main(["extract", str(root), "--dataset", "cub200", *maps, "-o", str(features), *TINY]) == 0
    capsys.readouterr()
    out = tmp_path / "units"
    assert main(["units", str(features), "head", "--class", "3", "--top-units", "3", "--images", "2",
                 "-o", str(out)]) == 0
    table = capsys.readouterr().out
    weights = [float(w) for w in re.findall(r"^\d+\s+([+-]\d+\.\d+)", table, re.M)]
    assert len(weights) == 3 and weights == sorted(weights, reverse=True)
    pictures = sorted(out.glob("unit_*.png"))
    assert len(pictures) == 3 and (out / "index.html").is_file()
    with h5py.File(features) as h5:
        head = h5["head/weight"][3]
    assert weights[0] == pytest.approx(float(head.max()), abs=1e-4)
