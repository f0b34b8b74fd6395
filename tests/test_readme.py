"""The README's Python quick-start runs as written (against the CUB sample)."""

from __future__ import annotations

import os
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
    blocks = [b for b in _python_blocks() if "open_dataset(\"cub200\"" in b]
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


def test_readme_own_model_example_runs_as_written(tmp_path: Path) -> None:
    """The "your own model" block registers an nn.Module and extracts a folder tree with it."""
    from conftest import write_image

    blocks = [b for b in _python_blocks() if "featkit.register_backbone(" in b]
    assert len(blocks) == 1 and len(blocks[0].strip().splitlines()) <= 20
    for c in range(2):
        for j in range(2):
            write_image(tmp_path / "mydata" / f"c{c}" / f"{j}.jpg", (90, 70), seed=c * 10 + j)
    check = ("\nwith featkit.FeatureFile('my_net.h5') as f:\n"
             "    print(f.attrs['backbone'], f.gap.shape, f.attrs['map_size'], f.head is not None)\n")
    done = subprocess.run([sys.executable, "-c", blocks[0] + check], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(README.parent)})
    assert done.returncode == 0, done.stderr[-2000:]
    words = done.stdout.split()
    assert words[:3] == ["my_net", "(4,", "64)"] and words[-1] == "True"  # K=64 features, the fc head stored
