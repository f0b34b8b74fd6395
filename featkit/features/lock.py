"""One writer per output: featkit's own lock file next to every file it writes, and stale temp cleanup.

HDF5's file locking is often off (``HDF5_USE_FILE_LOCKING=FALSE`` on network
file systems) and never covered featkit's side files, so two runs on one
output could both "succeed" with interleaved rows. Every writer (extract, its
shards, merge, svm-train, crops) holds ``<output>.lock`` while it writes: an
``flock`` on that file (released by the kernel when the process dies, so a lock
left by a killed run is taken over) holding the writer's pid, so a refused
writer and a reader can name the process that holds the output.

Temporary files a killed writer leaves (``<output>.partial``, ``.<name>.<pid>.tmp``)
are removed by the next writer of the same output: a ``.partial`` only while
that writer holds the output's lock (so no live writer owns it), a ``.tmp`` only
when its pid is dead (or, for the pid-less names of older versions, when it is
an hour old).
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from featkit.errors import FeatkitError

log = logging.getLogger(__name__)

LOCK_SUFFIX = ".lock"
STALE_AGE_S = 3600.0
"""Age after which a temp file without a pid in its name is certainly left over (a save takes seconds)."""


def lock_path(output: str | Path) -> Path:
    output = Path(output)
    return output.with_name(output.name + LOCK_SUFFIX)


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def _read_pid(path: Path) -> int:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def writer_pid(output: str | Path) -> int | None:
    """The pid of a live process holding ``output``'s lock, or None when no writer holds it."""
    path = lock_path(output)
    if not path.exists():
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_pid(path) or -1
        except OSError:  # no flock here (some network file systems): trust a live pid
            pid = _read_pid(path)
            return pid if _pid_alive(pid) and pid != os.getpid() else None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


class OutputLock:
    """``<output>.lock`` held (flock + pid) from :meth:`acquire` to :meth:`release`."""

    def __init__(self, output: str | Path) -> None:
        self.output = Path(output)
        self.path = lock_path(output)
        self._fd: int | None = None

    def acquire(self) -> OutputLock:
        """Take the lock or raise FeatkitError naming the process that holds it."""
        for _ in range(20):  # retried only when the holder unlinked the file between our open and our flock
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise FeatkitError(f"cannot create the lock file {self.path} ({exc.strerror or exc}); "
                                   "choose a writable output folder") from exc
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                self._refuse(_read_pid(self.path))
            except OSError as exc:
                if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
                    os.close(fd)
                    raise
                pid = _read_pid(self.path)  # no flock on this file system: a live pid in the file holds it
                if _pid_alive(pid) and pid != os.getpid():
                    os.close(fd)
                    self._refuse(pid)
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            self._fd = fd
            return self
        raise FeatkitError(f"could not take the lock {self.path}; another process keeps replacing it")

    def _refuse(self, pid: int) -> None:
        who = f"another process (pid {pid})" if pid > 0 else "another process"
        raise FeatkitError(f"{self.output} is being written by {who} (lock {self.path}); wait for it to finish "
                           "or stop it, then run again")

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


@contextmanager
def locked(output: str | Path) -> Iterator[OutputLock]:
    with OutputLock(output) as lock:
        yield lock


def temp_name(output: Path) -> str:
    """Prefix of the temporary files written before ``output`` is renamed into place (``.<name>.<pid>.``)."""
    return f".{output.name}.{os.getpid()}."


def remove_stale_temps(output: str | Path, *, partial_suffix: str = ".partial",
                       legacy_glob: str | None = None) -> list[Path]:
    """Remove what killed writers of ``output`` left: call only while holding ``output``'s lock.

    ``<output><partial_suffix>`` goes (no live writer can own it while we hold the
    lock); ``.<name>.<pid>.*.tmp`` goes when that pid is dead; files matching
    ``legacy_glob`` (older versions' pid-less names) go when an hour old.
    """
    output = Path(output)
    folder = output.parent
    removed: list[Path] = []
    partial = output.with_name(output.name + partial_suffix)
    candidates = [partial] if partial.exists() else []
    for tmp in folder.glob(f".{output.name}.*.tmp"):
        pid_text = tmp.name[len(output.name) + 2:].split(".", 1)[0]
        if pid_text.isdigit() and not _pid_alive(int(pid_text)):
            candidates.append(tmp)
    if legacy_glob:
        now = time.time()
        for tmp in folder.glob(legacy_glob):
            try:
                if now - tmp.stat().st_mtime > STALE_AGE_S:
                    candidates.append(tmp)
            except OSError:
                continue
    for path in candidates:
        try:
            path.unlink()
        except OSError:
            continue
        removed.append(path)
        log.info("removed %s, left by an interrupted run", path)
    return removed
