"""Pictures: CAM overlays and strips, galleries, threshold curves, confusion matrices."""

from featkit.viz.camviz import render_cams
from featkit.viz.overlay import GalleryEntry, cam_strip, overlay_figure, write_gallery
from featkit.viz.plots import confusion_plot, threshold_curve_plot

__all__ = [
    "GalleryEntry",
    "cam_strip",
    "confusion_plot",
    "overlay_figure",
    "render_cams",
    "threshold_curve_plot",
    "write_gallery",
]
