"""featkit convert caffe: the authors' CAM nets without Caffe.

Every caffemodel here is synthetic, written with featkit's own message
definitions: random blobs in the real deploy shapes, and a tiny hand-made net
whose forward pass is checked against an independent numpy implementation of
Caffe's layer semantics (ceil-mode pooling and across-channel LRN included).
The facts about the released deploy files (layer names, types, shapes) are
restated here from the files and the GoogLeNet/VGG/AlexNet papers, not taken
from featkit's encoding of them.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from featkit.cli import main
from featkit.errors import FeatkitError
from featkit.features import FeatureFile
from featkit.models import load_backbone
from featkit.models.caffe import (
    CAFFE_MODELS,
    CaffeNet,
    caffe_backbone,
    convert_caffe,
    default_converted_path,
    find_gap,
    load_converted,
    proto,
)
from featkit.models.caffe.model import (
    ConvertedModel,
    backbone_from_file,
    save_converted,
)
from featkit.models.caffe.spec import (
    LRN,
    Concat,
    Convolution,
    Dropout,
    InnerProduct,
    NetSpec,
    Pooling,
    ReLU,
    Softmax,
)

Blobs = dict[str, list[np.ndarray]]

# ---------------------------------------------------------------- facts about the released deploy files

GOOGLENET_INCEPTION = [
    # module, 1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool proj (deploy_googlenetCAM.prototxt)
    ("3a", 64, 96, 128, 16, 32, 32),
    ("3b", 128, 128, 192, 32, 96, 64),
    ("4a", 192, 96, 208, 16, 48, 64),
    ("4b", 160, 112, 224, 24, 64, 64),
    ("4c", 128, 128, 256, 24, 64, 64),
    ("4d", 112, 144, 288, 32, 64, 64),
    ("4e", 256, 160, 320, 32, 128, 128),
]


def _with_bias(shapes: dict[str, tuple[int, ...]]) -> dict[str, list[tuple[int, ...]]]:
    return {name: [shape, (shape[0],)] for name, shape in shapes.items()}


def googlenet_facts(classes: int = 1000) -> dict[str, list[tuple[int, ...]]]:
    shapes = {"conv1/7x7_s2": (64, 3, 7, 7), "conv2/3x3_reduce": (64, 64, 1, 1), "conv2/3x3": (192, 64, 3, 3)}
    c = 192
    for m, n1, r3, n3, r5, n5, proj in GOOGLENET_INCEPTION:
        p = f"inception_{m}/"
        shapes.update({p + "1x1": (n1, c, 1, 1), p + "3x3_reduce": (r3, c, 1, 1), p + "3x3": (n3, r3, 3, 3),
                       p + "5x5_reduce": (r5, c, 1, 1), p + "5x5": (n5, r5, 5, 5), p + "pool_proj": (proj, c, 1, 1)})
        c = n1 + n3 + n5 + proj
    assert c == 832  # inception_4e/output
    shapes["CAM_conv"] = (1024, 832 // 2, 3, 3)  # group: 2
    shapes["CAM_fc"] = (classes, 1024)
    return _with_bias(shapes)


def vgg16_facts(classes: int = 1000) -> dict[str, list[tuple[int, ...]]]:
    shapes: dict[str, tuple[int, ...]] = {}
    c = 3
    for block, convs, out in ((1, 2, 64), (2, 2, 128), (3, 3, 256), (4, 3, 512), (5, 3, 512)):
        for i in range(1, convs + 1):
            shapes[f"conv{block}_{i}"] = (out, c, 3, 3)
            c = out
    shapes["CAM_conv"] = (1024, 512 // 2, 3, 3)
    shapes["CAM_fc"] = (classes, 1024)
    return _with_bias(shapes)


def alexnet_facts(classes: int = 1000) -> dict[str, list[tuple[int, ...]]]:
    return _with_bias({
        "conv1": (96, 3, 11, 11), "conv2": (256, 48, 5, 5), "conv3": (384, 256, 3, 3), "conv4": (384, 192, 3, 3),
        "conv5": (384, 192, 3, 3), "conv6": (512, 192, 3, 3), "conv7": (512, 256, 3, 3), "fc9": (classes, 512),
    })


FACTS: dict[str, Callable[[], dict[str, list[tuple[int, ...]]]]] = {
    "googlenet_gap": googlenet_facts,
    "vgg16_gap": vgg16_facts,
    "alexnet_gap": alexnet_facts,
    "googlenet_gap_places205": lambda: googlenet_facts(205),
    "alexnet_gap_places205": lambda: alexnet_facts(205),
}
# name: (layer count in the deploy file, feature blob, K, map size at the deploy input, input size)
DEPLOY = {
    "googlenet_gap": (114, "CAM_conv", 1024, (14, 14), 224),
    "vgg16_gap": (36, "CAM_conv", 1024, (14, 14), 224),
    "alexnet_gap": (23, "conv7", 512, (11, 11), 227),
    "googlenet_gap_places205": (114, "CAM_conv", 1024, (14, 14), 224),
    "alexnet_gap_places205": (22, "conv7", 512, (11, 11), 227),
}
V1_FORMAT = {"vgg16_gap", "alexnet_gap", "alexnet_gap_places205"}
"""These deploy files (and, here, their caffemodels) use the old `layers` blocks with enum types."""

# ---------------------------------------------------------------- writing Caffe files (test side)

V1_ENUM = {"Convolution": "CONVOLUTION", "Pooling": "POOLING", "LRN": "LRN", "ReLU": "RELU", "Concat": "CONCAT",
           "InnerProduct": "INNER_PRODUCT", "Dropout": "DROPOUT", "Softmax": "SOFTMAX"}


def _params_text(p: object) -> str:
    if isinstance(p, Convolution):
        assert p.kernel[0] == p.kernel[1] and p.pad[0] == p.pad[1] and p.stride[0] == p.stride[1]
        extra = (f" pad: {p.pad[0]}" if p.pad[0] else "") + (f" stride: {p.stride[0]}" if p.stride[0] != 1 else "")
        extra += f" group: {p.group}" if p.group != 1 else ""
        return (f"convolution_param {{ num_output: {p.num_output}{extra} kernel_size: {p.kernel[0]}"
                ' weight_filler { type: "xavier" std: 0.03 } bias_filler { type: "constant" value: 0.2 } }')
    if isinstance(p, Pooling):
        pad = f" pad: {p.pad[0]}" if p.pad[0] else ""
        return f"pooling_param {{ pool: {p.method} kernel_size: {p.kernel[0]} stride: {p.stride[0]}{pad} }}"
    if isinstance(p, LRN):
        return f"lrn_param {{ local_size: {p.size} alpha: 0.0001 beta: {p.beta} }}"
    if isinstance(p, InnerProduct):
        return f'inner_product_param {{ num_output: {p.num_output} weight_filler {{ type: "xavier" }} }}'
    if isinstance(p, Dropout):
        return f"dropout_param {{ dropout_ratio: {p.ratio} }}"
    assert isinstance(p, (ReLU, Softmax, Concat))
    return ""


def write_deploy(net: NetSpec, path: Path, v1: bool) -> Path:
    """A deploy prototxt in the style of the released files (fillers, lr multipliers and all)."""
    c, h, w = net.input_shape
    lines = [f'name: "{net.name}"', 'input: "data"', "input_dim: 10", f"input_dim: {c}", f"input_dim: {h}",
             f"input_dim: {w}"]
    for layer in net.layers:
        io = " ".join([f'bottom: "{b}"' for b in layer.bottom] + [f'top: "{t}"' for t in layer.top])
        params = _params_text(layer.params)
        learned = isinstance(layer.params, (Convolution, InnerProduct))
        if v1:
            rates = " blobs_lr: 1 blobs_lr: 2 weight_decay: 1 weight_decay: 0" if learned else ""
            lines.append(f'layers {{ name: "{layer.name}" type: {V1_ENUM[layer.type]} {io}{rates} {params} }}')
        else:
            rates = " param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }" if learned else ""
            lines.append(f'layer {{ name: "{layer.name}" type: "{layer.type}" {io}{rates} {params} }}')
    path.write_text("\n".join(lines) + "\n")
    return path


def write_caffemodel(path: Path, blobs: Blobs, v1: bool, legacy: bool) -> Path:
    """A binary NetParameter with these blobs (plus a training-only layer the deploy net does not have)."""
    net = proto.NetParameter(name="synthetic")
    items = [*blobs.items(), ("loss3/classifier", [np.ones((3, 4), np.float32), np.zeros(3, np.float32)])]
    for name, arrays in items:
        layer = net.layers.add() if v1 else net.layer.add()
        layer.name = name
        fc = arrays[0].ndim == 2
        if v1:
            layer.type = proto.V1_LAYER_TYPES["INNER_PRODUCT" if fc else "CONVOLUTION"]
        else:
            layer.type = "InnerProduct" if fc else "Convolution"
        for array in arrays:
            blob = layer.blobs.add()
            if legacy:
                blob.num, blob.channels, blob.height, blob.width = (1,) * (4 - array.ndim) + array.shape
            else:
                blob.shape.dim.extend(array.shape)
            blob.data.extend(array.ravel().tolist())
    path.write_bytes(net.SerializeToString())
    return path


def random_blobs(facts: dict[str, list[tuple[int, ...]]], seed: int, scale: float = 1.0) -> Blobs:
    rng = np.random.default_rng(seed)
    return {name: [(scale * rng.standard_normal(s)).astype(np.float32) for s in shapes] for name, shapes in facts.items()}


_RELEASED: dict[str, tuple[Path, Path, Blobs]] = {}


@pytest.fixture(scope="module")
def released(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], tuple[Path, Path, Blobs]]:
    """(deploy, caffemodel, blobs) of a released net with random weights, written once per module."""

    def make(name: str) -> tuple[Path, Path, Blobs]:
        if name not in _RELEASED:
            folder = tmp_path_factory.mktemp(name)
            v1 = name in V1_FORMAT
            deploy = write_deploy(CAFFE_MODELS[name].architecture(), folder / "deploy.prototxt", v1)
            blobs = random_blobs(FACTS[name](), seed=len(name), scale=0.05)
            _RELEASED[name] = (deploy, write_caffemodel(folder / "w.caffemodel", blobs, v1, legacy=v1), blobs)
        return _RELEASED[name]

    return make


# ---------------------------------------------------------------- the released architectures


@pytest.mark.parametrize("name", list(FACTS))
def test_released_architectures_have_the_deploy_parameter_shapes(name: str) -> None:
    net = CaffeNet(CAFFE_MODELS[name].architecture())
    facts = FACTS[name]()
    got = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    want = {f"layers.{layer}.{role}": shape for layer, shapes in facts.items()
            for role, shape in zip(("weight", "bias"), shapes)}
    assert got == want
    layers, blob, k, size, input_size = DEPLOY[name]
    assert len(net.spec.layers) == layers and net.spec.input_shape == (3, input_size, input_size)
    gap = find_gap(net)
    assert (gap.feature_blob, gap.channels, gap.map_size) == (blob, k, size)


@pytest.mark.parametrize("name", ["googlenet_gap", "vgg16_gap", "alexnet_gap"])
def test_a_synthetic_caffemodel_round_trips_exactly(name: str, released: Callable, tmp_path: Path) -> None:
    deploy, weights, blobs = released(name)
    result = convert_caffe(deploy, weights, tmp_path / "m.pth")
    layers, blob, k, size, _ = DEPLOY[name]
    assert (result.name, result.layers, result.feature_blob, result.channels, result.map_size) == (
        name, layers, blob, k, size)
    assert result.parameters == sum(a.size for arrays in blobs.values() for a in arrays)
    saved = torch.load(tmp_path / "m.pth", weights_only=True)
    state = saved["state_dict"]
    assert len(state) == 2 * len(blobs)  # nothing from the training-only layer
    for layer, (weight, bias) in blobs.items():
        # Caffe's conv weights (out, in/groups, kh, kw) and InnerProduct (out, in) are torch's layouts
        assert np.array_equal(state[f"layers.{layer}.weight"].numpy(), weight), layer
        assert np.array_equal(state[f"layers.{layer}.bias"].numpy(), bias), layer
    assert saved["mean_bgr"] == [104.0, 117.0, 123.0]
    assert saved["source"]["weights"] == str(weights.resolve()) and len(saved["source"]["weights_sha256"]) == 64


def test_alexnet_gap_backbone_runs_at_its_227_px(released: Callable, tmp_path: Path) -> None:
    deploy, weights, blobs = released("alexnet_gap")
    out = convert_caffe(deploy, weights, tmp_path / "a.pth").path
    spec, model, info = load_backbone("alexnet_gap", str(out))
    assert spec.input_size == 227 and info.identifier == str(out.resolve())
    with torch.inference_mode():
        maps = model.forward_features(torch.rand(1, 3, 227, 227))
    assert maps.shape == (1, 512, 11, 11)
    assert model.head is not None and np.array_equal(model.head.weight.detach().numpy(), blobs["fc9"][0])


# ---------------------------------------------------------------- Caffe semantics, independently in numpy

TINY = """
name: "tiny"
input: "data"
input_shape { dim: 2 dim: 3 dim: 23 dim: 19 }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
  convolution_param { num_output: 8 kernel_size: 3 stride: 2 pad: 1 weight_filler { type: "gaussian" std: 0.01 } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" relu_param { negative_slope: 0.1 } }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "norm1" type: "LRN" bottom: "pool1" top: "norm1" lrn_param { local_size: 5 alpha: 0.5 beta: 0.75 k: 2 } }
layer { name: "conv2a" type: "Convolution" bottom: "norm1" top: "conv2a"
  convolution_param { num_output: 6 kernel_size: 1 group: 2 } }
layer { name: "relu2a" type: "ReLU" bottom: "conv2a" top: "conv2a" }
layer { name: "conv2b" type: "Convolution" bottom: "norm1" top: "conv2b"
  convolution_param { num_output: 4 kernel_h: 3 kernel_w: 1 pad_h: 1 pad_w: 0 group: 2 engine: CAFFE } }
layer { name: "pool2c" type: "Pooling" bottom: "norm1" top: "pool2c"
  pooling_param { pool: MAX kernel_size: 3 stride: 1 pad: 1 } }
layer { name: "mix" type: "Concat" bottom: "conv2a" bottom: "conv2b" bottom: "pool2c" top: "mix" }
layer { name: "pool3" type: "Pooling" bottom: "mix" top: "pool3" pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 } }
layer { name: "pool4" type: "Pooling" bottom: "pool3" top: "pool4" pooling_param { pool: MAX kernel_size: 2 stride: 2 pad: 1 } }
layer { name: "CAM_conv" type: "Convolution" bottom: "pool4" top: "CAM_conv"
  convolution_param { num_output: 12 kernel_size: 3 pad: 1 group: 3 } }
