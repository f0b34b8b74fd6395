"""Decoding and resizing images for a backbone, fast and faithful to the original pixels.

Images become the network input under one of the policies of
:mod:`featkit.data.geometry` (warped to a square, short side scaled with the
aspect ratio kept, or a centre crop); in each, every map cell maps back to a
known rectangle of the original, so CAM boxes land in original-image
coordinates. Large JPEGs are decoded at a reduced scale first (Pillow draft
mode), which cuts decode time several-fold and changes nothing the bilinear
resize to 224 px would keep. EXIF orientation is not applied: dataset
annotations refer to the stored pixel grid, and the paper's datasets are read
as stored. ``exif=True`` (``extract --exif-transpose``) turns each image upright
by its EXIF orientation tag first, as a photo viewer shows it: the recorded
size is then the upright one, and :func:`orient_box` maps annotated boxes the
same way.

High-bit-depth images are brought to 8 bits by their type's range, not
clipped: 16-bit integers divided by 257 (65535 -> 255), 32-bit integers the
same when they hold 16-bit values (else by their maximum), floats by their
range ([0, 1] -> x 255, [0, 255] as is, anything else min-max). Images whose
header claims more than :data:`MAX_PIXELS` pixels are refused before any pixel
is decoded, and so are paths that are not regular files (a FIFO would block the
read forever, a device such as ``/dev/zero`` never ends): both are unreadable
images (status 2 under ``on_error='skip'``). Every verb that reads pixels
(extract, crops, cam, units, the image checks) opens them through
:func:`open_image`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from featkit.data.base import ImageRecord
from featkit.data.fingerprint import FINGERPRINT_BYTES, file_fingerprint  # noqa: F401  (their old home)
from featkit.data.geometry import RESIZE_POLICIES, frame, input_shape
from featkit.data.picture import (  # noqa: F401  (their old home)
    MAX_PIXELS,
    UPRIGHT,
    exif_orientation,
    open_image,
    orient_box,
    require_regular_file,
    upright_size,
)

__all__ = ["RESIZE_POLICIES", "Batch", "ImageFolderView", "Loaded", "collate", "concat_batches", "load_rgb",
           "normalize_batch"]


@dataclass(frozen=True)
class Loaded:
    """One decoded image ready for batching, or the reason it could not be read."""

    index: int
    pixels: torch.Tensor  # (3, h, w) uint8 (S x S but for resize="short-side"); zeros when unreadable
    size: tuple[int, int]  # original (width, height); (0, 0) when unreadable
    error: str = ""
    fingerprint: str = ""  # file_fingerprint of the file ('' when it cannot be read)


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


def upright_records(root: Path, records: Sequence[ImageRecord]) -> list[ImageRecord]:
    """``records`` with their boxes mapped from the stored grid to the upright one (:func:`orient_box`), each
    image's EXIF tag read from its header (records without boxes, or unreadable images, stay as they are)."""
    out = []
    for record in records:
        if record.boxes:
            try:
                with open_image(root / record.path) as img:
                    orientation, size = exif_orientation(img), img.size
            except (OSError, ValueError, SyntaxError):
                orientation, size = 1, (0, 0)  # extraction reports the unreadable image itself
            if orientation != 1:
                record = replace(record, boxes=tuple(orient_box(b, size, orientation) for b in record.boxes))
        out.append(record)
    return out


def read_picture(path: Path, exif: bool = False, size: tuple[int, int] | None = None) -> Image.Image:
    """The image at ``path`` as RGB for drawing (upright by its EXIF tag when ``exif``), within the pixel budget;
    ``size`` (upright width, height): drawn that large (a JPEG is decoded at a reduced scale when it can)."""
    with open_image(path) as img:
        orientation = exif_orientation(img) if exif else 1
        if size is not None and img.format == "JPEG":
            img.draft("RGB", upright_size(size, orientation))
        rgb = _rgb(img)
    rgb = rgb.transpose(UPRIGHT[orientation]) if orientation != 1 else rgb
    return rgb if size is None or rgb.size == tuple(size) else rgb.resize(size, Image.Resampling.BILINEAR)


