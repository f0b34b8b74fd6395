"""Folds: an SVM is never scored on rows it was trained on; a whole protocol runs from one command.

A synthetic features file with 2 random train/test folds (tests/conftest.py
``write_features``): fold 1's training images are partly fold 0's test images,
the situation in which scoring the wrong fold inflates accuracy silently.
"""

from __future__ import annotations

import re
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import write_features, write_image

from featkit.cli import main
from featkit.errors import FeatkitError
from featkit.features import FeatureFile
from featkit.linear import LinearClassifier, classifier_fold, classifier_for, evaluate, load_svm, train_svm
from featkit.linear.protocol import training_rows

N, K, CLASSES = 48, 8, ["a", "b", "c"]


def _two_folds(tmp_path: Path, name: str = "f.h5", seed: int = 0, maps: bool = False) -> Path:
    """Noisy 3-class features (not separable, so folds differ) and 2 random half/half folds."""
    rng = np.random.default_rng(seed)
    labels = np.arange(N) % len(CLASSES)
    gap = np.abs(rng.normal(0, 1.0, (N, K))).astype(np.float32)
    gap[np.arange(N), labels] += 1.2
    splits = np.empty((N, 2), dtype=object)
    for fold in range(2):
        order = rng.permutation(N)
        splits[order[: N // 2], fold] = "train"
        splits[order[N // 2:], fold] = "test"
    extra: dict[str, object] = {}
    if maps:
        extra["maps"] = np.repeat(gap[:, :, None, None], 4, axis=2).repeat(4, axis=3)
        extra["boxes"] = [((10.0, 10.0, 120.0, 120.0),)] * N
    return write_features(tmp_path / name, gap, labels, splits, CLASSES, **extra)  # type: ignore[arg-type]


def _err(capsys: pytest.CaptureFixture[str]) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


@pytest.fixture
def fold1_svm(tmp_path: Path) -> tuple[Path, Path]:
    features = _two_folds(tmp_path, maps=True)
    svm = tmp_path / "svm_fold1.h5"
    assert main(["svm-train", str(features), "-o", str(svm), "--fold", "1", "--C", "1"]) == 0
    return features, svm


def test_svm_records_its_training_rows(fold1_svm: tuple[Path, Path]) -> None:
    features, svm = fold1_svm
    with FeatureFile(features) as f, h5py.File(svm) as h5:
        expected = np.flatnonzero(f.splits[:, 1] == "train")
        np.testing.assert_array_equal(h5["trained/rows"][:], expected)
        assert h5.attrs["trained_fold"] == 1 and h5.attrs["trained_images_sha256"] == f.images_sha256


def test_eval_defaults_to_the_svms_fold(fold1_svm: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    features, svm = fold1_svm
    capsys.readouterr()
    assert main(["svm-eval", str(features), str(svm)]) == 0
    out = capsys.readouterr().out
    assert "split test, fold 1 (the SVM's training fold), 24 images" in out
    with FeatureFile(features) as f:
        classifier = classifier_for(f, svm)
        assert classifier_fold(classifier, None) == 1
        assert evaluate(classifier, f).n_images == int((f.splits[:, 1] == "test").sum())


@pytest.mark.parametrize("args", [["--fold", "0"], ["--split", "train"], ["--split", "train", "--fold", "0"]])
def test_eval_refuses_rows_the_svm_was_trained_on(fold1_svm: tuple[Path, Path], args: list[str],
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    features, svm = fold1_svm
    with FeatureFile(features) as f:
        assert np.intersect1d(np.flatnonzero(f.splits[:, 0] == "test"),
                              np.flatnonzero(f.splits[:, 1] == "train")).size > 0  # the trap exists
    capsys.readouterr()
    assert main(["svm-eval", str(features), str(svm), *args]) == 2
    err = _err(capsys)
    assert "are training images of" in err and "of fold 1" in err and "--fold 1" in err


def test_no_split_and_fold_scores_a_training_row(tmp_path: Path) -> None:
    """Every (training split, fold) x (scored split, fold): evaluate refuses exactly when rows overlap."""
    features = _two_folds(tmp_path)
    for train_split in ("train", "test"):
        for train_fold in (0, 1):
            svm = tmp_path / f"svm_{train_split}{train_fold}.h5"
            assert main(["svm-train", str(features), "-o", str(svm), "--split", train_split,
                         "--fold", str(train_fold), "--C", "1"]) == 0
            with FeatureFile(features) as f:
                classifier = classifier_for(f, svm)
                trained = np.flatnonzero(f.splits[:, train_fold] == train_split)
                for split in ("train", "test"):
                    for fold in (0, 1):
                        scored = np.flatnonzero(f.splits[:, fold] == split)
                        if np.intersect1d(scored, trained).size:
                            with pytest.raises(FeatkitError, match="are training images of"):
                                evaluate(classifier, f, split, fold)
                        else:
                            assert evaluate(classifier, f, split, fold).n_images == scored.size
            # an SVM trained on 'test' is never scored on that same 'test'
            with FeatureFile(features) as f, pytest.raises(FeatkitError, match="are training images of"):
                evaluate(classifier_for(f, svm), f, train_split, train_fold)


def test_an_svm_trained_in_python_is_refused_its_rows_too(tmp_path: Path) -> None:
    features = _two_folds(tmp_path)
    with FeatureFile(features) as f:
        svm, _ = train_svm(f, fold=1, C=1.0)
        classifier = LinearClassifier.from_estimator(svm, f.classes)
        assert classifier_fold(classifier, None) == 1
        assert evaluate(classifier, f).n_images == 24
        with pytest.raises(FeatkitError, match="of fold 0 are training images of svm"):
            evaluate(classifier, f, "test", 0)
        head = LinearClassifier(np.zeros((2, K)), np.zeros(2), ["x", "y"], kind="head")
        assert classifier_fold(head, None) == 0 and training_rows(head, f) is None


def test_an_svm_from_before_stored_rows_is_checked_by_its_fold(fold1_svm: tuple[Path, Path]) -> None:
    features, svm = fold1_svm
    with h5py.File(svm, "r+") as h5:
        del h5["trained/rows"]
        del h5.attrs["trained_images_sha256"]
    with FeatureFile(features) as f:
        classifier = classifier_for(f, svm)
        np.testing.assert_array_equal(training_rows(classifier, f), np.flatnonzero(f.splits[:, 1] == "train"))
        with pytest.raises(FeatkitError, match="are training images of"):
            evaluate(classifier, f, "test", 0)
        assert evaluate(classifier, f).n_images == 24


def test_same_images_in_another_file_are_refused_too(fold1_svm: tuple[Path, Path], tmp_path: Path) -> None:
    """A crops file (same images, other features) shares the SVM's training rows."""
    _, svm = fold1_svm
    other = _two_folds(tmp_path, name="same_images.h5", seed=0)
    with FeatureFile(other) as f, pytest.raises(FeatkitError, match="24 of the 24 images of split 'train' of fold 1 are training images"):
        evaluate(load_svm(svm), f, "train", 1)


def test_localize_defaults_to_the_svms_fold_and_refuses_its_rows(
    fold1_svm: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    features, svm = fold1_svm
    assert main(["localize", str(features), str(svm), "--no-sweep"]) == 0
    assert "Localization of 24 images" in capsys.readouterr().out
    assert main(["localize", str(features), str(svm), "--no-sweep", "--fold", "0"]) == 2
    assert "images to localize are training images of" in _err(capsys)


def test_cam_defaults_to_the_svms_fold(fold1_svm: tuple[Path, Path], tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    features, svm = fold1_svm
    with FeatureFile(features) as f:
        for i, path in enumerate(f.paths):
            write_image(tmp_path / path, (224, 224), seed=i)
    assert main(["cam", str(features), str(svm), "-o", str(tmp_path / "cams"), "--limit", "2"]) == 0
    with FeatureFile(features) as f:
        first_test = [Path(f.paths[i]).stem for i in np.flatnonzero(f.splits[:, 1] == "test")[:2]]
    drawn = sorted(p.name for p in (tmp_path / "cams").glob("*.png"))
    assert all(any(stem in name for name in drawn) for stem in first_test), (first_test, drawn)
    assert "note:" not in capsys.readouterr().out
    # Pictures of training images are drawn (they are not scores), with a note that they are not held out.
    assert main(["cam", str(features), str(svm), "-o", str(tmp_path / "train"), "--split", "train", "--limit", "2"]) == 0
    assert "note: 2 of the 2 images drawn are training images of" in capsys.readouterr().out


def test_protocol_runs_every_fold_with_mean_and_std(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    features = _two_folds(tmp_path)
    out = tmp_path / "svms"
    capsys.readouterr()
    assert main(["protocol", str(features), "-o", str(out), "--C", "1"]) == 0
    text = capsys.readouterr().out
    per_fold = [float(v) for v in re.findall(r"fold \d: 24 train / 24 test images, C=1, accuracy\s+([\d.]+) %", text)]
    assert len(per_fold) == 2, text
    summary = re.search(r"accuracy over 2 folds: ([\d.]+) \+- ([\d.]+) % \(mean \+- std\)", text)
    assert summary, text
    assert float(summary.group(1)) == pytest.approx(np.mean(per_fold), abs=0.006)
    assert float(summary.group(2)) == pytest.approx(np.std(per_fold), abs=0.006)
    # each saved SVM scores its own fold by default and gives the protocol's number
    for fold in (0, 1):
        assert main(["svm-eval", str(features), str(out / f"svm_fold{fold}.h5")]) == 0
        line = re.search(r"^  accuracy\s+([\d.]+) %", capsys.readouterr().out, re.M)
        assert line and float(line.group(1)) == pytest.approx(per_fold[fold], abs=0.006)
    # existing SVMs are kept unless overwrite
    before = (out / "svm_fold0.h5").read_bytes()
    assert main(["protocol", str(features), "-o", str(out)]) == 2
    assert "--overwrite" in _err(capsys) and (out / "svm_fold0.h5").read_bytes() == before


def _set_fingerprints(path: Path, prints: list[str]) -> None:
    with h5py.File(path, "r+") as h5:
        h5["images/fingerprint"][:] = np.array(prints, dtype=object)


def test_the_same_images_listed_again_are_refused_by_content(tmp_path: Path) -> None:
    """Other paths, another split table: only the fingerprints say these rows are the SVM's training images."""
    features = _two_folds(tmp_path)
    prints = [f"{1000 + i}:{i:032x}" for i in range(N)]
    _set_fingerprints(features, prints)
    with FeatureFile(features) as f:
        svm, _ = train_svm(f, fold=0, C=1.0)
        classifier = LinearClassifier.from_estimator(svm, f.classes)
        trained = np.flatnonzero(f.splits[:, 0] == "train")
        np.testing.assert_array_equal(classifier.attrs["trained_fingerprints"], np.array(prints, dtype=object)[trained])
        gap, labels = f.gap.copy(), f.labels.copy()
    # The 24 training images again, all marked 'test', under other names (another layout would do the same).
    again = write_features(tmp_path / "again.h5", gap[trained], labels[trained], ["test"] * trained.size, CLASSES)
    with h5py.File(again, "r+") as h5:
        h5["images/path"][:] = np.array([f"elsewhere/{i}.jpg" for i in range(trained.size)], dtype=object)
    _set_fingerprints(again, [prints[i] for i in trained])
    with FeatureFile(again) as f:
        with pytest.raises(FeatkitError, match=r"24 of the 24 images of split 'test' of fold 0 are training images of "
                                               r"svm .* by their content \(same image fingerprint"):
            evaluate(classifier, f, "test", 0)
    # Held-out images (other fingerprints) in the same kind of file are scored.
    _set_fingerprints(again, [f"{i}:other" for i in range(trained.size)])
    with FeatureFile(again) as f:
        assert evaluate(classifier, f, "test", 0).n_images == 24


def test_an_image_the_dataset_lists_twice_is_counted_not_refused(tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    """In the SVM's own image list, a test row with a training row's content is the dataset's duplicate."""
    features = _two_folds(tmp_path)
    with FeatureFile(features) as f:
        train, test = np.flatnonzero(f.splits[:, 0] == "train"), np.flatnonzero(f.splits[:, 0] == "test")
    prints = [f"{1000 + i}:{i:032x}" for i in range(N)]
    prints[int(test[0])] = prints[int(train[0])]
    _set_fingerprints(features, prints)
    with FeatureFile(features) as f:
        svm, _ = train_svm(f, fold=0, C=1.0)
        with caplog.at_level("WARNING"):
            assert evaluate(LinearClassifier.from_estimator(svm, f.classes), f, "test", 0).n_images == 24
    assert "1 of the 24 images of split 'test' of fold 0 repeat the content of training images" in caplog.text


def test_svm_eval_refuses_training_images_extracted_again_through_a_csv(
    tmp_path: Path, fake_cub, capsys: pytest.CaptureFixture[str]
) -> None:
    """The issue's case: the training images re-extracted through the csv layout, all marked test."""
    root = fake_cub(n_classes=2, per_class=6)
    features, svm = tmp_path / "cub.h5", tmp_path / "svm.h5"
    tiny = ["--model", "tiny_test", "--resize", "warp"]
    assert main(["extract", str(root), "--dataset", "cub200", "-o", str(features), *tiny]) == 0
    assert main(["svm-train", str(features), "-o", str(svm), "--C", "1"]) == 0
    with FeatureFile(features) as f:
        train = np.flatnonzero(f.splits[:, 0] == "train")
        lines = [f"{root / f.paths[i]},{f.classes[int(f.labels[i])]},test" for i in train]
    listing = tmp_path / "list.csv"
    listing.write_text("\n".join(lines) + "\n")
    relisted = tmp_path / "traintest.h5"
    assert main(["extract", str(listing), "--dataset", "csv", "-o", str(relisted), *tiny]) == 0
    capsys.readouterr()
    assert main(["svm-eval", str(relisted), str(svm)]) == 2
    err = _err(capsys)
    assert f"{train.size} of the {train.size} images of split 'test' of fold 0 are training images of" in err
    assert "by their content" in err and "Traceback" not in err
