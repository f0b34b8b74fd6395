"""The authors' released CAM networks (github.com/zhoubolei/CAM, models/), encoded in featkit's form.

Generated from the design tables rather than copied prototxts: GoogLeNet-CAM
is GoogLeNet up to inception_4e plus a 3x3 group-2 ``CAM_conv`` (1024), VGG16-CAM
is VGG16 up to conv5_3 (pool5 and the fc layers removed) plus the same
``CAM_conv``, AlexNet+-CAM is AlexNet with pool5 at stride 1 and two extra
group-2 convs (512). Each ends with global average pooling, an InnerProduct
and a Softmax, exactly as in the deploy files, with the same layer and blob
names, so a converted model can be checked against them and a random-weights
model can be built without any file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from featkit.models.caffe.spec import (
    LRN,
    Concat,
    Convolution,
    Dropout,
    InnerProduct,
    Layer,
    NetSpec,
    Pooling,
    ReLU,
    Softmax,
)

MODELS_URL = "http://cnnlocalization.csail.mit.edu/demoCAM/models"


def _conv(name: str, bottom: str, n: int, k: int, s: int = 1, p: int = 0, g: int = 1, top: str = "") -> Layer:
    return Layer(name, (bottom,), (top or name,), Convolution(n, (k, k), (s, s), (p, p), group=g))


def _relu(name: str, blob: str) -> Layer:
    return Layer(name, (blob,), (blob,), ReLU())  # in place, as Caffe writes it


def _pool(name: str, bottom: str, method: str, k: int, s: int, p: int = 0) -> Layer:
    return Layer(name, (bottom,), (name,), Pooling(method, (k, k), (s, s), (p, p)))


def _lrn(name: str, bottom: str) -> Layer:
    return Layer(name, (bottom,), (name,), LRN(size=5, alpha=0.0001, beta=0.75))


def _conv_relu(name: str, relu: str, bottom: str, n: int, k: int, s: int = 1, p: int = 0, g: int = 1) -> list[Layer]:
    return [_conv(name, bottom, n, k, s, p, g), _relu(relu, name)]


def _gap_head(pool: str, conv: str, kernel: int, fc: str, classes: int, dropout: str = "") -> list[Layer]:
    layers = [_pool(pool, conv, "AVE", kernel, kernel)]
    if dropout:
        layers.append(Layer(dropout, (pool,), (pool,), Dropout(0.5)))
    layers.append(Layer(fc, (pool,), (fc,), InnerProduct(classes)))
    layers.append(Layer("prob", (fc,), ("prob",), Softmax()))
    return layers


INCEPTION = {
    # module: (1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool proj), Szegedy et al. 2015, Table 1
    "3a": (64, 96, 128, 16, 32, 32),
    "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64),
    "4b": (160, 112, 224, 24, 64, 64),
    "4c": (128, 128, 256, 24, 64, 64),
    "4d": (112, 144, 288, 32, 64, 64),
    "4e": (256, 160, 320, 32, 128, 128),
}


def _inception(module: str, bottom: str) -> list[Layer]:
    n1, r3, n3, r5, n5, proj = INCEPTION[module]
    m = f"inception_{module}"
    return [
        *_conv_relu(f"{m}/1x1", f"{m}/relu_1x1", bottom, n1, 1),
        *_conv_relu(f"{m}/3x3_reduce", f"{m}/relu_3x3_reduce", bottom, r3, 1),
        *_conv_relu(f"{m}/3x3", f"{m}/relu_3x3", f"{m}/3x3_reduce", n3, 3, p=1),
        *_conv_relu(f"{m}/5x5_reduce", f"{m}/relu_5x5_reduce", bottom, r5, 1),
        *_conv_relu(f"{m}/5x5", f"{m}/relu_5x5", f"{m}/5x5_reduce", n5, 5, p=2),
        _pool(f"{m}/pool", bottom, "MAX", 3, 1, 1),
        *_conv_relu(f"{m}/pool_proj", f"{m}/relu_pool_proj", f"{m}/pool", proj, 1),
        Layer(f"{m}/output", (f"{m}/1x1", f"{m}/3x3", f"{m}/5x5", f"{m}/pool_proj"), (f"{m}/output",), Concat()),
    ]


def googlenet_cam(classes: int = 1000) -> NetSpec:
    """deploy_googlenetCAM.prototxt (classes=1000) and deploy_googlenetCAM_places205.prototxt (205)."""
    layers = [
        *_conv_relu("conv1/7x7_s2", "conv1/relu_7x7", "data", 64, 7, 2, 3),
        _pool("pool1/3x3_s2", "conv1/7x7_s2", "MAX", 3, 2),
        _lrn("pool1/norm1", "pool1/3x3_s2"),
        *_conv_relu("conv2/3x3_reduce", "conv2/relu_3x3_reduce", "pool1/norm1", 64, 1),
        *_conv_relu("conv2/3x3", "conv2/relu_3x3", "conv2/3x3_reduce", 192, 3, p=1),
        _lrn("conv2/norm2", "conv2/3x3"),
        _pool("pool2/3x3_s2", "conv2/norm2", "MAX", 3, 2),
        *_inception("3a", "pool2/3x3_s2"),
        *_inception("3b", "inception_3a/output"),
        _pool("pool3/3x3_s2", "inception_3b/output", "MAX", 3, 2),
        *_inception("4a", "pool3/3x3_s2"),
        *_inception("4b", "inception_4a/output"),
        *_inception("4c", "inception_4b/output"),
        *_inception("4d", "inception_4c/output"),
        *_inception("4e", "inception_4d/output"),
        *_conv_relu("CAM_conv", "CAM_relu", "inception_4e/output", 1024, 3, p=1, g=2),
        *_gap_head("CAM_pool", "CAM_conv", 14, "CAM_fc", classes),
    ]
    return NetSpec("GoogleNet", "data", (3, 224, 224), tuple(layers))


VGG16_BLOCKS = ((2, 64), (2, 128), (3, 256), (3, 512), (3, 512))
"""(convs, channels) of VGG16's five blocks; every conv is 3x3, pad 1."""


