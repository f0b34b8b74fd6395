"""Faults that must not lose or corrupt data: a full disk, two writers, moved roots, odd images, kills.

Every run uses the seeded tiny backbone on small generated trees; the faults that
need a separate process (a file-size limit, a second writer, kill -9) run the CLI
in a subprocess, the reruns run in this one.
"""

from __future__ import annotations

import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import write_image
from PIL import Image

from featkit.cli import main
from featkit.data.images import load_rgb
from featkit.errors import FeatkitError
from featkit.features import FeatureFile, check_images
from featkit.features.distributed import shard_path
from featkit.features.lock import OutputLock
from featkit.features.schema import STATUS_FAILED, STATUS_OK

REPO = Path(__file__).resolve().parents[1]
# warp: one commit per batch, the granularity these faults hit (short-side commits a window of batches at once;
# its resume is tested in test_geometry.py)
TINY = ["--model", "tiny_test", "--workers", "0", "--image-size", "64", "--resize", "warp"]

# A CLI run in a child process with test-only hooks: a file-size limit (SIGXFSZ ignored, so writes fail
# with EFBIG as on a full disk), the room check switched off (to reach a write that really fails), a
# slowed writer (to be caught mid-run), or a SIGKILL at the n-th call of a write step.
CHILD = r"""
import os, signal, sys, resource, time
limit, hook, nth = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
from featkit.features.store import FeatureWriter
count = [0]
def trip():
    count[0] += 1
    if count[0] == nth:
        os.kill(os.getpid(), signal.SIGKILL)
def after(owner, name):
    real = getattr(owner, name)
    def wrapped(*a, **k):
        out = real(*a, **k)
        trip()
        return out
    setattr(owner, name, wrapped)
if hook == "nocheck":
    FeatureWriter._check_room = lambda *a, **k: None
elif hook == "slow":
    real_wb = FeatureWriter.write_batch
    def slow(*a, **k):
        time.sleep(0.4)
        return real_wb(*a, **k)
    FeatureWriter.write_batch = slow
elif hook == "write_batch":
    after(FeatureWriter, "write_batch")
elif hook == "create_dataset":
    import h5py
    after(h5py.Group, "create_dataset")
elif hook == "replace":
    real_replace = os.replace
    def replace(*a, **k):
        trip()
        return real_replace(*a, **k)
    os.replace = replace
if limit:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
from featkit.cli import main
raise SystemExit(main(sys.argv[4:]))
"""


def child(args: list[str], *, limit: int = 0, hook: str = "none", nth: int = 0,
          env: dict[str, str] | None = None, wait: bool = True) -> subprocess.CompletedProcess[str] | subprocess.Popen[str]:
    cmd = [sys.executable, "-c", CHILD, str(limit), hook, str(nth), *args]
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    if not wait:
        return subprocess.Popen(cmd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, env=full_env, capture_output=True, text=True, timeout=300)


def folder_tree(root: Path, classes: int = 3, per_class: int = 12) -> Path:
    for c in range(classes):
        for j in range(per_class):
            write_image(root / f"class{c}" / f"img{j:03d}.jpg", (90 + 3 * j, 70 + 5 * c), seed=100 * c + j)
    return root


def assert_same_rows(path: Path, reference: Path) -> None:
    with FeatureFile(path) as got, FeatureFile(reference) as want:
        assert got.complete and len(got) == len(want)
        assert got.paths == want.paths
        assert np.array_equal(got.status, want.status)
        np.testing.assert_array_equal(got.gap, want.gap)
        if want.has_maps:
            np.testing.assert_array_equal(got.maps(range(len(got))), want.maps(range(len(want))))
        assert list(got.h5["images/fingerprint"].asstr()[:]) == list(want.h5["images/fingerprint"].asstr()[:])


def one_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# ---------------------------------------------------------------- disk full


