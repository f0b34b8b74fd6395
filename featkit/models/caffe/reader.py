"""Reading Caffe files with :mod:`proto`: a deploy prototxt into a :class:`NetSpec`, a caffemodel into blobs.

Both layer formats are read (``layer`` with string types, the older ``layers``
with enum types), and blobs with either a ``shape`` or the legacy
num/channels/height/width dims. Anything featkit cannot reproduce exactly
(an unknown layer type, a 3-d convolution, within-channel LRN, ...) stops
the conversion with one line naming the layer.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
from google.protobuf import text_format
from google.protobuf.message import DecodeError, Message

from featkit.errors import FeatkitError
from featkit.models.caffe import proto
from featkit.models.caffe.spec import (
    LRN,
    MAX_BLOB_ELEMENTS,
    SUPPORTED,
    CaffeBlob,
    Concat,
    Convolution,
    Dropout,
    InnerProduct,
    Layer,
    LayerParams,
    NetSpec,
    Pair,
    Pooling,
    ReLU,
    Shape,
    Softmax,
    check_sizes,
)
from featkit.validation import finite_numbers

log = logging.getLogger("featkit.caffe")

V1_TYPE_NAMES = {
    "CONVOLUTION": "Convolution", "POOLING": "Pooling", "LRN": "LRN", "RELU": "ReLU", "CONCAT": "Concat",
    "INNER_PRODUCT": "InnerProduct", "DROPOUT": "Dropout", "SOFTMAX": "Softmax", "DATA": "Data",
    "IMAGE_DATA": "ImageData", "MEMORY_DATA": "MemoryData", "DUMMY_DATA": "DummyData", "HDF5_DATA": "HDF5Data",
    "WINDOW_DATA": "WindowData",
}
_DATA_TYPES = {"Data", "ImageData", "MemoryData", "DummyData", "HDF5Data", "WindowData"}
_PHASE_TEST = 1


def _layer_type(layer: Message, v1: bool) -> str:
    if v1:
        name = layer.DESCRIPTOR.fields_by_name["type"].enum_type.values_by_number[layer.type].name
        return V1_TYPE_NAMES.get(name, name)
    return str(layer.type)


def _in_test_phase(layer: Message) -> bool:
    """Caffe's NetStateRule for the TEST phase (deploy nets rarely use rules; phase is all featkit reads)."""
    if layer.include:
        return any(not rule.HasField("phase") or rule.phase == _PHASE_TEST for rule in layer.include)
    return not any(rule.HasField("phase") and rule.phase == _PHASE_TEST for rule in layer.exclude)


def _pair(where: str, what: str, values: list[int], h: int | None, w: int | None, default: int | None) -> Pair:
    """Caffe's 2-d parameter forms: one value, one per axis, or the *_h/*_w pair."""
    if h is not None or w is not None:
        if h is None or w is None:
            raise FeatkitError(f"{where}: {what}_h and {what}_w must be given together")
        return h, w
    if len(values) == 1:
        return values[0], values[0]
    if len(values) == 2:
        return values[0], values[1]
    if not values and default is not None:
        return default, default
    if not values:
        raise FeatkitError(f"{where}: no {what} given")
    raise FeatkitError(f"{where}: {len(values)} {what} values (a {len(values)}-d layer); featkit converts 2-d nets only")


def _positive(where: str, **values: tuple[int, ...]) -> None:
    """Refuse a kernel, stride, dilation or group of 0 (Caffe divides by them)."""
    for what, numbers in values.items():
        if any(v < 1 for v in numbers):
            raise FeatkitError(f"{where}: {what} must be at least 1, got {list(numbers)}")


def _opt(message: Message, field: str) -> int | None:
    return int(getattr(message, field)) if message.HasField(field) else None


