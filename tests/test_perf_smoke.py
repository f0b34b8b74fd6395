"""Smoke tests of the performance benchmarks on a few generated JPEGs: they run and write their tables."""

from __future__ import annotations

import csv
from pathlib import Path

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
    assert perf_cam.main(["--synthetic", "6", "--images", "6", "--repeats", "1", "--out", str(out)]) == 0
    text = (out / "perf_cam.md").read_text()
    header = _table_rows(text, "pipeline")[0]
    assert "featkit / this" in header
    assert len(_table_rows(text, "torch-cam")) == 2 and "CAM correlation" in text
    correlation = float(text.split("per image: min ")[1].split(",")[0])
    assert correlation > 0.99
    assert (out / "perf_cam.csv").is_file()
