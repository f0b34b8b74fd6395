"""Class-specific units (paper Sec. 5): which units k a class leans on, and what they fire on.

The weights w_k^c of a class rank the units of the last conv layer; for each
top unit, the images with the largest GAP activation F_k show what the unit
detects, and its map f_k(x, y) shows where.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from featkit.cam.boxer import CamBoxer
from featkit.data.images import read_picture
from featkit.errors import FeatkitError
from featkit.features.integrity import require_same_images, require_usable
from featkit.features.mapsource import MapSource
from featkit.features.schema import STATUS_OK
from featkit.features.store import FeatureFile
from featkit.linear.classifier import LinearClassifier
from featkit.outputs import check_output_folder
from featkit.viz.overlay import GalleryEntry, cam_strip, display_size, drawn_cams, save_picture, write_gallery


@dataclass(frozen=True)
class UnitReport:
    unit: int
    weight: float
    rows: list[int]  # images that activate the unit most, strongest first
    activations: list[float]


def rank_units(classifier: LinearClassifier, class_name: str, features: FeatureFile, top_units: int = 5,
               images_per_unit: int = 6, rows: np.ndarray | None = None) -> list[UnitReport]:
    """The ``top_units`` units with the largest w_k^c, each with its most activating images."""
    require_usable(features)
    c = classifier.class_index(class_name)
    weights = classifier.weight[c]
    usable = np.flatnonzero(features.status == STATUS_OK) if rows is None else np.asarray(rows)
    if not 1 <= top_units <= weights.size:
        raise FeatkitError(f"top_units must lie in 1..{weights.size} (the units of the layer), got {top_units}")
    if not 1 <= images_per_unit <= max(usable.size, 1):
        raise FeatkitError(f"images_per_unit must lie in 1..{usable.size} (the extracted images), "
                           f"got {images_per_unit}")
    units = np.argsort(-weights)[:top_units]
    gap = features.gap[usable]
    reports = []
    for k in units:
        order = np.argsort(-gap[:, k])[:images_per_unit]
        reports.append(UnitReport(int(k), float(weights[k]), usable[order].tolist(), gap[order, k].tolist()))
    return reports


def render_units(features: FeatureFile, reports: list[UnitReport], class_name: str, out_dir: Path,
                 root: str | Path | None = None) -> Path:
    """One strip per unit (its top images with the unit's map and box) and an index page."""
    image_root = Path(root or features.attrs["dataset_root"])
    if not image_root.is_dir():
        raise FeatkitError(f"images are not at {image_root}; pass root=DATASET_ROOT")
    check_output_folder(out_dir).mkdir(parents=True, exist_ok=True)
    paths, sizes = features.paths, features.sizes
    require_same_images(features, image_root, np.unique([r for report in reports for r in report.rows]))
    source = MapSource.of(features, image_root)
    boxer = CamBoxer.for_units(int(features.attrs["channels"]))
    entries = []
    for report in reports:
        rows = report.rows
        cams = boxer.cams(source.maps(rows), report.unit)
        frames = source.frames(rows)
        panels = []
        for i, row in enumerate(rows):
            size = (int(sizes[row][0]), int(sizes[row][1]))
            image = read_picture(image_root / paths[row], features.attrs.get("orientation") == "exif",
                                 display_size(size))
            shown, boxes, _ = drawn_cams(boxer, cams[i, 0][None], size, image.size,
                                         None if frames is None else frames[i])
            strip = cam_strip(image, shown, [f"F={report.activations[i]:.2f}"], pred_boxes=boxes,
                              image_title=Path(paths[row]).name[:28])
            panels.append(strip.resize((strip.width * 200 // strip.height, 200)))
        picture = _hstack(panels)
        target = save_picture(picture, out_dir / f"unit_{report.unit:04d}.png")
        entries.append(GalleryEntry(target, f"unit {report.unit}: w = {report.weight:+.4f}; top images: "
                                    + ", ".join(Path(paths[r]).name for r in rows)))
    return write_gallery(out_dir / "index.html", entries, title=f"featkit units of class {class_name}")


def _hstack(panels: list[Image.Image], gap: int = 6) -> Image.Image:
    width = sum(p.width for p in panels) + gap * (len(panels) - 1)
    canvas = Image.new("RGB", (width, max(p.height for p in panels)), (255, 255, 255))
    left = 0
    for panel in panels:
        canvas.paste(panel, (left, 0))
        left += panel.width + gap
    return canvas
