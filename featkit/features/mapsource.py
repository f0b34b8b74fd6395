"""Where conv maps come from: the features file itself, or the backbone run again on the images.

Everything that needs maps (CAMs, localization, crops, units) asks a
:class:`MapSource`, so "stored or recomputed" is decided in one place and up
front: a file without maps and without its images fails before any work.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from featkit.data.geometry import frame
from featkit.errors import FeatkitError
from featkit.features.replay import recompute_maps
from featkit.features.store import FeatureFile

RECOMPUTE_CHUNK = 256
"""Rows per backbone run when maps are recomputed: each run reloads the model, so runs are few."""


def dataset_root(features: FeatureFile, root: str | Path | None) -> Path | None:
    """``root`` when given (it must exist), else the file's recorded ``dataset_root`` if still on disk."""
    if root is not None:
        path = Path(root)
        if not path.is_dir():
            raise FeatkitError(f"dataset root {path} is not a folder; pass root=DATASET_ROOT (the dataset's folder)")
        return path
    recorded = features.attrs.get("dataset_root")
    if recorded and Path(str(recorded)).is_dir():
        return Path(str(recorded))
    return None


@dataclass(frozen=True)
class MapSource:
    """The conv maps of one features file: ``kind`` "stored", or "recomputed" from ``root``."""

    features: FeatureFile
    kind: str
    root: Path | None = None
    device: str = "auto"

    @classmethod
    def of(cls, features: FeatureFile, root: str | Path | None = None, *, device: str = "auto") -> MapSource:
        """Stored maps when the file has them, else a recomputing source (the images must be on disk).

        A stored source keeps ``root`` and ``device`` too: methods that run the
        backbone on the images (dgl, multi-scale) read them from it.
        """
        if features.has_maps:
            return cls(features, "stored", None if root is None else dataset_root(features, root), device)
        base = dataset_root(features, root)
        if base is None:
            raise FeatkitError(
                f"{features.path} has no conv maps and no dataset root to recompute them; "
                "re-extract with maps=True or pass root=DATASET_ROOT"
            )
        return cls(features, "recomputed", base, device)

    def batches(self, rows: Sequence[int] | np.ndarray, batch: int = 32) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(row indices, maps float32 (n, K, h, w)) in batches of at most ``batch`` rows, in order."""
        idx = np.asarray(rows, dtype=np.int64)
        if batch < 1:
            raise FeatkitError(f"batch size must be at least 1, got {batch}")
        if self.kind == "stored":
            yield from self.features.iter_maps(idx, batch)
            return
        assert self.root is not None  # set by MapSource.of for recomputing sources
        attrs = self.features.attrs
        paths = self.features.paths
        chunk = max(batch, RECOMPUTE_CHUNK)
        for lo in range(0, len(idx), chunk):
            part = idx[lo : lo + chunk]
            maps = recompute_maps(attrs, self.root, [paths[i] for i in part], batch_size=min(batch, 64),
                                  device=self.device)
            for b in range(0, len(part), batch):
                yield part[b : b + batch], maps[b : b + batch]

    def frames(self, rows: Sequence[int] | np.ndarray) -> np.ndarray | None:
        """(n, 4) part of each image its maps cover (x0, y0, x1, y1), or None when they cover all of it."""
        return map_frames(self.features, rows)

    def maps(self, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        """Maps of ``rows`` in one array (for a handful of rows)."""
        parts = [maps for _, maps in self.batches(rows, max(1, len(rows)))]
        return np.concatenate(parts) if parts else np.zeros((0, 0, 0, 0), np.float32)


def map_frames(features: FeatureFile, rows: Sequence[int] | np.ndarray) -> np.ndarray | None:
    """(n, 4) frames of ``rows`` in original pixels, or None when the maps cover whole images.

    Only ``crop`` files have a smaller frame (the centre square); ``warp`` and
    ``short-side`` maps cover the whole image, padding aside.
    """
    resize = features.geometry[0]
    if resize != "crop":
        return None
    if features.attrs.get("crop"):
        raise FeatkitError(f"{features.path} holds features of crop boxes extracted with resize='crop'; "
                           "CAMs need features of whole images: re-extract with resize='short-side' or 'warp'")
    sizes = features.sizes[np.asarray(rows, dtype=np.int64)]
    return np.array([frame(float(w), float(h), resize) for w, h in sizes], dtype=np.float64).reshape(-1, 4)