layer { name: "CAM_relu" type: "ReLU" bottom: "CAM_conv" top: "CAM_conv" }
layer { name: "CAM_pool" type: "Pooling" bottom: "CAM_conv" top: "CAM_pool"
  pooling_param { pool: AVE kernel_h: 3 kernel_w: 2 stride: 1 } }
layer { name: "CAM_drop" type: "Dropout" bottom: "CAM_pool" top: "CAM_pool" dropout_param { dropout_ratio: 0.5 } }
layer { name: "CAM_fc" type: "InnerProduct" bottom: "CAM_pool" top: "CAM_fc" inner_product_param { num_output: 5 } }
layer { name: "prob" type: "Softmax" bottom: "CAM_fc" top: "prob" }
"""
TINY_FACTS = _with_bias({"conv1": (8, 3, 3, 3), "conv2a": (6, 4, 1, 1), "conv2b": (4, 4, 3, 1),
                         "CAM_conv": (12, 6, 3, 3), "CAM_fc": (5, 12)})


def np_conv(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: tuple[int, int], pad: tuple[int, int],
            group: int) -> np.ndarray:
    n, _, h, wd = x.shape
    o, cg, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad[0], pad[0]), (pad[1], pad[1])))
    oh, ow = (h + 2 * pad[0] - kh) // stride[0] + 1, (wd + 2 * pad[1] - kw) // stride[1] + 1
    og = o // group
    out = np.zeros((n, o, oh, ow))
    for g in range(group):
        xs, ws = xp[:, g * cg:(g + 1) * cg], w[g * og:(g + 1) * og]
        for i in range(oh):
            for j in range(ow):
                patch = xs[:, :, i * stride[0]:i * stride[0] + kh, j * stride[1]:j * stride[1] + kw]
                out[:, g * og:(g + 1) * og, i, j] = np.einsum("nchw,ochw->no", patch, ws)
    return out + b[None, :, None, None]


def np_pool(x: np.ndarray, method: str, k: tuple[int, int], s: tuple[int, int], p: tuple[int, int]) -> np.ndarray:
    """Caffe's PoolingLayer::Forward_cpu, window by window."""
    n, c, h, w = x.shape
    sizes = []
    for size, kk, ss, pp in zip((h, w), k, s, p):
        out = math.ceil((size + 2 * pp - kk) / ss) + 1
        if pp and (out - 1) * ss >= size + pp:
            out -= 1
        sizes.append(out)
    result = np.zeros((n, c, *sizes))
    for ph in range(sizes[0]):
        for pw in range(sizes[1]):
            hs, ws = ph * s[0] - p[0], pw * s[1] - p[1]
            if method == "MAX":
                he, we = min(hs + k[0], h), min(ws + k[1], w)
                result[:, :, ph, pw] = x[:, :, max(hs, 0):he, max(ws, 0):we].max(axis=(2, 3))
            else:
                he, we = min(hs + k[0], h + p[0]), min(ws + k[1], w + p[1])
                pool_size = (he - hs) * (we - ws)
                window = x[:, :, max(hs, 0):min(he, h), max(ws, 0):min(we, w)]
                result[:, :, ph, pw] = window.sum(axis=(2, 3)) / pool_size
    return result