def _params(layer: Message, kind: str, where: str) -> LayerParams:
    if kind == "Convolution":
        c = layer.convolution_param
        if c.axis != 1 or c.num_output < 1:
            raise FeatkitError(f"{where}: needs num_output >= 1 and axis 1 (got {c.num_output}, {c.axis})")
        conv = Convolution(
            num_output=int(c.num_output),
            kernel=_pair(where, "kernel", list(c.kernel_size), _opt(c, "kernel_h"), _opt(c, "kernel_w"), None),
            stride=_pair(where, "stride", list(c.stride), _opt(c, "stride_h"), _opt(c, "stride_w"), 1),
            pad=_pair(where, "pad", list(c.pad), _opt(c, "pad_h"), _opt(c, "pad_w"), 0),
            dilation=_pair(where, "dilation", list(c.dilation), None, None, 1),
            group=int(c.group),
            bias=bool(c.bias_term),
        )
        _positive(where, kernel=conv.kernel, stride=conv.stride, dilation=conv.dilation, group=(conv.group,))
        return conv
    if kind == "Pooling":
        p = layer.pooling_param
        method = p.DESCRIPTOR.fields_by_name["pool"].enum_type.values_by_number[p.pool].name
        if method not in ("MAX", "AVE"):
            raise FeatkitError(f"{where}: {method} pooling is not supported (MAX and AVE are)")
        if p.global_pooling:
            kernel: Pair = (0, 0)
            if p.pad or p.pad_h or p.pad_w or p.stride != 1:
                raise FeatkitError(f"{where}: global pooling takes no pad and stride 1")
        else:
            kernel = _pair(where, "kernel", [p.kernel_size] if p.HasField("kernel_size") else [],
                           _opt(p, "kernel_h"), _opt(p, "kernel_w"), None)
        has_hw_pad = p.HasField("pad_h") or p.HasField("pad_w")
        pool = Pooling(
            method=method,
            kernel=kernel,
            stride=_pair(where, "stride", [p.stride], _opt(p, "stride_h"), _opt(p, "stride_w"), 1),
            pad=(int(p.pad_h), int(p.pad_w)) if has_hw_pad else (int(p.pad), int(p.pad)),
            global_pooling=bool(p.global_pooling),
            ceil=p.round_mode == 0,
        )
        _positive(where, stride=pool.stride, **({} if pool.global_pooling else {"kernel": pool.kernel}))
        return pool
    if kind == "LRN":
        n = layer.lrn_param
        if n.norm_region != 0:
            raise FeatkitError(f"{where}: WITHIN_CHANNEL LRN is not supported (ACROSS_CHANNELS is)")
        if n.local_size % 2 == 0:
            raise FeatkitError(f"{where}: LRN local_size must be odd, as Caffe requires (got {n.local_size})")
        return LRN(size=int(n.local_size), alpha=float(n.alpha), beta=float(n.beta), k=float(n.k))
    if kind == "ReLU":
        return ReLU(negative_slope=float(layer.relu_param.negative_slope))
    if kind == "Concat":
        c = layer.concat_param
        axis = int(c.concat_dim) if c.HasField("concat_dim") and not c.HasField("axis") else int(c.axis)
        return Concat(axis=axis)
    if kind == "InnerProduct":
        ip = layer.inner_product_param
        if ip.axis != 1 or ip.num_output < 1:
            raise FeatkitError(f"{where}: needs num_output >= 1 and axis 1 (got {ip.num_output}, {ip.axis})")
        return InnerProduct(num_output=int(ip.num_output), bias=bool(ip.bias_term), transpose=bool(ip.transpose))
    if kind == "Dropout":
        d = layer.dropout_param
        return Dropout(ratio=float(d.dropout_ratio), scale_train=bool(d.scale_train))
    if kind == "Softmax":
        return Softmax(axis=int(layer.softmax_param.axis))
    if kind in _DATA_TYPES:
        raise FeatkitError(f"{where} reads training data; convert the deploy prototxt (it declares `input:` instead)")
    raise FeatkitError(f"{where}: featkit cannot convert layer type '{kind}'; supported: {', '.join(SUPPORTED)}")


MAX_NESTING = 32
"""Deepest block nesting read from a prototxt (the parser recurses once per level)."""


