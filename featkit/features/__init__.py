"""Stage 2 of the pipeline: images -> GAP features (and conv maps) in features.h5, and reading them back.

``schema`` (provenance and key sets) < ``store`` (writer, reader) < ``extract``
(one process) < ``distributed`` (shards and merge) < ``pipeline`` (the entry
points); ``mapsource`` gives conv maps stored or recomputed; ``export`` turns a
file into numpy arrays and pandas tables.

The names are imported on first use, so reading a file's tables (``featkit
info``) does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from featkit.lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "STATUS_FAILED": "featkit.features.schema",
    "STATUS_OK": "featkit.features.schema",
    "STATUS_PENDING": "featkit.features.schema",
    "Provenance": "featkit.features.schema",
    "FeatureFile": "featkit.features.store",
    "FeatureWriter": "featkit.features.store",
    "Head": "featkit.features.store",
    "check_images": "featkit.features.store",
    "ExtractJob": "featkit.features.extractor",
    "ExtractOptions": "featkit.features.extractor",
    "ExtractResult": "featkit.features.extractor",
    "MapSource": "featkit.features.mapsource",
    "extract": "featkit.features.pipeline",
    "run_job": "featkit.features.pipeline",
}

__all__ = [
    "STATUS_FAILED",
    "STATUS_OK",
    "STATUS_PENDING",
    "ExtractJob",
    "ExtractOptions",
    "ExtractResult",
    "FeatureFile",
    "FeatureWriter",
    "Head",
    "MapSource",
    "Provenance",
    "check_images",
    "extract",
    "run_job",
]

if TYPE_CHECKING:
    from featkit.features.extractor import ExtractJob, ExtractOptions, ExtractResult
    from featkit.features.mapsource import MapSource
    from featkit.features.pipeline import extract, run_job
    from featkit.features.schema import STATUS_FAILED, STATUS_OK, STATUS_PENDING, Provenance
    from featkit.features.store import FeatureFile, FeatureWriter, Head, check_images


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
