"""Untrusted input (issue 20): crafted files, bombs, odd paths and full disks end in one line, exit 2.

One table of (id, argv, words the one line must say) over crafted svm.h5 and
features.h5 files, Caffe bombs, huge and non-regular images, changed images
under cam/units, and flags that would allocate without bound. Each case: exit
2, one line, no traceback, no file left behind. The cases that could allocate
(bombs, huge sizes, caps) run again in one child process whose peak RSS must
stay under 2 GiB. The full-disk table runs every writing verb under file-size
limits of 4, 16, 64 and 700 KiB: one line and exit 2 (or success), nothing
half-written, and a rerun with room gives the same output as a run that never
failed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from conftest import Env, tiny_cub_features, write_image
from PIL import Image

from featkit.cli import main

REPO = Path(__file__).resolve().parents[1]
TINY = ["--model", "tiny_test", "--workers", "0"]


def _png_header(path: Path, width: int, height: int) -> None:
    """A tiny PNG whose header claims ``width`` x ``height`` pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
                     + chunk(b"IEND", b""))


def _copy(src: Path, dst: Path, edit: object) -> None:
    shutil.copy(src, dst)
    with h5py.File(dst, "r+") as h5:
        edit(h5)  # type: ignore[operator]


def _replace(h5: h5py.File, name: str, data: object) -> None:
    del h5[name]
    h5.create_dataset(name, data=data)


def _set(name: str, index: object, value: object):  # noqa: ANN202 - a tiny edit closure
    def edit(h5: h5py.File) -> None:
        h5[name][index] = value
    return edit