@pytest.fixture
def tree_and_reference(tmp_path: Path) -> tuple[Path, Path, list[str]]:
    root = folder_tree(tmp_path / "tree")
    args = ["extract", str(root), "--dataset", "folder", "--maps", "--batch-size", "2", *TINY]
    reference = tmp_path / "reference.h5"
    assert main([*args, "-o", str(reference)]) == 0
    return root, reference, args


@pytest.mark.parametrize("hook", ["room-check", "nocheck"])
def test_disk_full_keeps_committed_rows_and_resumes(tree_and_reference: tuple[Path, Path, list[str]],
                                                    tmp_path: Path, hook: str) -> None:
    """Under a file-size limit the run stops at the first batch that cannot be written, with one line;
    the file still opens with every committed row, and the rerun completes it exactly.

    ``room-check``: the normal path (the batch is refused before writing); ``nocheck``: the room check
    is switched off, so a write really fails with EFBIG halfway through a batch (once: it is the
    fallback, and each run costs a process start)."""
    _, reference, args = tree_and_reference
    final = reference.stat().st_size
    outcomes = []
    fractions = (0.55, 0.7, 0.85) if hook == "room-check" else (0.7,)
    for fraction in fractions:  # the limit hit at different rows
        out = tmp_path / f"{hook}-{fraction}.h5"
        run = child([*args, "-o", str(out)], limit=int(final * fraction), hook=hook)
        assert isinstance(run, subprocess.CompletedProcess)
        assert run.returncode == 2, run.stderr[-2000:]
        line = one_line(run.stderr)
        assert ("no room for the next rows" in line or "File too large" in line) and "resume" in line, line
        with FeatureFile(out) as kept:  # still a valid file with the committed rows
            done = int(kept.attrs["rows_done"])
            assert not kept.complete and 0 < done < len(kept)
            assert f"the {done} rows" in line
            assert np.array_equal(kept.status[:done], np.full(done, STATUS_OK))
            with FeatureFile(reference) as ref:
                np.testing.assert_array_equal(kept.gap[:done], ref.gap[:done])
                np.testing.assert_array_equal(kept.maps(range(done)), ref.maps(range(done)))
        assert main([*args, "-o", str(out)]) == 0  # space is back: the same command resumes
        assert_same_rows(out, reference)
        assert not list(tmp_path.glob(f"{hook}-{fraction}.h5.*"))  # no lock or partial left behind
        outcomes.append(done)
    assert len(set(outcomes)) == len(fractions)  # the limit was hit at different points


# ---------------------------------------------------------------- two writers


