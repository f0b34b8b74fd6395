"""DGL pixel-level gradient maps: the CAM at the last layer, any other layer of real backbones (random weights)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from featkit.cam.dgl import LAST, gradient_maps, layer_names
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
    # The classifier head sits in the wrapped network but never on the way to the maps: not a layer (was a KeyError).
    assert "net._fc" not in layer_names(lite0) and "net._conv_head" in layer_names(lite0)
    with pytest.raises(FeatkitError, match="the backbone has no layer 'net._fc'"):
        gradient_maps(lite0, images, weight, np.array([1, 2]), ("net._fc",))
    with pytest.raises(FeatkitError, match="layer 'net._blocks' does not run on the way to the CAM maps"):
        gradient_maps(lite0, images, weight, np.array([1, 2]), ("net._blocks",))


def test_a_torchvision_backbone_on_an_inner_layer() -> None:
    _, model, _ = load_backbone("resnet18", "random")
    model = model.eval().requires_grad_(False)
    weight = np.random.default_rng(3).normal(size=(2, 512)).astype(np.float32)
    maps = gradient_maps(model, _images(1, 128), weight, np.array([[0, 1]]), ("model.layer3",))
    assert maps.shape == (1, 2, 8, 8) and np.isfinite(maps).all() and np.abs(maps).max() > 0


# ------------------------------------------------------------------ class-aware enhancement (DGL's second branch)


def _unit_peak(maps: np.ndarray) -> np.ndarray:
    clipped = np.maximum(maps, 0.0)
    peak = clipped.max(axis=(-2, -1), keepdims=True)
    return np.divide(clipped, peak, out=np.zeros_like(clipped), where=peak > 0)


@pytest.fixture(scope="module")
def tiny() -> torch.nn.Module:
    _, model, _ = load_backbone("tiny_test", None)
    return model.eval().requires_grad_(False)


def test_enhancement_at_the_last_layer_is_the_cam_of_the_moved_maps_fused_with_the_plain_one(
    tiny: torch.nn.Module,
) -> None:
    images = _images(3, 64)
    weight = np.random.default_rng(4).normal(size=(6, 32)).astype(np.float32)
    classes = np.array([[0, 2], [5, 1], [3, 3]])
    plain = gradient_maps(tiny, images, weight, classes)
    assert np.array_equal(gradient_maps(tiny, images, weight, classes, enhance=0.0), plain)
    eta = 0.3
    fused = gradient_maps(tiny, images, weight, classes, enhance=eta)
    with torch.no_grad():
        conv = tiny.forward_features(images).numpy().astype(np.float64)
    h, w = conv.shape[-2:]
    scores = conv.mean(axis=(2, 3)) @ weight.T
    probs = np.exp(scores - scores.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    for t in range(classes.shape[1]):
        target = classes[:, t]
        # dL/dA for L = -log softmax(S)_target, S = GAP(A) @ W^T: (p - onehot) @ W / (h w) at every cell
        grad = ((probs - np.eye(6)[target]) @ weight / (h * w))[:, :, None, None] * np.ones_like(conv)
        factor = np.linalg.norm(conv.reshape(3, -1), axis=1) / np.linalg.norm(grad.reshape(3, -1), axis=1)
        moved = conv - eta * factor[:, None, None, None] * grad
        before = scores[np.arange(3), target]
        after = (moved.mean(axis=(2, 3)) @ weight.T)[np.arange(3), target]
        assert (after > before).all()  # the step raises the target's evidence
        cam_plain = class_activation_maps(conv.astype(np.float32), weight, target)[:, 0]
        cam_moved = class_activation_maps(moved.astype(np.float32), weight, target)[:, 0]
        expected = (_unit_peak(cam_plain) + _unit_peak(cam_moved)) / 2
        assert np.allclose(fused[:, t], expected, atol=1e-5)
    assert not np.allclose(fused, _unit_peak(plain), atol=1e-3)  # the enhanced branch changes the map


def test_enhancement_on_an_inner_layer_runs_the_rest_of_the_network_on_the_moved_activations(
    tiny: torch.nn.Module,
) -> None:
    images = _images(2, 64)
    weight = np.random.default_rng(5).normal(size=(4, 32)).astype(np.float32)
    classes = np.array([1, 3])
    plain = gradient_maps(tiny, images, weight, classes, ("2",))
    fused = gradient_maps(tiny, images, weight, classes, ("2",), enhance=0.5)
    assert plain.shape == fused.shape == (2, 1, 16, 16)  # stride 4 after the second conv
    assert np.isfinite(fused).all() and 0.0 <= fused.min() and 0.5 <= fused.max() <= 1.0
    assert not np.allclose(fused, _unit_peak(plain), atol=1e-3)
    # the score of the moved activations, run through the rest of the network, is higher for the target
    body = tiny.body
    with torch.enable_grad():
        acts = body[:3](images).detach().requires_grad_(True)
        scores = body[3:](acts).mean(dim=(2, 3)) @ torch.from_numpy(weight).T
        loss = torch.nn.functional.cross_entropy(scores, torch.from_numpy(classes), reduction="sum")
        (grad,) = torch.autograd.grad(loss, acts)
    from featkit.cam.dgl import enhance_step

    with torch.no_grad():
        moved = body[3:](enhance_step(acts.detach(), grad, 0.5)).mean(dim=(2, 3)) @ torch.from_numpy(weight).T
    rows = torch.arange(2)
    assert (moved[rows, classes] > scores.detach()[rows, classes]).all()
    # a layer the inner map names is checked as before
    with pytest.raises(FeatkitError, match="the backbone has no layer 'nope'"):
        gradient_maps(tiny, images, weight, classes, ("nope",), enhance=0.5)
