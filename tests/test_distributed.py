"""Multi-process extraction: shards per rank, resumable, merged into the single-process file."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from featkit.cli import main
from featkit.data import open_dataset
from featkit.errors import FeatkitError
from featkit.features import ExtractOptions, extract
from featkit.features.distributed import merge_shards, shard_block, shard_path
from featkit.features.extractor import ExtractJob
from featkit.features.pipeline import run_job

# Sharding and merging are logic: the seeded tiny backbone checks them in a fraction of the time.
OPTIONS = ExtractOptions(model="tiny_test", batch_size=3, workers=0, maps=True, image_size=64, resize="warp")
"""warp: rows are committed batch by batch (short-side commits a window of batches), which the resume tests count."""
TORCHRUN_ENV = ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK")


@pytest.fixture(autouse=True)
def _no_torchrun_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Library calls here run without a process group: each writes its shard only."""
    for name in TORCHRUN_ENV:
        monkeypatch.delenv(name, raising=False)


def _shards(dataset, out: Path, world: int, options: ExtractOptions = OPTIONS) -> list[Path]:
    paths = []
    for rank in range(world):
        result = extract(dataset, out, replace(options, rank=rank, world_size=world))
        assert result.path == shard_path(out, rank, world) and result.path.is_file()
        paths.append(result.path)
    assert not out.exists()
    return paths


def assert_same_file(got_path: Path, want_path: Path, maps: bool = True) -> None:
    """The contents a single-process run writes: every images/* table, classes, head, gap, maps, provenance."""
    with h5py.File(got_path, "r") as got, h5py.File(want_path, "r") as want:
        names: list[str] = []
        want.visit(lambda name: names.append(name) if isinstance(want[name], h5py.Dataset) else None)
        got_names: list[str] = []
        got.visit(lambda name: got_names.append(name) if isinstance(got[name], h5py.Dataset) else None)
        assert sorted(got_names) == sorted(names)
        for name in names:
            a, b = got[name], want[name]
            assert (a.shape, a.dtype, a.chunks, a.compression) == (b.shape, b.dtype, b.chunks, b.compression), name
            if name == "features/gap":
                np.testing.assert_allclose(a[:], b[:], rtol=0, atol=1e-6)
            elif name == "features/maps":
                # float16 of float32 maps that may differ in the last float32 bit between batchings
                np.testing.assert_allclose(a[:].astype(np.float32), b[:].astype(np.float32), rtol=1e-3, atol=1e-3)
            else:
                np.testing.assert_array_equal(a[:], b[:], err_msg=name)
        skip = {"created", "finished"}
        assert {k: str(v) for k, v in got.attrs.items() if k not in skip} == {
            k: str(v) for k, v in want.attrs.items() if k not in skip
        }
        assert "features/maps" in got or not maps


def test_shard_names_and_blocks() -> None:
    assert shard_path("/x/out.h5", 0, 2) == Path("/x/out.rank0-of-2.h5")
    assert shard_path(Path("feats"), 3, 4) == Path("feats.rank3-of-4")
    blocks = [shard_block(10, r, 3) for r in range(3)]
    assert blocks == [(0, 3), (3, 6), (6, 10)]


def test_shards_merge_into_the_single_process_file(fake_cub: Callable[..., Path], tmp_path: Path) -> None:
    dataset = open_dataset("cub200", fake_cub(n_classes=2, per_class=5))
    single = tmp_path / "single.h5"
    extract(dataset, single, OPTIONS)

    out = tmp_path / "out.h5"
    shards = _shards(dataset, out, 3)
    with h5py.File(shards[1], "r") as h5:
        assert [int(h5.attrs[k]) for k in ("shard_rank", "shard_start", "shard_stop", "shard_total")] == [1, 3, 6, 10]
        assert len(h5["images/path"]) == 3 and h5.attrs["complete"]
    assert merge_shards(shards, out, keep=True) == out
    assert all(p.is_file() for p in shards)  # kept on request
    assert_same_file(out, single)

    # the merge verb deletes the shards after a successful merge
    again = tmp_path / "again.h5"
    assert main(["merge", "-o", str(again), *map(str, shards)]) == 0
    assert not any(p.exists() for p in shards)
    assert_same_file(again, single)