def _nesting(text: str) -> int:
    """Deepest ``{``/``<`` nesting outside quoted strings and ``#`` comments."""
    depth = deepest = 0
    quote = ""
    escaped = comment = False
    for char in text:
        if comment:
            comment = char != "\n"
        elif quote:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == quote:
                quote = ""
        elif char == "#":
            comment = True
        elif char in "\"'":
            quote = char
        elif char in "{<":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "}>":
            depth -= 1
    return deepest


def _read_text(path: Path) -> Any:
    raw = path.read_bytes()
    if b"\x00" in raw[:4096]:
        raise FeatkitError(f"{path} is binary; pass the deploy .prototxt (text) first, then the .caffemodel")
    text = raw.decode("utf-8", errors="replace")
    depth = max(_nesting(text), 0)
    if depth > MAX_NESTING:
        raise FeatkitError(f"cannot parse {path} as a Caffe prototxt: blocks nested {depth} deep (a deploy net "
                           f"nests a few levels; at most {MAX_NESTING})")
    net = proto.NetParameter()
    try:
        text_format.Parse(text, net)
    except text_format.ParseError as exc:
        if "no field named" not in str(exc) and "no value named" not in str(exc):
            raise FeatkitError(f"cannot parse {path} as a Caffe prototxt: {exc}") from None
        # fields outside featkit's minimal schema (engines, fork-specific options): skipped, and said so
        log.warning("%s: skipping fields featkit does not model (first: %s)", path.name, exc)
        net = proto.NetParameter()
        try:
            text_format.Parse(text, net, allow_unknown_field=True)
        except text_format.ParseError as again:
            raise FeatkitError(f"cannot parse {path} as a Caffe prototxt: {again}") from None
    return net


def _input(net: Message, layers: list[tuple[Message, bool]], path: Path) -> tuple[str, tuple[int, int, int], int]:
    """The input blob and its (C, H, W), from ``input``/``input_dim``/``input_shape`` or an Input layer."""
    dims: list[int] = []
    name = ""
    skip = 0
    if len(net.input) > 1:
        raise FeatkitError(f"{path} declares {len(net.input)} inputs; featkit converts single-input nets")
    if net.input:
        name = net.input[0]
        dims = list(net.input_shape[0].dim) if net.input_shape else list(net.input_dim)
    elif layers and not layers[0][1] and layers[0][0].type == "Input":
        first = layers[0][0]
        name = first.top[0] if first.top else ""
        dims = list(first.input_param.shape[0].dim) if first.input_param.shape else []
        skip = 1
    if not name:
        raise FeatkitError(f"{path} declares no input blob (`input:` or an Input layer); is it the deploy prototxt?")
    if len(dims) != 4:
        raise FeatkitError(f"{path}: input '{name}' needs 4 dims (N, C, H, W), got {dims}")
    return name, (int(dims[1]), int(dims[2]), int(dims[3])), skip


def parse_prototxt(path: str | Path) -> tuple[NetSpec, tuple[float, ...] | None]:
    """The deploy net in featkit's form, and the per-channel mean its transform_param gives (if any)."""
    path = Path(path)
    if not path.is_file():
        raise FeatkitError(f"deploy prototxt {path} does not exist")
    net = _read_text(path)
    entries: list[tuple[Message, bool]] = [(layer, False) for layer in net.layer] + [(layer, True) for layer in net.layers]
    if net.layer and net.layers:
        raise FeatkitError(f"{path} mixes `layer` and `layers` blocks; Caffe itself refuses such a file")
    name, shape, skip = _input(net, entries, path)
    mean: tuple[float, ...] | None = None
    layers: list[Layer] = []
    seen: set[str] = set()
    for index, (layer, v1) in enumerate(entries[skip:], start=skip):
        if not _in_test_phase(layer):
            continue
        kind = _layer_type(layer, v1)
        layer_name = layer.name or f"{kind.lower()}{index}"
        where = f"layer '{layer_name}' ({kind})"
        if layer.transform_param.mean_value:
            mean = tuple(float(v) for v in layer.transform_param.mean_value)
        params = _params(layer, kind, where)
        if layer_name in seen:
            raise FeatkitError(f"{path}: two layers are named '{layer_name}'")
        seen.add(layer_name)
        n_bottom = len(layer.bottom)
        if len(layer.top) != 1 or n_bottom < 1 or (n_bottom > 1 and kind != "Concat"):
            raise FeatkitError(f"{where} has {n_bottom} inputs and {len(layer.top)} outputs; featkit expects 1 and 1")
        layers.append(Layer(layer_name, tuple(layer.bottom), tuple(layer.top), params))
    if not layers:
        raise FeatkitError(f"{path} has no layers")
    spec = NetSpec(net.name, name, shape, tuple(layers))
    check_sizes(spec, str(path))
    if mean is not None:
        finite_numbers(mean, f"{path}: transform_param mean_value")
    return spec, mean