INTERPOLATIONS = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC,
                  "nearest": Image.Resampling.NEAREST, "lanczos": Image.Resampling.LANCZOS}
"""Resampling filters of the resize to the network input (a backbone's config names one; bilinear by default)."""


def load_rgb(
    path: Path, input_size: int, draft: bool = True, crop: tuple[float, float, float, float] | None = None,
    resize: str = "warp", stride: int = 1, interpolation: str = "bilinear", exif: bool = False,
) -> tuple[np.ndarray, tuple[int, int]]:
    """(h, w, 3) uint8 pixels of ``path`` (or of its ``crop`` box) under the ``resize`` policy, and the original size.

    ``crop`` is (x0, y0, x1, y1) in original pixels; the policy then applies to
    that box. Draft decoding is asked for a scale at which the part the network
    sees still has at least as many pixels per side as the input.
    """
    with open_image(path) as img:
        orientation = exif_orientation(img) if exif else 1
        size = upright_size(img.size, orientation)  # everything below is on the upright grid
        framed = resize == "crop" and crop is None
        if resize != "warp":
            region = crop or (0.0, 0.0, float(size[0]), float(size[1]))
            fx0, fy0, fx1, fy1 = frame(region[2] - region[0], region[3] - region[1], resize)
            shape = input_shape(fx1 - fx0, fy1 - fy0, resize, input_size, stride)
            if resize == "crop" or crop is not None:
                crop = (region[0] + fx0, region[1] + fy0, region[0] + fx1, region[1] + fy1)
        else:
            shape = (input_size, input_size)
        if draft and img.format == "JPEG":
            if crop is None:
                want = shape
            else:
                bw, bh = max(crop[2] - crop[0], 1.0), max(crop[3] - crop[1], 1.0)
                want = (math.ceil(shape[0] * size[0] / bw), math.ceil(shape[1] * size[1] / bh))
            img.draft("RGB", upright_size(want, orientation))  # the stored grid's sides
        rgb = _rgb(img)
        if orientation != 1:
            rgb = rgb.transpose(UPRIGHT[orientation])
        if crop is not None:
            sx, sy = rgb.size[0] / size[0], rgb.size[1] / size[1]  # draft may have scaled the image down
            x0, y0 = max(0.0, crop[0] * sx), max(0.0, crop[1] * sy)
            x1, y1 = min(rgb.size[0], crop[2] * sx), min(rgb.size[1], crop[3] * sy)
            if x1 - x0 < 1 or y1 - y0 < 1:
                if framed:
                    raise ValueError(f"the {size[0]}x{size[1]} image is too small or too thin for resize='crop' (its "
                                     "centre part is under one pixel); extract with resize='warp' or "
                                     "resize='short-side', or drop it")
                raise ValueError(f"crop box {tuple(round(v, 1) for v in crop)} is empty inside the {size} image")
            rgb = rgb.resize(shape, INTERPOLATIONS[interpolation], box=(x0, y0, x1, y1))
        elif rgb.size != shape:
            rgb = rgb.resize(shape, INTERPOLATIONS[interpolation])
        return np.asarray(rgb, dtype=np.uint8), size


def _box(values: np.ndarray) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = (float(v) for v in values)
    return (x0, y0, x1, y1)


class ImageFolderView(torch.utils.data.Dataset):
    """Rows ``start..`` of a dataset's image list as a torch Dataset of :class:`Loaded`."""

    def __init__(
        self, root: Path, paths: list[str], input_size: int, draft: bool = True, crops: np.ndarray | None = None,
        resize: str = "warp", stride: int = 1, interpolation: str = "bilinear", exif: bool = False,
    ) -> None:
        self.root = root
        self.exif = exif
        self.paths = paths
        self.input_size = input_size
        self.draft = draft
        self.crops = crops
        self.resize = resize
        self.stride = stride
        self.interpolation = interpolation

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Loaded:
        path = self.root / self.paths[index]
        try:
            crop = None if self.crops is None else _box(self.crops[index])
            pixels, size = load_rgb(path, self.input_size, self.draft, crop, self.resize, self.stride,
                                   self.interpolation, self.exif)
        except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
            blank = torch.zeros((3, self.input_size, self.input_size), dtype=torch.uint8)
            reason = (exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)) or type(exc).__name__
            return Loaded(index, blank, (0, 0), f"{self.paths[index]}: {reason}", file_fingerprint(path))
        return Loaded(index, torch.from_numpy(pixels.copy()).permute(2, 0, 1), size, "", file_fingerprint(path))