def np_lrn(x: np.ndarray, size: int, alpha: float, beta: float, k: float) -> np.ndarray:
    c = x.shape[1]
    pre = (size - 1) // 2
    out = np.empty_like(x)
    for ch in range(c):
        lo, hi = max(0, ch - pre), min(c, ch - pre + size)
        scale = k + alpha / size * (x[:, lo:hi] ** 2).sum(axis=1)
        out[:, ch] = x[:, ch] * scale ** -beta
    return out


def tiny_reference(data: np.ndarray, blobs: Blobs) -> dict[str, np.ndarray]:
    """Every blob of the TINY net, as Caffe computes it (after each layer, in place ones included)."""
    b = {k: [a.astype(np.float64) for a in v] for k, v in blobs.items()}
    r: dict[str, np.ndarray] = {"data": data}
    r["conv1"] = np_conv(data, *b["conv1"], (2, 2), (1, 1), 1)
    r["relu1"] = np.where(r["conv1"] > 0, r["conv1"], 0.1 * r["conv1"])
    r["pool1"] = np_pool(r["relu1"], "MAX", (3, 3), (2, 2), (0, 0))
    r["norm1"] = np_lrn(r["pool1"], 5, 0.5, 0.75, 2.0)
    r["conv2a"] = np_conv(r["norm1"], *b["conv2a"], (1, 1), (0, 0), 2)
    r["relu2a"] = np.maximum(r["conv2a"], 0)
    r["conv2b"] = np_conv(r["norm1"], *b["conv2b"], (1, 1), (1, 0), 2)
    r["pool2c"] = np_pool(r["norm1"], "MAX", (3, 3), (1, 1), (1, 1))
    r["mix"] = np.concatenate([r["relu2a"], r["conv2b"], r["pool2c"]], axis=1)
    r["pool3"] = np_pool(r["mix"], "AVE", (3, 3), (2, 2), (1, 1))
    r["pool4"] = np_pool(r["pool3"], "MAX", (2, 2), (2, 2), (1, 1))
    r["CAM_conv"] = np_conv(r["pool4"], *b["CAM_conv"], (1, 1), (1, 1), 3)
    r["CAM_relu"] = np.maximum(r["CAM_conv"], 0)
    r["CAM_pool"] = np_pool(r["CAM_relu"], "AVE", (3, 2), (1, 1), (0, 0))
    r["CAM_drop"] = r["CAM_pool"]
    w, bias = b["CAM_fc"]
    r["CAM_fc"] = r["CAM_drop"].reshape(len(data), -1) @ w.T + bias
    e = np.exp(r["CAM_fc"] - r["CAM_fc"].max(axis=1, keepdims=True))
    r["prob"] = e / e.sum(axis=1, keepdims=True)
    return r


