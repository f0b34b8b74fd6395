"""Decoding and resizing images for a backbone, fast and faithful to the original pixels.

Images are warped (not cropped) to the square input so that every map cell maps
back to a known rectangle of the original: CAM boxes land in original-image
coordinates. Large JPEGs are decoded at a reduced scale first (Pillow draft
mode), which cuts decode time several-fold and changes nothing the bilinear
resize to 224 px would keep. EXIF orientation is not applied: dataset
annotations refer to the stored pixel grid.

High-bit-depth images are brought to 8 bits by their type's range, not
clipped: 16-bit integers divided by 257 (65535 -> 255), 32-bit integers the
same when they hold 16-bit values (else by their maximum), floats by their
range ([0, 1] -> x 255, [0, 255] as is, anything else min-max). Images whose
header claims more pixels than Pillow's decompression-bomb limit are refused
before any pixel is decoded (an unreadable image: status 2 under
``on_error='skip'``).
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

RESIZE_POLICIES = ("warp",)


@dataclass(frozen=True)
class Loaded:
    """One decoded image ready for batching, or the reason it could not be read."""

    index: int
    pixels: torch.Tensor  # (3, S, S) uint8; zeros when unreadable
    size: tuple[int, int]  # original (width, height); (0, 0) when unreadable
    error: str = ""
    fingerprint: str = ""  # file_fingerprint of the file ('' when it cannot be read)


FINGERPRINT_BYTES = 64 * 1024


def file_fingerprint(path: Path) -> str:
    """``<bytes>:<blake2b of the first 64 KiB>``: cheap evidence that a file is the one extracted earlier."""
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            head = handle.read(FINGERPRINT_BYTES)
    except OSError:
        return ""
    return f"{size}:{hashlib.blake2b(head, digest_size=16).hexdigest()}"


def _to_8bit(img: Image.Image) -> Image.Image:
    """A 16-bit or float single-channel image as 8-bit "L", scaled by its type's range (see module doc)."""
    values = np.asarray(img)
    if values.dtype.kind == "f":
        values = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        low, high = float(values.min()), float(values.max())
        if low >= 0.0 and high <= 1.0:
            scaled = values * 255.0
        elif low >= 0.0 and high <= 255.0:
            scaled = values
        else:
            scaled = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
    else:
        values = values.astype(np.int64)
        high = int(values.max()) if values.size else 0
        scaled = values / 257.0 if values.min() >= 0 and high <= 65535 else values * (255.0 / max(high, 1))
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), mode="L")


def _rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("I", "F") or img.mode.startswith("I;16"):
        return _to_8bit(img).convert("RGB")
    return img.convert("RGB")


def open_image(path: Path) -> Image.Image:
    """``Image.open`` that turns a decompression bomb into a ValueError naming the claimed size."""
    try:
        return Image.open(path)
    except Image.DecompressionBombError as exc:
        raise ValueError(f"image too large to decode safely ({exc})") from None


def load_rgb(
    path: Path, input_size: int, draft: bool = True, crop: tuple[float, float, float, float] | None = None
) -> tuple[np.ndarray, tuple[int, int]]:
    """(S, S, 3) uint8 pixels of ``path`` (or of its ``crop`` box) warped to ``input_size``, and the original size.

    ``crop`` is (x0, y0, x1, y1) in original pixels; draft decoding is asked for a
    scale at which the crop still has at least ``input_size`` pixels per side.
    """
    with open_image(path) as img:
        size = img.size
        if draft and img.format == "JPEG":
            if crop is None:
                img.draft("RGB", (input_size, input_size))
            else:
                bw, bh = max(crop[2] - crop[0], 1.0), max(crop[3] - crop[1], 1.0)
                img.draft("RGB", (math.ceil(input_size * size[0] / bw), math.ceil(input_size * size[1] / bh)))
        rgb = _rgb(img)
        if crop is not None:
            sx, sy = rgb.size[0] / size[0], rgb.size[1] / size[1]  # draft may have scaled the image down
            x0, y0 = max(0.0, crop[0] * sx), max(0.0, crop[1] * sy)
            x1, y1 = min(rgb.size[0], crop[2] * sx), min(rgb.size[1], crop[3] * sy)
            if x1 - x0 < 1 or y1 - y0 < 1:
                raise ValueError(f"crop box {tuple(round(v, 1) for v in crop)} is empty inside the {size} image")
            rgb = rgb.resize((input_size, input_size), Image.Resampling.BILINEAR, box=(x0, y0, x1, y1))
        elif rgb.size != (input_size, input_size):
            rgb = rgb.resize((input_size, input_size), Image.Resampling.BILINEAR)
        return np.asarray(rgb, dtype=np.uint8), size


def _box(values: np.ndarray) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = (float(v) for v in values)
    return (x0, y0, x1, y1)


class ImageFolderView(torch.utils.data.Dataset):
    """Rows ``start..`` of a dataset's image list as a torch Dataset of :class:`Loaded`."""

    def __init__(
        self, root: Path, paths: list[str], input_size: int, draft: bool = True, crops: np.ndarray | None = None
    ) -> None:
        self.root = root
        self.paths = paths
        self.input_size = input_size
        self.draft = draft
        self.crops = crops

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Loaded:
        path = self.root / self.paths[index]
        try:
            crop = None if self.crops is None else _box(self.crops[index])
            pixels, size = load_rgb(path, self.input_size, self.draft, crop)
        except (OSError, UnidentifiedImageError, ValueError, SyntaxError, MemoryError) as exc:
            blank = torch.zeros((3, self.input_size, self.input_size), dtype=torch.uint8)
            reason = (exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)) or type(exc).__name__
            return Loaded(index, blank, (0, 0), f"{self.paths[index]}: {reason}", file_fingerprint(path))
        return Loaded(index, torch.from_numpy(pixels.copy()).permute(2, 0, 1), size, "", file_fingerprint(path))


@dataclass
class Batch:
    indices: np.ndarray
    pixels: torch.Tensor  # (B, 3, S, S) uint8
    sizes: np.ndarray  # (B, 2)
    errors: list[str]
    fingerprints: list[str]

    def pin_memory(self) -> Batch:
        self.pixels = self.pixels.pin_memory()
        return self


def collate(items: list[Loaded]) -> Batch:
    """Stack decoded images; ``pixels`` is (B, 3, S, S) laid out channels-last (B, S, S, 3 in memory),
    the layout the networks run in, so that no transposing copy is made on the way."""
    return Batch(
        indices=np.array([it.index for it in items], dtype=np.int64),
        pixels=torch.stack([it.pixels.permute(1, 2, 0) for it in items]).permute(0, 3, 1, 2),
        sizes=np.array([it.size for it in items], dtype=np.int32),
        errors=[it.error for it in items],
        fingerprints=[it.fingerprint for it in items],
    )


def normalize_batch(pixels: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """uint8 (B, 3, S, S) -> float (x/255 - mean) / std, on the tensor's device."""
    m = torch.tensor(mean, device=pixels.device).view(1, 3, 1, 1) * 255.0
    s = torch.tensor(std, device=pixels.device).view(1, 3, 1, 1) * 255.0
    return (pixels.float() - m) / s
