"""featkit extract: the HDF5 contract, resuming, unreadable images and refusing to clobber."""

from __future__ import annotations

import hashlib
import importlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import sample_root

from featkit.cli import main
from featkit.data import open_dataset
from featkit.features import STATUS_FAILED, STATUS_OK, ExtractOptions, FeatureFile, extract

FAST = ExtractOptions(batch_size=3, workers=0, maps=True, image_size=64, resize="warp")  # square maps: 2 x 2


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_file_follows_the_contract(fake_cub: Callable[..., Path], tmp_path: Path) -> None:
    root = fake_cub(n_classes=2, per_class=4)
    out = tmp_path / "f.h5"
    result = extract(open_dataset("cub200", root), out, FAST)
    assert (result.n_images, result.rows_written, result.failed) == (8, 8, [])
    with FeatureFile(out) as f:
        a = f.attrs
        assert a["complete"] and a["rows_done"] == 8 and a["schema_version"] == 1
        assert a["backbone"] == "efficientnet_lite0" and a["pooling"] == "gap" and a["input_size"] == 64
        assert a["mean"] == pytest.approx([0.498] * 3) and len(a["weights_sha256"]) == 64
        assert a["dataset"] == "cub200" and a["dataset_root"] == str(root.resolve())
        assert f.classes == ["001.Bird_1", "002.Bird_2"]
        assert f.paths[0] == "images/001.Bird_1/Bird_1_0000.jpg"
        assert f.labels.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
        assert f.splits[:, 0].tolist() == ["train", "test"] * 4
        assert f.sizes[1].tolist() == [128, 94]  # original width, height
        np.testing.assert_allclose(f.box[1], [11, 6, 11 + 41, 6 + 30])  # x y w h -> x0 y0 x1 y1
        assert f.gap.shape == (8, 1280) and f.gap.dtype == np.float32 and np.isfinite(f.gap).all()
        maps = f.h5["features/maps"]
        assert maps.shape == (8, 1280, 2, 2) and maps.dtype == np.float16 and maps.chunks == (1, 1280, 2, 2)
        assert maps.compression == "gzip"
        # GAP is the mean of the stored maps (up to float16 rounding of the maps)
        np.testing.assert_allclose(f.maps([3]).mean(axis=(2, 3))[0], f.gap[3], rtol=1e-2, atol=1e-2)
        assert (f.status == STATUS_OK).all()
        head = f.head()
        assert head is not None and head.weight.shape == (1000, 1280) and head.classes[0] == "tench"


def test_interrupted_run_resumes_to_the_same_rows(fake_cub: Callable[..., Path], tmp_path: Path) -> None:
    dataset = open_dataset("cub200", fake_cub(n_classes=2, per_class=5))
    reference = tmp_path / "ref.h5"
    extract(dataset, reference, FAST)

    out = tmp_path / "resumed.h5"
    calls = []

    def interrupt_after_first_batch(done: int, total: int) -> None:
        calls.append(done)
        if done >= 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        extract(dataset, out, FAST, progress=interrupt_after_first_batch)
    with FeatureFile(out) as f:
        assert not f.complete and f.attrs["rows_done"] == 3
    result = extract(dataset, out, FAST)
    assert (result.resumed_from, result.rows_written) == (3, 7)
    with FeatureFile(out) as got, FeatureFile(reference) as want:
        assert got.complete
        np.testing.assert_array_equal(got.gap, want.gap)
        np.testing.assert_array_equal(got.maps(range(10)), want.maps(range(10)))
        np.testing.assert_array_equal(got.sizes, want.sizes)
    again = extract(dataset, out, FAST)
    assert again.rows_written == 0