def test_merge_refuses_shards_that_do_not_belong_together(fake_cub: Callable[..., Path], tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    dataset = open_dataset("cub200", fake_cub(n_classes=2, per_class=3))
    a = _shards(dataset, tmp_path / "a.h5", 2)
    b = _shards(dataset, tmp_path / "b.h5", 2, replace(OPTIONS, image_size=96))
    out = tmp_path / "out.h5"
    with pytest.raises(FeatkitError, match="different runs.*input_size"):
        merge_shards([a[0], b[1]], out)
    with pytest.raises(FeatkitError, match="missing \\[1\\]"):
        merge_shards([a[0]], out)
    with pytest.raises(FeatkitError, match="once each"):
        merge_shards([a[0], a[0]], out)
    single = tmp_path / "single.h5"
    extract(dataset, single, OPTIONS)
    with pytest.raises(FeatkitError, match="not a shard"):
        merge_shards([single, a[1]], out)
    c = _shards(dataset, tmp_path / "c.h5", 3)
    with pytest.raises(FeatkitError, match="different runs.*shard_world_size"):
        merge_shards([a[0], c[1]], out)
    # an unfinished shard
    with h5py.File(a[1], "r+") as h5:
        h5.attrs["complete"] = False
    with pytest.raises(FeatkitError, match="unfinished"):
        merge_shards(a, out)
    # the CLI says it in one line
    assert main(["merge", "-o", str(out), str(a[0]), str(b[1])]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "different runs" in err[0]
    assert not out.exists() and all(p.is_file() for p in a + b)  # nothing written, nothing deleted
    # an existing output is not replaced
    with h5py.File(a[1], "r+") as h5:
        h5.attrs["complete"] = True
    out.write_bytes(b"keep me")
    with pytest.raises(FeatkitError, match="already exists"):
        merge_shards(a, out)
    assert out.read_bytes() == b"keep me"


def test_an_interrupted_shard_resumes(fake_cub: Callable[..., Path], tmp_path: Path) -> None:
    dataset = open_dataset("cub200", fake_cub(n_classes=2, per_class=6))
    single = tmp_path / "single.h5"
    extract(dataset, single, OPTIONS)
    out = tmp_path / "out.h5"

    def interrupt(done: int, total: int) -> None:
        if done >= 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        extract(dataset, out, replace(OPTIONS, rank=1, world_size=2), progress=interrupt)
    shard1 = shard_path(out, 1, 2)
    with h5py.File(shard1, "r") as h5:
        assert h5.attrs["rows_done"] == 3 and not h5.attrs["complete"]
    shard0 = extract(dataset, out, replace(OPTIONS, rank=0, world_size=2)).path
    with pytest.raises(FeatkitError, match="unfinished"):
        merge_shards([shard0, shard1], out)
    resumed = extract(dataset, out, replace(OPTIONS, rank=1, world_size=2))
    assert (resumed.resumed_from, resumed.rows_written, resumed.n_images) == (3, 3, 6)
    merge_shards([shard0, shard1], out)
    assert_same_file(out, single)


def test_bad_rank_is_a_clear_error(fake_cub: Callable[..., Path], tmp_path: Path) -> None:
    dataset = open_dataset("cub200", fake_cub(n_classes=1, per_class=2))
    with pytest.raises(FeatkitError, match="rank must be in 0..1"):
        extract(dataset, tmp_path / "o.h5", replace(OPTIONS, rank=2, world_size=2))
    with pytest.raises(FeatkitError, match="more than the 2 images"):
        extract(dataset, tmp_path / "o.h5", replace(OPTIONS, rank=0, world_size=3))


def test_torchrun_two_processes_write_the_single_process_file(fake_cub: Callable[..., Path], tmp_path: Path) -> None:
    root = fake_cub(n_classes=2, per_class=5)
    single = tmp_path / "single.h5"
    extract(open_dataset("cub200", root), single, replace(OPTIONS, batch_size=32))
    out = tmp_path / "out.h5"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "featkit", "extract", str(root), "--dataset", "cub200", "-o", str(out), "--workers", "0",
           "--image-size", "64", "--maps", "--model", "tiny_test", "--resize", "warp"]  # as OPTIONS
    env = {k: v for k, v in os.environ.items() if k not in TORCHRUN_ENV}
    # oneDNN's float32 rounding depends on the thread count: give each rank the reference's
    # (torchrun would set 1), so the features can be compared to 1e-6
    env["OMP_NUM_THREADS"] = str(torch.get_num_threads())
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert out.is_file() and not list(tmp_path.glob("out.rank*"))  # shards merged and removed
    assert_same_file(out, single)
    # a second run finds the merged file complete and does nothing
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert again.returncode == 0 and "already complete" in again.stdout
    assert not list(tmp_path.glob("out.rank*"))


def test_a_crops_job_merges_with_its_crop_boxes(fake_cub: Callable[..., Path], tmp_path: Path) -> None:
    """Each shard stores its rows' crop boxes; the merged file equals the single-process crops file."""
    dataset = open_dataset("cub200", fake_cub(n_classes=2, per_class=5))
    records = dataset.records()
    crops = np.array([r.boxes[0] for r in records], dtype=np.float64) + np.arange(len(records))[:, None] * 0.25
    options = replace(OPTIONS, maps=False)
    job = ExtractJob(Path(dataset.root), records, dataset.classes(), dataset.split_table(records),
                     dataset.manifest.name, tmp_path / "single.h5", options, crops=crops, crop_source="gt")
    run_job(job)
    out = tmp_path / "out.h5"
    for rank in range(3):
        run_job(replace(job, output=out, options=replace(options, rank=rank, world_size=3)))
    merged = merge_shards([shard_path(out, rank, 3) for rank in range(3)], out)
    assert_same_file(merged, tmp_path / "single.h5", maps=False)
    with h5py.File(merged, "r") as h5:
        np.testing.assert_array_equal(h5["images/crop_box"][:], crops)
