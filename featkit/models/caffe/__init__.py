"""The authors' own Caffe networks without Caffe: read deploy prototxts and caffemodels, run them in torch.

``convert_caffe`` (behind ``featkit convert caffe``) needs the ``protobuf``
package; loading a converted .pth and building its backbone do not, so this
package imports the reader only when a conversion runs.
"""

from __future__ import annotations

from typing import Any

from featkit.models.caffe.architectures import CAFFE_MODELS, CaffeModelInfo, identify
from featkit.models.caffe.model import (
    IMAGENET_MEAN_BGR,
    ConvertedModel,
    backbone_from_file,
    caffe_backbone,
    convert_hint,
    default_converted_path,
    load_converted,
    random_backbone,
)
from featkit.models.caffe.net import CaffeNet, find_gap
from featkit.models.caffe.spec import NetSpec

__all__ = [
    "CAFFE_MODELS",
    "IMAGENET_MEAN_BGR",
    "CaffeModelInfo",
    "CaffeNet",
    "ConvertResult",
    "ConvertedModel",
    "NetSpec",
    "backbone_from_file",
    "caffe_backbone",
    "convert_caffe",
    "convert_hint",
    "default_converted_path",
    "find_gap",
    "identify",
    "load_converted",
    "random_backbone",
]


def __getattr__(name: str) -> Any:
    if name in ("convert_caffe", "ConvertResult"):
        from featkit.models.caffe import convert

        return getattr(convert, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
