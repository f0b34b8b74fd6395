"""Stage 2 of the pipeline: images -> GAP features (and conv maps) in features.h5, and reading them back.

``schema`` (provenance and key sets) < ``store`` (writer, reader) < ``extract``
(one process) < ``distributed`` (shards and merge) < ``pipeline`` (the entry
points); ``mapsource`` gives conv maps stored or recomputed.
"""

from featkit.features.extractor import ExtractJob, ExtractOptions, ExtractResult
from featkit.features.mapsource import MapSource
from featkit.features.pipeline import extract, run_job
from featkit.features.schema import STATUS_FAILED, STATUS_OK, STATUS_PENDING, Provenance
from featkit.features.store import FeatureFile, FeatureWriter, Head, check_images

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