def _blob(blob: Message, where: str) -> CaffeBlob:
    if blob.HasField("shape"):
        shape: Shape = tuple(int(d) for d in blob.shape.dim)
        legacy = False
    else:
        shape = (int(blob.num), int(blob.channels), int(blob.height), int(blob.width))
        legacy = True
    if any(d < 0 for d in shape) or math.prod(shape) > MAX_BLOB_ELEMENTS:
        raise FeatkitError(f"{where}: the blob declares shape {shape}; not a weight blob featkit reads")
    values = np.asarray(blob.data if len(blob.data) else blob.double_data, dtype=np.float32)
    if values.size != math.prod(shape):
        raise FeatkitError(f"{where}: the blob's shape {shape} needs {math.prod(shape)} values, the file holds {values.size}")
    if not np.isfinite(values).all():
        raise FeatkitError(f"{where}: the blob holds {int((~np.isfinite(values)).sum())} NaN or infinite values; "
                           "the caffemodel is damaged")
    return CaffeBlob(values, shape, legacy)


def read_caffemodel(path: str | Path) -> dict[str, list[CaffeBlob]]:
    """Each layer's parameter blobs, by layer name (layers without blobs are left out)."""
    path = Path(path)
    if not path.is_file():
        raise FeatkitError(f"caffemodel {path} does not exist")
    net: Any = proto.NetParameter()
    try:
        net.ParseFromString(path.read_bytes())
    except (DecodeError, RuntimeError) as exc:
        raise FeatkitError(f"cannot read {path} as a binary caffemodel ({exc}); pass the deploy .prototxt first") from None
    blobs: dict[str, list[CaffeBlob]] = {}
    for layer in list(net.layer) + list(net.layers):
        if layer.blobs and layer.name not in blobs:
            blobs[layer.name] = [_blob(b, f"{path.name}, layer '{layer.name}' blob {i}") for i, b in enumerate(layer.blobs)]
    if not blobs:
        raise FeatkitError(f"{path} holds no weights; is it the .caffemodel file?")
    return blobs


def read_mean_file(path: str | Path) -> tuple[float, float, float]:
    """Per-channel mean (B, G, R) of a Caffe mean image (``.binaryproto``, one BlobProto)."""
    path = Path(path)
    if not path.is_file():
        raise FeatkitError(f"mean file {path} does not exist")
    blob: Any = proto.BlobProto()
    try:
        blob.ParseFromString(path.read_bytes())
        parsed = _blob(blob, str(path))
    except (DecodeError, RuntimeError) as exc:
        raise FeatkitError(f"cannot read {path} as a Caffe mean .binaryproto ({exc})") from None
    channels = parsed.shape[-3] if len(parsed.shape) >= 3 else 0
    if parsed.values.size == 0 or channels != 3:
        raise FeatkitError(f"{path} is not a 3-channel mean image (shape {parsed.shape})")
    b, g, r = parsed.values.reshape(3, -1).mean(axis=1).tolist()
    return float(b), float(g), float(r)