@pytest.fixture
def tiny(tmp_path: Path) -> tuple[Path, Path, Blobs]:
    deploy = tmp_path / "tiny.prototxt"
    deploy.write_text(TINY)
    blobs = random_blobs(TINY_FACTS, seed=7, scale=0.5)
    return deploy, write_caffemodel(tmp_path / "tiny.caffemodel", blobs, v1=False, legacy=False), blobs


def test_tiny_net_shapes_exercise_the_ceil_rules(tiny: tuple[Path, Path, Blobs], tmp_path: Path) -> None:
    deploy, weights, _ = tiny
    net = load_converted(convert_caffe(deploy, weights, tmp_path / "t.pth").path).net()
    shapes = {layer.name: s[0] for layer, s in zip(net.spec.layers, net.bottom_shapes)}
    # pool1 rounds 12x10 up to 6x5 windows; pool4's last column would start in the pad, so 4x3 -> 3x2
    assert shapes["norm1"] == (8, 6, 5) and shapes["pool4"] == (18, 4, 3) and shapes["CAM_conv"] == (18, 3, 2)


def test_forward_matches_numpy_caffe_layer_by_layer(tiny: tuple[Path, Path, Blobs], tmp_path: Path) -> None:
    deploy, weights, blobs = tiny
    result = convert_caffe(deploy, weights, tmp_path / "t.pth")
    assert result.name == "" and (result.feature_blob, result.channels, result.map_size) == ("CAM_conv", 12, (3, 2))
    net = load_converted(result.path).net()
    assert {layer.type for layer in net.spec.layers} == {"Convolution", "ReLU", "Pooling", "LRN", "Concat", "Dropout",
                                                 "InnerProduct", "Softmax"}
    data = np.random.default_rng(3).standard_normal((2, 3, 23, 19))
    reference = tiny_reference(data, blobs)
    x = torch.from_numpy(data.astype(np.float32))
    with torch.inference_mode():
        for i, layer in enumerate(net.spec.layers):
            got = net.run(x, range(i + 1), layer.top[0]).numpy()
            want = reference[layer.name]
            assert got.shape == want.shape, layer.name
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=layer.name)
        np.testing.assert_allclose(net(x).numpy().sum(axis=1), 1.0, rtol=1e-6)