def test_second_writer_is_refused_with_hdf5_locking_off(tree_and_reference: tuple[Path, Path, list[str]],
                                                        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    _, reference, args = tree_and_reference
    monkeypatch.setenv("HDF5_USE_FILE_LOCKING", "FALSE")
    out = tmp_path / "shared.h5"
    first = child([*args, "-o", str(out)], hook="slow", env={"HDF5_USE_FILE_LOCKING": "FALSE"}, wait=False)
    assert isinstance(first, subprocess.Popen)
    try:
        deadline = time.monotonic() + 120
        while not (out.exists() and (out.with_name(out.name + ".lock")).exists()):
            assert first.poll() is None and time.monotonic() < deadline, "the first writer did not start"
            time.sleep(0.05)
        capsys.readouterr()
        assert main([*args, "-o", str(out)]) == 2
        line = one_line(capsys.readouterr().err)
        assert f"another process (pid {first.pid})" in line, line
        with FeatureFile(out) as reading:  # a reader is told who writes it, not to re-run the extraction
            with pytest.raises(FeatkitError, match=rf"another process \(pid {first.pid}\) is writing it"):
                reading.require_complete()
        _, err = first.communicate(timeout=300)
        assert first.returncode == 0, err[-2000:]
    finally:
        if first.poll() is None:
            first.kill()
    assert_same_rows(out, reference)  # the refused run wrote nothing into it


def test_lock_of_a_dead_writer_is_taken_over(tmp_path: Path) -> None:
    out = tmp_path / "o.h5"
    (tmp_path / "o.h5.lock").write_text("999999999\n")  # left by a killed run: no process holds it
    with OutputLock(out) as lock:
        assert lock.path.read_text().split()[0] == str(os.getpid())
        with pytest.raises(FeatkitError, match=rf"another process \(pid {os.getpid()}\)"):
            OutputLock(out).acquire()
    assert not lock.path.exists()


# ---------------------------------------------------------------- dataset root


def test_resume_from_another_root_is_refused_unless_moved_with_same_images(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first = folder_tree(tmp_path / "a", classes=2, per_class=4)
    (first / "class1" / "img002.jpg").write_bytes(b"not an image")  # the run stops at row 6
    out = tmp_path / "f.h5"
    args = ["--dataset", "folder", "--batch-size", "2", *TINY, "-o", str(out)]
    assert main(["extract", str(first), *args]) == 2
    assert FeatureFile(out).attrs["rows_done"] == 6
    other = folder_tree(tmp_path / "b", classes=2, per_class=4)
    write_image(other / "class0" / "img001.jpg", (50, 50), seed=999)  # same names, another image at row 1
    capsys.readouterr()
    assert main(["extract", str(other), *args]) == 2
    line = one_line(capsys.readouterr().err)
    assert "dataset_root" in line and "--moved-root" in line
    assert main(["extract", str(other), *args, "--moved-root"]) == 2
    line = one_line(capsys.readouterr().err)
    assert "differ from those extracted" in line and "class0/img001.jpg" in line
    # the dataset really moved (same files, image 6 repaired): resumed, and the new root recorded
    moved = tmp_path / "moved"
    shutil.copytree(first, moved)
    write_image(moved / "class1" / "img002.jpg", (80, 80), seed=5)
    assert main(["extract", str(moved), *args, "--moved-root"]) == 0
    with FeatureFile(out) as done:
        assert done.complete and done.attrs["dataset_root"] == str(moved.resolve())
        assert done.attrs["dataset_root_before"] == str(first.resolve())
        check_images(done, moved, range(len(done)))
        with pytest.raises(FeatkitError, match=r"2 of 8 images .* differ .*row 1: class0/img001.jpg"):
            check_images(done, other, range(len(done)))


# ---------------------------------------------------------------- crops onto its own inputs


def test_crops_refuse_to_write_over_their_inputs(fake_cub: Callable[..., Path], tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    root = fake_cub(n_classes=2, per_class=4)
    features, svm = tmp_path / "f.h5", tmp_path / "svm.h5"
    assert main(["extract", str(root), "--dataset", "cub200", "--maps", "-o", str(features), *TINY]) == 0
    assert main(["svm-train", str(features), "-o", str(svm), "--C", "1"]) == 0
    before = {p: p.read_bytes() for p in (features, svm)}
    for target in (features, svm, tmp_path / "." / "f.h5"):
        capsys.readouterr()
        assert main(["crops", str(root), str(features), str(svm), "-o", str(target), "--overwrite",
                     "--workers", "0"]) == 2
        line = one_line(capsys.readouterr().err)
        assert "would destroy the input" in line, line
    assert {p: p.read_bytes() for p in before} == before


# ---------------------------------------------------------------- odd images


def _png(path: Path, width: int, height: int, bit_depth: int, color_type: int, raw: bytes) -> None:
    """A PNG written by hand (Pillow cannot write 48-bit RGB, nor lie about the size)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
                     + chunk(b"IEND", b""))


def test_high_bit_depth_images_keep_their_brightness(tmp_path: Path) -> None:
    ramp = (np.arange(48 * 64).reshape(48, 64) * 21 % 65536).astype(np.uint16)
    ramp[0, 0], ramp[-1, -1] = 0, 65535  # the full range, so that a min-max stretch changes nothing
    want = ramp / 257.0
    Image.fromarray(ramp).save(tmp_path / "gray16.png")
    Image.fromarray(ramp).save(tmp_path / "gray16.tif")
    floats = (ramp / 65535.0).astype(np.float32)
    Image.fromarray(floats).save(tmp_path / "float01.tif")
    Image.fromarray(floats * 1000.0 - 300.0).save(tmp_path / "float_any.tif")  # min-max: the same picture
    rgb = np.stack([ramp, ramp // 2, ramp // 4], axis=-1).astype(">u2")
    rows = b"".join(b"\x00" + rgb[y].tobytes() for y in range(48))
    _png(tmp_path / "rgb16.png", 64, 48, 16, 2, rows)
    for name in ("gray16.png", "gray16.tif", "float01.tif", "float_any.tif"):
        pixels, size = load_rgb(tmp_path / name, 64)
        assert size == (64, 48)
        expected = np.asarray(Image.fromarray(np.rint(want).astype(np.uint8)).resize((64, 64), Image.BILINEAR))
        assert abs(pixels[..., 0].mean() - expected.mean()) < 1.0, name  # not all white (254.5)
        assert np.array_equal(pixels[..., 0], pixels[..., 2])
    pixels, _ = load_rgb(tmp_path / "rgb16.png", 64)
    for channel, divisor in enumerate((1, 2, 4)):
        assert abs(pixels[..., channel].mean() - (want / divisor).mean()) < 1.5


def test_odd_entries_are_named_and_recorded(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = folder_tree(tmp_path / "tree", classes=2, per_class=3)
    _png(root / "class0" / "bomb.png", 30000, 30000, 8, 0, b"\x00" * 64)  # header claims 900 Mpx
    (root / "class0" / "dangling.jpg").symlink_to(root / "missing.jpg")
    (root / "class1" / "loop.jpg").symlink_to(root / "class1" / "loop.jpg")
    (root / "class1" / "folder.jpg").mkdir()
    out = tmp_path / "f.h5"
    args = ["extract", str(root), "--dataset", "folder", *TINY, "-o", str(out)]
    capsys.readouterr()
    assert main(args) == 2  # on_error='fail': one line naming the first odd entry
    line = one_line(capsys.readouterr().err)
    assert "class0/bomb.png" in line and "too large to decode safely" in line
    assert main([*args, "--on-error", "skip", "--overwrite"]) == 0
    with FeatureFile(out) as f:
        status = dict(zip(f.paths, f.status.tolist()))
        errors = dict(zip(f.paths, f.errors))
    expected = {"class0/bomb.png": "too large to decode safely", "class0/dangling.jpg": "No such file",
                "class1/loop.jpg": "Too many levels of symbolic links", "class1/folder.jpg": "Is a directory"}
    for path, reason in expected.items():
        assert status[path] == STATUS_FAILED and reason in errors[path], (path, errors[path])
    assert sum(s == STATUS_OK for s in status.values()) == 6


# ---------------------------------------------------------------- kills and leftovers


def test_leftovers_of_killed_writers_are_removed(fake_cub: Callable[..., Path], tmp_path: Path) -> None:
    root = fake_cub(n_classes=2, per_class=2)
    features, svm = tmp_path / "f.h5", tmp_path / "svm.h5"
    (tmp_path / "f.h5.partial").write_bytes(b"half a layout")
    assert main(["extract", str(root), "--dataset", "cub200", "-o", str(features), *TINY]) == 0
    dead = tmp_path / ".svm.h5.999999999.abc.tmp"
    dead.write_bytes(b"half an svm")
    legacy_old, legacy_new = tmp_path / ".svm-old.h5", tmp_path / ".svm-new.h5"
    for path in (legacy_old, legacy_new):
        path.write_bytes(b"older version's temp")
    os.utime(legacy_old, (time.time() - 7200, time.time() - 7200))
    mine = tmp_path / f".svm.h5.{os.getpid()}.abc.tmp"  # a live process's temp: not ours to remove
    mine.write_bytes(b"in use")
    assert main(["svm-train", str(features), "-o", str(svm), "--C", "1"]) == 0
    left = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".") or p.suffix in (".partial", ".lock"))
    assert left == sorted([legacy_new.name, mine.name])


def _svm_contents(path: Path) -> dict[str, object]:
    with h5py.File(path, "r") as h5:
        data: dict[str, object] = {k: np.asarray(h5[k][:]).tolist() for k in ("weight", "bias", "classes", "C")}
        data.update({f"@{k}": np.asarray(v).tolist() for k, v in h5.attrs.items() if k != "created"})
    return data


def _features_contents(path: Path) -> dict[str, object]:
    with FeatureFile(path) as f:
        assert f.complete
        skip = {"created", "finished"}
        return {"gap": f.gap.tolist(), "status": f.status.tolist(), "paths": f.paths,
                **{f"@{k}": v for k, v in f.attrs.items() if k not in skip}}


@pytest.mark.parametrize("verb", ["svm-train", "crops", "merge"])
def test_kill_9_leaves_no_half_output(fake_cub: Callable[..., Path], tmp_path: Path, verb: str) -> None:
    """kill -9 at several points of each writer, then the same command: the output is absent or
    complete and identical to an uninterrupted run's, and nothing half-written is left."""
    root = fake_cub(n_classes=2, per_class=4)
    features, svm = tmp_path / "f.h5", tmp_path / "svm.h5"
    assert main(["extract", str(root), "--dataset", "cub200", "--maps", "--batch-size", "2", "-o", str(features),
                 *TINY]) == 0
    def prepare() -> None:
        """Inputs a run consumes are put back (merge deletes its shards after success)."""

    if verb == "svm-train":
        contents = _svm_contents
        kills = [("create_dataset", 3), ("replace", 1)]  # mid-way through the temp file; before the rename

        def command(out: Path) -> list[str]:
            return ["svm-train", str(features), "-o", str(out), "--C", "1"]
    else:
        contents = _features_contents
        assert main(["svm-train", str(features), "-o", str(svm), "--C", "1"]) == 0
        if verb == "crops":
            kills = [("replace", 1), ("write_batch", 2)]  # before the layout is in place; after 2 batches

            def command(out: Path) -> list[str]:
                return ["crops", str(root), str(features), str(svm), "-o", str(out), "--boxes", "gt",
                        "--workers", "0", "--batch-size", "2"]
        else:
            kills = [("write_batch", 2), ("replace", 2)]  # mid-merge; before the merged file is renamed
            shards = []
            for rank in range(2):
                assert main(["extract", str(root), "--dataset", "cub200", "--maps", "--world-size", "2", "--rank",
                             str(rank), "-o", str(tmp_path / "s.h5"), *TINY]) == 0
                shards.append(str(shard_path(tmp_path / "s.h5", rank, 2)))
            saved = tmp_path / "saved"
            saved.mkdir()
            for shard in shards:
                shutil.copy(shard, saved)

            def prepare() -> None:
                for shard in shards:
                    shutil.copy(saved / Path(shard).name, shard)

            def command(out: Path) -> list[str]:
                return ["merge", "-o", str(out), *shards]
    reference = tmp_path / "reference.h5"
    prepare()
    assert main(command(reference)) == 0
    want = contents(reference)
    for hook, nth in kills:
        out = tmp_path / f"{hook}{nth}.h5"
        prepare()
        killed = child(command(out), hook=hook, nth=nth)
        assert isinstance(killed, subprocess.CompletedProcess)
        assert killed.returncode == -signal.SIGKILL, (hook, nth, killed.stderr[-2000:])
        if out.exists():  # a file in place is one a later verb may read: it must be whole
            if verb != "crops":
                pytest.fail(f"{out} exists after a kill before it was complete ({hook} {nth})")
            with FeatureFile(out) as half:  # a resumable crops file: incomplete, and refused as such
                with pytest.raises(FeatkitError, match="incomplete"):
                    half.require_complete()
        prepare()
        assert main(command(out)) == 0, (hook, nth)
        assert contents(out) == want
        strays = [p.name for p in tmp_path.iterdir() if p.name.startswith(f".{out.name}")
                  or p.name.startswith(out.name + ".")]
        assert strays == [], strays