def vgg16_cam(classes: int = 1000) -> NetSpec:
    """deploy_vgg16CAM.prototxt: VGG16 to conv5_3 (no pool5, no fc), CAM_conv, GAP, CAM_fc."""
    layers: list[Layer] = []
    bottom = "data"
    for block, (convs, channels) in enumerate(VGG16_BLOCKS, start=1):
        for i in range(1, convs + 1):
            layers += _conv_relu(f"conv{block}_{i}", f"relu{block}_{i}", bottom, channels, 3, p=1)
            bottom = f"conv{block}_{i}"
        if block < 5:
            layers.append(_pool(f"pool{block}", bottom, "MAX", 2, 2))
            bottom = f"pool{block}"
    layers += _conv_relu("CAM_conv", "CAM_relu", bottom, 1024, 3, p=1, g=2)
    layers += _gap_head("CAM_pool", "CAM_conv", 14, "CAM_fc", classes, dropout="CAM_dropout")
    return NetSpec("VGG_ILSVRC_16_layers", "data", (3, 224, 224), tuple(layers))


def alexnet_cam(classes: int = 1000, dropout: bool = True) -> NetSpec:
    """deploy_alexnetplusCAM_imagenet.prototxt (with drop8) and ..._places205.prototxt (205 classes, no dropout)."""
    layers = [
        *_conv_relu("conv1", "relu1", "data", 96, 11, 4),
        _pool("pool1", "conv1", "MAX", 3, 2),
        _lrn("norm1", "pool1"),
        *_conv_relu("conv2", "relu2", "norm1", 256, 5, p=2, g=2),
        _pool("pool2", "conv2", "MAX", 3, 2),
        _lrn("norm2", "pool2"),
        *_conv_relu("conv3", "relu3", "norm2", 384, 3, p=1),
        *_conv_relu("conv4", "relu4", "conv3", 384, 3, p=1, g=2),
        *_conv_relu("conv5", "relu5", "conv4", 384, 3, p=1, g=2),
        _pool("pool5", "conv5", "MAX", 3, 1),
        *_conv_relu("conv6", "relu6", "pool5", 512, 3, p=1, g=2),
        *_conv_relu("conv7", "relu7", "conv6", 512, 3, p=1, g=2),
        *_gap_head("pool8_global", "conv7", 11, "fc9", classes, dropout="drop8" if dropout else ""),
    ]
    name = "imagenetCNN_alexnetdeep" if dropout else "placesCNNobjectdiscoveryAverageSumDeepNoDropout"
    return NetSpec(name, "data", (3, 227, 227), tuple(layers))


