"""Stage 1b: backbones, a registry of named CNNs cut at the last conv layer that feeds GAP.

The registry and the networks are imported on first use (``DEFAULT_BACKBONE``
and ``RANDOM`` are not), so the CLI starts without torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from featkit.lazy import lazy_exports
from featkit.models.names import DEFAULT_BACKBONE, RANDOM

_EXPORTS: dict[str, str] = {
    "CAFFE_MODELS": "featkit.models.caffe",
    "CaffeNet": "featkit.models.caffe",
    "load_converted": "featkit.models.caffe",
    "EfficientNetLite": "featkit.models.efficientnet_lite",
    "Backbone": "featkit.models.registry",
    "BackboneSpec": "featkit.models.registry",
    "WeightsInfo": "featkit.models.registry",
    "backbone_names": "featkit.models.registry",
    "get_backbone_spec": "featkit.models.registry",
    "load_backbone": "featkit.models.registry",
    "register_backbone": "featkit.models.custom",
    "timm_models": "featkit.models.timm_backbones",
}

__all__ = [
    "CAFFE_MODELS",
    "DEFAULT_BACKBONE",
    "RANDOM",
    "Backbone",
    "BackboneSpec",
    "CaffeNet",
    "EfficientNetLite",
    "WeightsInfo",
    "backbone_names",
    "get_backbone_spec",
    "load_backbone",
    "load_converted",
    "register_backbone",
    "timm_models",
]

if TYPE_CHECKING:
    from featkit.models.caffe import CAFFE_MODELS, CaffeNet, load_converted
    from featkit.models.custom import register_backbone
    from featkit.models.efficientnet_lite import EfficientNetLite
    from featkit.models.registry import (
        Backbone,
        BackboneSpec,
        WeightsInfo,
        backbone_names,
        get_backbone_spec,
        load_backbone,
    )
    from featkit.models.timm_backbones import timm_models


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
