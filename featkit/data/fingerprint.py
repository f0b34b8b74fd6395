"""Cheap evidence that an image file is the one extracted earlier (no torch, no decoding)."""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from pathlib import Path

FINGERPRINT_BYTES = 64 * 1024


def file_fingerprint(path: Path) -> str:
    """``<bytes>:<blake2b of the first 64 KiB>``: cheap evidence that a file is the one extracted earlier."""
    try:
        require_regular_file(path)  # opening a FIFO would wait for a writer forever
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            head = handle.read(FINGERPRINT_BYTES)
    except OSError:
        return ""
    return f"{size}:{hashlib.blake2b(head, digest_size=16).hexdigest()}"


def require_regular_file(path: Path) -> None:
    """OSError unless ``path`` is a regular file (FIFOs, sockets and devices block or never end)."""
    info = os.stat(path)
    if not stat.S_ISREG(info.st_mode):
        if stat.S_ISDIR(info.st_mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
        kind = ("a FIFO" if stat.S_ISFIFO(info.st_mode) else "a device" if stat.S_ISCHR(info.st_mode)
                or stat.S_ISBLK(info.st_mode) else "a socket")
        raise OSError(errno.EINVAL, f"not a regular file ({kind})", str(path))
