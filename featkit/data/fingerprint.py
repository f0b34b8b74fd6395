"""Cheap evidence that an image file is the one extracted earlier (no torch, no decoding)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from featkit.data.picture import require_regular_file

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
