"""Progress in the Python API: a tqdm.auto bar by default, silence with progress=False, a callback as before."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import make_fake_cub

import featkit
from featkit.linear import LinearClassifier


def test_extract_and_localize_draw_a_bar_by_default(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import featkit.progress

    monkeypatch.setattr(featkit.progress, "interactive", lambda: True)  # as on a terminal or in a notebook
    dataset = featkit.open_dataset("cub200", make_fake_cub(tmp_path / "cub", 2, 4))
    options = featkit.ExtractOptions(model="tiny_test", maps=True)
    featkit.extract(dataset, tmp_path / "a.h5", options)
    err = capsys.readouterr().err
    assert "extract cub200: 100%" in err and "8/8" in err
    featkit.extract(dataset, tmp_path / "b.h5", options, progress=False)
    assert capsys.readouterr().err == ""
    calls: list[tuple[int, int]] = []
    featkit.extract(dataset, tmp_path / "c.h5", options, progress=lambda done, total: calls.append((done, total)))
    assert calls[0] == (0, 8) and calls[-1] == (8, 8) and capsys.readouterr().err == ""
    with featkit.FeatureFile(tmp_path / "a.h5") as features:
        svm, _ = featkit.train_svm(features, C=1.0)
        classifier = LinearClassifier.from_estimator(svm, features.classes)
        test = featkit.split_rows(features, "test")
        featkit.localize(features, classifier, test)
        assert "localize: 100%" in capsys.readouterr().err
        featkit.localize(features, classifier, test, progress=False)
        assert capsys.readouterr().err == ""


def test_no_bar_when_nobody_watches(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Under pytest stderr is not a terminal and no notebook runs: a script's log stays clean."""
    from featkit.progress import interactive

    assert not interactive()
    dataset = featkit.open_dataset("cub200", make_fake_cub(tmp_path / "cub", 2, 2))
    featkit.extract(dataset, tmp_path / "a.h5", featkit.ExtractOptions(model="tiny_test"))
    assert capsys.readouterr().err == ""
