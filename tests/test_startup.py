"""Instant start: the light verbs import no torch, and the start-time benchmark writes its table."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import write_features

PROJECT = Path(__file__).resolve().parents[1]

CHECK = """
import sys
from featkit.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
heavy = sorted(m for m in ("torch", "torchvision", "timm") if m in sys.modules)
print("HEAVY", ",".join(heavy) or "-", "CODE", code)
"""


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["datasets"], ["datasets", "--json"], ["info"],
                                  ["info", "--json"], ["extract", "--help"]])
def test_light_verbs_import_no_torch(tmp_path: Path, argv: list[str]) -> None:
    if argv[0] == "info":
        path = tmp_path / "f.h5"
        write_features(path, np.ones((4, 3), np.float32), [0, 1, 0, 1], ["train", "train", "test", "test"], ["a", "b"])
        argv = [argv[0], str(path), *argv[1:]]
    done = subprocess.run([sys.executable, "-c", CHECK, *argv], cwd=PROJECT, capture_output=True, text=True,
                          timeout=120)
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith("HEAVY - CODE "), (last, done.stderr[-1000:])
    assert last.split()[-1] in ("0", "None"), done.stderr[-1000:]


def test_perf_startup_writes_the_ratio_table(tmp_path: Path) -> None:
    from benchmarks import perf_startup

    assert perf_startup.main(["--repeats", "1", "--out", str(tmp_path)]) == 0
    with (tmp_path / "perf_startup.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["command"] for r in rows] == ["python -c 'import numpy'", "featkit --help", "featkit --version",
                                            "featkit datasets", "featkit models"]
    assert rows[0]["ratio to import numpy"] == "1.00" and all(float(r["ratio to import numpy"]) > 0 for r in rows)
    assert [r["imports torch"] for r in rows] == ["no", "no", "no", "no", "yes"]
