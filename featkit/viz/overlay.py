"""Pictures of CAMs: heatmap overlays with boxes, Fig. 4-style strips, an HTML index, the sweep plot.

Overlays are drawn with PIL and matplotlib's colormap lookup only (no pyplot
figure), so thousands of them stay cheap. Boxes follow the package convention
(continuous corners in original pixels) and are drawn on the pixels they cover.
"""

from __future__ import annotations

import html
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import numpy as np
from matplotlib import colormaps
from PIL import Image, ImageDraw, ImageFont

from featkit.cam.boxer import CamBoxer
from featkit.cam.boxes import Box
from featkit.cam.maps import upsample
from featkit.errors import FeatkitError
from featkit.outputs import atomic_output, write_text

PRED_COLOR = (255, 0, 0)
GT_COLOR = (0, 255, 0)
TITLE_BACKGROUND = (255, 255, 255)
TITLE_COLOR = (0, 0, 0)
STRIP_GAP = 4
"""White pixels between the panels of a strip."""


def _line_width(size: tuple[int, int]) -> int:
    """Box outline thickness that stays visible on large images and thin on small ones."""
    return max(2, round(max(size) / 200))


def _font_size(width: int) -> int:
    return int(np.clip(width // 18, 10, 36))


def _load_font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow built without FreeType: fixed-size bitmap font
        return ImageFont.load_default()


def _title_band_height(width: int) -> int:
    return int(_font_size(width) * 1.6)


def _heatmap_blend(image: Image.Image, cam_norm: object, alpha: float) -> Image.Image:
    """The image with the 'jet'-coloured CAM on top; the CAM is resized to the image if needed."""
    rgb = image.convert("RGB")
    width, height = rgb.size
    cam = np.asarray(cam_norm.detach().cpu() if hasattr(cam_norm, "detach") else cam_norm, dtype=np.float32)
    if cam.ndim != 2:
        raise FeatkitError(f"cam_norm must be one (H, W) map, got shape {cam.shape}; pick one class's CAM")
    if cam.shape != (height, width):
        cam = upsample(cam, (width, height))
    colours = colormaps["jet"](np.nan_to_num(np.clip(cam, 0.0, 1.0)))[..., :3]
    heat = Image.fromarray(np.round(colours * 255).astype(np.uint8))
    return Image.blend(rgb, heat, alpha)


def _draw_box(draw: ImageDraw.ImageDraw, box: Sequence[float], colour: tuple[int, int, int], width: int, size: tuple[int, int], top: int) -> None:
    """Outline the pixels a continuous box covers (PIL rectangles include their last pixel)."""
    image_w, image_h = size
    x0 = int(np.clip(round(box[0]), 0, image_w - 1))
    y0 = int(np.clip(round(box[1]), 0, image_h - 1))
    x1 = int(np.clip(round(box[2]) - 1, x0, image_w - 1))
    y1 = int(np.clip(round(box[3]) - 1, y0, image_h - 1))
    draw.rectangle((x0, y0 + top, x1, y1 + top), outline=colour, width=width)


def _with_title(panel: Image.Image, title: str, band: int) -> Image.Image:
    """Put ``title`` in a white band of height ``band`` above ``panel`` (no band if 0)."""
    if band <= 0:
        return panel
    canvas = Image.new("RGB", (panel.width, panel.height + band), TITLE_BACKGROUND)
    canvas.paste(panel, (0, band))
    if title:
        font = _load_font(_font_size(panel.width))
        ImageDraw.Draw(canvas).text((4, band // 2), title, fill=TITLE_COLOR, font=font, anchor="lm")
    return canvas


def overlay_figure(
    image: Image.Image,
    cam_norm: object,
    pred_box: Box | Sequence[float] | None = None,
    gt_boxes: Iterable[Box | Sequence[float]] = (),
    title: str = "",
    alpha: float = 0.5,
) -> Image.Image:
    """The image with its CAM as a 'jet' heatmap, the predicted box in red and GT boxes in green.

    ``cam_norm`` is a normalised (H, W) map in [0, 1] (negatives show as 0); a
    map of another size is bilinearly resized to the image. With a ``title``
    (e.g. "bald eagle 0.93") a white band is added on top, so the result is
    (W, H + band); without one it is exactly the image's size.
    """
    if not 0.0 <= alpha <= 1.0:
        raise FeatkitError(f"alpha must be in [0, 1], got {alpha}; 0.5 blends heatmap and image equally")
    panel = _heatmap_blend(image, cam_norm, alpha)
    band = _title_band_height(panel.width) if title else 0
    composed = _with_title(panel, title, band)
    draw = ImageDraw.Draw(composed)
    line = _line_width(panel.size)
    for gt in gt_boxes:
        _draw_box(draw, gt, GT_COLOR, line, panel.size, band)
    if pred_box is not None:
        _draw_box(draw, pred_box, PRED_COLOR, line, panel.size, band)
    return composed


def cam_strip(
    image: Image.Image,
    cams: Sequence[object],
    titles: Sequence[str],
    pred_boxes: Sequence[Box | None] | None = None,
    image_title: str = "",
    alpha: float = 0.5,
    gt_boxes: Sequence[Box] = (),
) -> Image.Image:
    """Paper Fig. 4: the input followed by one overlay per CAM (e.g. the top-5 classes, or methods), side by side.

    ``gt_boxes`` are drawn in green on every overlay, so methods can be compared against the truth.
    """
    if len(titles) != len(cams):
        raise FeatkitError(f"got {len(cams)} CAMs but {len(titles)} titles; give one title per CAM")
    if pred_boxes is not None and len(pred_boxes) != len(cams):
        raise FeatkitError(f"got {len(cams)} CAMs but {len(pred_boxes)} boxes; give one box (or None) per CAM")
    rgb = image.convert("RGB")
    band = _title_band_height(rgb.width) if (image_title or any(titles)) else 0
    panels = [_with_title(rgb, image_title, band)]
    for index, (cam, title) in enumerate(zip(cams, titles)):
        panel = _with_title(_heatmap_blend(rgb, cam, alpha), title, band)
        box = pred_boxes[index] if pred_boxes is not None else None
        for gt in gt_boxes:
            _draw_box(ImageDraw.Draw(panel), tuple(gt), GT_COLOR, _line_width(rgb.size), rgb.size, band)
        if box is not None:
            _draw_box(ImageDraw.Draw(panel), box, PRED_COLOR, _line_width(rgb.size), rgb.size, band)
        panels.append(panel)
    strip = Image.new(
        "RGB", (sum(p.width for p in panels) + STRIP_GAP * (len(panels) - 1), panels[0].height), TITLE_BACKGROUND
    )
    left = 0
    for panel in panels:
        strip.paste(panel, (left, 0))
        left += panel.width + STRIP_GAP
    return strip


@dataclass(frozen=True)
class GalleryEntry:
    """One picture of the gallery and the text under it."""

    image: str | Path
    caption: str = ""


def write_gallery(
    html_path: str | Path,
    entries: Iterable[GalleryEntry | tuple[str | Path, str]],
    title: str = "featkit CAM gallery",
) -> Path:
    """A static HTML page showing ``entries`` with captions; returns its path.

    Image paths (absolute, or relative to the working directory) are written
    relative to the page, so the folder can be moved or served as is. All text
    is HTML-escaped.
    """
    page = Path(html_path)
    page.parent.mkdir(parents=True, exist_ok=True)
    page_dir = page.parent.resolve()
    figures = []
    for entry in entries:
        item = entry if isinstance(entry, GalleryEntry) else GalleryEntry(*entry)
        relative = Path(os.path.relpath(Path(item.image).resolve(), page_dir)).as_posix()
        source = html.escape(quote(relative), quote=True)
        caption = html.escape(item.caption)
        figures.append(
            f'<figure><img src="{source}" alt="{html.escape(item.caption, quote=True)}" loading="lazy">'
            f"<figcaption>{caption}</figcaption></figure>"
        )
    escaped_title = html.escape(title)
    document = (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{escaped_title}</title>\n"
        "<style>body{font-family:sans-serif;margin:1em}"
        "figure{display:inline-block;margin:0.5em;vertical-align:top}"
        "img{max-width:100%;max-height:360px}figcaption{max-width:480px;font-size:0.9em}</style>\n"
        f"</head>\n<body>\n<h1>{escaped_title}</h1>\n" + "\n".join(figures) + "\n</body>\n</html>\n"
    )
    return write_text(page, document)


def save_picture(picture: Image.Image, target: Path) -> Path:
    """``picture`` as PNG at ``target``, atomically (a full disk leaves no 0-byte or half picture)."""
    with atomic_output(target) as tmp:
        picture.save(tmp, format="PNG")
    return target


DISPLAY_PIXELS = 4_000_000
"""Largest panel drawn (pixels): a larger photo is shown downscaled to it, while its boxes are still found on
the CAM at the original size, one map at a time, so a huge photo costs bounded memory."""


def display_size(full: tuple[int, int]) -> tuple[int, int]:
    """The size a photo of original ``full`` (W, H) is drawn at: itself, or scaled down to DISPLAY_PIXELS."""
    w, h = full
    if w * h <= DISPLAY_PIXELS:
        return full
    s = (DISPLAY_PIXELS / (w * h)) ** 0.5
    return max(1, int(w * s)), max(1, int(h * s))


def scale_box(box: Sequence[float], scale: tuple[float, float]) -> Box:
    """A box in original pixels on a picture drawn at ``scale`` (x, y)."""
    sx, sy = scale
    return (float(box[0]) * sx, float(box[1]) * sy, float(box[2]) * sx, float(box[3]) * sy)


def drawn_cams(
    boxer: CamBoxer, cams: np.ndarray, full: tuple[int, int], shown: tuple[int, int],
    frame: np.ndarray | None = None,
) -> tuple[list[np.ndarray], list[Box], tuple[float, float]]:
    """(T, h, w) CAMs of a photo of original size ``full`` drawn at size ``shown``: the maps to show, each
    class's box (the paper's rule on the full-size CAM, on the drawn picture's grid) and the drawing scale."""
    if tuple(shown) == tuple(full):
        up = boxer.upsample(cams, full, frame)
        return list(boxer.display(up)), [boxer.box(cam) for cam in up], (1.0, 1.0)
    scale = (shown[0] / full[0], shown[1] / full[1])
    boxes = [scale_box(boxer.box(boxer.upsample(cam, full, frame)), scale) for cam in cams]  # one at a time
    small = None if frame is None else np.asarray(frame, dtype=np.float64) * np.array([*scale, *scale])
    return list(boxer.display(boxer.upsample(cams, shown, small))), boxes, scale
