"""A Caffe net in featkit's own form: typed layer parameters, shapes, and a plain-data round trip.

Parsed prototxts and the architectures encoded in :mod:`architectures` both
become a :class:`NetSpec`; a converted ``.pth`` stores it as plain lists and
dicts (``torch.load(weights_only=True)`` reads them back), so loading a
converted model needs no prototxt and no protobuf.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

import numpy as np

from featkit.errors import FeatkitError


def f32(value: float) -> float:
    """A float as Caffe stores it (float32), so parsed and encoded parameters compare equal."""
    return float(np.float32(value))


class _Float32Fields:
    """Rounds the float fields of a frozen parameter dataclass to float32 on creation."""

    def __post_init__(self) -> None:
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if isinstance(value, float):
                object.__setattr__(self, f.name, f32(value))


Pair = tuple[int, int]
Shape = tuple[int, ...]
"""A blob's shape without the batch axis: (C, H, W) for maps, (D,) after an InnerProduct."""


@dataclass(frozen=True)
class Convolution:
    type: ClassVar[str] = "Convolution"
    num_output: int
    kernel: Pair
    stride: Pair = (1, 1)
    pad: Pair = (0, 0)
    dilation: Pair = (1, 1)
    group: int = 1
    bias: bool = True


@dataclass(frozen=True)
class Pooling:
    type: ClassVar[str] = "Pooling"
    method: str  # "MAX" or "AVE"
    kernel: Pair = (0, 0)  # ignored when global_pooling
    stride: Pair = (1, 1)
    pad: Pair = (0, 0)
    global_pooling: bool = False
    ceil: bool = True  # Caffe's default rounding of the output size


@dataclass(frozen=True)
class LRN(_Float32Fields):
    type: ClassVar[str] = "LRN"
    size: int = 5
    alpha: float = 1.0
    beta: float = 0.75
    k: float = 1.0


@dataclass(frozen=True)
class ReLU(_Float32Fields):
    type: ClassVar[str] = "ReLU"
    negative_slope: float = 0.0


@dataclass(frozen=True)
class Concat:
    type: ClassVar[str] = "Concat"
    axis: int = 1


@dataclass(frozen=True)
class InnerProduct:
    type: ClassVar[str] = "InnerProduct"
    num_output: int
    bias: bool = True
    transpose: bool = False


@dataclass(frozen=True)
class Dropout(_Float32Fields):
    type: ClassVar[str] = "Dropout"
    ratio: float = 0.5
    scale_train: bool = True


@dataclass(frozen=True)
class Softmax:
    type: ClassVar[str] = "Softmax"
    axis: int = 1


LayerParams = Convolution | Pooling | LRN | ReLU | Concat | InnerProduct | Dropout | Softmax
PARAM_TYPES: dict[str, type[LayerParams]] = {
    cls.type: cls for cls in (Convolution, Pooling, LRN, ReLU, Concat, InnerProduct, Dropout, Softmax)
}
SUPPORTED = tuple(PARAM_TYPES)


@dataclass(frozen=True)
class Layer:
    name: str
    bottom: tuple[str, ...]
    top: tuple[str, ...]
    params: LayerParams

    @property
    def type(self) -> str:
        return self.params.type


@dataclass(frozen=True)
class NetSpec:
    """The deploy net: one input blob (C, H, W) and its layers in Caffe's execution order."""

    name: str
    input: str
    input_shape: tuple[int, int, int]
    layers: tuple[Layer, ...]

    def to_plain(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "input": self.input,
            "input_shape": list(self.input_shape),
            "layers": [
                {"name": layer.name, "type": layer.type, "bottom": list(layer.bottom), "top": list(layer.top),
                 "params": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(layer.params).items()}}
                for layer in self.layers
            ],
        }

    @classmethod
    def from_plain(cls, plain: dict[str, Any]) -> NetSpec:
        layers = []
        for item in plain["layers"]:
            params_cls = PARAM_TYPES.get(item["type"])
            if params_cls is None:
                raise FeatkitError(f"converted model has a layer of type {item['type']!r}; re-run `featkit convert caffe`")
            names = {f.name for f in fields(params_cls)}
            values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v
                                      for k, v in item["params"].items() if k in names}
            layers.append(Layer(item["name"], tuple(item["bottom"]), tuple(item["top"]), params_cls(**values)))
        c, h, w = (int(v) for v in plain["input_shape"])
        return cls(str(plain["name"]), str(plain["input"]), (c, h, w), tuple(layers))