def test_kill_9_then_rerun_gives_the_uninterrupted_result(fake_cub: Callable[..., Path], tmp_path: Path) -> None:
    root = fake_cub(n_classes=3, per_class=12)
    args = ["cub200", "--batch-size", "2", "--workers", "0", "--maps", "--image-size", "96"]
    reference = tmp_path / "ref.h5"
    assert main([*_extract_argv(root, reference, args)]) == 0

    out = tmp_path / "killed.h5"
    cmd = [sys.executable, "-m", "featkit", *_extract_argv(root, out, args)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        if out.exists() and out.stat().st_size > 200_000:  # a few batches of maps are on disk
            break
        time.sleep(0.05)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert main([*_extract_argv(root, out, args)]) == 0
    with FeatureFile(out) as got, FeatureFile(reference) as want:
        assert got.complete and got.paths == want.paths
        np.testing.assert_array_equal(got.gap, want.gap)
        np.testing.assert_array_equal(got.maps(range(len(got))), want.maps(range(len(want))))


def _extract_argv(root: Path, out: Path, args: list[str]) -> list[str]:
    return ["extract", str(root), "--dataset", *args, "-o", str(out)]


def _truncate_one(root: Path) -> Path:
    victim = sorted((root / "images").rglob("*.jpg"))[5]
    victim.write_bytes(victim.read_bytes()[:300])
    return victim


def test_truncated_jpeg_stops_the_run_and_keeps_the_rows(fake_cub: Callable[..., Path], tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    root = fake_cub(n_classes=2, per_class=4)
    victim = _truncate_one(root)
    out = tmp_path / "f.h5"
    code = main(_extract_argv(root, out, ["cub200", "--batch-size", "3", "--workers", "0", "--image-size", "64"]))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and victim.name in err[0] and "--on-error skip" in err[0]
    with FeatureFile(out) as f:
        assert not f.complete and f.attrs["rows_done"] == 3
        assert np.isfinite(f.gap[:3]).all()


def test_truncated_jpeg_is_skipped_and_recorded(fake_cub: Callable[..., Path], tmp_path: Path) -> None:
    root = fake_cub(n_classes=2, per_class=4)
    victim = _truncate_one(root)
    out = tmp_path / "f.h5"
    result = extract(open_dataset("cub200", root), out,
                             ExtractOptions(batch_size=3, workers=0, image_size=64, on_error="skip"))
    assert len(result.failed) == 1 and victim.name in result.failed[0]
    with FeatureFile(out) as f:
        assert f.complete
        bad = f.paths.index(str(victim.relative_to(root)))
        assert f.status[bad] == STATUS_FAILED and victim.name in f.errors[bad]
        assert np.isnan(f.gap[bad]).all() and np.isfinite(np.delete(f.gap, bad, axis=0)).all()


def test_output_from_another_backbone_is_not_touched(fake_cub: Callable[..., Path], tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    root = fake_cub(n_classes=2, per_class=2)
    out = tmp_path / "f.h5"
    extract(open_dataset("cub200", root), out, ExtractOptions(workers=0, image_size=64))
    before = _digest(out)
    code = main(_extract_argv(root, out, ["cub200", "--model", "resnet18", "--weights", "random", "--workers", "0"]))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "another run" in err[0] and "backbone" in err[0] and "--overwrite" in err[0]
    assert _digest(out) == before


def test_missing_official_file_names_it(fake_cub: Callable[..., Path], tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    root = fake_cub(n_classes=1, per_class=2)
    (root / "bounding_boxes.txt").unlink()
    assert main(["extract", str(root), "--dataset", "cub200", "-o", str(tmp_path / "f.h5")]) == 2
    err = capsys.readouterr().err
    assert "bounding_boxes.txt" in err and "expected layout" in err
    assert not (tmp_path / "f.h5").exists()


def test_info_describes_the_file(fake_cub: Callable[..., Path], tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "f.h5"
    extract(open_dataset("cub200", fake_cub(n_classes=2, per_class=2)), out, FAST)
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    for needle in ("complete", "efficientnet_lite0", "features/gap 4 x 1280", "train 2, test 2",
                   "4 images with a box", "features/maps 4 x 1280 x 2 x 2"):
        assert needle in text


def test_info_on_a_non_featkit_file_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as h5:
        h5["x"] = [1, 2]
    assert main(["info", str(other)]) == 2
    assert "not a featkit features file" in capsys.readouterr().err


# ---------------------------------------------------------------- real samples


@pytest.mark.slow
def test_real_cub_sample(cub_features: Path) -> None:
    """The session's CLI extraction of the CUB sample (conftest.cub_features) follows the contract."""
    with FeatureFile(cub_features) as f:
        assert len(f) == 543 and f.gap.shape == (543, 1280) and f.complete
        split = f.splits[:, 0]
        assert ((split == "train").sum(), (split == "test").sum()) == (300, 243)
        boxes, sizes = f.box, f.sizes
        assert np.isfinite(boxes).all() and (f.h5["images/boxes"].shape[0] == 543)
        # boxes are in original pixels: inside the image (CUB has one box 1 px past the edge)
        assert (boxes[:, 2] <= sizes[:, 0] + 1).all() and (boxes[:, 3] <= sizes[:, 1] + 1).all()
        assert sizes.max() > 224  # original sizes, not the network input
        assert f.h5["features/maps"].shape == (543, 1280, 7, 7)


@pytest.mark.slow
@pytest.mark.parametrize("name,dataset,n,with_boxes", [("Stanford40", "stanford40", 120, 120),
                                                        ("Caltech101", "caltech101", 50, 10)])
def test_real_samples_with_boxes(name: str, dataset: str, n: int, with_boxes: int, tmp_path: Path) -> None:
    root = sample_root(name)
    out = tmp_path / "f.h5"
    assert main(["extract", str(root), "--dataset", dataset, "-o", str(out)]) == 0
    with FeatureFile(out) as f:
        assert len(f) == n and f.complete
        assert int(np.isfinite(f.box).all(axis=1).sum()) == with_boxes
        assert "BACKGROUND_Google" not in f.classes
        assert not any(p.startswith("101_ObjectCategories/BACKGROUND_Google") for p in f.paths)


def test_progress_lines_with_speed_when_stderr_is_not_a_terminal(
        fake_cub: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Batch jobs log their speed: capsys' stderr is not a TTY, so tqdm's bar gives way to plain lines."""
    cli = importlib.import_module("featkit.cli.main")

    assert not sys.stderr.isatty()
    monkeypatch.setattr(cli, "PROGRESS_LINE_EVERY_S", 0.0)  # a line after every batch
    root = fake_cub(n_classes=2, per_class=4)
    assert main(["extract", str(root), "--dataset", "cub200", "--model", "tiny_test", "--image-size", "64",
                 "--batch-size", "3", "--workers", "0", "--resize", "warp", "-o", str(tmp_path / "f.h5")]) == 0
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("extract cub200: ")]
    pattern = r"extract cub200: (\d+)/8 img \([\d.]+ %\), ([\d.]+) img/s, \d+ s( done)?"
    matches = [re.fullmatch(pattern, ln) for ln in lines]
    assert all(matches), lines
    assert [int(m.group(1)) for m in matches] == [3, 6, 8, 8]  # every batch, then the closing line
    assert matches[-1].group(3) == " done" and float(matches[-1].group(2)) > 0


def test_progress_lines_are_periodic(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    cli = importlib.import_module("featkit.cli.main")

    monkeypatch.setattr(cli, "PROGRESS_LINE_EVERY_S", 3600.0)
    update, close = cli._progress_bar("crops (cam boxes)")
    for done in range(0, 11, 2):
        update(done, 10)
    assert capsys.readouterr().err == ""  # nothing before the period has passed
    close()
    assert re.fullmatch(r"crops \(cam boxes\): 10/10 img \(100.0 %\), [\d.]+ img/s, \d+ s done\n",
                        capsys.readouterr().err)
