"""Backbone registry: named specs (timm style) that build a :class:`Backbone`.

A spec says everything a features file must record about the network:
channels K, map stride, input size, normalization, where the weights come
from. Registering the same name twice is an error.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch import nn

from featkit.errors import FeatkitError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Backbone(nn.Module):
    """A CNN cut at its last conv layer, plus its own linear head when it has one.

    ``forward_features`` gives the maps f_k(x, y) (N, K, h, w); GAP of them is
    the feature F_k; ``head`` (C0, K) maps F to class scores, so the backbone's
    own CAMs work before any SVM is trained. ``head`` is None where the original
    classifier is not a single linear layer after GAP (its weights would not be
    valid CAM weights).
    """

    def __init__(self, body: nn.Module, head: nn.Linear | None) -> None:
        super().__init__()
        self.body = body
        self.head = head

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.head is None:
            raise FeatkitError("this backbone has no linear head after GAP; train an SVM for class scores")
        return self.head(self.forward_features(x).mean(dim=(2, 3)))


@dataclass(frozen=True)
class WeightsInfo:
    """Where the loaded weights came from: written into every output file."""

    identifier: str
    sha256: str


@dataclass(frozen=True)
class BackboneSpec:
    """Everything about a named backbone except its parameters."""

    name: str
    channels: int
    stride: int
    input_size: int
    feature_layer: str
    weights_source: str
    """Human-readable origin of the default weights."""
    build: Callable[[str | None], tuple[Backbone, WeightsInfo]]
    """``build(weights)``: weights None = default source, a file path, or 'random'."""
    default_weights_available: Callable[[], bool]
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    head: str = "imagenet-1k"
    """What the backbone's own head predicts ('' when it has none)."""
    listed: bool = True
    """Shown by ``featkit models`` (False: for tests only)."""
    interpolation: str = "bilinear"
    """Resampling of the resize to the input size the weights were trained with (timm's ``pretrained_cfg``)."""


_REGISTRY: dict[str, BackboneSpec] = {}


_RESOLVERS: dict[str, Callable[[str], BackboneSpec]] = {}
"""``prefix`` -> the function that makes the spec of ``prefix:NAME`` (``timm:resnet18``) on first use."""


def register_backbone(spec: BackboneSpec) -> BackboneSpec:
    if spec.name in _REGISTRY:
        raise ValueError(f"a backbone named {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def register_resolver(prefix: str, resolve: Callable[[str], BackboneSpec]) -> None:
    """Names ``prefix:ANYTHING`` are specs made by ``resolve(name)`` (a family too large to register one by one)."""
    if prefix in _RESOLVERS:
        raise ValueError(f"a backbone family {prefix!r} is already registered")
    _RESOLVERS[prefix] = resolve


def _register_shipped() -> None:
    """Import the modules that register featkit's own backbones (once; they import torchvision and timm lazily)."""
    from featkit.models import builders, timm_backbones, tiny  # noqa: F401


def backbone_names() -> list[str]:
    _register_shipped()
    return list(_REGISTRY)


def get_backbone_spec(name: str) -> BackboneSpec:
    _register_shipped()
    prefix = name.split(":", 1)[0] if ":" in name else None
    if prefix in _RESOLVERS:
        return _RESOLVERS[prefix](name)
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(_REGISTRY)
        families = "".join(f", {p}:NAME" for p in _RESOLVERS)
        raise FeatkitError(f"unknown backbone '{name}'; choose one of: {known}{families} "
                           "(see featkit.models.backbone_names())") from None


def load_backbone(
    name: str, weights: str | None = None, layer: str | None = None
) -> tuple[BackboneSpec, Backbone, WeightsInfo]:
    """Build ``name`` with its weights, in eval mode.

    ``layer`` (a module name of the body, as ``named_modules`` gives it) cuts the network there: its
    output is the feature map (GAP features of an inner stage); the spec then says that layer, its K and
    stride, and no head (an inner layer has no classifier of its own).
    """
    spec = get_backbone_spec(name)
    model, info = spec.build(weights)
    model.eval()
    if not layer or layer == spec.feature_layer:
        return spec, model, info
    inner = Backbone(LayerBody(model.body, layer), None).eval()
    with torch.inference_mode():
        out = inner.forward_features(torch.zeros(1, 3, spec.input_size, spec.input_size))
    spec = replace(spec, feature_layer=layer, channels=int(out.shape[1]),
                   stride=max(1, round(spec.input_size / int(out.shape[-1]))), head="")
    return spec, inner, info


def find_layer(body: nn.Module, name: str) -> nn.Module:
    """The module ``name`` of a backbone body; a clear error lists some of the names there are."""
    modules = dict(body.named_modules())
    if not name or name not in modules:
        names = [n for n in modules if n]
        shown = ", ".join(names[:4] + ["..."] + names[-3:]) if len(names) > 8 else ", ".join(names)
        raise FeatkitError(f"the backbone has no layer {name!r}; use one of {shown} (module names of its body)")
    return modules[name]


class _Stop(Exception):
    """Raised by the hook once the asked layer has run: the rest of the network is not computed."""


class LayerBody(nn.Module):
    """A backbone body cut at its module ``name``: runs the body until that module and returns its output."""

    def __init__(self, body: nn.Module, name: str) -> None:
        super().__init__()
        self.body = body
        self.name = name
        self.layer = find_layer(body, name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        captured: list[object] = []

        def stop(_module: nn.Module, _inputs: object, output: object) -> None:
            captured.append(output)
            raise _Stop

        handle = self.layer.register_forward_hook(stop)
        try:
            self.body(x)
        except _Stop:
            pass
        finally:
            handle.remove()
        out = captured[0] if captured else None
        if not isinstance(out, torch.Tensor) or out.ndim != 4:
            what = "does not run in the forward pass" if not captured else "does not give an (N, K, h, w) map"
            raise FeatkitError(f"layer {self.name!r} {what}; choose a convolutional stage of the body")
        return out
