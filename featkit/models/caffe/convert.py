"""`featkit convert caffe`: a deploy prototxt + caffemodel -> a self-contained featkit .pth."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from featkit.errors import FeatkitError
from featkit.models.caffe.architectures import CAFFE_MODELS, first_difference, identify
from featkit.models.caffe.model import (
    IMAGENET_MEAN_BGR,
    ConvertedModel,
    default_converted_path,
    save_converted,
)
from featkit.models.caffe.net import CaffeNet, find_gap
from featkit.models.caffe.reader import parse_prototxt, read_caffemodel, read_mean_file
from featkit.models.weights import sha256_of
from featkit.outputs import check_output_file, check_output_folder
from featkit.validation import finite_numbers

log = logging.getLogger("featkit.caffe")


@dataclass(frozen=True)
class ConvertResult:
    path: Path
    name: str
    """Registered backbone name, or '' for a Caffe net that is not one of the released CAM models."""
    net_name: str
    layers: int
    parameters: int
    feature_blob: str
    channels: int
    map_size: tuple[int, int]
    """Size of the feature maps at the deploy input size."""
    input_size: tuple[int, int]
    mean_bgr: tuple[float, float, float]
    mean_source: str


def _mean(values: Sequence[float] | None, mean_file: str | Path | None,
          from_prototxt: tuple[float, ...] | None) -> tuple[tuple[float, float, float], str]:
    if values is not None and mean_file is not None:
        raise FeatkitError("give the mean either as values (mean=B,G,R) or as a file (mean_file=PATH), not both")
    if mean_file is not None:
        return read_mean_file(mean_file), f"mean file {Path(mean_file).name} (per-channel average)"
    source = "given"
    if values is None and from_prototxt is not None:
        values, source = from_prototxt, "prototxt transform_param"
    if values is None:
        return IMAGENET_MEAN_BGR, "ImageNet default (B, G, R) = (104, 117, 123)"
    if len(values) == 1:
        values = [values[0]] * 3
    if len(values) != 3:
        raise FeatkitError(f"the mean needs 1 or 3 values (B, G, R), got {len(values)}")
    b, g, r = finite_numbers(values, "mean=B,G,R")
    return (b, g, r), source


def convert_caffe(
    deploy: str | Path,
    weights: str | Path,
    output: str | Path | None = None,
    name: str | None = None,
    mean: Sequence[float] | None = None,
    mean_file: str | Path | None = None,
) -> ConvertResult:
    """Parse ``deploy``, load ``weights`` into the equivalent torch net, write a featkit .pth.

    ``name`` is the registered backbone the file is for; left out, it is
    recognised from the architecture. ``output`` defaults to the place that
    backbone loads from without --weights. The mean (B, G, R, 0-255) comes
    from ``mean``, ``mean_file``, the prototxt, or Caffe's ImageNet mean.
    """
    deploy, weights = Path(deploy), Path(weights)
    spec, prototxt_mean = parse_prototxt(deploy)
    recognised = identify(spec)
    if name is None:
        name = recognised or ""
    elif name not in CAFFE_MODELS:
        raise FeatkitError(f"name={name!r} is not a released CAM model; choose one of {', '.join(CAFFE_MODELS)}")
    elif recognised != name:
        info = CAFFE_MODELS[name]
        raise FeatkitError(f"{deploy.name} is not the {info.title} deploy net "
                           f"({first_difference(spec, info.architecture())}); leave out name to convert it as it is")
    if output is None:
        if not name:
            raise FeatkitError(f"{deploy.name} is not one of the released CAM models ({', '.join(CAFFE_MODELS)}); "
                               "pass output=FILE.pth")
        output = default_converted_path(name)
        check_output_folder(Path(output).parent)  # the weights cache: created on save
    else:
        check_output_file(output, existing="allow", suffixes=(".pth", ".pt"), example=f"{name or 'model'}.pth")
    mean_bgr, mean_source = _mean(mean, mean_file, prototxt_mean)
    net = CaffeNet(spec)  # of bounded size: parse_prototxt checked the declared sizes
    gap = find_gap(net)
    blobs = read_caffemodel(weights)
    net.load_caffe_blobs(blobs, weights.name)
    unused = sorted(set(blobs) - set(net.expected_blobs()))
    if unused:
        log.info("%s: ignoring %d layers the deploy net does not have (%s)", weights.name, len(unused),
                 ", ".join(unused[:5]))
    source = {"deploy": str(deploy.resolve()), "deploy_sha256": sha256_of(deploy),
              "weights": str(weights.resolve()), "weights_sha256": sha256_of(weights)}
    path = Path(output)
    save_converted(path, ConvertedModel(name, spec, mean_bgr, mean_source, source, net.state_dict()))
    _, h, w = spec.input_shape
    return ConvertResult(path, name, spec.name, len(spec.layers), sum(p.numel() for p in net.parameters()),
                         gap.feature_blob, gap.channels, gap.map_size, (h, w), mean_bgr, mean_source)