def _attr(key: str, value: object):  # noqa: ANN202
    def edit(h5: h5py.File) -> None:
        h5.attrs[key] = value
    return edit


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Env:
    """Inputs built once: the tiny CUB features and SVM, then crafted copies and odd images beside them."""
    root, feat, svm = tiny_cub_features(d := tmp_path_factory.mktemp("untrusted"))
    with h5py.File(feat, "r") as h5:
        paths = list(h5["images/path"].asstr()[:])
    # the same files re-encoded at the same size (only the fingerprints tell), the 3rd one changed first
    same = d / "REENC"
    shutil.copytree(root, same)
    for rel in paths[2:]:
        with Image.open(same / rel) as img:
            img.convert("RGB").save(same / rel, quality=60)
    resized = d / "RESIZED"
    shutil.copytree(root, resized)
    with Image.open(resized / paths[1]) as img:
        w, h = img.size
    write_image(resized / paths[1], (w + 4, h), seed=5)
    # crafted svm.h5 files
    _copy(svm, d / "svm_nan.h5", _set("weight", (0, 3), np.nan))
    _copy(svm, d / "svm_infbias.h5", _set("bias", 1, np.inf))
    _copy(svm, d / "svm_bias1.h5", lambda h5: _replace(h5, "bias", np.zeros(1)))
    _copy(svm, d / "svm_rows.h5", _set("trained/rows", 0, -7))
    _copy(svm, d / "svm_schema.h5", _attr("schema_version", 99))
    _copy(svm, d / "svm_text.h5", lambda h5: _replace(h5, "weight", np.array([["a"] * 32] * 2, dtype=object)))
    _copy(svm, d / "svm_noclasses.h5", lambda h5: h5.__delitem__("classes"))
    _copy(svm, d / "svm_weight1d.h5", lambda h5: _replace(h5, "weight", np.zeros(32)))
    # crafted features.h5 files
    _copy(feat, d / "f_schema.h5", _attr("schema_version", 99))
    _copy(feat, d / "f_nstr.h5", _attr("n_images", "eight"))
    _copy(feat, d / "f_kstr.h5", _attr("channels", "32"))
    _copy(feat, d / "f_inverted.h5", _set("images/box", 0, np.array([50, 50, 10, 10], np.float32)))
    _copy(feat, d / "f_hugesize.h5", _set("images/size", 4, np.array([200000, 200000], np.int32)))
    _copy(feat, d / "f_labeltext.h5", lambda h5: _replace(h5, "images/label", np.array(["x"] * 8, dtype=object)))
    _copy(feat, d / "f_box3.h5", lambda h5: _replace(h5, "images/box", np.zeros((8, 3), np.float32)))
    # a backbone state dict with a NaN weight
    from torch import nn

    from featkit.models.tiny import TINY_SEED, _seeded
    body, head = _seeded(TINY_SEED)
    state = nn.ModuleDict({"body": body, "head": head}).state_dict()
    first = next(k for k, v in state.items() if v.is_floating_point())
    state[first] = state[first].clone()
    state[first].view(-1)[0] = float("nan")
    torch.save(state, d / "nan.pth")
    state[first].view(-1)[0] = 1e30
    torch.save(state, d / "huge.pth")
    # Caffe bombs
    dims = "".join(f"input_dim: {v}\n" for v in (1, 3, 224, 224))
    conv = "layer {{ name: 'c' type: 'Convolution' bottom: 'data' top: 'c' convolution_param {{ {} }} }}\n"
    (d / "wide.prototxt").write_text("input: 'data'\n" + dims + conv.format("num_output: 25000 kernel_size: 3")
                                     + "layer { name: 'fc' type: 'InnerProduct' bottom: 'c' top: 'fc' "
                                       "inner_product_param { num_output: 1000 } }\n")
    (d / "stride0.prototxt").write_text("input: 'data'\n" + dims + conv.format("num_output: 4 kernel_size: 3 stride: 0"))
    (d / "group0.prototxt").write_text("input: 'data'\n" + dims + conv.format("num_output: 4 kernel_size: 3 group: 0"))
    (d / "deep.prototxt").write_text("input: 'data'\n" + dims + "layer { " * 5000 + "} " * 5000)
    (d / "bigin.prototxt").write_text("input: 'data'\n" + "".join(f"input_dim: {v}\n" for v in (1, 3, 2000000000,
                                      2000000000)) + conv.format("num_output: 4 kernel_size: 3"))
    (d / "ok.prototxt").write_text("input: 'data'\n" + dims + conv.format("num_output: 4 kernel_size: 3"))
    (d / "w.caffemodel").write_bytes(b"")
    # images: a 121-Mpx PNG header, a FIFO, a device row in a csv
    bomb = d / "BOMB"
    (bomb / "cls").mkdir(parents=True)
    write_image(bomb / "cls" / "a.jpg", (40, 30), seed=1)
    _png_header(bomb / "cls" / "b.png", 11000, 11000)
    fifo = d / "FIFO"
    (fifo / "cls").mkdir(parents=True)
    write_image(fifo / "cls" / "a.jpg", (40, 30), seed=1)
    os.mkfifo(fifo / "cls" / "x.jpg")
    (d / "dev.csv").write_text("/dev/zero,a,train\n")
    thin = d / "THIN" / "cls"
    thin.mkdir(parents=True)
    Image.new("RGB", (4000, 1)).save(thin / "a.png")
    (root / "nolabel.csv").write_text("path,label,split\n" + "".join(f"{p},,train\n" for p in paths))
    assert main(["extract", str(root / "nolabel.csv"), "--dataset", "csv", "-o", str(d / "nolabel.h5"), *TINY]) == 0
    return Env(d, root, feat, svm)