@dataclass(frozen=True)
class CaffeModelInfo:
    """One released CAM model: its featkit backbone name, files, and what the backbone spec records."""

    name: str
    title: str
    deploy: str
    caffemodel: str
    architecture: Callable[[], NetSpec]
    channels: int
    input_size: int
    feature_layer: str
    head: str
    classes: int

    @property
    def weights_url(self) -> str:
        return f"{MODELS_URL}/{self.caffemodel}"


CAFFE_MODELS: dict[str, CaffeModelInfo] = {
    info.name: info
    for info in (
        CaffeModelInfo("googlenet_gap", "GoogLeNet-CAM (ImageNet)", "deploy_googlenetCAM.prototxt",
                       "imagenet_googleletCAM_train_iter_120000.caffemodel", lambda: googlenet_cam(1000),
                       1024, 224, "CAM_conv + CAM_relu (Caffe GoogLeNet-CAM, after inception_4e)", "imagenet-1k", 1000),
        CaffeModelInfo("vgg16_gap", "VGG16-CAM (ImageNet)", "deploy_vgg16CAM.prototxt",
                       "vgg16CAM_train_iter_90000.caffemodel", lambda: vgg16_cam(1000),
                       1024, 224, "CAM_conv + CAM_relu (Caffe VGG16-CAM, after conv5_3)", "imagenet-1k", 1000),
        CaffeModelInfo("alexnet_gap", "AlexNet+-CAM (ImageNet)", "deploy_alexnetplusCAM_imagenet.prototxt",
                       "alexnetplusCAM_imagenet.caffemodel", lambda: alexnet_cam(1000, dropout=True),
                       512, 227, "conv7 + relu7 (Caffe AlexNet+-CAM)", "imagenet-1k", 1000),
        CaffeModelInfo("googlenet_gap_places205", "GoogLeNet-CAM (Places205)", "deploy_googlenetCAM_places205.prototxt",
                       "places_googleletCAM_train_iter_120000.caffemodel", lambda: googlenet_cam(205),
                       1024, 224, "CAM_conv + CAM_relu (Caffe GoogLeNet-CAM Places205, after inception_4e)",
                       "places205", 205),
        CaffeModelInfo("alexnet_gap_places205", "AlexNet+-CAM (Places205)", "deploy_alexnetplusCAM_places205.prototxt",
                       "alexnetplusCAM_places205.caffemodel", lambda: alexnet_cam(205, dropout=False),
                       512, 227, "conv7 + relu7 (Caffe AlexNet+-CAM Places205)", "places205", 205),
    )
}


def _essential(net: NetSpec) -> tuple[Layer, ...]:
    """The layers that must agree for two nets to be the same model (dropout is identity at test time)."""
    return tuple(layer for layer in net.layers if layer.type != "Dropout")


def first_difference(net: NetSpec, known: NetSpec) -> str:
    """One line saying where ``net`` departs from ``known`` ('' when they agree)."""
    if (net.input, net.input_shape) != (known.input, known.input_shape):
        return f"input {net.input} {net.input_shape} instead of {known.input} {known.input_shape}"
    ours, theirs = _essential(net), _essential(known)
    for a, b in zip(ours, theirs):
        if a != b:
            return f"layer '{a.name}' ({a.type}) where '{b.name}' ({b.type}, {b.params}) is expected"
    if len(ours) != len(theirs):
        return f"{len(ours)} layers instead of {len(theirs)}"
    return ""


def identify(net: NetSpec) -> str | None:
    """The registered name of a released CAM model with exactly this architecture, if any."""
    for info in CAFFE_MODELS.values():
        if not first_difference(net, info.architecture()):
            return info.name
    return None