def param_shapes(layer: Layer, bottom: Shape) -> list[Shape]:
    """The blobs a layer's Caffe weights hold, in Caffe's layout (what the caffemodel must contain)."""
    p = layer.params
    if isinstance(p, Convolution):
        shapes: list[Shape] = [(p.num_output, bottom[0] // p.group, *p.kernel)]
        return shapes + [(p.num_output,)] if p.bias else shapes
    if isinstance(p, InnerProduct):
        fan_in = math.prod(bottom)
        shapes = [(fan_in, p.num_output) if p.transpose else (p.num_output, fan_in)]
        return shapes + [(p.num_output,)] if p.bias else shapes
    return []


def resolve_axis(axis: int, ndim: int) -> int:
    """Caffe's negative axes count from the end of the (N, ...) blob."""
    return axis + ndim if axis < 0 else axis


def pooled_size(size: int, kernel: int, stride: int, pad: int, ceil: bool) -> int:
    """Caffe's pooling output size: rounded up by default, and the last window must start inside image + pad."""
    span = size + 2 * pad - kernel
    out = (-(-span // stride) if ceil else span // stride) + 1
    if pad and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def top_shapes(layer: Layer, bottoms: list[Shape]) -> list[Shape]:
    """Output shapes by Caffe's rules; an impossible layer raises one clear error."""
    p = layer.params
    where = f"layer '{layer.name}' ({layer.type})"
    first = bottoms[0]
    if isinstance(p, (Convolution, Pooling, LRN)) and len(first) != 3:
        raise FeatkitError(f"{where} needs a (C, H, W) input, got {first}")
    if isinstance(p, Convolution):
        c, h, w = first
        if c % p.group or p.num_output % p.group:
            raise FeatkitError(f"{where}: {c} input and {p.num_output} output channels are not divisible by group {p.group}")
        out = [(size + 2 * pad - (dil * (k - 1) + 1)) // s + 1
               for size, k, s, pad, dil in zip((h, w), p.kernel, p.stride, p.pad, p.dilation)]
        if min(out) < 1:
            raise FeatkitError(f"{where}: kernel {p.kernel} does not fit the {h}x{w} input")
        return [(p.num_output, out[0], out[1])]
    if isinstance(p, Pooling):
        c, h, w = first
        if p.global_pooling:
            return [(c, 1, 1)]
        out = [pooled_size(size, k, s, pad, p.ceil) for size, k, s, pad in zip((h, w), p.kernel, p.stride, p.pad)]
        if min(out) < 1:
            raise FeatkitError(f"{where}: kernel {p.kernel} does not fit the {h}x{w} input")
        return [(c, out[0], out[1])]
    if isinstance(p, Concat):
        axis = resolve_axis(p.axis, len(first) + 1) - 1  # shapes carry no batch axis
        rest = {s[:axis] + s[axis + 1:] for s in bottoms}
        if len(rest) != 1 or not 0 <= axis < len(first):
            raise FeatkitError(f"{where}: inputs {bottoms} cannot be concatenated along axis {p.axis}")
        return [first[:axis] + (sum(s[axis] for s in bottoms),) + first[axis + 1:]]
    if isinstance(p, InnerProduct):
        return [(p.num_output,)]
    if isinstance(p, Softmax) and not 1 <= resolve_axis(p.axis, len(first) + 1) <= len(first):
        raise FeatkitError(f"{where}: axis {p.axis} is outside the {len(first) + 1}-d input")
    return [first]  # ReLU, LRN, Dropout, Softmax keep the shape


def blob_shapes(net: NetSpec) -> list[list[Shape]]:
    """Shapes of each layer's bottoms at the deploy input size (checks that every bottom exists)."""
    current: dict[str, Shape] = {net.input: net.input_shape}
    per_layer = []
    for layer in net.layers:
        missing = [b for b in layer.bottom if b not in current]
        if missing:
            raise FeatkitError(f"layer '{layer.name}' reads blob '{missing[0]}', which no earlier layer writes")
        bottoms = [current[b] for b in layer.bottom]
        per_layer.append(bottoms)
        for name, shape in zip(layer.top, top_shapes(layer, bottoms)):
            current[name] = shape
    return per_layer


MAX_INPUT_SIDE = 4096
"""Largest deploy input side in pixels (the released CAM nets take 224 px)."""
MAX_BLOB_ELEMENTS = 1 << 28
"""Largest blob (activations of one image, or one layer's weights): 1 GiB of float32."""
MAX_PARAMETERS = 1 << 28
"""Largest net featkit converts: 268M parameters (VGG16 with its fully connected layers has 138M)."""


def check_sizes(net: NetSpec, where: str) -> None:
    """Refuse a net whose input, blobs or parameters are too large, from the declared sizes alone (nothing
    is allocated), so a few hundred bytes of prototxt cannot ask for gigabytes."""
    c, h, w = net.input_shape
    if c != 3 or not (1 <= h <= MAX_INPUT_SIDE and 1 <= w <= MAX_INPUT_SIDE):
        raise FeatkitError(f"{where}: input {net.input_shape} is not 3 x H x W with sides in 1..{MAX_INPUT_SIDE}")
    total = 0
    for layer, bottoms in zip(net.layers, blob_shapes(net)):
        shapes = param_shapes(layer, bottoms[0]) + top_shapes(layer, bottoms)
        big = [shape for shape in shapes if math.prod(shape) > MAX_BLOB_ELEMENTS]
        if big:
            raise FeatkitError(f"{where}: layer '{layer.name}' needs a blob of shape {big[0]}, over "
                               f"{MAX_BLOB_ELEMENTS} values; featkit converts nets of ordinary size")
        total += sum(math.prod(shape) for shape in param_shapes(layer, bottoms[0]))
    if total > MAX_PARAMETERS:
        raise FeatkitError(f"{where}: the net has {total} parameters, over {MAX_PARAMETERS}; featkit converts nets "
                           "of ordinary size")


@dataclass(frozen=True)
class CaffeBlob:
    """One parameter blob of a caffemodel: flat float32 values and the shape the file declares."""

    values: np.ndarray
    shape: Shape
    legacy: bool
    """True when the shape came from the old num/channels/height/width fields (always 4-d)."""

    def fits(self, expected: Shape) -> bool:
        """Caffe's own test: legacy 4-d shapes match when padded on the left with 1s."""
        if self.legacy:
            return len(expected) <= 4 and self.shape == (1,) * (4 - len(expected)) + tuple(expected)
        return self.shape == tuple(expected)