# One case a line: id | argv ({dir} {root} {feat} {svm} filled in) | words the one line must contain.
TABLE = """
# silent wrong pictures: the images are not those extracted; the first changed file is named
cam-resized-image | cam {feat} {svm} -o {dir}/out --root {dir}/RESIZED | (e.g. images/
cam-reencoded-images | cam {feat} {svm} -o {dir}/out --root {dir}/REENC --split train | differ from those
units-reencoded-images | units {feat} {svm} --class 001.Bird_1 -o {dir}/out --root {dir}/REENC | differ from those
# crafted svm.h5
svm-nan-weight | svm-eval {feat} {dir}/svm_nan.h5 | weight holds 1 NaN or infinite value
svm-inf-bias-cam | cam {feat} {dir}/svm_infbias.h5 -o {dir}/out | bias holds 1 NaN or infinite value
svm-inf-bias-localize | localize {feat} {dir}/svm_infbias.h5 | bias holds
svm-bias-length-1 | svm-eval {feat} {dir}/svm_bias1.h5 | bias has shape (1,), expected (2)
svm-corrupt-rows | svm-eval {feat} {dir}/svm_rows.h5 | trained/rows is not
svm-schema-99 | svm-eval {feat} {dir}/svm_schema.h5 | schema_version 99, newer
svm-text-weight | svm-eval {feat} {dir}/svm_text.h5 | weight holds object values
svm-no-classes | svm-eval {feat} {dir}/svm_noclasses.h5 | classes is missing
svm-1d-weight | cam {feat} {dir}/svm_weight1d.h5 -o {dir}/out | weight has shape (32,)
protocol-folds-0 | protocol {feat} --folds 0 | --folds must be at least 1
# crafted features.h5
features-schema-99 | info {dir}/f_schema.h5 | schema_version 99, newer
features-n-images-text | info {dir}/f_nstr.h5 | attribute n_images is 'eight'
features-channels-text | svm-train {dir}/f_kstr.h5 -o {dir}/out.h5 | attribute channels is '32'
features-inverted-box | info {dir}/f_inverted.h5 | is damaged
features-inverted-box-cam | cam {dir}/f_inverted.h5 {svm} -o {dir}/out | inverted boxes
features-huge-size | localize {dir}/f_hugesize.h5 {svm} | over the pixel budget
features-label-text | svm-train {dir}/f_labeltext.h5 -o {dir}/out.h5 | images/label is
features-box-3-wide | localize {dir}/f_box3.h5 {svm} | images/box is (8, 3)
# weights and conversions
extract-nan-weights | extract {root} --dataset cub200 -o {dir}/out.h5 --weights {dir}/nan.pth | are damaged
extract-huge-weights | extract {root} --dataset cub200 -o {dir}/out.h5 --weights {dir}/huge.pth | > 1e+08 values
convert-mean-nan | convert caffe {dir}/ok.prototxt {dir}/w.caffemodel -o {dir}/m.pth --mean nan,1,2 | must be finite numbers
convert-wide-net | convert caffe {dir}/wide.prototxt {dir}/w.caffemodel -o {dir}/m.pth | ordinary size
convert-stride-0 | convert caffe {dir}/stride0.prototxt {dir}/w.caffemodel -o {dir}/m.pth | stride must be at least 1
convert-group-0 | convert caffe {dir}/group0.prototxt {dir}/w.caffemodel -o {dir}/m.pth | group must be at least 1
convert-deep-nesting | convert caffe {dir}/deep.prototxt {dir}/w.caffemodel -o {dir}/m.pth | nested 5000
convert-huge-input | convert caffe {dir}/bigin.prototxt {dir}/w.caffemodel -o {dir}/m.pth | is not 3 x H x W
# memory bombs and hangs
extract-121-mpx | extract {dir}/BOMB --dataset folder -o {dir}/out.h5 | too large to decode safely
extract-fifo | extract {dir}/FIFO --dataset folder -o {dir}/out.h5 | not a regular file (a FIFO)
extract-csv-device | extract {dir}/dev.csv --dataset csv -o {dir}/out.h5 | is not a regular file
extract-thin-crop | extract {dir}/THIN --dataset folder -o {dir}/out.h5 --resize crop | too small or too thin for --resize crop
svm-train-unlabeled | svm-train {dir}/nolabel.h5 -o {dir}/out.h5 | extracted images have no label
cam-close-huge | cam {feat} {svm} -o {dir}/out --close 1000000000 | --close 1000000000 is over 1024
cam-scales-huge | cam {feat} {svm} -o {dir}/out --scales 1000 | scales must be at most 8 numbers
localize-curve-tiny | localize {feat} {svm} --protocol wsol --cam-curve-interval 1e-9 | --cam-curve-interval must be in [0.001, 1)
extract-batch-huge | extract {root} --dataset cub200 -o {dir}/out.h5 --batch-size 1000000000 | --batch-size must lie in 1..4096
extract-workers-many | extract {root} --dataset cub200 -o {dir}/out.h5 --workers 100000 | workers must be at most
"""
CASES = [tuple(part.strip() for part in line.split(" | ")) for line in TABLE.splitlines()
         if line.strip() and not line.startswith("#")]

BOMBS = ("extract-121-mpx", "features-huge-size", "cam-close-huge", "cam-scales-huge", "localize-curve-tiny",
         "convert-wide-net", "convert-huge-input", "convert-deep-nesting", "extract-batch-huge")


def _argv(env: Env, text: str) -> list[str]:
    args = text.format(dir=env.dir, root=env.root, feat=env.feat, svm=env.svm).split()
    if args[0] == "extract" and "--model" not in args:
        args += ["--model", "tiny_test"] + ([] if "--workers" in args else ["--workers", "0"])
    return args


def _files(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.is_symlink()}


def test_the_table_holds_every_kind() -> None:
    assert len(CASES) >= 35 and len({c[0] for c in CASES}) == len(CASES)
    assert set(BOMBS) <= {c[0] for c in CASES}


