"""Maps that do not fill a fixed grid or the whole image: trimming their padding, placing them in a frame.

``short-side`` maps vary in shape and are stored top-left in a NaN-padded
canvas: :func:`trim_padding` cuts them back to their valid extent. ``crop``
maps cover only the centre of the image (the *frame*, in original pixels):
:func:`place` upsamples them onto exactly that rectangle of the original
image and fills the rest with a value no threshold keeps (no evidence there).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def trim_padding(cams: np.ndarray) -> np.ndarray:
    """``cams`` (..., h, w) without the all-NaN rows at the bottom and columns at the right."""
    if cams.size == 0 or not np.isnan(cams).any():
        return cams
    valid = ~np.isnan(cams.reshape(-1, *cams.shape[-2:])).all(axis=0)
    rows, cols = np.flatnonzero(valid.any(axis=1)), np.flatnonzero(valid.any(axis=0))
    if not len(rows):
        return cams
    return cams[..., : rows[-1] + 1, : cols[-1] + 1]


def pad_to_canvas(maps: list[np.ndarray]) -> np.ndarray:
    """Maps (..., h_i, w_i) of several images stacked (n, ..., h, w), each top-left in a NaN-padded canvas of the
    largest extent (:func:`trim_padding` undoes it); maps of one shape are simply stacked."""
    if len({m.shape for m in maps}) <= 1:
        return np.stack(maps) if maps else np.zeros((0, 0, 0, 0), np.float32)
    height, width = max(m.shape[-2] for m in maps), max(m.shape[-1] for m in maps)
    canvas = np.full((len(maps), *maps[0].shape[:-2], height, width), np.nan, dtype=np.float32)
    for i, m in enumerate(maps):
        canvas[i, ..., : m.shape[-2], : m.shape[-1]] = m
    return canvas


def covers_image(frame: tuple[float, float, float, float] | np.ndarray | None, size: tuple[int, int]) -> bool:
    """Whether ``frame`` is None or the whole ``size = (width, height)`` image."""
    if frame is None:
        return True
    x0, y0, x1, y1 = (float(v) for v in frame)
    return abs(x0) < 1e-6 and abs(y0) < 1e-6 and abs(x1 - size[0]) < 1e-6 and abs(y1 - size[1]) < 1e-6


def place(
    cams: np.ndarray, size: tuple[int, int], frame: tuple[float, float, float, float] | np.ndarray,
    mode: str = "bilinear", outside: np.ndarray | float = 0.0,
) -> np.ndarray:
    """CAMs (..., h, w) spread over ``frame`` (x0, y0, x1, y1) of a ``size = (width, height)`` image.

    Pixel centres are sampled as :func:`featkit.cam.maps.upsample` samples
    them (cell centres at ``(i + 0.5)`` cells, edges clamped), measured from the
    frame's corner; pixels whose centre lies outside the frame get ``outside``
    (a scalar or one value per map, shape ``cams.shape[:-2]``).
    """
    width, height = int(size[0]), int(size[1])
    x0, y0, x1, y1 = (float(v) for v in frame)
    lead = cams.shape[:-2]
    flat = torch.from_numpy(np.array(cams, dtype=np.float32)).reshape(-1, 1, *cams.shape[-2:])  # a writable copy
    u = (torch.arange(width, dtype=torch.float32) + 0.5 - x0) / max(x1 - x0, 1e-6) * 2 - 1
    v = (torch.arange(height, dtype=torch.float32) + 0.5 - y0) / max(y1 - y0, 1e-6) * 2 - 1
    grid = torch.stack(torch.meshgrid(v, u, indexing="ij")[::-1], dim=-1)  # (H, W, 2) as (x, y)
    grid = grid.unsqueeze(0).expand(len(flat), height, width, 2)
    sampled = F.grid_sample(flat, grid, mode="nearest" if mode == "nearest" else "bilinear",
                            padding_mode="border", align_corners=False)[:, 0]
    inside = ((u.abs() <= 1)[None, :] & (v.abs() <= 1)[:, None]).unsqueeze(0)
    fill = torch.as_tensor(np.broadcast_to(np.asarray(outside, dtype=np.float32), lead).reshape(-1, 1, 1).copy())
    return torch.where(inside, sampled, fill).reshape(*lead, height, width).numpy()
