"""Input geometry: how an image (or a box of it) becomes the network's input, and where the maps land.

Three policies, recorded as the ``resize`` provenance attribute:

- ``warp``: the whole image squeezed to ``S x S`` (the original featkit path);
- ``short-side``: the short side scaled to ``S``, the aspect ratio kept; the long
  side is rounded to a multiple of the backbone's stride (so every map cell
  covers a whole number of input pixels and images fall into a few shape
  buckets) and capped at ``MAX_ASPECT x S`` (a panorama beyond that is squeezed
  along its long side, never cut);
- ``crop``: the classic ImageNet evaluation view, the short side scaled to
  ``S / CROP_FRACTION`` and the central ``S x S`` kept: the maps then cover
  only that central square (the *frame*), and CAMs must be placed back into it.

A GAP network needs no square input: its last maps follow the input's shape
and GAP averages whatever is there. In every policy the maps cover the frame
exactly, so a CAM upsampled onto the frame is in original pixel coordinates.
"""

from __future__ import annotations

RESIZE_POLICIES: tuple[str, ...] = ("warp", "short-side", "crop")
TTA_MODES: tuple[str, ...] = ("none", "flip")
DEFAULT_RESIZE = "short-side"
"""featkit's default policy: the whole image, aspect ratio kept, so CAM boxes can reach every border.

Chosen by the rule fixed before measuring in ``benchmarks/geometry_cv.py`` (issue 17): among the policies
whose maps cover the whole image (warp, short-side), the one whose train-image CV accuracy is within one
standard error of the best policy (crop included) on every sample dataset; only short-side is
(``benchmarks/results/geometry_cv.md``; no test image read). ``crop`` classified best on CUB by 0.83 ± 1.55
points but its boxes cannot leave the centre square; warp was 2.17 ± 1.64 points under it."""
MAX_ASPECT = 2.0
"""Cap on long side / short side for ``short-side`` (at 224 px: inputs up to 224 x 448)."""
CROP_FRACTION = 224 / 256
"""``crop``: the centre square's side over the short side (resize to 256, keep the central 224)."""

Frame = tuple[float, float, float, float]

WHAT_IT_DOES: dict[str, str] = {
    "warp": "warp: the whole image squeezed to a square; boxes can reach every border of the image",
    "short-side": "short-side: the whole image, aspect ratio kept (short side at the input size, long side at most "
                  f"{MAX_ASPECT:g}x); boxes can reach every border of the image",
    "crop": "crop: only the centre square (87.5 % of the short side) is seen; no box can leave that square, so "
            "objects reaching the image's sides are cut (use resize='short-side')",
}
"""One line per policy: what the network sees and where boxes can go (reports and help text)."""


def describe(resize: str, tta: str = "none") -> str:
    """What ``resize`` (and flip TTA) does with the image, for a report."""
    text = WHAT_IT_DOES.get(resize, resize)
    return text + ("; features and maps averaged with the mirror image" if tta == "flip" else "")


def check_geometry(resize: str, tta: str = "none") -> None:
    """Refuse an unknown policy (names are the Python keywords ``resize`` and ``tta``)."""
    from featkit.errors import FeatkitError

    if resize not in RESIZE_POLICIES:
        raise FeatkitError(f"resize must be one of {', '.join(RESIZE_POLICIES)}, got {resize!r}")
    if tta not in TTA_MODES:
        raise FeatkitError(f"tta must be one of {', '.join(TTA_MODES)}, got {tta!r}")


def frame(width: float, height: float, resize: str) -> Frame:
    """(x0, y0, x1, y1) of a ``width x height`` region that the network sees (and the maps cover)."""
    if resize == "crop":
        side = min(width, height) * CROP_FRACTION
        x0, y0 = (width - side) / 2, (height - side) / 2
        return (x0, y0, x0 + side, y0 + side)
    return (0.0, 0.0, float(width), float(height))


def input_shape(width: float, height: float, resize: str, input_size: int, stride: int = 1) -> tuple[int, int]:
    """(width, height) in pixels of the network input for a ``width x height`` region."""
    if resize != "short-side" or width <= 0 or height <= 0:
        return (input_size, input_size)
    short, long = min(width, height), max(width, height)
    step = max(1, stride)
    scaled = round(long * input_size / short / step) * step
    cap = int(MAX_ASPECT * input_size) // step * step
    side = int(min(max(scaled, input_size), max(cap, input_size)))
    return (side, input_size) if width >= height else (input_size, side)


def canvas_input(resize: str, input_size: int) -> int:
    """Side of the square input whose maps are the padded canvas every row's maps fit in."""
    return int(MAX_ASPECT * input_size) if resize == "short-side" else input_size
