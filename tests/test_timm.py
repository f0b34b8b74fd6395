"""timm CNNs as backbones (``timm:NAME``): features and head CAMs equal timm's own, with a local weights file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_image

from featkit.cli.main import main
from featkit.errors import FeatkitError
from featkit.features import FeatureFile
from featkit.features.replay import Replay
from featkit.models import get_backbone_spec, load_backbone

timm = pytest.importorskip("timm", reason="timm is the optional extra featkit[timm] (in dev)")

ARCHS = {"resnet18": ("layer4", "fc"), "convnext_nano": None, "efficientnet_b0": ("bn2", "classifier")}
"""arch -> (torchcam target layer, classifier) where the head is GAP + linear; None where it is not."""


def _weights(tmp_path: Path, arch: str, suffix: str = ".pth") -> tuple[torch.nn.Module, Path]:
    """An untrained timm model (seeded) and its state dict in a local file (nothing downloads)."""
    torch.manual_seed(0)
    net = timm.create_model(arch, pretrained=False).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics, so a wrong normalisation would show
        for name, buffer in net.named_buffers():
            if name.endswith("running_mean"):
                buffer.normal_(0, 0.1)
            elif name.endswith("running_var"):
                buffer.uniform_(0.5, 1.5)
    path = tmp_path / f"{arch}{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    else:
        torch.save(net.state_dict(), path)
    return net, path


def _tree(root: Path) -> Path:
    for c in range(2):
        for j in range(2):
            write_image(root / f"c{c}" / f"i{j}.jpg", (80 + 10 * j, 70 + 6 * c), seed=10 * c + j)
    return root


@pytest.mark.parametrize("arch", list(ARCHS))
def test_timm_gap_features_equal_forward_features_mean(tmp_path: Path, arch: str) -> None:
    net, weights = _weights(tmp_path, arch, ".safetensors" if arch == "resnet18" else ".pth")
    root, out = _tree(tmp_path / "imgs"), tmp_path / "f.h5"
    assert main(["extract", str(root), "-o", str(out), "--model", f"timm:{arch}", "--weights", str(weights),
                 "--image-size", "96", "--resize", "crop", "--holdout", "0.5"]) == 0
    spec = get_backbone_spec(f"timm:{arch}")
    cfg = timm.models.get_pretrained_cfg(arch)
    assert (spec.mean, spec.std, spec.input_size) == (tuple(cfg.mean), tuple(cfg.std), cfg.input_size[-1])
    with FeatureFile(out) as features:
        assert features.attrs["backbone"] == f"timm:{arch}" and features.gap.shape == (4, net.num_features)
        assert tuple(features.attrs["mean"]) == pytest.approx(cfg.mean)
        assert features.attrs["interpolation"] == cfg.interpolation == "bicubic"
        [(positions, x)] = next(Replay.of(features.attrs, "cpu").input_groups(root, list(features.paths), 8))
        assert positions.tolist() == list(range(len(features)))  # crop: one input shape, in row order
        with torch.no_grad():
            expected = net.forward_features(x.contiguous()).mean(dim=(2, 3)).numpy()
        np.testing.assert_allclose(features.gap[:], expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", [a for a, cam in ARCHS.items() if cam])
def test_timm_head_cam_equals_torchcam(tmp_path: Path, arch: str) -> None:
    torchcam = pytest.importorskip("torchcam.methods", reason="torchcam is a dev dependency")
    from featkit.cam import class_activation_maps

    net, weights = _weights(tmp_path, arch)
    _, backbone, info = load_backbone(f"timm:{arch}", str(weights))
    assert backbone.head is not None and info.identifier == str(weights.resolve())
    x = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(1))
    target, fc = ARCHS[arch]  # type: ignore[misc]
    with torch.no_grad():
        maps = backbone.forward_features(x)
        ours = class_activation_maps(maps, backbone.head.weight, np.array([3, 7]))[:, 0]
    extractor = torchcam.CAM(net, target_layer=target, fc_layer=fc, input_shape=(3, 96, 96))
    try:
        scores = net(x)
        theirs = extractor([3, 7], scores, normalized=False)[0]
    finally:
        extractor.remove_hooks()
    np.testing.assert_allclose(np.asarray(ours), theirs.detach().numpy(), atol=1e-5, rtol=1e-5)


def test_convnext_has_no_gap_linear_head_and_vit_is_refused(tmp_path: Path) -> None:
    _, backbone, _ = load_backbone("timm:convnext_nano", "random")
    assert backbone.head is None  # LayerNorm after pooling: its classifier weights are not CAM weights
    with pytest.raises(FeatkitError, match="vit_tiny_patch16_224 gives features of shape 197x192, not a spatial"):
        get_backbone_spec("timm:vit_tiny_patch16_224")
    with pytest.raises(FeatkitError, match="timm has no model 'resnet1888'"):
        get_backbone_spec("timm:resnet1888")
    net, weights = _weights(tmp_path, "resnet18")
    with pytest.raises(FeatkitError, match="do not fit this backbone"):
        load_backbone("timm:efficientnet_b0", str(weights))


def test_models_timm_lists_what_works(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    assert main(["models", "--timm", "resnet1?t"]) == 0
    out = capsys.readouterr().out
    assert "timm:resnet10t  512   32      176    bicubic" in out and "2 models with a spatial feature map" in out
    assert main(["models", "--timm", "resnet1?t", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["name"]: (r["channels"], r["stride"]) for r in rows} == {"timm:resnet10t": (512, 32),
                                                                       "timm:resnet14t": (2048, 32)}
    assert main(["models", "--timm", "vit_tiny_patch16_2*"]) == 0  # transformers: not listed
    assert "0 models with a spatial feature map" in capsys.readouterr().out


def test_timm_weights_without_network_say_how_to_pass_a_file(monkeypatch: pytest.MonkeyPatch) -> None:
    real = timm.create_model

    def offline(name: str, pretrained: bool = False, **kwargs: object) -> torch.nn.Module:
        if pretrained:
            raise OSError("no network")
        return real(name, pretrained=False, **kwargs)

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(FeatkitError, match="cannot get timm's weights of resnet18 .*pass weights=PATH to a .pth or "
                                           ".safetensors"):
        load_backbone("timm:resnet18")


def test_register_backbone_any_module(tmp_path: Path) -> None:
    import featkit

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 6, 3, stride=2, padding=1)
            self.fc = torch.nn.Linear(6, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x)

    spec = featkit.register_backbone("test_custom_net", Net, head="fc", input_size=64)
    assert (spec.channels, spec.stride, spec.feature_layer) == (6, 2, "forward")
    _, backbone, info = load_backbone("test_custom_net")
    assert backbone.head is not None and info.identifier == "test_custom_net:default"
    torch.save(Net().state_dict(), tmp_path / "w.pth")
    assert load_backbone("test_custom_net", str(tmp_path / "w.pth"))[2].identifier.endswith("w.pth")
    with pytest.raises(FeatkitError, match="weights='random' is not available"):
        load_backbone("test_custom_net", "random")
    with pytest.raises(FeatkitError, match="head 'conv' must be an nn.Linear on the 6 GAP features"):
        featkit.register_backbone("test_custom_bad_head", Net, head="conv", input_size=64)
        load_backbone("test_custom_bad_head")
    with pytest.raises(ValueError, match="already registered"):
        featkit.register_backbone("test_custom_net", Net)


def test_timm_inputs_are_resized_with_the_configs_filter(tmp_path: Path) -> None:
    from featkit.data.images import load_rgb, normalize_batch

    root = _tree(tmp_path / "imgs")
    out = tmp_path / "f.h5"
    assert main(["extract", str(root), "-o", str(out), "--model", "timm:resnet18", "--weights", "random",
                 "--image-size", "64", "--resize", "crop"]) == 0
    with FeatureFile(out) as features:
        [(_, x)] = next(Replay.of(features.attrs, "cpu").input_groups(root, list(features.paths), 8))
        path = root / features.paths[0]
    bicubic, _ = load_rgb(path, 64, resize="crop", interpolation="bicubic")
    bilinear, _ = load_rgb(path, 64, resize="crop")
    assert not np.array_equal(bicubic, bilinear)
    expected = normalize_batch(torch.from_numpy(bicubic.copy()).permute(2, 0, 1)[None], features.attrs["mean"],
                               features.attrs["std"])
    np.testing.assert_allclose(x[:1].numpy(), expected.numpy(), atol=1e-6)
