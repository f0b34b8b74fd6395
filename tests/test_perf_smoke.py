"""Smoke tests of the performance benchmarks on a few generated JPEGs: they run and write their tables."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from benchmarks import perf_cam, perf_extract


def _table_rows(markdown: str, first_cell: str) -> list[list[str]]:
    rows = [line.strip().strip("|").split("|") for line in markdown.splitlines() if line.startswith("|")]
    return [[c.strip() for c in row] for row in rows if row[0].strip().startswith(first_cell)]


def test_perf_extract_writes_its_table_with_ratios(tmp_path: Path) -> None:
    out = tmp_path / "results"
    code = perf_extract.main(["--synthetic", "8", "--images", "8", "--batch-size", "4", "--repeats", "1",
                              "--out", str(out)])
    assert code == 0
    text = (out / "perf_extract.md").read_text()
    header = _table_rows(text, "pipeline")[0]
    assert "featkit / this" in header
    ratio = header.index("featkit / this")
    rows = {row[0][:4]: row for row in _table_rows(text, "(")}
    assert set(rows) >= {"(a) ", "(a')", "(b) ", "(c) ", "(d) "}
    assert float(rows["(d) "][ratio]) == 1.0 and float(rows["(b) "][ratio]) > 0
    assert "featkit / compute bound" in text
    with (out / "perf_extract.csv").open() as handle:
        table = list(csv.DictReader(handle))
    assert {r["metric"] for r in table} >= {"img_per_s", "featkit_ratio"}


def test_perf_cam_writes_its_table_with_the_speedup(tmp_path: Path) -> None:
    pytest.importorskip("torchcam", reason="torch-cam is a dev extra (pip install torchcam)")
    out = tmp_path / "results"
    assert perf_cam.main(["--synthetic", "6", "--images", "6", "--repeats", "1", "--dgl-images", "2",
                          "--out", str(out)]) == 0
    text = (out / "perf_cam.md").read_text()
    header = _table_rows(text, "pipeline")[0]
    assert "featkit / this" in header
    assert len(_table_rows(text, "torch-cam")) == 2 and "CAM correlation" in text
    correlation = float(text.split("per image: min ")[1].split(",")[0])
    assert correlation > 0.99
    # The methods table: every stored-maps method that needs no boxes, each against cam of its own round;
    # the synthetic images carry no boxes, so the learned methods are left out and the table says why.
    methods = {row[0]: row for row in _table_rows(text, "") if row[0] in perf_cam.STORED_METHODS}
    assert set(methods) == {"cam", "cam-positive", "objectness", "cam-objectness", "cam-objectness-mean"}
    assert float(methods["cam"][3]) == 1.0 and all(float(row[3]) > 0 for row in methods.values())
    assert "learned methods left out" in text
    dgl = _table_rows(text, "dgl")
    assert [row[1] for row in dgl] == ["last", perf_cam.DGL_LAYER] and all(float(row[2]) > 0 for row in dgl)
    with (out / "perf_cam.csv").open() as handle:
        table = list(csv.DictReader(handle))
    assert {r["metric"] for r in table} >= {"cams_per_s", "ratio_to_cam", "images_per_s"}


def test_perf_cam_times_every_stored_maps_method_with_learned_ones_fitted_on_train(tmp_path: Path) -> None:
    from conftest import BOXED_SIDE, boxed_classifier, boxed_store

    from featkit.features import FeatureFile

    path, _ = boxed_store(tmp_path)
    classifier = boxed_classifier()
    with FeatureFile(path) as features:
        boxers, fit_seconds, skipped = perf_cam.method_boxers(features, classifier, perf_cam.STORED_METHODS)
        assert list(boxers) == list(perf_cam.STORED_METHODS) and list(boxers)[0] == "cam" and not skipped
        assert set(fit_seconds) == {"foreground", "foreground-class", "cam-foreground"}
        assert all(boxers[name].foreground is not None for name in fit_seconds)
        rows = np.arange(len(features))
        for boxer in boxers.values():
            rate, boxes = perf_cam.method_cams(features, boxer, rows, np.zeros(len(rows), np.int64), 8)
            assert rate > 0 and boxes.shape == (len(rows), 4)
            assert (boxes >= 0).all() and (boxes <= BOXED_SIDE).all() and (boxes[:, 2:] > boxes[:, :2]).all()
