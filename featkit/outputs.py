"""The one check of an output path, run by every verb before any work.

A verb that computes for minutes and then cannot write its result loses the
minutes; so each writer asks here first: is the folder there and writable, is
the path a file where a file is wanted (a folder where a folder is wanted),
and may an existing file be replaced (``overwrite=True``)? Writability is
probed by creating (and removing) a temporary file, because permission bits
say nothing on read-only mounts, ``/proc`` or for root.

Every file, picture or report is then written through :func:`atomic_output`
(temp file in the same folder, renamed into place on success): a full disk or
the file-size limit ends in one line and leaves neither a half-written nor a
0-byte file, and an older file of that name survives. HDF5 files are built in
memory first (:func:`h5_image`) and written as plain bytes, because the HDF5
library can crash the process when a write fails while it lays a file out.
"""

from __future__ import annotations

import io
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import h5py
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


def size_text(n: int) -> str:
    """Bytes for messages: '12.0 KiB', '3.4 MiB' (never '0.0 MiB' for a few kilobytes)."""
    n = max(int(n), 0)
    if n < 1 << 20:
        return f"{n / 1024:.1f} KiB"
    return f"{n / 2**20:.1f} MiB" if n < 1 << 30 else f"{n / 2**30:.2f} GiB"


def room_for(folder: str | Path, existing: int = 0) -> int:
    """Bytes a file in ``folder`` can still take: the disk's free space and the file-size limit
    (``RLIMIT_FSIZE``, ``ulimit -f``) less ``existing`` bytes already in that file."""
    room = shutil.disk_usage(folder).free
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        if soft != resource.RLIM_INFINITY:
            room = min(room, soft - existing)
    except (ImportError, OSError):
        pass
    return room


def require_room(path: str | Path, need: int, existing: int = 0) -> None:
    """FeatkitError when ``need`` more bytes of ``path`` may not fit (free space, file-size limit)."""
    room = room_for(Path(path).parent, existing)
    if room < need:
        raise FeatkitError(f"no room to write {path} ({size_text(room)} left, {size_text(need)} needed, counting the "
                           "disk's free space and the file-size limit); free space or choose another output")


def write_error(path: str | Path, exc: OSError) -> FeatkitError:
    """One line for a write that failed (full disk, file-size limit, I/O error)."""
    reason = os.strerror(exc.errno) if exc.errno else (str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    return FeatkitError(f"cannot write {path} ({reason}); nothing was left there: free space (or raise the "
                        "file-size limit) and run the same command again")


@contextmanager
def atomic_output(path: str | Path, need: int = 0, prefix: str | None = None) -> Iterator[Path]:
    """A temporary path in ``path``'s folder to write into; renamed to ``path`` when the block succeeds,
    removed when it fails (a failed write becomes :func:`write_error`). ``need``: bytes checked first."""
    path = Path(path)
    if need:
        require_room(path, need)
    try:
        fd, name = tempfile.mkstemp(prefix=prefix or f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise write_error(path, exc) from None
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise write_error(path, exc) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes(path: str | Path, data: bytes, prefix: str | None = None) -> Path:
    """``data`` written to ``path`` atomically, after a room check."""
    with atomic_output(path, len(data), prefix) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    """UTF-8 ``text`` written to ``path`` atomically."""
    return write_bytes(path, text.encode("utf-8"))


def h5_image(build: Callable[[h5py.File], None]) -> bytes:
    """The bytes of an HDF5 file that ``build`` fills, made in memory (nothing touches the disk)."""
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as h5:
        build(h5)
    return buffer.getvalue()


@contextmanager
def removed_on_failure(folder: str | Path | None) -> Iterator[None]:
    """When ``folder`` (None: no folder) did not exist before and the block fails, whatever the block put
    there is removed, so a refused or failed run leaves no empty or half-filled output folder behind."""
    path = None if folder is None else Path(folder)
    existed = path is None or path.exists()
    try:
        yield
    except BaseException:
        if not existed and path is not None and path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        raise
