"""The one check of an output path, run by every verb before any work.

A verb that computes for minutes and then cannot write its result loses the
minutes; so each writer asks here first: is the folder there and writable, is
the path a file where a file is wanted (a folder where a folder is wanted),
and may an existing file be replaced (``overwrite=True``)? Writability is
probed by creating (and removing) a temporary file, because permission bits
say nothing on read-only mounts, ``/proc`` or for root.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from featkit.errors import FeatkitError


def _probe_writable(folder: Path, target: Path) -> None:
    """FeatkitError unless a file can be created in ``folder`` (for writing ``target``)."""
    try:
        with tempfile.TemporaryFile(dir=folder, prefix=".featkit-probe-"):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise FeatkitError(
            f"cannot write {target}: folder {folder} is not writable ({reason}); choose a writable output"
        ) from None


def check_output_file(
    path: str | Path,
    *,
    overwrite: bool = False,
    existing: str = "refuse",
    suffixes: Iterable[str] = (),
    example: str = "out.h5",
    inputs: Iterable[str | Path] = (),
) -> Path:
    """``path`` as a file to write: its folder exists and is writable, it is not a folder.

    ``existing`` says what an existing file means: ``"refuse"`` (unless
    ``overwrite=True``) or ``"allow"`` (the writer resumes or checks it
    itself). ``suffixes`` are the accepted endings (any when empty);
    ``inputs`` are files the verb reads, which its output must not replace.
    """
    path = Path(path)
    if path.is_dir():
        raise FeatkitError(f"output {path} is a folder; give a file name such as {path / example}")
    wanted = tuple(suffixes)
    if wanted and path.suffix.lower() not in wanted:
        raise FeatkitError(f"output {path} has an unknown extension; give a file name ending in {' or '.join(wanted)}")
    for source in inputs:
        if Path(source).exists() and path.exists() and path.resolve() == Path(source).resolve():
            raise FeatkitError(f"output {path} is the input {source}; writing it would destroy the input, "
                               "choose another output name")
    if path.exists() and existing == "refuse" and not overwrite:
        raise FeatkitError(f"{path} already exists; choose another output or pass overwrite=True to replace it")
    parent = path.parent
    if not parent.exists():
        raise FeatkitError(f"cannot write {path}: folder {parent} does not exist; create it first")
    if not parent.is_dir():
        raise FeatkitError(f"cannot write {path}: {parent} is a file, not a folder; choose another output")
    _probe_writable(parent, path)
    return path


def check_output_folder(path: str | Path) -> Path:
    """``path`` as a folder to write into: a folder or absent, under a writable existing folder.

    Existing pictures in the folder are replaced by the new ones of the same
    name (a gallery is regenerated, not appended to). Nothing is created here.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FeatkitError(f"output {path} is a file; give a folder name for the output")
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise FeatkitError(f"cannot create output folder {path}: {probe} is a file; choose another output")
    _probe_writable(probe, path)
    return path


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON: numpy scalars and arrays as numbers and lists, paths as text, NaN and
    infinities (which JSON lacks) as null."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value
