"""Stage 1b: backbones, a registry of named CNNs cut at the last conv layer that feeds GAP."""

from featkit.models import builders as _builders  # noqa: F401  (registers the backbones)
from featkit.models import timm_backbones as _timm  # noqa: F401  (the timm:NAME family; timm imported on use)
from featkit.models import tiny as _tiny  # noqa: F401  (registers the tiny test backbone)
from featkit.models.builders import RANDOM
from featkit.models.caffe import CAFFE_MODELS, CaffeNet, load_converted
from featkit.models.efficientnet_lite import EfficientNetLite
from featkit.models.registry import (
    Backbone,
    BackboneSpec,
    WeightsInfo,
    backbone_names,
    get_backbone_spec,
    load_backbone,
    register_backbone,
)

DEFAULT_BACKBONE = "efficientnet_lite0"

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
]
