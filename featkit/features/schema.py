"""The features.h5 schema in one place: provenance, row status, and which keys mean what.

Every other module that reads or compares root attributes (the writer, the
resume check, the shard merge, the SVM provenance check) takes its key sets
from here, so a new provenance field is added once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from featkit import __version__

SCHEMA_VERSION = 1
STATUS_PENDING, STATUS_OK, STATUS_FAILED = 0, 1, 2

PROVENANCE_FIELDS: tuple[str, ...] = (
    "backbone", "weights", "weights_sha256", "feature_layer", "channels", "map_size", "input_size", "mean", "std",
    "dataset", "dataset_root", "pooling", "resize", "tta", "decode", "precision", "maps", "interpolation",
    "orientation",
)
"""Root attributes that :class:`Provenance` writes from its own fields."""

RUN_KEYS: tuple[str, ...] = ("rows_done", "complete", "created", "finished", "n_images")
"""Root attributes about one run's progress, not about what the features are."""

SHARD_KEYS: tuple[str, ...] = ("shard_rank", "shard_world_size", "shard_start", "shard_stop", "shard_total")
"""Root attributes of a shard file: its place in the whole multi-process job."""

RESUME_KEYS: tuple[str, ...] = (
    "backbone", "weights_sha256", "input_size", "feature_layer", "pooling", "dataset", "precision", "maps", "resize",
    "tta", "n_images", "crop", "shard_start", "shard_stop", "shard_total", "dataset_root", "split_protocol",
    "interpolation", "orientation",
)
"""Attributes that must agree for a file to be resumed by a new run (``dataset_root``: unless the run
says the dataset moved and the committed rows' fingerprints match, see ``FeatureWriter.open``)."""

MATCH_KEYS: tuple[str, ...] = (
    "backbone", "weights_sha256", "feature_layer", "pooling", "channels", "input_size", "mean", "std", "precision",
    "resize", "tta", "crop", "interpolation", "orientation",
)
"""Provenance that must agree between a linear classifier and the features it is applied to: every
attribute that changes the feature values (``crop`` marks features of crops, not of whole images;
``tta`` a test-time augmentation, where a file records one).
A key absent from an svm.h5 (written before the key was recorded) is unknown, not a mismatch."""

ABSENT_MEANS: dict[str, Any] = {"crop": "", "interpolation": "bilinear", "orientation": "stored"}
"""What a key absent from a features file (written before it was recorded) means: no ``crop`` attribute is
whole images, no ``interpolation`` the bilinear resize every file used before, no ``orientation`` pixels as
stored (files from before ``exif_transpose`` existed)."""


def plain(value: Any) -> Any:
    """An HDF5 attribute as plain Python (lists for arrays, scalars for numpy scalars), for comparing."""
    if value is None:
        return None
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


@dataclass(frozen=True)
class Provenance:
    """What produced the features: written as root attributes, compared on resume."""

    backbone: str
    weights: str
    weights_sha256: str
    feature_layer: str
    channels: int
    map_size: tuple[int, int]
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    dataset: str
    dataset_root: str
    pooling: str = "gap"
    resize: str = "warp"
    tta: str = "none"
    decode: str = "pil-draft"
    precision: str = "float32"
    maps: bool = False
    interpolation: str = "bilinear"
    """Resampling of the resize to the network input (the backbone's: timm configs mostly say bicubic)."""
    orientation: str = "stored"
    """``stored``: pixels and boxes as the files store them; ``exif``: turned upright by the EXIF tag."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Additive attributes (the crop source, a shard's place in the job)."""

    def attrs(self, n_images: int) -> dict[str, Any]:
        """The root attributes of a file of ``n_images`` rows."""
        values: dict[str, Any] = {"featkit_version": __version__, "schema_version": SCHEMA_VERSION}
        for name in PROVENANCE_FIELDS:
            value = getattr(self, name)
            values[name] = list(value) if isinstance(value, tuple) else value
        values["n_images"] = n_images
        values.update(self.extra)
        return values

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any], *, drop: tuple[str, ...] = SHARD_KEYS) -> Provenance:
        """The inverse of :meth:`attrs`: run keys, the schema stamp and ``drop`` are left out of ``extra``."""
        values = {k: plain(attrs[k]) for k in PROVENANCE_FIELDS if k in attrs}
        for key in ("map_size", "mean", "std"):
            values[key] = tuple(values[key])
        values["channels"] = int(values["channels"])
        values["input_size"] = int(values["input_size"])
        values["maps"] = bool(values["maps"])
        skip = set(PROVENANCE_FIELDS) | set(RUN_KEYS) | set(drop) | {"featkit_version", "schema_version"}
        extra = {k: plain(v) for k, v in attrs.items() if k not in skip}
        return cls(**values, extra=extra)
