"""``timm:NAME``: any timm CNN as a backbone (the optional extra ``featkit[timm]``).

Mean, std and input size come from the model's ``pretrained_cfg``; the body is
``forward_features``; the classifier is kept as the head for CAMs when timm's
own ``forward_head`` is exactly that linear layer on the GAP vector (ResNet,
EfficientNet, RegNet, ...; not ConvNeXt, whose head normalises after pooling).
Weights: ``weights=PATH`` (.pth or .safetensors), or timm's own (its cache, or
a download where a network exists). Vision transformers are refused: their
tokens are not a spatial map.
"""

from __future__ import annotations

import fnmatch
import functools
from dataclasses import dataclass
from types import ModuleType

import torch
from torch import nn

from featkit.errors import FeatkitError
from featkit.models.custom import module_spec, probe_maps
from featkit.models.registry import BackboneSpec, register_resolver

PREFIX = "timm"
PROBE_AT_MOST = 40
"""``timm_models(pattern)`` probes each match's maps (K, stride) when at most this many match."""


def timm_module() -> ModuleType:
    """The timm package, or one line saying how to install it."""
    try:
        import timm
    except ImportError:
        raise FeatkitError("timm backbones need the timm package: pip install 'featkit[timm]'") from None
    return timm


def _config(arch: str) -> dict[str, object]:
    cfg = timm_module().models.get_pretrained_cfg(arch)
    return cfg.to_dict() if cfg is not None else {}


def _factory(arch: str, pretrained: bool) -> nn.Module:
    timm = timm_module()
    if not pretrained:
        return timm.create_model(arch, pretrained=False)
    try:
        return timm.create_model(arch, pretrained=True)
    except Exception as exc:  # hub, network and file errors of many types
        raise FeatkitError(
            f"cannot get timm's weights of {arch} ({type(exc).__name__}: no network and not in timm's cache?); "
            "pass weights=PATH to a .pth or .safetensors state dict of this model"
        ) from exc


def _gap_linear_head(net: nn.Module, channels: int) -> nn.Linear | None:
    """The classifier when ``forward_head`` is that linear layer on the GAP vector (checked numerically)."""
    get = getattr(net, "get_classifier", None)
    classifier = get() if get is not None else None
    if not isinstance(classifier, nn.Linear) or classifier.in_features != channels:
        return None
    maps = torch.randn(2, channels, 3, 3, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = classifier(maps.mean(dim=(2, 3)))
        got = net.forward_head(maps)  # type: ignore[operator]
    return classifier if torch.allclose(got, expected, rtol=1e-4, atol=1e-5) else None


def _cached(arch: str) -> bool:
    """Whether timm's own weights of ``arch`` are in the Hugging Face cache (no download needed)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    hub_id = _config(arch).get("hf_hub_id")
    if not hub_id:
        return False
    return any(isinstance(try_to_load_from_cache(str(hub_id), f), str)
               for f in ("model.safetensors", "pytorch_model.bin"))


def _interpolation(cfg: dict[str, object]) -> str:
    """The config's resize filter, when featkit's image reader has it (else bilinear, as for every backbone)."""
    from featkit.data.images import INTERPOLATIONS

    name = str(cfg.get("interpolation") or "bilinear")
    return name if name in INTERPOLATIONS else "bilinear"


@functools.cache
def timm_spec(name: str) -> BackboneSpec:
    """The spec of ``timm:ARCH`` (built once per name)."""
    arch = name.split(":", 1)[1]
    timm = timm_module()
    if arch not in timm.list_models():
        close = timm.list_models(f"*{arch[:4]}*")[:5]
        hint = f" (similar: {', '.join(close)})" if close else ""
        raise FeatkitError(f"timm has no model {arch!r}{hint}; list them with featkit.models.timm_models(pattern)")
    cfg = _config(arch)
    size = int(cfg.get("input_size", (3, 224, 224))[-1])  # type: ignore[index]
    mean = tuple(float(v) for v in cfg.get("mean", (0.485, 0.456, 0.406)))  # type: ignore[attr-defined]
    std = tuple(float(v) for v in cfg.get("std", (0.229, 0.224, 0.225)))  # type: ignore[attr-defined]
    tag = f".{cfg['tag']}" if cfg.get("tag") else ""
    return module_spec(
        name, functools.partial(_factory, arch), input_size=size, mean=mean, std=std,  # type: ignore[arg-type]
        head_of=_gap_linear_head, feature_layer="forward_features",
        weights_source=f"timm {arch}{tag} (timm's cache, a download, or --weights PATH)",
        head_label="imagenet-1k" if cfg.get("num_classes") == 1000 else f"{cfg.get('num_classes', 0)} classes",
        default_weights_available=functools.partial(_cached, arch),
        interpolation=_interpolation(cfg),
    )


register_resolver(PREFIX, timm_spec)


@dataclass(frozen=True)
class TimmModel:
    """One row of :func:`timm_models`: K and stride are 0 when the pattern matched too many to probe."""

    name: str
    input_size: int
    interpolation: str
    channels: int = 0
    stride: int = 0


def timm_models(pattern: str = "*") -> list[TimmModel]:
    """timm models matching ``pattern`` (fnmatch) whose features are a spatial map, i.e. that ``timm:NAME`` takes.

    A model qualifies when its pretrained config has a pooled grid; when at most :data:`PROBE_AT_MOST`
    match, each is also probed on the meta device (K, stride; channels-last maps such as Swin's are dropped).
    """
    timm = timm_module()
    names = [n for n in timm.list_models() if fnmatch.fnmatch(n, pattern)]
    rows = []
    for arch in names:
        cfg = _config(arch)
        if not cfg.get("pool_size"):
            continue
        size = int(cfg.get("input_size", (3, 224, 224))[-1])  # type: ignore[index]
        rows.append(TimmModel(arch, size, str(cfg.get("interpolation", ""))))
    if len(rows) > PROBE_AT_MOST:
        return rows
    probed = []
    for row in rows:
        try:
            channels, stride = probe_maps(f"timm:{row.name}", functools.partial(_factory, row.name),
                                          "forward_features", row.input_size)
        except Exception:  # noqa: BLE001 - a model that cannot even be probed is not listed as usable
            continue
        probed.append(TimmModel(row.name, row.input_size, row.interpolation, channels, stride))
    return probed