@pytest.mark.parametrize("argv,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_untrusted_input_is_one_line_exit_2(env: Env, argv: str, expected: str,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    args = _argv(env, argv)
    before = _files(env.dir)
    capsys.readouterr()
    try:
        code = main(args)
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err[-5:]
    assert len(err) == 1 and "Traceback" not in err[0], err
    assert err[0].startswith(f"featkit {args[0]}: error: ") and expected in err[0], err[0]
    kept = env.dir / "out.h5"
    if argv.split()[0] == "extract" and kept.exists():  # by design: the rows before the bad image, resumable
        from featkit.features import FeatureFile

        with FeatureFile(kept) as f:
            assert not f.complete
        kept.unlink()
    assert _files(env.dir) == before
    assert not (env.dir / "out").exists()


CHILD = r"""
import contextlib, io, json, resource, sys
from featkit.cli import main
out = []
for args in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(args)
        except SystemExit as exc:
            code = exc.code
    out.append([code, err.getvalue()])
print(json.dumps({"results": out, "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def _child(argvs: list[list[str]], limit_kib: int | None = None, timeout: float = 120) -> dict:
    def limit() -> None:
        import resource
        if limit_kib is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit_kib * 1024, resource.RLIM_INFINITY))
    done = subprocess.run([sys.executable, "-c", CHILD, json.dumps(argvs)], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, preexec_fn=limit, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_bombs_stay_under_2_gib(env: Env) -> None:
    """The cases that could allocate without bound, in one process: its peak RSS stays under 2 GiB."""
    table = {c[0]: c for c in CASES}
    report = _child([_argv(env, table[name][1]) for name in BOMBS])
    for name, (code, err) in zip(BOMBS, report["results"]):
        assert code == 2 and table[name][2] in err and "Traceback" not in err, (name, err)
    print(f"bombs: peak RSS {report['maxrss_kib'] / 2**20:.2f} GiB")
    assert report["maxrss_kib"] < 2 * 2**20, report["maxrss_kib"]


def test_fifo_is_skipped_and_recorded_not_waited_on(env: Env, tmp_path: Path) -> None:
    out = tmp_path / "f.h5"
    assert main(["extract", str(env.dir / "FIFO"), "--dataset", "folder", "-o", str(out), *TINY,
                 "--on-error", "skip"]) == 0
    from featkit.features import FeatureFile

    with FeatureFile(out) as f:
        errors = dict(zip(f.paths, f.errors))
    assert "not a regular file (a FIFO)" in errors["cls/x.jpg"]


# ---------------------------------------------------------------- full disks

FULL_DISK_KIB = (4, 16, 64, 700)


def _verbs(env: Env, out: Path) -> dict[str, list[str]]:
    return {
        "extract": ["extract", str(env.root), "--dataset", "cub200", "-o", str(out / "f.h5"), *TINY, "--maps"],
        "svm-train": ["svm-train", str(env.feat), "-o", str(out / "s.h5"), "--C", "1", "--jobs", "1"],
        "protocol": ["protocol", str(env.feat), "-o", str(out / "p"), "--C", "1", "--jobs", "1"],
        "cam": ["cam", str(env.feat), str(env.svm), "-o", str(out / "cams")],
        "localize": ["localize", str(env.feat), str(env.svm), "-o", str(out / "loc")],
        "crops": ["crops", str(env.root), str(env.feat), str(env.svm), "-o", str(out / "c.h5"), "--boxes", "gt",
                  "--workers", "0"],
        "units": ["units", str(env.feat), str(env.svm), "--class", "001.Bird_1", "-o", str(out / "u")],
    }


def _bytes(dataset: h5py.Dataset) -> bytes:
    values = dataset[()]
    if dataset.dtype.kind == "O":
        return repr(np.asarray(values).tolist()).encode()
    return np.asarray(values).tobytes()


def _datasets(path: Path) -> dict[str, bytes]:
    items: dict[str, bytes] = {}
    with h5py.File(path, "r") as h5:
        h5.visititems(lambda n, o: items.__setitem__(n, _bytes(o)) if isinstance(o, h5py.Dataset) else None)
    return items


def _content(folder: Path) -> dict[str, object]:
    """What a user compares: every file's bytes, and for HDF5 files every dataset (their attrs hold times)."""
    found: dict[str, object] = {}
    for p in sorted(folder.rglob("*")):
        if not p.is_file():
            continue
        key = str(p.relative_to(folder))
        if p.suffix == ".h5":
            found[key] = _datasets(p)
        elif p.suffix in (".json", ".html"):
            found[key] = len(p.read_bytes())  # paths and times inside
        else:
            found[key] = hashlib.sha256(p.read_bytes()).hexdigest()
    return found


def test_full_disk_on_every_writing_verb_is_one_line_and_a_rerun_gives_the_same_output(env: Env,
                                                                                     tmp_path: Path) -> None:
    reference = tmp_path / "reference"
    reference.mkdir()
    verbs = _verbs(env, reference)
    for argv in verbs.values():
        assert main(argv) == 0, argv
    want = _content(reference)
    tried: list[str] = []
    for kib in FULL_DISK_KIB:
        out = tmp_path / f"limit{kib}"
        out.mkdir()
        names = list(_verbs(env, out))
        report = _child(list(_verbs(env, out).values()), limit_kib=kib)
        for name, (code, err) in zip(names, report["results"]):
            lines = [line for line in err.strip().splitlines() if "img/s" not in line]  # progress lines
            assert "Traceback" not in err and code in (0, 2), (kib, name, err[-2000:])
            if code == 2:
                assert len(lines) == 1 and "error:" in lines[0], (kib, name, lines)
                tried.append(f"{name}@{kib}KiB")
        # a rerun with room finishes what is there and gives what a run that never failed gives
        for argv in _verbs(env, out).values():
            if argv[0] in ("svm-train",) and (out / "s.h5").exists():
                argv = [*argv, "--overwrite"]
            if argv[0] == "protocol":
                shutil.rmtree(out / "p", ignore_errors=True)
            assert main(argv) == 0, (kib, argv)
        got = _content(out)
        assert set(got) == set(want), (kib, set(got) ^ set(want))
        for key in want:
            if key.endswith(".h5") and isinstance(want[key], dict):
                assert set(got[key]) == set(want[key]), (kib, key)  # type: ignore[arg-type]
                for name in want[key]:  # type: ignore[union-attr]
                    if "created" in name:
                        continue
                    assert got[key][name] == want[key][name], (kib, key, name)  # type: ignore[index]
            else:
                assert got[key] == want[key], (kib, key)
    assert tried, "no verb hit the limit"


# ---------------------------------------------------------------- EXIF orientation


def _rotated_photo(path: Path, seed: int) -> None:
    """An 80x40 stored JPEG, a red block at (10, 5)-(30, 15) of the stored grid, EXIF orientation 6 (shown
    turned 90 degrees clockwise, as a phone held upright stores it)."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 80, (40, 80, 3), dtype=np.uint8)
    pixels[5:15, 10:30] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(pixels).save(path, quality=95, exif=exif)


def test_exif_transpose_turns_pixels_and_boxes_upright(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from featkit.data.images import orient_box
    from featkit.features import FeatureFile

    rows = []
    for i, (label, split) in enumerate([("a", "train"), ("b", "train"), ("a", "test"), ("b", "test")]):
        _rotated_photo(tmp_path / f"p{i}.jpg", seed=i)
        rows.append(f"p{i}.jpg,{label},{split},10,5,30,15")
    (tmp_path / "list.csv").write_text("path,label,split,x0,y0,x1,y1\n" + "\n".join(rows) + "\n")
    # the mapping agrees with Pillow's own exif_transpose of the pixels: the red block lands in the box
    from PIL import ImageOps

    def red_box(pixels: np.ndarray) -> tuple[float, ...]:
        red = np.argwhere((pixels[..., 0] > 200) & (pixels[..., 1] < 60))
        (y0, x0), (y1, x1) = red.min(axis=0), red.max(axis=0) + 1
        return (float(x0), float(y0), float(x1), float(y1))

    with Image.open(tmp_path / "p0.jpg") as img:
        as_stored = red_box(np.asarray(img.convert("RGB")))
        upright = red_box(np.asarray(ImageOps.exif_transpose(img)))
    assert orient_box(as_stored, (80, 40), 6) == upright  # type: ignore[arg-type]
    assert orient_box((10, 5, 30, 15), (80, 40), 6) == (25.0, 10.0, 35.0, 30.0)

    stored, turned = tmp_path / "stored.h5", tmp_path / "turned.h5"
    base = ["extract", str(tmp_path / "list.csv"), "--dataset", "csv", *TINY, "--maps"]
    assert main([*base, "-o", str(stored)]) == 0
    assert main([*base, "-o", str(turned), "--exif-transpose"]) == 0
    with FeatureFile(stored) as f:
        assert f.sizes[0].tolist() == [80, 40] and f.box[0].tolist() == [10, 5, 30, 15]
    with FeatureFile(turned) as f:
        assert f.attrs["orientation"] == "exif"
        assert f.sizes[0].tolist() == [40, 80] and f.box[0].tolist() == [25, 10, 35, 30]
        assert not np.allclose(f.gap[0], FeatureFile(stored).gap[0])
    # CAMs of the upright file are drawn on the upright photo (40 wide, 80 high), with the image check passing
    svm = tmp_path / "svm.h5"
    assert main(["svm-train", str(turned), "-o", str(svm), "--C", "1", "--jobs", "1"]) == 0
    assert main(["cam", str(turned), str(svm), "-o", str(tmp_path / "cams"), "--raw", "npy"]) == 0
    # an SVM of upright features is refused on features of stored pixels
    capsys.readouterr()
    assert main(["svm-eval", str(stored), str(svm)]) == 2
    assert "orientation: exif there, stored in" in capsys.readouterr().err


# ---------------------------------------------------------------- protocol -o resumes whole folds


def test_protocol_rerun_keeps_the_whole_folds_of_an_earlier_run(env: Env, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "p"
    argv = ["protocol", str(env.feat), "-o", str(out), "--C", "1", "--jobs", "1"]
    assert main(argv) == 0
    first = capsys.readouterr().out
    saved = (out / "svm_fold0.h5").read_bytes()
    assert main(argv) == 0  # what a killed run left is kept and scored, not refused
    again = capsys.readouterr().out
    assert "kept" in again and (out / "svm_fold0.h5").read_bytes() == saved
    assert first.splitlines()[-1] == again.splitlines()[-1]  # the same mean +- std
    assert main([*argv[:-4], "--C", "2", "--jobs", "1"]) == 2  # another C: not this run's fold
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "already exists from another run (C:" in err[0] and "--overwrite" in err[0]


# ---------------------------------------------------------------- every entry of a file, damaged


def _mutations(path: Path) -> list[tuple[str, object]]:
    """(name, edit) for each dataset of ``path`` (removed, cut to one row, turned into text) and each root
    attribute (turned into text)."""
    with h5py.File(path, "r") as h5:
        names: list[str] = []
        h5.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
        attrs = list(h5.attrs)

    def delete(name: str):  # noqa: ANN202
        return lambda h5: h5.__delitem__(name)

    def cut(name: str):  # noqa: ANN202
        return lambda h5: _replace(h5, name, np.asarray(h5[name][()])[:1])

    def text(name: str):  # noqa: ANN202
        return lambda h5: _replace(h5, name, np.array(["x"] * max(1, len(h5[name])), dtype=object))

    out: list[tuple[str, object]] = []
    for name in names:
        out += [(f"{name}:missing", delete(name)), (f"{name}:one-row", cut(name)), (f"{name}:text", text(name))]
    out += [(f"@{key}:text", _attr(key, "garbage")) for key in attrs]
    return out


@pytest.mark.parametrize("which", ["svm", "features"])
def test_every_damaged_entry_is_one_line_or_harmless(env: Env, tmp_path: Path, which: str,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """Each entry of svm.h5 / features.h5 damaged in turn: svm-eval (and info for features) ends with exit 0
    or with exit 2 and one line; never a traceback."""
    source = env.svm if which == "svm" else env.feat
    failures = []
    for name, edit in _mutations(source):
        damaged = tmp_path / f"{which}.h5"
        _copy(source, damaged, edit)
        runs = [["svm-eval", str(env.feat), str(damaged)]] if which == "svm" else \
            [["svm-eval", str(damaged), str(env.svm)], ["info", str(damaged)]]
        for argv in runs:
            capsys.readouterr()
            try:
                code = main(argv)
            except Exception as exc:  # noqa: BLE001 - what the test looks for
                failures.append(f"{name} {argv[0]}: {type(exc).__name__}: {exc}"[:200])
                continue
            err = capsys.readouterr().err.strip().splitlines()
            if code not in (0, 2) or (code == 2 and len(err) != 1):
                failures.append(f"{name} {argv[0]}: exit {code}, {err[-3:]}")
    assert not failures, "\n".join(failures)
