"""The smaller frictions of a first session: what cam draws, stale pictures, confusion counts, help and errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import make_fake_cub

from featkit.cli.main import build_parser, main


@pytest.fixture(scope="module")
def cub(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("frictions")
    root = make_fake_cub(tmp / "cub", 3, 6)
    features, svm = tmp / "f.h5", tmp / "svm.h5"
    assert main(["extract", str(root), "-o", str(features), "--maps", "--model", "tiny_test"]) == 0
    assert main(["svm-train", str(features), "-o", str(svm), "--C", "1"]) == 0
    return features, svm


def test_cam_says_how_many_it_drew_and_clears_the_previous_gallery(cub: tuple[Path, Path], tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    features, svm = (str(p) for p in cub)
    out = tmp_path / "cams"
    capsys.readouterr()
    assert main(["cam", features, svm, "-o", str(out), "--limit", "5"]) == 0
    printed = capsys.readouterr().out
    assert "wrote 5 CAM pictures" in printed and "the first 5 of the 9 selected images (--limit 5)" in printed
    (out / "notes.txt").write_text("mine")
    assert main(["cam", features, svm, "-o", str(out), "--limit", "2"]) == 0
    assert len(list(out.glob("*.png"))) == 2  # not 5 old ones beside 2 new ones
    assert (out / "notes.txt").read_text() == "mine"  # the user's own files stay
    assert main(["cam", features, svm, "-o", str(out), "--limit", "0"]) == 0
    assert "selected images" not in capsys.readouterr().out.splitlines()[-1]


def test_confusion_png_carries_the_counts(cub: tuple[Path, Path], tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from featkit.viz import plots

    seen: dict[str, Any] = {}
    save = plots._save

    def keep(figure: Any, path: Any) -> Path:
        seen["texts"] = [t.get_text() for t in figure.axes[0].texts]
        seen["title"] = figure.axes[0].get_title()
        return save(figure, path)

    monkeypatch.setattr(plots, "_save", keep)
    png = tmp_path / "confusion.png"
    assert main(["svm-eval", str(cub[0]), str(cub[1]), "--confusion", str(png)]) == 0
    assert png.is_file() and "(9 images)" in seen["title"]
    assert sum(int(t) for t in seen["texts"]) == 9 and all(t.isdigit() for t in seen["texts"])


def test_help_shows_defaults_and_unknown_flags_name_their_verb(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    verbs = parser._verbs  # type: ignore[attr-defined]
    extract_help = " ".join(verbs["extract"].format_help().split())
    assert "images read, run and written together (default 32)" in extract_help
    cam_help = " ".join(verbs["cam"].format_help().split())
    assert "--device DEVICE auto, cpu or cuda[:N]" in cam_help and "(default: auto)" in cam_help
    assert "--top-units TOP_UNITS (default: 5)" in " ".join(verbs["units"].format_help().split())
    assert "--threshold THRESHOLD box threshold, fraction of max (paper and default: 0.2)" in cam_help
    with pytest.raises(SystemExit) as exited:
        main(["svm-eval", "f.h5", "svm.h5", "--bogus"])
    assert exited.value.code == 2
    assert "featkit svm-eval: error: unrecognized arguments: --bogus" in capsys.readouterr().err


def test_dataset_length(tmp_path: Path) -> None:
    from featkit import open_dataset

    assert len(open_dataset("cub200", make_fake_cub(tmp_path / "cub", 2, 3))) == 6


def test_binary_svm_works_with_sklearn_binary_scorers() -> None:
    """sklearn's roc_auc scorer needs (N,) binary scores: binary_scores='difference' gives them."""
    import warnings

    from sklearn.model_selection import cross_val_score

    from featkit.linear import OneVsAllLinearSVM

    rng = np.random.default_rng(0)
    y = np.arange(60) % 2
    X = np.abs(rng.normal(size=(60, 8)) + 1.5 * y[:, None] * (np.arange(8) < 3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns about the failing fits of the default form
        default = cross_val_score(OneVsAllLinearSVM(C=1.0), X, y, scoring="roc_auc", cv=3)
    assert np.isnan(default).all()  # (N, 2) columns: featkit's CAM convention, not a binary score
    svm = OneVsAllLinearSVM(C=1.0, binary_scores="difference")
    auc = cross_val_score(svm, X, y, scoring="roc_auc", cv=3)
    assert np.isfinite(auc).all() and auc.mean() > 0.8
    fitted = svm.fit(X, y)
    columns = OneVsAllLinearSVM(C=1.0).fit(X, y).decision_function(X)
    np.testing.assert_allclose(fitted.decision_function(X), columns[:, 1] - columns[:, 0])
    np.testing.assert_array_equal(fitted.predict(X), fitted.classes_[columns.argmax(axis=1)])