@dataclass
class Batch:
    indices: np.ndarray
    groups: list[tuple[np.ndarray, torch.Tensor]]
    """(positions in the batch, pixels (n, 3, h, w) uint8): one group per input shape, in order of first use."""
    sizes: np.ndarray  # (B, 2)
    errors: list[str]
    fingerprints: list[str]

    @property
    def pixels(self) -> torch.Tensor:
        """(B, 3, S, S) pixels of a batch whose images all have one shape (every policy but short-side)."""
        if len(self.groups) != 1:
            raise ValueError(f"this batch holds {len(self.groups)} input shapes; iterate over batch.groups")
        return self.groups[0][1]

    def pin_memory(self) -> Batch:
        self.groups = [(pos, pixels.pin_memory()) for pos, pixels in self.groups]
        return self


def collate(items: list[Loaded]) -> Batch:
    """Stack decoded images, one stack per input shape (a bucket: no padding ever enters the network).

    Each stack is (n, 3, h, w) laid out channels-last (n, h, w, 3 in memory),
    the layout the networks run in, so that no transposing copy is made on the way.
    """
    buckets: dict[tuple[int, ...], list[int]] = {}
    for position, item in enumerate(items):
        buckets.setdefault(tuple(item.pixels.shape), []).append(position)
    groups = [
        (np.array(positions, dtype=np.int64),
         torch.stack([items[p].pixels.permute(1, 2, 0) for p in positions]).permute(0, 3, 1, 2))
        for positions in buckets.values()
    ]
    return Batch(
        indices=np.array([it.index for it in items], dtype=np.int64),
        groups=groups,
        sizes=np.array([it.size for it in items], dtype=np.int32),
        errors=[it.error for it in items],
        fingerprints=[it.fingerprint for it in items],
    )


def concat_batches(batches: list[Batch]) -> Batch:
    """Consecutive batches as one, their images regrouped by input shape across the batches.

    Rows keep their order (positions are offset by the rows of the batches
    before); only the grouping changes, so each input shape runs in fewer,
    fuller forward passes than batch by batch.
    """
    if len(batches) == 1:
        return batches[0]
    buckets: dict[tuple[int, ...], tuple[list[np.ndarray], list[torch.Tensor]]] = {}
    offset = 0
    for batch in batches:
        for positions, pixels in batch.groups:
            where, stacks = buckets.setdefault(tuple(pixels.shape[1:]), ([], []))
            where.append(positions + offset)
            stacks.append(pixels)
        offset += len(batch.errors)
    groups = [(np.concatenate(where), stacks[0] if len(stacks) == 1 else
               torch.cat(stacks).contiguous(memory_format=torch.channels_last))
              for where, stacks in buckets.values()]
    return Batch(
        indices=np.concatenate([b.indices for b in batches]),
        groups=groups,
        sizes=np.concatenate([b.sizes for b in batches]),
        errors=[e for b in batches for e in b.errors],
        fingerprints=[f for b in batches for f in b.fingerprints],
    )


def normalize_batch(pixels: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """uint8 (B, 3, S, S) -> float (x/255 - mean) / std, on the tensor's device."""
    m = torch.tensor(mean, device=pixels.device).view(1, 3, 1, 1) * 255.0
    s = torch.tensor(std, device=pixels.device).view(1, 3, 1, 1) * 255.0
    return (pixels.float() - m) / s
