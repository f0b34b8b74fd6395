"""The package is a map of the pipeline: stages import only earlier stages, the library never names a flag."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from featkit.cli.flags import to_flags

PACKAGE = Path(__file__).resolve().parents[1] / "featkit"
# Stage of each top-level part; a module may import its own stage and lower ones only.
STAGES = {"errors": 0, "outputs": 0, "data": 1, "models": 1, "features": 2, "linear": 3, "cam": 4, "viz": 5,
          "experiments": 6, "cli": 7}


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__main__.py")


def _stage(path: Path) -> int | None:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return STAGES.get(parts[0]) if parts[0] != "__init__" else None


def _imported_stages(path: Path) -> set[tuple[str, int]]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "featkit" and len(parts) > 1 and parts[1] in STAGES:
                found.add((name, STAGES[parts[1]]))
    return found


def test_no_stage_imports_a_later_stage() -> None:
    offenders = []
    for path in _modules():
        stage = _stage(path)
        if stage is None:
            continue  # featkit/__init__.py re-exports the public API
        offenders += [f"{path.relative_to(PACKAGE)} imports {name}" for name, other in _imported_stages(path)
                      if other > stage]
    assert offenders == []


def test_the_library_never_names_a_cli_flag() -> None:
    """Flags live in featkit.cli; library messages name keyword arguments (mapped by cli.flags)."""
    flag = re.compile(r"(?<![\w-])--[a-z][a-z-]+|(?<![\w-])-o\b")
    offenders = []
    for path in _modules():
        if path.relative_to(PACKAGE).parts[0] == "cli":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "FeatkitError":
                text = ast.unparse(node)
                if flag.search(text):
                    offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: {text[:80]}")
    assert offenders == []


@pytest.mark.parametrize(("library", "cli"), [
    ("pass overwrite=True to replace it", "pass --overwrite to replace it"),
    ("re-run with on_error='skip' (3 saved)", "re-run with --on-error skip (3 saved)"),
    ("pass root=DATASET_ROOT", "pass --root DATASET_ROOT"),
    ("batch_size must be at least 1, got 0", "--batch-size must be at least 1, got 0"),
    ("use which='top1' instead of 'gt'", "use --class top1 instead of 'gt'"),
    ("unknown save_raw 'x'", "unknown --raw 'x'"),
    ("the dataset root is not a folder", "the dataset root is not a folder"),
])
def test_cli_translates_keywords_to_flags(library: str, cli: str) -> None:
    assert to_flags(library) == cli


def test_ci_minimums_are_the_declared_minimums() -> None:
    """.ci/run tests the lowest allowed versions from .ci/minimums.txt: it must pin exactly pyproject's floors."""
    import tomllib

    root = PACKAGE.parent
    declared = {}
    for requirement in tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"]:
        match = re.match(r"([A-Za-z0-9_.-]+)>=([0-9.]+)", requirement)
        assert match, f"dependency without a floor: {requirement}"
        declared[match.group(1).lower()] = match.group(2)
    pinned = {}
    for line in (root / ".ci" / "minimums.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pinned[name.strip().lower()] = version.strip()
    floors = {name: version for name, version in declared.items() if name not in ("torch", "torchvision")}
    assert pinned == floors
