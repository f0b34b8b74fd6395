"""DGL pixel-level gradient maps: the CAM at the last layer, any other layer of real backbones (random weights)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from featkit.cam.dgl import LAST, gradient_maps
from featkit.cam.maps import class_activation_maps
from featkit.errors import FeatkitError
from featkit.models import load_backbone


def _images(n: int, side: int) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(0).normal(size=(n, 3, side, side)).astype(np.float32))


@pytest.fixture(scope="module")
def lite0() -> torch.nn.Module:
    _, model, _ = load_backbone("efficientnet_lite0", "random")
    return model.eval().requires_grad_(False)


def test_last_layer_selection_is_the_cam_up_to_a_positive_factor(lite0: torch.nn.Module) -> None:
    images = _images(2, 128)
    weight = np.random.default_rng(1).normal(size=(5, 1280)).astype(np.float32)
    classes = np.array([[0, 3], [4, 4]])
    maps = gradient_maps(lite0, images, weight, classes, (LAST,))
    with torch.no_grad():
        conv = lite0.forward_features(images).numpy()
    cam = class_activation_maps(conv, weight, classes)
    h, w = conv.shape[-2:]
    assert maps.shape == cam.shape == (2, 2, h, w)
    assert np.allclose(maps * h * w, cam, rtol=1e-4, atol=1e-4 * float(np.abs(cam).max()))


def test_two_layers_of_lite0_fused_on_the_finer_grid(lite0: torch.nn.Module) -> None:
    images = _images(2, 128)
    weight = np.random.default_rng(2).normal(size=(3, 1280)).astype(np.float32)
    one = gradient_maps(lite0, images, weight, np.array([1, 2]), ("net._blocks.10",))
    fused = gradient_maps(lite0, images, weight, np.array([1, 2]), ("net._blocks.10", LAST))
    assert one.shape == (2, 1, 8, 8) and fused.shape == (2, 1, 8, 8)  # stride 16 at block 10, 32 at the end
    assert np.isfinite(fused).all() and 0.0 <= fused.min() and fused.max() <= 1.0 and fused.max() > 0
    with pytest.raises(FeatkitError, match="the backbone has no layer 'net.nope'; use one of last"):
        gradient_maps(lite0, images, weight, np.array([1, 2]), ("net.nope",))


def test_a_torchvision_backbone_on_an_inner_layer() -> None:
    _, model, _ = load_backbone("resnet18", "random")
    model = model.eval().requires_grad_(False)
    weight = np.random.default_rng(3).normal(size=(2, 512)).astype(np.float32)
    maps = gradient_maps(model, _images(1, 128), weight, np.array([[0, 1]]), ("model.layer3",))
    assert maps.shape == (1, 2, 8, 8) and np.isfinite(maps).all() and np.abs(maps).max() > 0
