"""``featkit demo``: the whole pipeline offline on scikit-image's bundled photos.

photos -> extract (GAP + maps) -> features.h5 -> CAMs of the backbone's own
ImageNet head for the top-5 classes (paper Fig. 4) and the CAM box of the
top-1 class -> PNG strips, predictions.json and an index.html gallery.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from featkit.cam.boxer import CamBoxer
from featkit.data.base import ImageRecord
from featkit.errors import FeatkitError
from featkit.features.extractor import ExtractJob, ExtractOptions, Progress
from featkit.features.mapsource import map_frames
from featkit.features.pipeline import run_job
from featkit.features.store import FeatureFile
from featkit.models import DEFAULT_BACKBONE
from featkit.outputs import atomic_output, check_output_folder, write_text
from featkit.viz.overlay import GalleryEntry, cam_strip, save_picture, write_gallery

DEMO_PHOTOS = ("chelsea", "coffee", "astronaut", "rocket")
"""scikit-image photos that ship inside the wheel (no download)."""


def write_demo_photos(folder: Path) -> list[str]:
    """Save the bundled photos as JPEGs; returns their file names."""
    from skimage import data

    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for name in DEMO_PHOTOS:
        target = folder / f"{name}.jpg"
        if not target.exists():
            with atomic_output(target) as tmp:
                Image.fromarray(np.asarray(getattr(data, name)())).convert("RGB").save(tmp, format="JPEG", quality=95)
        names.append(target.name)
    return names


def run_demo(
    output: Path,
    model: str = DEFAULT_BACKBONE,
    weights: str | None = None,
    image_size: int | None = None,
    top: int = 5,
    progress: Progress | None = None,
) -> Path:
    """Run the demo into ``output``; returns the index page."""
    if top < 1:
        raise FeatkitError(f"top must be at least 1, got {top}")
    check_output_folder(output)
    photos = output / "photos"
    names = write_demo_photos(photos)
    records = [ImageRecord(path=name) for name in names]
    features_path = output / "features.h5"
    options = ExtractOptions(model=model, weights=weights, image_size=image_size, maps=True, workers=0,
                             batch_size=len(records), overwrite=True)
    run_job(ExtractJob(photos, records, [], np.full((len(records), 1), "", dtype=object), "demo", features_path,
                       options, progress))
    with FeatureFile(features_path) as features:
        head = features.head()
        if head is None:
            raise FeatkitError(f"backbone {model} has no linear ImageNet head to draw CAMs with; pick another model")
        maps = torch.from_numpy(features.maps(np.arange(len(features))))
        gap = torch.tensor(features.gap[:])
        sizes = features.sizes
        frames = map_frames(features, np.arange(len(features)))  # crop maps cover the centre square only
    scores = gap @ torch.from_numpy(head.weight).T + torch.from_numpy(head.bias)
    probs = scores.softmax(dim=1)
    k = min(top, probs.shape[1])
    top_p, top_c = probs.topk(k, dim=1)
    boxer = CamBoxer(head.weight)  # the paper's CAM options: max-normalised, box at 0.2 of the max
    cams = boxer.cams(maps.numpy(), top_c.numpy())  # (N, k, h, w)
    entries, predictions = [], []
    for i, name in enumerate(names):
        size = (int(sizes[i][0]), int(sizes[i][1]))
        up = boxer.upsample(cams[i], size, None if frames is None else frames[i])  # (k, H, W)
        full_np = boxer.display(up)
        box = boxer.box(up[0])
        labels = [head.classes[int(c)] for c in top_c[i]]
        titles = [f"{label} {float(p):.2f}" for label, p in zip(labels, top_p[i])]
        strip = cam_strip(Image.open(photos / name), list(full_np), titles,
                          pred_boxes=[box] + [None] * (k - 1), image_title=name)
        picture = save_picture(strip, output / f"{Path(name).stem}_cam.png")
        entries.append(GalleryEntry(picture, f"{name}: " + ", ".join(titles) + f"; CAM box of top-1 {_fmt_box(box)}"))
        predictions.append({
            "image": name, "size": list(size),
            "top": [{"class": lab, "probability": round(float(p), 4)} for lab, p in zip(labels, top_p[i])],
            "box": [round(float(v), 1) for v in box],
        })
    write_text(output / "predictions.json", json.dumps(predictions, indent=2))
    return write_gallery(output / "index.html", entries, title=f"featkit demo: top-{k} CAMs of {model}")


def _fmt_box(box: tuple[float, float, float, float]) -> str:
    return "(" + ", ".join(f"{v:.0f}" for v in box) + ")"
