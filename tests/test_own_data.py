"""Your own images: layout detection, --holdout / --folds splits, train/val trees, the README section."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import make_fake_cub, write_image

from featkit.cli.main import main
from featkit.data import detect_layout, open_dataset
from featkit.errors import FeatkitError
from featkit.features import FeatureFile

README = Path(__file__).resolve().parents[1] / "README.md"


def make_tree(root: Path, classes: int = 3, per_class: int = 20, splits: dict[str, int] | None = None) -> Path:
    """``root/<class>/*.jpg`` (or ``root/<split>/<class>/*.jpg``: the first ``splits[s]`` images of each class)."""
    for c in range(classes):
        for j in range(per_class):
            folder = root / f"class{c}"
            if splits:
                split = next(s for s, upto in splits.items() if j < upto)
                folder = root / split / f"class{c}"
            write_image(folder / f"img{j:02d}.jpg", (48 + 4 * (j % 5), 40 + 3 * c), seed=100 * c + j)
    return root


# ---------------------------------------------------------------- detection


def test_detect_layout_of_each_kind(tmp_path: Path) -> None:
    assert detect_layout(make_tree(tmp_path / "plain", 2, 2)).name == "folder"
    found = detect_layout(make_tree(tmp_path / "tv", 2, 3, {"train": 2, "val": 3}))
    assert found.name == "folder" and "train, val" in found.reason
    assert detect_layout(make_fake_cub(tmp_path / "cub")).name == "cub200"
    (tmp_path / "list.csv").write_text("a.jpg,cat\n")
    assert detect_layout(tmp_path / "list.csv").name == "csv"
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "list.csv").write_text("a.jpg,cat\n")
    assert detect_layout(tmp_path / "lists").name == "csv"
    (tmp_path / "empty").mkdir()
    with pytest.raises(FeatkitError, match="cannot tell the layout of .*empty.*dataset=NAME"):
        detect_layout(tmp_path / "empty")


def test_train_val_tree_splits_are_the_folder_names(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "tv", 3, 5, {"train": 3, "validation": 5})
    (root / "train" / "class9").mkdir()  # a class folder without images is not a class
    dataset = open_dataset("folder", root)
    assert dataset.classes() == ["class0", "class1", "class2"]
    records = dataset.records()
    assert len(dataset) == 15
    assert [r.split for r in records].count("train") == 9 and [r.split for r in records].count("val") == 6
    assert records[0].path == "train/class0/img00.jpg" and records[0].label == 0
    assert dataset.split_table(records)[:, 0].tolist() == [r.split for r in records]
    with pytest.raises(FeatkitError, match="has its own splits train, val; holdout is for a tree"):
        dataset.with_holdout(0.25)


# ---------------------------------------------------------------- holdout


def test_holdout_is_stratified_seeded_and_recorded(tmp_path: Path) -> None:
    dataset = open_dataset("folder", make_tree(tmp_path / "d", 3, 20))
    held = dataset.with_holdout(0.25)
    table = held.split_table(held.records())
    labels = np.array([r.label for r in held.records()])
    assert table.shape == (60, 1)
    for c in range(3):
        assert (table[labels == c, 0] == "test").sum() == 5 and (table[labels == c, 0] == "train").sum() == 15
    again = dataset.with_holdout(0.25).split_table(held.records())
    assert (again == table).all()  # seeded: the same draw every time
    other = dataset.with_holdout(0.25, seed=1).split_table(held.records())
    assert (other != table).any()
    folds = dataset.with_holdout(0.25, folds=3).split_table(held.records())
    assert folds.shape == (60, 3) and (folds[:, 0] == table[:, 0]).all() and (folds[:, 1] != folds[:, 0]).any()
    assert held.protocol.describe() == "holdout 0.25 of each class, stratified, one random draw, seed 0"
    for bad, message in ((0.0, "between 0 and 1"), (1.5, "between 0 and 1")):
        with pytest.raises(FeatkitError, match=message):
            dataset.with_holdout(bad)
    with pytest.raises(FeatkitError, match="folds must be at least 1"):
        dataset.with_holdout(0.5, folds=0)


def test_svm_train_without_split_points_to_holdout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_tree(tmp_path / "d", 2, 4)
    out = tmp_path / "f.h5"
    assert main(["extract", str(root), "-o", str(out), "--model", "tiny_test"]) == 0
    printed = capsys.readouterr().out
    assert "detected layout 'folder'" in printed and "add --holdout 0.25" in printed
    assert main(["svm-train", str(out), "-o", str(tmp_path / "svm.h5")]) == 2
    assert "extract it again with --holdout 0.25" in capsys.readouterr().err
    assert main(["extract", str(root), "-o", str(out), "--folds", "3", "--overwrite"]) == 2
    assert "give --holdout FRACTION with it" in capsys.readouterr().err


def test_folds_give_one_column_each_and_protocol_scores_them(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    root = make_tree(tmp_path / "d", 3, 8)
    out = tmp_path / "f.h5"
    assert main(["extract", str(root), "-o", str(out), "--holdout", "0.25", "--folds", "3",
                 "--model", "tiny_test"]) == 0
    assert main(["info", str(out)]) == 0
    assert "protocol     holdout 0.25 of each class, stratified, 3 random draws, seed 0" in capsys.readouterr().out
    with FeatureFile(out) as features:
        assert features.splits.shape == (24, 3)
        assert features.attrs["split_protocol"] == "holdout 0.25 of each class, stratified, 3 random draws, seed 0"
    capsys.readouterr()
    assert main(["protocol", str(out), "--C", "1"]) == 0
    printed = capsys.readouterr().out
    assert "3 folds" in printed and "fold 2: 18 train / 6 test images" in printed
    # resuming under another holdout would mix two draws: refused
    assert main(["extract", str(root), "-o", str(out), "--holdout", "0.5", "--model", "tiny_test"]) == 2
    assert "split_protocol" in capsys.readouterr().err


# ---------------------------------------------------------------- the whole chain with no other flag


def _readme_commands() -> list[list[str]]:
    section = README.read_text(encoding="utf-8").split("## Your own data", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.S)
    assert block is not None
    lines = [shlex.split(line) for line in block.group(1).splitlines() if line.strip()]
    assert all(line[0] == "featkit" for line in lines)
    return [line[1:] for line in lines]


def _run_chain(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
               extra: list[str]) -> str:
    monkeypatch.chdir(tmp_path)
    printed = []
    for argv in _readme_commands():
        argv = argv + extra if argv[0] == "extract" else argv
        assert main(argv) == 0, capsys.readouterr().err
        printed.append(capsys.readouterr().out)
    return "\n".join(printed)


def test_readme_own_data_section_runs_on_a_plain_tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    make_tree(tmp_path / "mydata", 3, 20)
    out = _run_chain(tmp_path, monkeypatch, capsys, ["--model", "tiny_test"])
    assert "detected layout 'folder' at mydata: 3 class folders of images" in out
    assert "45 training images (train, fold 0)" in out
    assert "split test, fold 0 (the SVM's training fold), 15 images" in out
    assert "wrote 15 CAM pictures" in out and len(list((tmp_path / "cams").glob("*.png"))) >= 15
    assert "no ground-truth boxes in the 15 images" in out
    with h5py.File(tmp_path / "my.h5", "r") as handle:
        assert handle.attrs["split_protocol"].startswith("holdout 0.25")


def test_readme_own_data_section_runs_on_a_train_val_tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    make_tree(tmp_path / "mydata", 3, 20, {"train": 14, "val": 20})
    commands = _readme_commands()
    assert commands[0][-2:] == ["--holdout", "0.25"] or "--holdout" in commands[0]
    # the same chain without --holdout
    monkeypatch.chdir(tmp_path)
    printed = []
    for argv in commands:
        if argv[0] == "extract":
            i = argv.index("--holdout")
            argv = argv[:i] + argv[i + 2:] + ["--model", "tiny_test"]
        assert main(argv) == 0, capsys.readouterr().err
        printed.append(capsys.readouterr().out)
    out = "\n".join(printed)
    assert "split folders train, val" in out and "42 training images (train, fold 0)" in out
    assert "split val, fold 0 (the SVM's training fold), 18 images" in out and "wrote 18 CAM pictures" in out


@pytest.mark.slow
def test_readme_own_data_section_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """The default backbone (EfficientNet-Lite0, offline weights), exactly the README's lines."""
    make_tree(tmp_path / "mydata", 3, 20)
    out = _run_chain(tmp_path, monkeypatch, capsys, [])
    assert "45 training images" in out and "wrote 15 CAM pictures" in out
