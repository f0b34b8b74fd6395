"""Backbones from any ``nn.Module`` factory: the user's own networks and timm's (``timm:NAME``).

A factory builds the network; featkit probes the shape of its maps once (on the
meta device: no memory, no weights), so the spec knows K and the stride, and
refuses a network whose features are not a spatial (N, K, h, w) map. The head is
kept for CAMs only when it is one linear layer applied to the GAP vector.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import torch
from torch import nn

from featkit.errors import FeatkitError
from featkit.models.names import RANDOM
from featkit.models.registry import IMAGENET_MEAN, IMAGENET_STD, Backbone, BackboneSpec, WeightsInfo
from featkit.models.registry import register_backbone as register_spec
from featkit.models.weights import load_into, read_state_dict

Factory = Callable[[bool], nn.Module]
"""``factory(pretrained)``: the network, with its default weights when ``pretrained`` (else untrained)."""
HeadOf = Callable[[nn.Module, int], "nn.Linear | None"]
"""``head_of(network, channels)``: its linear classifier on the GAP vector, or None."""


class ModuleFeatures(nn.Module):
    """The body of a network: its ``method`` (``forward_features``, or ``forward`` for a plain module)."""

    def __init__(self, net: nn.Module, method: str = "forward_features") -> None:
        super().__init__()
        self.net = net
        self.method = method

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return getattr(self.net, self.method)(x)


def state_digest(*modules: nn.Module) -> str:
    """sha256 of modules' parameters and buffers (names and bytes): weights that came from no single file."""
    digest = hashlib.sha256()
    for module in modules:
        for name, tensor in module.state_dict().items():
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def probe_maps(name: str, factory: Factory, method: str, input_size: int) -> tuple[int, int]:
    """(channels K, stride) of the network's maps at ``input_size``, from a forward pass on the meta device.

    Refuses features that are not an (N, K, h, w) map: a ViT's tokens (N, T, C) or a Swin's channels-last map.
    """
    with torch.device("meta"):
        net = factory(False)
        out = getattr(net, method)(torch.empty(1, 3, input_size, input_size))
    if not isinstance(out, torch.Tensor):
        raise FeatkitError(f"{name}: {method} returns a {type(out).__name__}, not a (N, K, h, w) feature map tensor")
    channels = getattr(net, "num_features", None)
    if out.ndim != 4 or (channels is not None and out.shape[1] != channels):
        shape = "x".join(str(v) for v in out.shape[1:])
        raise FeatkitError(
            f"{name} gives features of shape {shape}, not a spatial (K, h, w) map (a vision transformer's tokens "
            "or a channels-last map); featkit needs a CNN whose last stage feeds global average pooling: "
            "choose a ResNet, ConvNeXt, EfficientNet, RegNet, ... (featkit.models.timm_models() lists them)"
        )
    info = getattr(net, "feature_info", None)  # timm's own record of each stage's reduction
    try:
        stride = int(info[-1]["reduction"])  # type: ignore[index]
    except (TypeError, KeyError, IndexError, ValueError):
        stride = max(1, round(input_size / int(out.shape[-1])))
    return int(out.shape[1]), stride


def module_spec(
    name: str,
    factory: Factory,
    *,
    input_size: int = 224,
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
    method: str = "forward_features",
    head_of: HeadOf | None = None,
    feature_layer: str = "",
    weights_source: str = "the factory's own weights",
    head_label: str = "",
    default_weights_available: Callable[[], bool] = lambda: True,
    untrained: bool = True,
    interpolation: str = "bilinear",
) -> BackboneSpec:
    """The spec of a backbone built by ``factory``; K and the stride are probed (see :func:`probe_maps`).

    ``untrained``: ``factory(False)`` gives untrained parameters (else ``weights='random'`` is refused).
    """
    channels, stride = probe_maps(name, factory, method, input_size)

    def build(weights: str | None) -> tuple[Backbone, WeightsInfo]:
        if weights == RANDOM:
            if not untrained:
                raise FeatkitError(f"backbone {name!r} is built by its factory with its own weights; "
                                   "weights='random' is not available for it (pass weights=PATH or none)")
            net, info = factory(False), WeightsInfo(RANDOM, "")
        elif weights is None:
            net = factory(True)
            info = WeightsInfo(f"{name}:default", state_digest(net))
        else:
            net = factory(False)
            state, info = read_state_dict(weights)
            load_into(net, state, str(weights))
        net.eval()
        head = head_of(net, channels) if head_of is not None else None
        return Backbone(ModuleFeatures(net, method), head), info

    return BackboneSpec(
        name=name, channels=channels, stride=stride, input_size=input_size,
        feature_layer=feature_layer or method, weights_source=weights_source, build=build,
        default_weights_available=default_weights_available, mean=mean, std=std, head=head_label,
        interpolation=interpolation,
    )


def attribute_head(attribute: str | None) -> HeadOf | None:
    """``head_of`` for a named linear attribute of the network (checked: nn.Linear with K inputs)."""
    if attribute is None:
        return None

    def head_of(net: nn.Module, channels: int) -> nn.Linear | None:
        layer = net.get_submodule(attribute)
        if not isinstance(layer, nn.Linear) or layer.in_features != channels:
            raise FeatkitError(f"head {attribute!r} must be an nn.Linear on the {channels} GAP features, "
                               f"got {layer}")
        return layer

    return head_of


def register_backbone(
    name: str | BackboneSpec,
    factory: Callable[[], nn.Module] | None = None,
    *,
    input_size: int = 224,
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
    features: str | None = None,
    head: str | None = None,
    weights_source: str = "the factory's own weights",
) -> BackboneSpec:
    """Register any ``nn.Module`` as the backbone ``name`` (``ExtractOptions(model=name)``).

    ``factory()`` builds the network with its weights; ``features`` names its method that gives the conv
    maps (N, K, h, w) (default ``forward_features`` when it has one, else ``forward``); ``head`` names an
    ``nn.Linear`` applied to the GAP vector, whose rows are then CAM weights (``'head'`` as the classifier).
    ``weights=PATH`` loads a state dict of the same network over the factory's. K and the stride are
    measured, and a network whose features are not a spatial map is refused.
    A :class:`BackboneSpec` alone (``register_backbone(spec)``) is registered as it is.
    """
    if isinstance(name, BackboneSpec):
        return register_spec(name)
    if factory is None:
        raise FeatkitError(f"register_backbone({name!r}) needs factory=, a function that builds the nn.Module")
    with torch.device("meta"):
        probe = factory()
    method = features or ("forward_features" if hasattr(probe, "forward_features") else "forward")
    if not callable(getattr(probe, method, None)):
        raise FeatkitError(f"{type(probe).__name__} has no method {method!r}; give features='METHOD' that returns "
                           "the conv maps (N, K, h, w)")
    spec = module_spec(name, lambda pretrained: factory(), input_size=input_size, mean=mean, std=std,
                       method=method, head_of=attribute_head(head), feature_layer=method,
                       weights_source=weights_source, head_label=f"{head} of {type(probe).__name__}" if head else "",
                       untrained=False)
    return register_spec(spec)
