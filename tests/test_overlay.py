"""Pictures: sizes, box colours where the boxes are, escaped gallery text, the sweep plot."""

from __future__ import annotations

import numpy as np
from PIL import Image

from featkit.cam.boxes import max_box_acc
from featkit.viz.overlay import (
    GT_COLOR,
    PRED_COLOR,
    GalleryEntry,
    cam_strip,
    overlay_figure,
    write_gallery,
)
from featkit.viz.plots import threshold_curve_plot

WIDTH, HEIGHT = 160, 120


def grey_image() -> Image.Image:
    return Image.new("RGB", (WIDTH, HEIGHT), (128, 128, 128))


def centre_cam() -> np.ndarray:
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    return np.exp(-((xx - 80) ** 2 + (yy - 60) ** 2) / 400.0).astype(np.float32)


def test_overlay_without_title_keeps_image_size_and_colours_boxes():
    pred, gt = (40, 30, 120, 90), (10, 10, 60, 50)
    figure = overlay_figure(grey_image(), centre_cam(), pred_box=pred, gt_boxes=[gt])
    assert figure.size == (WIDTH, HEIGHT)
    pixels = np.asarray(figure)
    assert tuple(pixels[60, 40]) == PRED_COLOR  # left edge of the predicted box
    assert tuple(pixels[89, 80]) == PRED_COLOR  # bottom edge: last covered row is y1 - 1
    assert tuple(pixels[30, 10]) == GT_COLOR  # left edge of the ground truth
    assert tuple(pixels[30, 30]) not in (PRED_COLOR, GT_COLOR)  # inside the GT box: heatmap only
    # The heatmap is blended in: the hot centre differs from the cold corner.
    assert not np.array_equal(pixels[60, 80], pixels[115, 155])


def test_overlay_with_title_adds_a_band_on_top():
    figure = overlay_figure(grey_image(), centre_cam(), pred_box=(40, 30, 120, 90), title="bald eagle 0.93")
    assert figure.width == WIDTH and figure.height > HEIGHT
    band = figure.height - HEIGHT
    pixels = np.asarray(figure)
    assert tuple(pixels[band + 60, 40]) == PRED_COLOR  # boxes move down with the image
    assert (pixels[:band] < 100).any()  # some dark title text was drawn


def test_overlay_accepts_feature_sized_cam():
    figure = overlay_figure(grey_image(), np.eye(7, dtype=np.float32))
    assert figure.size == (WIDTH, HEIGHT)


def test_cam_strip_is_image_plus_one_panel_per_cam():
    cams = [centre_cam(), 1 - centre_cam(), centre_cam()]
    strip = cam_strip(grey_image(), cams, ["a", "b", "c"], image_title="input")
    gap = 4
    assert strip.width == 4 * WIDTH + 3 * gap
    assert strip.height > HEIGHT
    untitled = cam_strip(grey_image(), cams, ["", "", ""])
    assert untitled.size == (4 * WIDTH + 3 * gap, HEIGHT)


def test_gallery_escapes_captions_and_links_relative(tmp_path):
    picture = tmp_path / "pics" / "a b.png"
    picture.parent.mkdir()
    grey_image().save(picture)
    page = write_gallery(
        tmp_path / "site" / "index.html",
        [GalleryEntry(picture, "<script>alert(1)</script> & co"), (str(picture), 'say "hi"')],
        title="CUB <test>",
    )
    text = page.read_text(encoding="utf-8")
    assert "<script>" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in text
    assert "CUB &lt;test&gt;" in text
    assert 'src="../pics/a%20b.png"' in text
    assert "&quot;hi&quot;" in text


def test_threshold_curve_plot_writes_png(tmp_path):
    cam = np.zeros((30, 40), dtype=np.float32)
    cam[5:20, 10:30] = 1.0
    result = max_box_acc([cam], [[(10, 5, 30, 20)]], thresholds=np.arange(0, 1, 0.1))
    path = threshold_curve_plot(result, tmp_path / "plots" / "curve.png")
    with Image.open(path) as written:
        assert written.format == "PNG"
    other = threshold_curve_plot({"mine": ([0.0, 0.5, 1.0], [0.2, 0.6, 0.1])}, tmp_path / "simple.png")
    assert other.stat().st_size > 0
