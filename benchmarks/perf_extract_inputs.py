"""Inputs of the extraction benchmarks: the real CUB sample or generated JPEGs of about its size."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from featkit.data.base import ImageRecord

DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "CUB_200_2011"


@dataclass
class Inputs:
    """Image records under ``root`` and a one-line description of them for the report."""

    root: Path
    records: list[ImageRecord]
    classes: list[str]
    source: str

    @property
    def paths(self) -> list[Path]:
        return [self.root / r.path for r in self.records]

    def repeated(self, n: int) -> Inputs:
        """The first ``n`` records of the list repeated as often as needed."""
        reps = -(-n // len(self.records))
        return Inputs(self.root, (self.records * reps)[:n], self.classes, self.source)


def synthetic_images(folder: Path, n: int, size: tuple[int, int] = (500, 375), seed: int = 0) -> Inputs:
    """``n`` textured JPEGs of about CUB's size (quality 90), one class."""
    rng = np.random.default_rng(seed)
    w, h = size
    records = []
    for i in range(n):
        base = rng.integers(0, 255, size=(h // 16, w // 16, 3), dtype=np.uint8)
        img = Image.fromarray(base).resize((w - 8 * (i % 4), h), Image.Resampling.BILINEAR)
        path = folder / "images" / f"img_{i:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        img.save(path, quality=90)
        records.append(ImageRecord(path.relative_to(folder).as_posix(), 0, "train"))
    return Inputs(folder, records, ["synthetic"], f"{n} synthetic {w}x{h} JPEGs")


def real_images(root: Path) -> Inputs:
    """The CUB-200-2011 tree at ``root`` (all its records, official order)."""
    from featkit.data import open_dataset

    dataset = open_dataset("cub200", root)
    records = dataset.records()
    sizes = [Image.open(root / r.path).size for r in records[:50]]
    mean_w = int(np.mean([s[0] for s in sizes]))
    mean_h = int(np.mean([s[1] for s in sizes]))
    return Inputs(dataset.root, records, dataset.classes(),
                  f"CUB-200-2011 sample, {len(records)} JPEGs (about {mean_w}x{mean_h})")
