"""Shared fixtures: the real sample data (skipped when absent) and fake dataset trees."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from PIL import Image

if TYPE_CHECKING:
    from featkit.linear import LinearClassifier

SAMPLE_DATA = Path(os.environ.get("FEATKIT_SAMPLE_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def sample_root(name: str) -> Path:
    """``../shared/data/<name>``, or skip the test with the reason."""
    root = SAMPLE_DATA / name
    if not root.is_dir():
        pytest.skip(f"real sample data {root} is absent (set FEATKIT_SAMPLE_DATA to the shared data folder)")
    return root


def write_image(path: Path, size: tuple[int, int], seed: int, mode: str = "RGB") -> None:
    """A small textured JPEG (random blobs, so features differ between images)."""
    rng = np.random.default_rng(seed)
    w, h = size
    base = rng.integers(0, 255, size=(max(h // 8, 1), max(w // 8, 1), 3), dtype=np.uint8)
    img = Image.fromarray(base).resize((w, h), Image.BILINEAR).convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, quality=90)


def make_fake_cub(root: Path, n_classes: int = 2, per_class: int = 4) -> Path:
    """A CUB-200-2011 tree at ``root`` (images of distinct sizes, one box each); returns ``root``."""
    lines: dict[str, list[str]] = {k: [] for k in ("images", "labels", "split", "boxes", "classes")}
    image_id = 0
    for c in range(1, n_classes + 1):
        folder = f"{c:03d}.Bird_{c}"
        lines["classes"].append(f"{c} {folder}")
        for j in range(per_class):
            image_id += 1
            w, h = 120 + 8 * j, 90 + 4 * c
            write_image(root / "images" / folder / f"Bird_{c}_{j:04d}.jpg", (w, h), seed=image_id)
            lines["images"].append(f"{image_id} {folder}/Bird_{c}_{j:04d}.jpg")
            lines["labels"].append(f"{image_id} {c}")
            lines["split"].append(f"{image_id} {1 if j % 2 == 0 else 0}")
            lines["boxes"].append(f"{image_id} {10 + j}.0 {5 + c}.0 {40 + j}.0 {30}.0")
    files = {"images": "images.txt", "labels": "image_class_labels.txt", "split": "train_test_split.txt",
             "boxes": "bounding_boxes.txt", "classes": "classes.txt"}
    for key, name in files.items():
        (root / name).write_text("\n".join(lines[key]) + "\n")
    return root


@dataclass(frozen=True)
class Env:
    """The shared inputs of a bad-input table: its folder, the dataset root, features and SVM."""

    dir: Path
    root: Path
    feat: Path
    svm: Path


def tiny_cub_features(folder: Path) -> tuple[Path, Path, Path]:
    """A 2-class x 4-image CUB tree under ``folder``, its features with maps (seeded ``tiny_test``) and an
    SVM trained on them (C=1): the shared inputs of the bad-input tables."""
    from featkit.cli import main

    root = make_fake_cub(folder / "CUB", n_classes=2, per_class=4)
    feat, svm = folder / "feat.h5", folder / "svm.h5"
    tiny = ["--model", "tiny_test", "--workers", "0"]
    assert main(["extract", str(root), "--dataset", "cub200", "-o", str(feat), *tiny, "--maps"]) == 0
    assert main(["svm-train", str(feat), "-o", str(svm), "--C", "1", "--jobs", "1"]) == 0
    return root, feat, svm


@pytest.fixture
def fake_cub(tmp_path: Path) -> Callable[..., Path]:
    """Factory for a CUB-200-2011 tree: ``fake_cub(n_classes=2, per_class=4)``."""

    def make(n_classes: int = 2, per_class: int = 4, root: Path | None = None) -> Path:
        return make_fake_cub(root or tmp_path / "CUB_200_2011", n_classes, per_class)

    return make


def write_features(
    path: Path,
    gap: np.ndarray,
    labels: list[int] | np.ndarray,
    splits: list[str] | np.ndarray,
    classes: list[str],
    *,
    backbone: str = "efficientnet_lite0",
    maps: np.ndarray | None = None,
    boxes: list[tuple[tuple[float, float, float, float], ...]] | None = None,
    sizes: np.ndarray | None = None,
    complete: bool = True,
    dataset_root: str | None = None,
) -> Path:
    """A features.h5 written through the real writer, with given (synthetic) features."""
    from featkit.data.base import ImageRecord
    from featkit.features import STATUS_OK, FeatureWriter, Provenance

    n, k = gap.shape
    map_hw = tuple(maps.shape[2:]) if maps is not None else (7, 7)
    records = [ImageRecord(f"img_{i:04d}.jpg", int(labels[i]), "", boxes[i] if boxes else ()) for i in range(n)]
    provenance = Provenance(backbone=backbone, weights="synthetic", weights_sha256="0" * 64, feature_layer="test",
                            channels=k, map_size=map_hw, input_size=224, mean=(0.5,) * 3, std=(0.5,) * 3,
                            dataset="synthetic", dataset_root=dataset_root or str(path.parent),
                            maps=maps is not None)
    split_table = np.asarray(splits, dtype=object).reshape(n, -1)
    sizes = np.full((n, 2), 224, np.int32) if sizes is None else sizes
    with FeatureWriter.open(path, provenance, records, classes, split_table) as writer:
        rows = n if complete else n // 2
        writer.write_batch(0, gap[:rows].astype(np.float32), sizes[:rows], np.full(rows, STATUS_OK, np.int8),
                           [""] * rows, None if maps is None else maps[:rows])
        if complete:
            writer.finish()
    return path


BOXED_SIDE, BOXED_GRID, BOXED_K = 160, 8, 6
BOXED_CLASSES = ["a", "b"]


def boxed_store(
    folder: Path, n: int = 24, seed: int = 0, test_boxes: bool = True
) -> tuple[Path, list[tuple[float, float, float, float]]]:
    """Maps where unit 0 fires inside each image's box (plus noise everywhere), units 1-5 are noise.

    Units 2 and 3 are stronger than unit 0 on average, so the class-agnostic mean map does not find the box;
    the foreground SVM must learn that unit 0 is the one that marks it. Boxes vary in place and size.
    """
    rng = np.random.default_rng(seed)
    scale = np.array([0.3, 1, 2, 2, 1, 1], np.float32)[:, None, None]
    maps = rng.random((n, BOXED_K, BOXED_GRID, BOXED_GRID), dtype=np.float32) * scale
    boxes = []
    for i in range(n):
        h, w = rng.integers(3, 6, size=2)
        r, c = rng.integers(0, BOXED_GRID - h + 1), rng.integers(0, BOXED_GRID - w + 1)
        maps[i, 0, r : r + h, c : c + w] += 1.0
        cell = BOXED_SIDE / BOXED_GRID
        boxes.append((float(c * cell), float(r * cell), float((c + w) * cell), float((r + h) * cell)))
    labels = np.arange(n) % 2
    splits = ["train" if i < n * 2 // 3 else "test" for i in range(n)]
    folder.mkdir(parents=True, exist_ok=True)
    kept = [(b,) if test_boxes or splits[i] == "train" else () for i, b in enumerate(boxes)]
    path = write_features(folder / "boxed.h5", maps.mean(axis=(2, 3)), labels, splits, BOXED_CLASSES, maps=maps,
                          boxes=kept, sizes=np.full((n, 2), BOXED_SIDE, np.int32))
    return path, boxes


def boxed_classifier() -> LinearClassifier:
    """Identity weights on units 0 and 1 of :func:`boxed_store`'s maps (class 'a' weighs the box unit)."""
    from featkit.linear import LinearClassifier

    return LinearClassifier(np.eye(2, BOXED_K), np.zeros(2), list(BOXED_CLASSES), "none", "identity")


@pytest.fixture(scope="session")
def cub_features(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real CUB sample extracted once per session by the CLI (default backbone, with maps)."""
    from featkit.cli import main

    root = sample_root("CUB_200_2011")
    out = tmp_path_factory.mktemp("cub") / "cub.h5"
    # warp: the numbers the CUB tests check were measured on the square path (short-side: tests/test_geometry.py)
    assert main(["extract", str(root), "--dataset", "cub200", "--maps", "--resize", "warp", "-o", str(out)]) == 0
    return out
