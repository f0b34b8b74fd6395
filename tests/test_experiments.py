"""Crops (Table 4) and units (Sec. 5) end to end on a fake CUB tree with the seeded tiny backbone (seconds)."""

from __future__ import annotations

import dataclasses
import hashlib
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import write_image
from PIL import Image

from featkit.cam.maps import CamOptions
from featkit.cli import main
from featkit.data.base import ImageRecord
from featkit.errors import FeatkitError
from featkit.experiments.crops import predicted_class_boxes
from featkit.features import FeatureFile
from featkit.features.extractor import ExtractJob, ExtractOptions, extract_rows
from featkit.linear import classifier_for

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


def test_crops_refuse_a_threshold_chosen_on_the_scored_test_images(tiny_cub: tuple[Path, Path, Path], tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    root, features, svm = tiny_cub
    out = tmp_path / "crops.h5"
    capsys.readouterr()
    assert main(["crops", str(root), str(features), str(svm), "-o", str(out), "--method", "objectness",
                 "--calibrate", "test", "--workers", "0"]) == 2
    err = capsys.readouterr().err
    assert "6 of the 6 test images of fold 0 the crops are scored on are test images the threshold was chosen on" in err
    assert not out.exists()
    assert main(["crops", str(root), str(features), str(svm), "-o", str(out), "--method", "objectness",
                 "--workers", "0"]) == 0
    with FeatureFile(out) as crops:
        assert crops.attrs["crop_threshold_chosen_on"] == "train (6 images)"


@pytest.mark.parametrize("boxes", ["cam", "gt"])
def test_crops_reextract_every_image_and_retrain(tiny_cub: tuple[Path, Path, Path], tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str], boxes: str) -> None:
    root, features, svm = tiny_cub
    out = tmp_path / f"crops_{boxes}.h5"
    capsys.readouterr()
    assert main(["crops", str(root), str(features), str(svm), "-o", str(out), "--boxes", boxes,
                 "--workers", "0", "--threshold", "0.35"]) == 0
    text = capsys.readouterr().out
    assert re.search(rf"{boxes}\s+crops\s+accuracy\s+\d+\.\d\d %", text), text
    with FeatureFile(out) as crops, FeatureFile(features) as full:
        assert crops.complete and len(crops) == len(full) == 12
        assert crops.paths == full.paths and crops.labels.tolist() == full.labels.tolist()
        assert str(crops.attrs["crop"]).startswith(boxes) and crops.attrs["crop_method"] == boxes
        assert crops.attrs["backbone"] == "tiny_test" and not crops.has_maps
        # the features of a crop are not those of the whole image
        assert not np.allclose(crops.gap, full.gap)
        # the file carries the box each row was cut from; images/box keeps the ground truth
        np.testing.assert_array_equal(crops.box, full.box)
        assert crops.crop_box is not None and crops.crop_box.shape == (12, 4)
        if boxes == "gt":
            np.testing.assert_array_equal(crops.crop_box, full.box.astype(np.float64))
        else:
            expected = predicted_class_boxes(full, classifier_for(full, svm), np.arange(12), CamOptions(threshold=0.35))
            np.testing.assert_array_equal(crops.crop_box, expected)
            assert crops.attrs["crop_svm"] == str(svm.resolve()) and crops.attrs["crop_threshold"] == 0.35
            assert crops.attrs["crop_svm_sha256"] == hashlib.sha256(svm.read_bytes()).hexdigest()
            assert crops.attrs["crop_normalization"] == "max" and crops.attrs["crop_cam_weights"] == "all"
            assert crops.attrs["crop_svm_split"] == "train" and crops.attrs["crop_svm_fold"] == 0
            # every option that changes a box is recorded, and where the threshold came from
            assert crops.attrs["crop_close"] == 0 and list(crops.attrs["crop_scales"]) == [1.0]
            assert crops.attrs["crop_layer"] == "last" and crops.attrs["crop_enhance"] == 0.0
            assert crops.attrs["crop_threshold_chosen_on"] == "a priori"
        crop, sizes = crops.crop_box, full.sizes.astype(np.float64)
        area = ((crop[:, 2] - crop[:, 0]) * (crop[:, 3] - crop[:, 1]) / (sizes[:, 0] * sizes[:, 1])).mean()
    assert main(["info", str(out)]) == 0
    info = capsys.readouterr().out
    assert f"crop boxes   12 (images/crop_box, original pixels), mean area {area:.3f} of the image" in info
    if boxes == "cam":
        assert f"CAM boxes of {svm.resolve()} (sha256 " in info and "threshold 0.35, normalization max" in info
        assert "close 0, scales [1.0], layer last, enhance 0.0, threshold chosen on a priori" in info
    else:
        assert "ground-truth boxes" in info


def test_crops_resume_refuses_other_boxes(tiny_cub: tuple[Path, Path, Path], tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """A half-written crops file is resumed only by a run cutting the same boxes."""
    root, features, svm = tiny_cub
    out = tmp_path / "crops.h5"
    with FeatureFile(features) as full:
        job_boxes = full.box.astype(np.float64)
        records = [ImageRecord(p, int(label), "", (tuple(b),)) for p, label, b in zip(full.paths, full.labels, full.box)]
        job = ExtractJob(root, records, full.classes, full.splits, "cub200", out,
                         ExtractOptions(model="tiny_test", workers=0, batch_size=4), crops=job_boxes, crop_source="gt")
    extract_rows(job)
    with h5py.File(out, "r+") as h5:  # as if interrupted after the first batch
        h5.attrs["rows_done"], h5.attrs["complete"] = 4, False
    shifted = job_boxes + 1.0
    with pytest.raises(FeatkitError, match="other crop boxes"):
        extract_rows(dataclasses.replace(job, crops=shifted))
    assert extract_rows(job).resumed_from == 4


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


def test_crops_refuse_a_root_whose_images_differ_in_content(tiny_cub: tuple[Path, Path, Path], tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """Same names and sizes, other pixels: the fingerprints taken at extraction tell them apart."""
    root, features, svm = tiny_cub
    other = tmp_path / "other_root"
    shutil.copytree(root, other)
    victim = sorted((other / "images").rglob("*.jpg"))[0]
    with Image.open(victim) as img:
        size = img.size
    write_image(victim, size, seed=999)
    capsys.readouterr()
    assert main(["crops", str(other), str(features), str(svm), "-o", str(tmp_path / "c.h5")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "differ from those extracted" in err[0]
    assert not (tmp_path / "c.h5").exists()
