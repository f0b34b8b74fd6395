"""A Caffe net as one torch module: layers run in prototxt order over named blobs.

In-place layers (top == bottom, as Caffe writes ReLU and Dropout) simply
rebind the blob's name, which is what Caffe computes. :func:`find_gap`
locates the global average pooling that the CAM networks put after their
last conv layer, so the part before it becomes a featkit backbone body and
the InnerProduct after it the backbone's linear head.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from featkit.errors import FeatkitError
from featkit.models.caffe import spec as S
from featkit.models.caffe.layers import CaffeInnerProduct, CaffeInput, make_module


def module_key(layer_name: str) -> str:
    """The ModuleDict key (and state-dict prefix) of a Caffe layer: its name, '.' made '_'."""
    return layer_name.replace(".", "_")


class CaffeNet(nn.Module):
    """Every layer of a deploy net; ``forward`` takes Caffe's input blob (BGR, mean subtracted)."""

    def __init__(self, spec: S.NetSpec) -> None:
        super().__init__()
        self.spec = spec
        self.bottom_shapes = S.blob_shapes(spec)
        self.layers = nn.ModuleDict()
        for layer, bottoms in zip(spec.layers, self.bottom_shapes):
            key = module_key(layer.name)
            if key in self.layers:
                raise FeatkitError(f"layers '{layer.name}' and another one map to the same module name '{key}'")
            self.layers[key] = make_module(layer, bottoms)
        self._keys = [module_key(layer.name) for layer in spec.layers]
        self.output = spec.layers[-1].top[0]

    def run(self, data: torch.Tensor, steps: Sequence[int], output: str) -> torch.Tensor:
        blobs = {self.spec.input: data}
        for i in steps:
            layer = self.spec.layers[i]
            blobs[layer.top[0]] = self.layers[self._keys[i]](*(blobs[b] for b in layer.bottom))
        return blobs[output]

    def forward(self, data: torch.Tensor) -> torch.Tensor:
        return self.run(data, range(len(self.spec.layers)), self.output)

    def expected_blobs(self) -> dict[str, list[S.Shape]]:
        """Caffe-layout shapes of the parameter blobs each layer needs, by layer name."""
        shapes = {}
        for layer, bottoms in zip(self.spec.layers, self.bottom_shapes):
            needed = S.param_shapes(layer, bottoms[0])
            if needed:
                shapes[layer.name] = needed
        return shapes

    def load_caffe_blobs(self, blobs: dict[str, list[S.CaffeBlob]], source: str) -> None:
        """Copy caffemodel blobs into the torch parameters, checking names, counts and shapes first."""
        by_name = {layer.name: layer for layer in self.spec.layers}
        updates: list[tuple[torch.Tensor, np.ndarray]] = []
        for name, expected in self.expected_blobs().items():
            given = blobs.get(name)
            if given is None:
                raise FeatkitError(f"{source} has no weights for layer '{name}'; is it the caffemodel of this prototxt?")
            if len(given) != len(expected):
                raise FeatkitError(f"layer '{name}' has {len(given)} blobs in {source}, the prototxt needs "
                                   f"{len(expected)} (weights{' and bias' if len(expected) == 2 else ''})")
            module = self.layers[module_key(name)]
            assert isinstance(module, (nn.Conv2d, nn.Linear))
            params = by_name[name].params
            for index, (blob, shape) in enumerate(zip(given, expected)):
                role = "weights" if index == 0 else "bias"
                if not blob.fits(shape):
                    raise FeatkitError(f"layer '{name}' {role}: shape {blob.shape} in {source}, but the prototxt needs "
                                       f"{shape}; is the caffemodel for this prototxt?")
                values = blob.values.reshape(shape)
                if index == 0 and isinstance(params, S.InnerProduct) and params.transpose:
                    values = values.T  # stored in x out when transpose is set
                target = module.weight if index == 0 else module.bias
                assert target is not None
                updates.append((target, values))
        with torch.no_grad():  # only once every blob has been checked
            for target, values in updates:
                target.copy_(torch.from_numpy(np.ascontiguousarray(values)))


@dataclass(frozen=True)
class Gap:
    """Where a CAM net pools: the feature blob, the GAP layer's index and the head (InnerProduct) index."""

    feature_blob: str
    pool_index: int
    head_index: int | None
    channels: int
    map_size: tuple[int, int]


def find_gap(net: CaffeNet) -> Gap:
    """The last global AVE pooling (at the deploy input size), and the InnerProduct that reads it."""
    spec = net.spec
    found: Gap | None = None
    for i, (layer, bottoms) in enumerate(zip(spec.layers, net.bottom_shapes)):
        p = layer.params
        if not isinstance(p, S.Pooling) or p.method != "AVE" or len(bottoms[0]) != 3:
            continue
        c, h, w = bottoms[0]
        if not (p.global_pooling or (p.kernel == (h, w) and p.pad == (0, 0))):
            continue
        head = None
        blob = layer.top[0]
        for j in range(i + 1, len(spec.layers)):
            nxt = spec.layers[j]
            if blob not in nxt.bottom:
                continue
            if isinstance(nxt.params, S.Dropout) and nxt.top[0] == blob:
                continue  # in-place dropout on the pooled features: identity at test time
            if isinstance(nxt.params, S.InnerProduct):
                head = j
            break
        found = Gap(layer.bottom[0], i, head, c, (h, w))
    if found is None:
        raise FeatkitError(f"net '{spec.name}' has no global average pooling layer, so it has no CAM feature maps")
    return found


def needed_steps(spec: S.NetSpec, before: int, blob: str) -> list[int]:
    """Indices of the layers before ``before`` that the value of ``blob`` there depends on."""
    needed = {blob}
    steps = []
    for i in range(before - 1, -1, -1):
        layer = spec.layers[i]
        if needed & set(layer.top):
            steps.append(i)
            needed -= set(layer.top)
            needed |= set(layer.bottom)
    return steps[::-1]


class CaffeBody(nn.Module):
    """featkit pixels -> Caffe input -> the net up to its CAM feature maps (N, K, h, w)."""

    def __init__(self, net: CaffeNet, mean_bgr: tuple[float, float, float], gap: Gap) -> None:
        super().__init__()
        self.input = CaffeInput(mean_bgr)
        self.net = net
        self.feature_blob = gap.feature_blob
        self.steps = needed_steps(net.spec, gap.pool_index, gap.feature_blob)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.run(self.input(x), self.steps, self.feature_blob)


def head_of(net: CaffeNet, gap: Gap) -> nn.Linear | None:
    """The InnerProduct after GAP as a (C0, K) linear head (a bias-free one gets a zero bias)."""
    if gap.head_index is None:
        return None
    module = net.layers[module_key(net.spec.layers[gap.head_index].name)]
    assert isinstance(module, CaffeInnerProduct)
    if module.bias is not None:
        return module
    head = nn.Linear(module.in_features, module.out_features)
    with torch.no_grad():
        head.weight.copy_(module.weight)
        head.bias.zero_()
    return head