def test_backbone_does_caffe_preprocessing_and_gap_head(tiny: tuple[Path, Path, Blobs], tmp_path: Path) -> None:
    deploy, weights, blobs = tiny
    model = load_converted(convert_caffe(deploy, weights, tmp_path / "t.pth", mean=[100.0, 110.0, 120.0]).path)
    assert model.mean_bgr == (100.0, 110.0, 120.0)
    backbone = caffe_backbone(model.net(), model.mean_bgr)
    rgb = np.random.default_rng(5).uniform(0, 1, (2, 3, 23, 19))
    caffe_input = rgb[:, ::-1] * 255.0 - np.array([100.0, 110.0, 120.0])[None, :, None, None]  # BGR, 0-255, - mean
    reference = tiny_reference(caffe_input, blobs)
    with torch.inference_mode():
        x = torch.from_numpy(rgb.astype(np.float32))
        maps = backbone.forward_features(x).numpy()
        scores = backbone(x).numpy()
    np.testing.assert_allclose(maps, reference["CAM_relu"], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(scores, reference["CAM_fc"], rtol=1e-4, atol=1e-4)


def test_fields_outside_featkits_schema_are_skipped_with_a_warning(
    tiny: tuple[Path, Path, Blobs], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _, weights, _ = tiny
    forked = tmp_path / "forked.prototxt"
    forked.write_text(TINY.replace("kernel_size: 1 group: 2 }", "kernel_size: 1 group: 2 fuse_type: FUSED_CONV_RELU }"))
    result = convert_caffe(forked, weights, tmp_path / "f.pth")
    assert result.layers == 17 and "skipping fields featkit does not model" in caplog.text and "fuse_type" in caplog.text


def test_mean_from_a_caffe_mean_file(tiny: tuple[Path, Path, Blobs], tmp_path: Path) -> None:
    deploy, weights, _ = tiny
    image = np.stack([np.full((4, 4), 100.0), np.full((4, 4), 110.0), np.arange(16.0).reshape(4, 4) + 112.5])
    mean = proto.BlobProto(num=1, channels=3, height=4, width=4)
    mean.data.extend(image.ravel().tolist())
    (tmp_path / "mean.binaryproto").write_bytes(mean.SerializeToString())
    result = convert_caffe(deploy, weights, tmp_path / "t.pth", mean_file=tmp_path / "mean.binaryproto")
    assert result.mean_bgr == (100.0, 110.0, 120.0) and load_converted(result.path).mean_bgr == (100.0, 110.0, 120.0)


# ---------------------------------------------------------------- clear errors


def _one_line_error(call: Callable[[], object], match: str) -> None:
    with pytest.raises(FeatkitError, match=match) as info:
        call()
    assert "\n" not in str(info.value)


def test_unknown_layer_types_are_named(tiny: tuple[Path, Path, Blobs], tmp_path: Path) -> None:
    _, weights, _ = tiny
    bn = tmp_path / "bn.prototxt"
    bn.write_text(TINY.replace('name: "norm1" type: "LRN"', 'name: "norm1" type: "BatchNorm"'))
    _one_line_error(lambda: convert_caffe(bn, weights, tmp_path / "x.pth"),
                    r"layer 'norm1' \(BatchNorm\): featkit cannot convert layer type 'BatchNorm'; supported: Conv")
    v1 = tmp_path / "v1.prototxt"
    v1.write_text('input: "data" input_dim: 1 input_dim: 3 input_dim: 8 input_dim: 8\n'
                  'layers { name: "s" type: SIGMOID bottom: "data" top: "s" }\n')
    _one_line_error(lambda: convert_caffe(v1, weights, tmp_path / "x.pth"), "layer type 'SIGMOID'")


def test_mismatched_blobs_are_refused_before_anything_is_written(tiny: tuple[Path, Path, Blobs], tmp_path: Path) -> None:
    deploy, _, blobs = tiny
    out = tmp_path / "x.pth"
    transposed = {**blobs, "CAM_fc": [blobs["CAM_fc"][0].T.copy(), blobs["CAM_fc"][1]]}
    bad = write_caffemodel(tmp_path / "t.caffemodel", transposed, v1=False, legacy=False)
    _one_line_error(lambda: convert_caffe(deploy, bad, out),
                    r"layer 'CAM_fc' weights: shape \(12, 5\) in t.caffemodel, but the prototxt needs \(5, 12\)")
    wrong_groups = {**blobs, "conv2a": [np.zeros((6, 8, 1, 1), np.float32), blobs["conv2a"][1]]}
    bad = write_caffemodel(tmp_path / "t.caffemodel", wrong_groups, v1=True, legacy=True)
    _one_line_error(lambda: convert_caffe(deploy, bad, out),
                    r"layer 'conv2a' weights: shape \(6, 8, 1, 1\) .* needs \(6, 4, 1, 1\)")
    no_bias = {**blobs, "conv1": blobs["conv1"][:1]}
    bad = write_caffemodel(tmp_path / "t.caffemodel", no_bias, v1=False, legacy=False)
    _one_line_error(lambda: convert_caffe(deploy, bad, out), "layer 'conv1' has 1 blobs in t.caffemodel, the prototxt needs 2")
    missing = {k: v for k, v in blobs.items() if k != "CAM_conv"}
    bad = write_caffemodel(tmp_path / "t.caffemodel", missing, v1=False, legacy=False)
    _one_line_error(lambda: convert_caffe(deploy, bad, out), "t.caffemodel has no weights for layer 'CAM_conv'")
    assert not out.exists()


def test_swapped_files_and_wrong_names_say_what_to_do(tiny: tuple[Path, Path, Blobs], tmp_path: Path) -> None:
    deploy, weights, _ = tiny
    _one_line_error(lambda: convert_caffe(weights, deploy, tmp_path / "x.pth"), "is binary; pass the deploy .prototxt")
    _one_line_error(lambda: convert_caffe(deploy, weights, tmp_path / "x.pth", name="googlenet_gap"),
                    r"is not the GoogLeNet-CAM \(ImageNet\) deploy net \(input data \(3, 23, 19\) instead of")
    _one_line_error(lambda: convert_caffe(deploy, weights), "is not one of the released CAM models.*pass output=")
    out = convert_caffe(deploy, weights, tmp_path / "t.pth").path
    _one_line_error(lambda: backbone_from_file("googlenet_gap", out), r"holds a Caffe net \('tiny'\) that is not googlenet_gap")


def test_a_model_converted_for_one_backbone_is_refused_by_another(tmp_path: Path) -> None:
    net = CaffeNet(CAFFE_MODELS["alexnet_gap"].architecture())
    file = tmp_path / "alex.pth"
    save_converted(file, ConvertedModel("alexnet_gap", net.spec, (104.0, 117.0, 123.0), "", {}, net.state_dict()))
    _one_line_error(lambda: load_backbone("alexnet_gap_places205", str(file)), "holds the alexnet_gap model; use model=.alexnet_gap.")


# ---------------------------------------------------------------- the CLI end to end, at 224 px


def test_convert_then_extract_gives_1024_d_gap_and_14x14_maps(
    released: Callable, fake_cub: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    deploy, weights, blobs = released("googlenet_gap")
    converted = tmp_path / "converted.pth"
    assert main(["convert", "caffe", str(deploy), str(weights), "-o", str(converted), "--mean", "104,117,123"]) == 0
    assert "-> googlenet_gap" in capsys.readouterr().out
    root = fake_cub(n_classes=1, per_class=2)
    out = tmp_path / "f.h5"
    assert main(["extract", str(root), "--dataset", "cub200", "-o", str(out), "--model", "googlenet_gap",
                 "--weights", str(converted), "--maps", "--workers", "0", "--batch-size", "2",
                 "--resize", "warp"]) == 0  # the paper's square input: 14 x 14 maps at 224 px
    with FeatureFile(out) as f:
        assert f.attrs["backbone"] == "googlenet_gap" and f.attrs["input_size"] == 224
        assert f.gap.shape == (2, 1024) and np.isfinite(f.gap).all() and f.gap.std() > 0
        maps = f.maps([0, 1])
        assert maps.shape == (2, 1024, 14, 14)
        np.testing.assert_allclose(maps.mean(axis=(2, 3)), f.gap, rtol=1e-2, atol=1e-3)
        head = f.head()
        assert head is not None and np.array_equal(head.weight, blobs["CAM_fc"][0]) and head.classes[0] == "tench"
    capsys.readouterr()
    # in the default place, `featkit models` lists it as available and the backbone needs no --weights
    default = default_converted_path("googlenet_gap")
    default.parent.mkdir(parents=True)
    shutil.copy(converted, default)
    assert main(["models"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("googlenet_gap "))
    assert "featkit convert caffe` -> " in row and "featkit/googlenet_gap.pth" in row and row.rstrip().endswith("yes")
    _, _, info = load_backbone("googlenet_gap")
    assert info.identifier == str(default.resolve())


def test_cli_conversion_errors_are_one_line_and_exit_2(tiny: tuple[Path, Path, Blobs], tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    deploy, weights, _ = tiny
    assert main(["convert", "caffe", str(deploy), str(weights), "-o", str(tmp_path / "t.pth"), "--mean", "1,x"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--mean takes B,G,R numbers" in err
