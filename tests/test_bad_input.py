"""Every verb answers a bad input with exit 2 and one line naming the problem, and touches no file.

One table of (verb, arguments, what the line must say) across all verbs. The
shared inputs (a tiny CUB tree, its features with maps from the seeded
``tiny_test`` backbone, an SVM, and damaged copies) are built once for the
module, so the table runs in seconds. For each case: exit code 2, exactly one
line on stderr containing the expected words and no traceback, and every file
under the shared folder byte-identical before and after (no new file either).
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import Env, make_fake_cub, tiny_cub_features, write_image
from PIL import Image

from featkit.cli import main

TINY = ["--model", "tiny_test"]


def _extract(root: Path | str, out: Path, *extra: str, dataset: str = "cub200") -> None:
    argv = ["extract", str(root), "--dataset", dataset, "-o", str(out), *TINY, "--workers", "0", *extra]
    assert main(argv) == 0, argv


def _damaged_copy(src: Path, dst: Path, edit: dict[str, tuple[object, object]], attrs: dict[str, object]) -> Path:
    shutil.copy(src, dst)
    with h5py.File(dst, "r+") as h5:
        for name, (index, value) in edit.items():
            h5[name][index] = value
        for key, value in attrs.items():
            h5.attrs[key] = value
    return dst


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Env:
    d = tmp_path_factory.mktemp("bad_input")
    root, feat, svm = tiny_cub_features(d)
    _extract(root, d / "feat32.h5", "--image-size", "32", "--maps")
    _damaged_copy(feat, d / "nan.h5", {"features/gap": (1, np.full(32, np.nan, np.float32))}, {})
    _damaged_copy(feat, d / "huge.h5", {"features/gap": (2, np.full(32, 3e30, np.float32))}, {})
    with h5py.File(feat, "r") as h5:
        canvas = h5["features/maps"].shape[1:]  # the default geometry's (short-side) NaN-padded canvas
    _damaged_copy(feat, d / "nanmaps.h5", {"features/maps": (0, np.full(canvas, np.nan, np.float16))}, {})
    _damaged_copy(feat, d / "infbox.h5", {"images/box": (0, np.array([0, 0, np.inf, 10], np.float32))}, {})
    _damaged_copy(feat, d / "incomplete.h5", {"images/status": (slice(4, None), 0)}, {"complete": False, "rows_done": 4})
    # the same file names at another root, with other image sizes (not the images extracted)
    other = make_fake_cub(d / "OTHER", n_classes=2, per_class=4)
    for image in sorted((other / "images").rglob("*.jpg")):
        with Image.open(image) as img:
            size = img.size
        write_image(image, (size[0] + 2, size[1]), seed=1)
    # metadata mistakes of the CUB layout: the images shared by symlink, one file changed
    for name, file, bad in [("cub_classid", "image_class_labels.txt", "1 99"),
                            ("cub_box", "bounding_boxes.txt", "1 10.0 abc 30.0 30.0"),
                            ("cub_label", "image_class_labels.txt", "1 one")]:
        variant = d / name
        variant.mkdir()
        (variant / "images").symlink_to(root / "images")
        for txt in root.glob("*.txt"):
            shutil.copy(txt, variant / txt.name)
        lines = (variant / file).read_text().splitlines()
        lines[0] = bad
        (variant / file).write_text("\n".join(lines) + "\n")
    first, second = (p.relative_to(root).as_posix() for p in sorted((root / "images").rglob("*.jpg"))[:2])
    (root / "latin1.csv").write_bytes(f"{first},Gr\xfcn,train\n".encode("latin-1"))
    (root / "infbox.csv").write_text(f"{first},a,train,0,0,inf,10\n{second},b,test,,,,\n")
    (d / "text.h5").write_text("not hdf5\n")
    (d / "folder").mkdir()
    (d / "pos").mkdir()
    write_image(d / "pos" / "a.jpg", (80, 60), seed=3)
    (d / "no_top.prototxt").write_text("name: 'x'\nlayer { name: 'data' type: 'Input' }\n")
    (d / "deploy.prototxt").write_text(
        "name: 'x'\ninput: 'data'\n" + "".join(f"input_dim: {v}\n" for v in (1, 3, 8, 8))
        + "layer { name: 'c' type: 'Convolution' bottom: 'data' top: 'c' convolution_param { num_output: 4 "
        "kernel_size: 3 } }\n")
    return Env(d, root, feat, svm)


# (id, argv with {dir} {root} {feat} {svm} placeholders, words the one line must contain)
CASES: list[tuple[str, str, str]] = [
    # ---- extract (the cases tests/test_extract.py had, and more)
    ("extract-missing-root", "extract {dir}/nope --dataset cub200 -o {dir}/f.h5", "does not exist"),
    ("extract-bad-dataset", "extract {root} --dataset cub2000 -o {dir}/f.h5", "unknown dataset 'cub2000'"),
    ("extract-output-is-dir", "extract {root} --dataset cub200 -o {dir}", "is a folder"),
    ("extract-no-parent", "extract {root} --dataset cub200 -o {dir}/no/f.h5", "does not exist; create it"),
    ("extract-parent-is-file", "extract {root} --dataset cub200 -o {feat}/f.h5", "is a file"),
    ("extract-proc", "extract {root} --dataset cub200 -o /proc/f.h5", "not writable"),
    ("extract-bad-batch", "extract {root} --dataset cub200 -o {dir}/f.h5 --batch-size 0",
     "--batch-size must lie in 1..4096"),
    ("extract-bad-image-size", "extract {root} --dataset cub200 -o {dir}/f.h5 --image-size 7", "--image-size"),
    ("extract-bad-workers", "extract {root} --dataset cub200 -o {dir}/f.h5 --workers -2", "workers must be 0 or more"),
    ("extract-bad-device", "extract {root} --dataset cub200 -o {dir}/f.h5 --device tpu", "device must be auto, cpu or cuda"),
    ("extract-bad-rank", "extract {root} --dataset cub200 -o {dir}/f.h5 --rank 3 --world-size 2", "rank must be in 0..1"),
    ("extract-other-run", "extract {root} --dataset cub200 -o {feat} --image-size 48", "another run"),
    ("extract-unknown-model", "extract {root} --dataset cub200 -o {dir}/f.h5 --model nosuchnet", "nosuchnet"),
    ("extract-csv-not-utf8", "extract {root}/latin1.csv --dataset csv -o {dir}/f.h5", "latin1.csv:1: byte"),
    ("extract-csv-inf-box", "extract {root}/infbox.csv --dataset csv -o {dir}/f.h5", "infbox.csv:1: malformed"),
    ("extract-cub-class-id", "extract {dir}/cub_classid --dataset cub200 -o {dir}/f.h5",
     "image_class_labels.txt:1: malformed line '1 99'"),
    ("extract-cub-box", "extract {dir}/cub_box --dataset cub200 -o {dir}/f.h5", "bounding_boxes.txt:1: malformed"),
    ("extract-cub-label", "extract {dir}/cub_label --dataset cub200 -o {dir}/f.h5",
     "image_class_labels.txt:1: malformed line '1 one'"),
    # ---- info
    ("info-missing", "info {dir}/nope.h5", "does not exist"),
    ("info-not-hdf5", "info {dir}/text.h5", "not a readable HDF5 file"),
    ("info-folder", "info {dir}/folder", "does not exist"),
    ("info-nan", "info {dir}/nan.h5", "is damaged"),
    ("info-huge", "info {dir}/huge.h5", "is damaged"),
    ("info-infbox", "info {dir}/infbox.h5", "is damaged"),
    ("info-check-nanmaps", "info --check {dir}/nanmaps.h5", "is damaged"),
    # ---- merge
    ("merge-output-exists", "merge {feat} -o {svm}", "already exists"),
    ("merge-output-is-shard", "merge {feat} -o {feat}", "would destroy the input"),
    ("merge-proc", "merge {feat} -o /proc/m.h5", "not writable"),
    ("merge-missing-shard", "merge {dir}/nope.h5 -o {dir}/m.h5", "nope.h5"),
    ("merge-not-a-shard", "merge {feat} -o {dir}/m.h5", "shard"),
    # ---- svm-train
    ("svm-train-proc", "svm-train {feat} -o /proc/s.h5", "not writable"),
    ("svm-train-readonly", "svm-train {feat} -o /sys/s.h5", "not writable"),
    ("svm-train-exists", "svm-train {feat} -o {svm}", "already exists"),
    ("svm-train-folder", "svm-train {feat} -o {dir}/folder", "is a folder"),
    ("svm-train-no-folder", "svm-train {feat} -o {dir}/no/s.h5", "does not exist; create it"),
    ("svm-train-onto-features", "svm-train {feat} -o {feat} --overwrite", "would destroy the input"),
    ("svm-train-C-inf", "svm-train {feat} -o {dir}/s.h5 --C inf", "must be 'auto' or a finite positive number"),
    ("svm-train-C-nan", "svm-train {feat} -o {dir}/s.h5 --C nan", "must be 'auto' or a finite positive number"),
    ("svm-train-C-negative", "svm-train {feat} -o {dir}/s.h5 --C -1", "must be 'auto' or a finite positive number"),
    ("svm-train-C-zero", "svm-train {feat} -o {dir}/s.h5 --C 0", "must be 'auto' or a finite positive number"),
    ("svm-train-C-text", "svm-train {feat} -o {dir}/s.h5 --C big", "must be 'auto' or a finite positive number"),
    ("svm-train-jobs-0", "svm-train {feat} -o {dir}/s.h5 --jobs 0", "--jobs must be -1"),
    ("svm-train-jobs-minus-5", "svm-train {feat} -o {dir}/s.h5 --jobs -5", "--jobs must be -1"),
    ("svm-train-nan", "svm-train {dir}/nan.h5 -o {dir}/s.h5", "row 1 ("),
    ("svm-train-huge", "svm-train {dir}/huge.h5 -o {dir}/s.h5", "row 2 ("),
    ("svm-train-incomplete", "svm-train {dir}/incomplete.h5 -o {dir}/s.h5", "incomplete (4 of 8 images)"),
    ("svm-train-bad-split", "svm-train {feat} -o {dir}/s.h5 --split val", "no usable images in split 'val'"),
    ("svm-train-bad-fold", "svm-train {feat} -o {dir}/s.h5 --fold 3", "fold 3 does not exist"),
    ("svm-train-missing-features", "svm-train {dir}/nope.h5 -o {dir}/s.h5", "does not exist"),
    # ---- svm-eval
    ("svm-eval-confusion-no-folder", "svm-eval {feat} {svm} --confusion {dir}/no/c.png", "does not exist; create"),
    ("svm-eval-confusion-extension", "svm-eval {feat} {svm} --confusion {dir}/c.jpg", "ending in .png"),
    ("svm-eval-confusion-proc", "svm-eval {feat} {svm} --confusion /proc/c.png", "not writable"),
    ("svm-eval-confusion-folder", "svm-eval {feat} {svm} --confusion {dir}/folder", "is a folder"),
    ("svm-eval-input-size", "svm-eval {dir}/feat32.h5 {svm}", "input_size: 64 there, 32 in"),
    ("svm-eval-nan", "svm-eval {dir}/nan.h5 {svm}", "is damaged"),
    ("svm-eval-incomplete", "svm-eval {dir}/incomplete.h5 {svm}", "incomplete"),
    ("svm-eval-missing-svm", "svm-eval {feat} {dir}/nope.h5", "does not exist"),
    ("svm-eval-not-an-svm", "svm-eval {feat} {feat}", "not a featkit svm.h5"),
    # ---- cam
    ("cam-proc", "cam {feat} {svm} -o /proc", "not writable"),
    ("cam-missing-proc", "cam {feat} {svm} -o /proc/featkit/cams", "not writable"),
    ("cam-output-is-file", "cam {feat} {svm} -o {svm}", "is a file"),
    ("cam-under-a-file", "cam {feat} {svm} -o {svm}/cams", "is a file"),
    ("cam-limit-negative", "cam {feat} {svm} -o {dir}/cams --limit -1", "limit must be 0 (all images)"),
    ("cam-infinite-box", "cam {dir}/infbox.h5 {svm} -o {dir}/cams", "images/box holds infinite"),
    ("cam-nan", "cam {dir}/nan.h5 {svm} -o {dir}/cams", "is damaged"),
    ("cam-nan-maps", "cam {dir}/nanmaps.h5 {svm} -o {dir}/cams --split train", "features/maps holds NaN"),
    ("cam-incomplete", "cam {dir}/incomplete.h5 {svm} -o {dir}/cams", "incomplete"),
    ("cam-input-size", "cam {dir}/feat32.h5 {svm} -o {dir}/cams", "input_size"),
    ("cam-unknown-class", "cam {feat} {svm} -o {dir}/cams --class Penguin", "Penguin"),
    # ---- localize
    ("localize-output-is-file", "localize {feat} {svm} -o {svm}", "is a file"),
    ("localize-proc", "localize {feat} {svm} -o /proc/loc", "not writable"),
    ("localize-incomplete", "localize {dir}/incomplete.h5 {svm}", "incomplete"),
    ("localize-nan", "localize {dir}/nan.h5 {svm}", "is damaged"),
    ("localize-input-size", "localize {dir}/feat32.h5 {svm}", "input_size"),
    ("localize-bad-threshold-split", "localize {feat} {svm} --split val", "split 'val'"),
    # ---- crops
    ("crops-other-root", "crops {dir}/OTHER {feat} {svm} -o {dir}/c.h5", "holds other images"),
    ("crops-missing-root", "crops {dir}/nope {feat} {svm} -o {dir}/c.h5", "is not a folder"),
    ("crops-onto-features", "crops {root} {feat} {svm} -o {feat} --overwrite", "would destroy the input"),
    ("crops-proc", "crops {root} {feat} {svm} -o /proc/c.h5", "not writable"),
    ("crops-nan", "crops {root} {dir}/nan.h5 {svm} -o {dir}/c.h5", "is damaged"),
    ("crops-incomplete", "crops {root} {dir}/incomplete.h5 {svm} -o {dir}/c.h5", "incomplete"),
    ("crops-input-size", "crops {root} {dir}/feat32.h5 {svm} -o {dir}/c.h5", "input_size"),
    # ---- units
    ("units-top-0", "units {feat} {svm} --class 001.Bird_1 --top-units 0", "--top-units must lie in 1..32"),
    ("units-top-negative", "units {feat} {svm} --class 001.Bird_1 --top-units -3", "--top-units must lie in 1..32"),
    ("units-top-huge", "units {feat} {svm} --class 001.Bird_1 --top-units 100000", "--top-units must lie in 1..32"),
    ("units-images-0", "units {feat} {svm} --class 001.Bird_1 --images 0", "--images must lie in 1..8"),
    ("units-proc", "units {feat} {svm} --class 001.Bird_1 -o /proc/u", "not writable"),
    ("units-missing-proc", "units {feat} {svm} --class 001.Bird_1 -o /proc/featkit/u", "not writable"),
    ("units-output-is-file", "units {feat} {svm} --class 001.Bird_1 -o {svm}", "is a file"),
    ("units-incomplete", "units {dir}/incomplete.h5 {svm} --class 001.Bird_1", "incomplete"),
    ("units-nan", "units {dir}/nan.h5 {svm} --class 001.Bird_1", "is damaged"),
    ("units-unknown-class", "units {feat} {svm} --class Penguin", "Penguin"),
    # ---- discover
    ("discover-missing-positive", "discover {dir}/nope {dir}/pos -o {dir}/d", "does not exist"),
    ("discover-output-is-file", "discover {dir}/pos {dir}/pos -o {svm}", "is a file"),
    ("discover-proc", "discover {dir}/pos {dir}/pos -o /proc/d", "not writable"),
    ("discover-top-0", "discover {dir}/pos {dir}/pos -o {dir}/d --top 0", "top must be at least 1"),
    # ---- demo
    ("demo-output-is-file", "demo -o {svm}", "is a file"),
    ("demo-proc", "demo -o /proc/demo", "not writable"),
    ("demo-top-0", "demo -o {dir}/demo --top 0", "top must be at least 1"),
    # ---- convert
    ("convert-missing-deploy", "convert caffe {dir}/nope.prototxt {dir}/w.caffemodel -o {dir}/m.pth", "nope.prototxt"),
    ("convert-bad-mean", "convert caffe {dir}/deploy.prototxt {dir}/w.caffemodel --mean a,b", "--mean takes B,G,R"),
    ("convert-input-without-top", "convert caffe {dir}/no_top.prototxt {dir}/w.caffemodel -o {dir}/m.pth",
     "declares no input blob"),
    ("convert-proc", "convert caffe {dir}/deploy.prototxt {dir}/w.caffemodel -o /proc/m.pth", "not writable"),
    ("convert-output-is-folder", "convert caffe {dir}/deploy.prototxt {dir}/w.caffemodel -o {dir}/folder",
     "is a folder"),
    ("convert-output-extension", "convert caffe {dir}/deploy.prototxt {dir}/w.caffemodel -o {dir}/m.txt",
     "ending in .pth or .pt"),
    ("convert-no-gap-layer", "convert caffe {dir}/deploy.prototxt {dir}/w.caffemodel -o {dir}/m.pth",
     "no global average pooling layer"),
    ("convert-unknown-name", "convert caffe {dir}/deploy.prototxt {dir}/w.caffemodel --name foonet",
     "not a released CAM model"),
]


def _digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.is_symlink()}


def test_the_table_covers_every_verb() -> None:
    verbs = {argv.split()[0] for _, argv, _ in CASES}
    assert verbs == {"extract", "info", "merge", "svm-train", "svm-eval", "cam", "localize", "crops", "units",
                     "discover", "demo", "convert"}
    assert len(CASES) >= 60 and len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("argv,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_touches_nothing(env: Env, argv: str, expected: str,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    args = argv.format(dir=env.dir, root=env.root, feat=env.feat, svm=env.svm).split()
    if args[0] in ("extract", "discover", "demo") and "--model" not in args:
        args += TINY
    before = _digests(env.dir)
    capsys.readouterr()
    try:
        code = main(args)
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert code == 2, (code, captured.err[-2000:])
    assert len(err) == 1, err
    assert "Traceback" not in captured.err
    assert err[0].startswith(f"featkit {args[0]}: error: ") or err[0].startswith("featkit"), err[0]
    assert expected in err[0], err[0]
    assert _digests(env.dir) == before


# ---------------------------------------------------------------- allowed, but recorded and said


def test_training_on_test_is_recorded_and_said_by_every_report(env: Env, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    svm = tmp_path / "on_test.h5"
    assert main(["svm-train", str(env.feat), "-o", str(svm), "--split", "test", "--C", "1", "--jobs", "1"]) == 0
    assert "note: trained on the test split" in capsys.readouterr().out
    with h5py.File(svm, "r") as h5:
        assert h5.attrs["trained_split"] == "test"
    # scoring the test split with it is refused (issue #9: never scored on its training rows) ...
    assert main(["svm-eval", str(env.feat), str(svm)]) == 2
    assert "training images of" in capsys.readouterr().err
    # ... and every report on another split says what it was trained on
    assert main(["svm-eval", str(env.feat), str(svm), "--split", "train"]) == 0
    assert "was trained on the test split, fold 0" in capsys.readouterr().out
    out = tmp_path / "loc"
    assert main(["localize", str(env.feat), str(svm), "--no-sweep", "--split", "train", "-o", str(out)]) == 0
    assert "trained on the test split" in capsys.readouterr().out
    assert "trained on the test split" in (out / "localization.md").read_text()
    assert '"classifier_trained_on": "test split, fold 0"' in (out / "localization.json").read_text()


@pytest.mark.parametrize("key,value", [("input_size", 128), ("mean", [0.1, 0.2, 0.3]), ("std", [1.0, 1.0, 1.0]),
                                       ("precision", "bfloat16"), ("resize", "warp"), ("weights_sha256", "f" * 64),
                                       ("crop", "gt")])
def test_an_svm_of_other_features_is_refused_naming_the_field(env: Env, tmp_path: Path, key: str, value: object,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    svm = tmp_path / "svm.h5"
    shutil.copy(env.svm, svm)
    with h5py.File(svm, "r+") as h5:
        h5.attrs[f"features_{key}"] = value
    assert main(["svm-eval", str(env.feat), str(svm)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"trained on other features ({key}:" in err[0]


def test_an_svm_from_before_the_new_fields_is_still_accepted(env: Env, tmp_path: Path) -> None:
    """Keys an older svm.h5 lacks are unknown, not a mismatch."""
    svm = tmp_path / "old.h5"
    shutil.copy(env.svm, svm)
    with h5py.File(svm, "r+") as h5:
        for key in ("input_size", "mean", "std", "precision", "resize"):
            del h5.attrs[f"features_{key}"]
    assert main(["svm-eval", str(env.feat), str(svm)]) == 0


def test_info_reports_integrity(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", str(env.feat)]) == 0
    assert "integrity    ok (every GAP feature read; --check also reads the maps)" in capsys.readouterr().out
    assert main(["info", "--check", str(env.feat)]) == 0
    assert "integrity    ok (every GAP feature and conv map read)" in capsys.readouterr().out
    assert main(["info", str(env.dir / "nan.h5")]) == 2
    out = capsys.readouterr().out
    assert "DAMAGED      1 problem found" in out and "in extracted row 1 (images/" in out
    assert main(["info", str(env.dir / "nanmaps.h5")]) == 0  # the maps are read with --check only
    capsys.readouterr()
    assert main(["info", "--check", str(env.dir / "nanmaps.h5")]) == 2
    assert "features/maps holds NaN" in capsys.readouterr().out


def test_the_right_root_passes_the_image_check(env: Env) -> None:
    from featkit.errors import FeatkitError
    from featkit.features import FeatureFile
    from featkit.features.integrity import require_same_images

    with FeatureFile(env.feat) as features:
        assert require_same_images(features, env.root) is None  # the images extracted: no complaint
        with pytest.raises(FeatkitError, match="holds other images"):  # same names, other pixels
            require_same_images(features, env.dir / "OTHER")


def test_an_unwritable_folder_is_refused_for_a_plain_user(tmp_path: Path) -> None:
    import os

    from featkit.errors import FeatkitError
    from featkit.outputs import check_output_file, check_output_folder

    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders; /proc and /sys cases in the table cover it")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    with pytest.raises(FeatkitError, match="is not writable"):
        check_output_file(locked / "s.h5")
    with pytest.raises(FeatkitError, match="is not writable"):
        check_output_folder(locked / "cams")
