"""Dataset readers: one module per official layout, each registered by importing it.

``open_dataset(name, root)`` pairs the manifest ``data_manifests/<name>.toml``
with its reader; see :mod:`featkit.data.base` for the record format.
"""

from featkit.data import (  # noqa: F401  (imported so every reader registers)
    caltech,
    caltech256,
    cub,
    event8,
    folder,
    indoor67,
    scene15,
    stanford40,
    sun397,
    sun_attribute,
)
from featkit.data.base import (
    Dataset,
    DatasetReader,
    ImageRecord,
    Manifest,
    Protocol,
    load_manifest,
    manifest_names,
)
from featkit.data.detect import Detection, detect_layout
from featkit.data.registry import open_dataset, reader_names, register_reader

__all__ = [
    "Dataset",
    "DatasetReader",
    "Detection",
    "ImageRecord",
    "Manifest",
    "Protocol",
    "detect_layout",
    "load_manifest",
    "manifest_names",
    "open_dataset",
    "reader_names",
    "register_reader",
]
