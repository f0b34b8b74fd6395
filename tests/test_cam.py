"""CAM math: batched einsum vs a loop, class selection, scores, upsampling, normalisation."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from featkit.cam.maps import (
    NORMALIZATIONS,
    CamOptions,
    class_activation_maps,
    normalize_cam,
    scores_from_maps,
    upsample,
)
from featkit.errors import FeatkitError


@pytest.fixture()
def batch() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    maps = rng.random((3, 6, 7, 5), dtype=np.float32)
    weight = rng.normal(size=(4, 6)).astype(np.float32)
    bias = rng.normal(size=4).astype(np.float32)
    return maps, weight, bias


def loop_cams(maps: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Reference: the paper's sum, image by image and class by class."""
    n, _, h, w = maps.shape
    out = np.zeros((n, weight.shape[0], h, w), dtype=np.float64)
    for i in range(n):
        for c in range(weight.shape[0]):
            out[i, c] = np.tensordot(weight[c], maps[i], axes=1)
    return out


def test_all_classes_equal_per_image_loop(batch):
    maps, weight, _ = batch
    cams = class_activation_maps(maps, weight)
    assert isinstance(cams, np.ndarray) and cams.dtype == np.float32
    assert cams.shape == (3, 4, 7, 5)
    np.testing.assert_allclose(cams, loop_cams(maps, weight), rtol=1e-5, atol=1e-5)


def test_one_class_per_image(batch):
    maps, weight, _ = batch
    classes = np.array([2, 0, 3])
    cams = class_activation_maps(maps, weight, classes=classes)
    reference = loop_cams(maps, weight)
    assert cams.shape == (3, 1, 7, 5)
    for i, c in enumerate(classes):
        np.testing.assert_allclose(cams[i, 0], reference[i, c], rtol=1e-5, atol=1e-5)


def test_top_t_classes_per_image(batch):
    maps, weight, _ = batch
    classes = np.array([[3, 1], [0, 2], [1, 1]])
    cams = class_activation_maps(maps, weight, classes=classes)
    reference = loop_cams(maps, weight)
    assert cams.shape == (3, 2, 7, 5)
    np.testing.assert_allclose(cams, reference[np.arange(3)[:, None], classes], rtol=1e-5, atol=1e-5)


def test_scalar_class_and_torch_in_torch_out(batch):
    maps, weight, _ = batch
    cams = class_activation_maps(torch.from_numpy(maps).half(), torch.from_numpy(weight), classes=1)
    assert isinstance(cams, torch.Tensor) and cams.dtype == torch.float32 and cams.shape == (3, 1, 7, 5)
    np.testing.assert_allclose(cams[:, 0].numpy(), loop_cams(maps, weight)[:, 1], rtol=2e-3, atol=2e-3)


def test_gap_of_cam_plus_bias_is_the_score(batch):
    maps, weight, bias = batch
    scores = scores_from_maps(maps, weight, bias)
    cams = class_activation_maps(maps, weight)
    np.testing.assert_allclose(cams.mean(axis=(2, 3)) + bias, scores, rtol=1e-5, atol=1e-5)
    # With the bias spread over the cells, the CAM sums to the sum-pooled score.
    with_bias = class_activation_maps(maps, weight, bias=bias)
    sum_pooled = maps.sum(axis=(2, 3)) @ weight.T + bias
    np.testing.assert_allclose(with_bias.sum(axis=(2, 3)), sum_pooled, rtol=1e-4, atol=1e-4)


def test_bad_shapes_raise_featkit_error(batch):
    maps, weight, _ = batch
    with pytest.raises(FeatkitError, match="channels"):
        class_activation_maps(maps, weight[:, :5])
    with pytest.raises(FeatkitError, match="class indices"):
        class_activation_maps(maps, weight, classes=np.array([0, 1, 9]))
    with pytest.raises(FeatkitError, match="one row"):
        class_activation_maps(maps, weight, classes=np.array([0, 1]))


def test_upsample_size_is_width_height():
    cam = np.arange(12, dtype=np.float32).reshape(3, 4)
    out = upsample(cam, (40, 30))  # (width, height)
    assert out.shape == (30, 40)
    stacked = upsample(np.stack([cam, cam]), (8, 6))
    assert stacked.shape == (2, 6, 8)
    nearest = upsample(cam, (8, 6), mode="nearest")
    np.testing.assert_array_equal(nearest[::2, ::2], cam)
    assert isinstance(upsample(torch.from_numpy(cam), (8, 6)), torch.Tensor)


@pytest.mark.parametrize("mode", NORMALIZATIONS)
def test_normalize_modes_have_max_one_and_no_nan_on_constant(mode):
    cam = np.array([[[-1.0, 0.0], [1.0, 2.0]], [[3.0, 3.0], [3.0, 3.0]], [[0.0, 0.0], [0.0, 0.0]]], dtype=np.float32)
    out = normalize_cam(cam, mode)
    assert not np.isnan(out).any()
    assert out[0].max() == pytest.approx(1.0)
    if mode == "minmax":
        np.testing.assert_allclose(out[0], [[0.0, 1 / 3], [2 / 3, 1.0]], rtol=1e-6)
        np.testing.assert_array_equal(out[1], 0.0)
    else:
        np.testing.assert_allclose(out[1], 1.0)
    np.testing.assert_array_equal(out[2], 0.0)


def test_normalize_max_keeps_negatives_and_relu_max_clips():
    cam = np.array([[-1.0, 0.0], [1.0, 2.0]], dtype=np.float32)
    np.testing.assert_allclose(normalize_cam(cam, "max"), [[-0.5, 0.0], [0.5, 1.0]])
    np.testing.assert_allclose(normalize_cam(cam, "relu-max"), [[0.0, 0.0], [0.5, 1.0]])
    negative = -np.ones((2, 2), dtype=np.float32) - np.eye(2, dtype=np.float32)
    np.testing.assert_array_equal(normalize_cam(negative, "max"), 0.0)


def test_cam_options_are_frozen_and_validated():
    options = CamOptions()
    assert options.to_dict() == {"normalization": "max", "threshold": 0.2, "upsample": "bilinear", "weights": "all",
                                 "method": "cam", "layer": "last", "close": 0, "scales": [1.0], "enhance": 0.0}
    weight = np.array([[0.5, -1.0], [-0.1, 2.0]])
    np.testing.assert_array_equal(options.cam_weight(weight), weight)
    np.testing.assert_array_equal(CamOptions(weights="positive").cam_weight(weight), [[0.5, 0.0], [0.0, 2.0]])
    with pytest.raises(FeatkitError, match="unknown CAM weights"):
        CamOptions(weights="negative")
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.threshold = 0.3  # type: ignore[misc]
    with pytest.raises(FeatkitError, match="normalization"):
        CamOptions(normalization="softmax")
    with pytest.raises(FeatkitError, match="threshold"):
        CamOptions(threshold=20)
