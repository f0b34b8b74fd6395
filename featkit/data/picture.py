"""Opening an image file without decoding it, and its EXIF orientation: the checks every pixel reader shares.

No torch here, so light verbs (``featkit info``) can check images quickly. A
path must be a regular file (a FIFO would block the read forever, a device
such as ``/dev/zero`` never ends), and its header must claim at most
:data:`MAX_PIXELS` pixels, before any pixel is decoded.
"""

from __future__ import annotations

import errno
import os
import stat
import warnings
from pathlib import Path

from PIL import Image


def require_regular_file(path: Path) -> None:
    """OSError unless ``path`` is a regular file (FIFOs, sockets and devices block or never end)."""
    info = os.stat(path)
    if not stat.S_ISREG(info.st_mode):
        if stat.S_ISDIR(info.st_mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
        kind = ("a FIFO" if stat.S_ISFIFO(info.st_mode) else "a device" if stat.S_ISCHR(info.st_mode)
                or stat.S_ISBLK(info.st_mode) else "a socket")
        raise OSError(errno.EINVAL, f"not a regular file ({kind})", str(path))


MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485
"""Pixel budget of one image (width x height, 89.5 Mpx: Pillow's own decompression-bomb warning line,
about 1/4 GiB of RGB): an upsampled CAM of a larger image alone would take gigabytes, and the
datasets featkit reads have images far below it."""


def open_image(path: Path) -> Image.Image:
    """``Image.open`` of a regular file within the pixel budget (:data:`MAX_PIXELS`), else OSError or
    ValueError naming the reason, before any pixel is decoded."""
    require_regular_file(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(path)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ValueError(f"image too large to decode safely ({exc}); downscale it") from None
    except RuntimeError as exc:  # Pillow < 11 resolves the path: pathlib says "Symlink loop" this way
        raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), str(path)) from exc
    width, height = img.size
    if width * height > MAX_PIXELS:
        img.close()
        # Pillow's own warning becomes this error too where another thread's catch_warnings (the filters are
        # process-wide) let it through: one message either way
        raise ValueError(f"image too large to decode safely: {width}x{height} pixels ({width * height / 1e6:.0f} Mpx) "
                         f"is over featkit's budget of {MAX_PIXELS / 1e6:.0f} Mpx per image; downscale it")
    return img


UPRIGHT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
           5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
           8: Image.Transpose.ROTATE_90}
"""EXIF orientation -> the transposition that turns the stored pixels upright (as ImageOps.exif_transpose)."""


def exif_orientation(img: Image.Image) -> int:
    """The image's EXIF orientation tag (1 = upright as stored; 1 when absent or invalid)."""
    try:
        value = int(img.getexif().get(0x0112, 1))
    except (TypeError, ValueError, OSError, SyntaxError):
        return 1
    return value if value in UPRIGHT else 1


def upright_size(size: tuple[int, int], orientation: int) -> tuple[int, int]:
    """(width, height) after turning an image of stored ``size`` upright (orientations 5-8 swap the sides)."""
    return (size[1], size[0]) if orientation >= 5 else size


def orient_box(box: tuple[float, float, float, float], size: tuple[int, int],
               orientation: int) -> tuple[float, float, float, float]:
    """A box (x0, y0, x1, y1) on the stored pixel grid of an image of ``size`` (W, H), on the upright grid."""
    w, h = float(size[0]), float(size[1])
    moves = {
        1: lambda x, y: (x, y), 2: lambda x, y: (w - x, y), 3: lambda x, y: (w - x, h - y),
        4: lambda x, y: (x, h - y), 5: lambda x, y: (y, x), 6: lambda x, y: (h - y, x),
        7: lambda x, y: (h - y, w - x), 8: lambda x, y: (y, w - x),
    }
    move = moves.get(orientation, moves[1])
    (ax, ay), (bx, by) = move(box[0], box[1]), move(box[2], box[3])
    return (min(ax, bx), min(ay, by), max(ax, bx), max(ay, by))
