"""Converted Caffe models on disk (.pth) and the featkit backbones built from them.

A converted file is a plain dict that ``torch.load(weights_only=True)`` reads:
the parsed layer list (so no prototxt is needed to load it), the BGR mean the
net was trained with, where the Caffe files came from (with sha256), and the
state dict of :class:`CaffeNet`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from featkit.errors import FeatkitError
from featkit.models.caffe.architectures import CAFFE_MODELS
from featkit.models.caffe.net import CaffeBody, CaffeNet, find_gap, head_of
from featkit.models.caffe.spec import NetSpec
from featkit.models.registry import Backbone, WeightsInfo
from featkit.models.weights import load_into, sha256_of
from featkit.outputs import atomic_output

FORMAT = "featkit-caffe"
VERSION = 1
IMAGENET_MEAN_BGR = (104.0, 117.0, 123.0)
"""Caffe's ImageNet per-channel mean (B, G, R, 0-255), used by the CAM models' own demo code."""


def default_converted_path(name: str) -> Path:
    """Where `featkit convert caffe` puts a released model by default, and where its backbone looks."""
    return Path(torch.hub.get_dir()) / "featkit" / f"{name}.pth"


def convert_hint(name: str) -> str:
    """The command that makes the converted file of a released model."""
    info = CAFFE_MODELS[name]
    return f"`featkit convert caffe {info.deploy} {info.caffemodel}` with name='{name}'"


@dataclass(frozen=True)
class ConvertedModel:
    """The content of a converted .pth."""

    name: str
    """The registered backbone it is for ('' for another Caffe net)."""
    spec: NetSpec
    mean_bgr: tuple[float, float, float]
    mean_source: str
    source: dict[str, str]
    state_dict: dict[str, torch.Tensor]

    def net(self, origin: str = "the converted model") -> CaffeNet:
        net = CaffeNet(self.spec)
        load_into(net, self.state_dict, origin)
        return net.eval()


def save_converted(path: Path, model: ConvertedModel) -> None:
    """Write atomically, so an interrupted conversion never leaves a half file where backbones look."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "name": model.name,
        "net": model.spec.to_plain(),
        "mean_bgr": list(model.mean_bgr),
        "mean_source": model.mean_source,
        "source": dict(model.source),
        "state_dict": model.state_dict,
    }
    with atomic_output(path) as tmp:
        try:
            torch.save(payload, tmp)
        except RuntimeError as exc:  # torch's zip writer reports a failed write this way
            raise OSError(str(exc).splitlines()[0] if str(exc) else "write failed") from exc


def load_converted(path: str | Path) -> ConvertedModel:
    file = Path(path)
    if not file.is_file():
        raise FeatkitError(f"converted model {file} does not exist; make it with "
                           f"`featkit convert caffe DEPLOY.prototxt WEIGHTS.caffemodel` and output={file}")
    try:
        obj: Any = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file
        raise FeatkitError(f"cannot read {file} ({type(exc).__name__}); expected a file from `featkit convert caffe`") from exc
    if not isinstance(obj, Mapping) or obj.get("format") != FORMAT:
        raise FeatkitError(f"{file} is not a converted Caffe model (no layer list inside); make one with "
                           "`featkit convert caffe DEPLOY.prototxt WEIGHTS.caffemodel`")
    if int(obj.get("version", 0)) > VERSION:
        raise FeatkitError(f"{file} was written by a newer featkit (format {obj['version']}); upgrade featkit")
    b, g, r = (float(v) for v in obj["mean_bgr"])
    return ConvertedModel(
        name=str(obj["name"]),
        spec=NetSpec.from_plain(obj["net"]),
        mean_bgr=(b, g, r),
        mean_source=str(obj.get("mean_source", "")),
        source={str(k): str(v) for k, v in obj.get("source", {}).items()},
        state_dict=dict(obj["state_dict"]),
    )


def caffe_backbone(net: CaffeNet, mean_bgr: tuple[float, float, float]) -> Backbone:
    """Body: pixels -> BGR/mean -> net up to the maps GAP reads; head: the InnerProduct after GAP."""
    gap = find_gap(net)
    return Backbone(CaffeBody(net, mean_bgr, gap), head_of(net, gap))


def random_backbone(name: str) -> Backbone:
    """A released architecture with untrained weights (for tests and smoke runs)."""
    return caffe_backbone(CaffeNet(CAFFE_MODELS[name].architecture()), IMAGENET_MEAN_BGR)


def backbone_from_file(name: str, path: str | Path) -> tuple[Backbone, WeightsInfo]:
    """The backbone ``name`` from a converted file, refusing a file converted for another model."""
    file = Path(path)
    if file.suffix == ".caffemodel":
        raise FeatkitError(f"{file} is a Caffe file; convert it first: {convert_hint(name)} and output=MODEL.pth")
    model = load_converted(file)
    if model.name != name:
        holds = f"the {model.name} model" if model.name else f"a Caffe net ('{model.spec.name}') that is not {name}"
        fix = f"use model='{model.name}'" if model.name else f"convert the {CAFFE_MODELS[name].title} files"
        raise FeatkitError(f"{file} holds {holds}; {fix}")
    net = model.net(str(file))
    return caffe_backbone(net, model.mean_bgr), WeightsInfo(str(file.resolve()), sha256_of(file))
