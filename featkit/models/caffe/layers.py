"""Torch modules with Caffe's inference semantics where they differ from torch's defaults.

Pooling rounds the output size up (Caffe's ceil mode, with its rule that the
last window starts inside image + pad) and divides AVE windows by their size
clipped to the padded image; LRN sums squares over ``local_size`` channels
centred on each channel, zero-padded, scaled by ``alpha / local_size``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from featkit.errors import FeatkitError
from featkit.models.caffe import spec as S


class CaffeInput(nn.Module):
    """featkit's RGB pixels in [0, 1] -> Caffe's input: BGR, 0-255, per-channel mean subtracted."""

    mean: torch.Tensor

    def __init__(self, mean_bgr: tuple[float, float, float]) -> None:
        super().__init__()
        self.mean_bgr = tuple(float(v) for v in mean_bgr)
        self.register_buffer("mean", torch.tensor(self.mean_bgr).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flip(1) * 255.0 - self.mean


class CaffePooling(nn.Module):
    """MAX/AVE pooling with Caffe's output size (torch's ceil mode agrees on every case built here)."""

    def __init__(self, p: S.Pooling, where: str) -> None:
        super().__init__()
        self.p = p
        if not p.global_pooling:
            for k, s, pad in zip(p.kernel, p.stride, p.pad):
                if pad > k // 2:
                    raise FeatkitError(f"{where}: pad {pad} above half the kernel {k} is not supported")
                if p.ceil and pad == 0 and k < s:
                    # Caffe then emits windows that start past the image; torch drops them
                    raise FeatkitError(f"{where}: a kernel ({k}) smaller than its stride ({s}) is not supported")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.p
        if p.global_pooling:
            return x.amax(dim=(2, 3), keepdim=True) if p.method == "MAX" else x.mean(dim=(2, 3), keepdim=True)
        if p.method == "MAX":
            return F.max_pool2d(x, p.kernel, p.stride, p.pad, ceil_mode=p.ceil)
        return F.avg_pool2d(x, p.kernel, p.stride, p.pad, ceil_mode=p.ceil, count_include_pad=True)


class CrossChannelLRN(nn.Module):
    """y = x / (k + alpha/n * sum of x^2 over the n channels centred on c) ** beta, n odd."""

    def __init__(self, p: S.LRN) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.p
        half = (p.size - 1) // 2
        squares = F.pad((x * x).unsqueeze(1), (0, 0, 0, 0, half, half))
        mean = F.avg_pool3d(squares, (p.size, 1, 1), stride=1).squeeze(1)  # zero-padded sum / n
        return x / (p.k + p.alpha * mean).pow(p.beta)


class CaffeInnerProduct(nn.Linear):
    """Caffe flattens everything after the batch axis before the product (weights are out x in)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.flatten(1))


class CaffeReLU(nn.Module):
    def __init__(self, p: S.ReLU) -> None:
        super().__init__()
        self.negative_slope = p.negative_slope

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(x, self.negative_slope) if self.negative_slope else F.relu(x)


class CaffeConcat(nn.Module):
    def __init__(self, axis: int) -> None:
        super().__init__()
        self.axis = axis

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return torch.cat(xs, dim=self.axis)


class CaffeDropout(nn.Module):
    """Test-phase dropout: identity, or a scale by (1 - ratio) when the net was trained with scale_train off."""

    def __init__(self, p: S.Dropout) -> None:
        super().__init__()
        self.scale = 1.0 if p.scale_train else 1.0 - p.ratio

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.scale == 1.0 else x * self.scale


class CaffeSoftmax(nn.Module):
    def __init__(self, axis: int) -> None:
        super().__init__()
        self.axis = axis

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(x, dim=self.axis)


def make_module(layer: S.Layer, bottoms: list[S.Shape]) -> nn.Module:
    """The torch module for one Caffe layer, given its input shapes (for channel and fan-in counts)."""
    p = layer.params
    where = f"layer '{layer.name}' ({layer.type})"
    ndim = len(bottoms[0]) + 1
    if isinstance(p, S.Convolution):
        return nn.Conv2d(bottoms[0][0], p.num_output, p.kernel, p.stride, p.pad, p.dilation, p.group, p.bias)
    if isinstance(p, S.InnerProduct):
        fan_in = 1
        for d in bottoms[0]:
            fan_in *= d
        return CaffeInnerProduct(fan_in, p.num_output, bias=p.bias)
    if isinstance(p, S.Pooling):
        return CaffePooling(p, where)
    if isinstance(p, S.LRN):
        return CrossChannelLRN(p)
    if isinstance(p, S.ReLU):
        return CaffeReLU(p)
    if isinstance(p, S.Concat):
        return CaffeConcat(S.resolve_axis(p.axis, ndim))
    if isinstance(p, S.Dropout):
        return CaffeDropout(p)
    return CaffeSoftmax(S.resolve_axis(p.axis, ndim))
