"""The README's Python quick-start runs as written (against the CUB sample)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SAMPLE_DATA, sample_root

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


@pytest.mark.slow
def test_readme_python_quick_start_runs_as_written(tmp_path: Path) -> None:
    sample_root("CUB_200_2011")
    blocks = _python_blocks()
    assert len(blocks) == 1 and "featkit.extract(" in blocks[0]
    # The quick-start runs "from the project root", next to ../shared/data.
    project = tmp_path / "project"
    project.mkdir()
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "data").symlink_to(SAMPLE_DATA.resolve(), target_is_directory=True)
    # The quick start extracts with the defaults (short-side), not the warp file the other CUB tests share.
    done = subprocess.run([sys.executable, "-c", blocks[0]], cwd=project, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    accuracy = float(lines[0].split()[-1])
    gt_known = float(lines[1].split()[-1])
    assert 0.80 <= accuracy <= 1.0
    assert 0.30 <= gt_known <= 1.0
    assert "[[" in done.stdout  # the four boxes
