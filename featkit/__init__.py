"""featkit: deep GAP features, one-vs-all linear SVMs and class activation maps.

Reproduces and extends Sec. 4 of Zhou et al., "Learning Deep Features for
Discriminative Localization" (CVPR 2016). The pipeline, one package per stage:
``data`` (dataset readers) and ``models`` (backbones) -> ``features``
(features.h5) -> ``linear`` (SVMs, svm.h5, protocols) -> ``cam`` (CAMs, boxes,
localization) -> ``viz`` (pictures) and ``experiments`` (Table 4 crops, units,
discovery, demo); ``cli`` is the ``featkit`` command.

The names below are the public Python API. They are imported on first use, so
``import featkit`` (and the CLI's start) stays light until torch is needed.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

from featkit.errors import FeatkitError
from featkit.lazy import lazy_exports

try:
    __version__ = version("featkit")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+source"

_EXPORTS: dict[str, str] = {
    "open_dataset": "featkit.data",
    "load_backbone": "featkit.models",
    "register_backbone": "featkit.models.custom",
    "ExtractOptions": "featkit.features",
    "extract": "featkit.features",
    "FeatureFile": "featkit.features",
    "MapSource": "featkit.features",
    "OneVsAllLinearSVM": "featkit.linear",
    "LinearClassifier": "featkit.linear",
    "train_svm": "featkit.linear",
    "evaluate": "featkit.linear",
    "split_rows": "featkit.linear",
    "run_protocol": "featkit.linear",
    "save_svm": "featkit.linear",
    "load_svm": "featkit.linear",
    "classifier_for": "featkit.linear",
    "CamOptions": "featkit.cam",
    "CamBoxer": "featkit.cam",
    "class_activation_maps": "featkit.cam",
    "calibrate": "featkit.cam",
    "localize": "featkit.cam",
    "render_cams": "featkit.viz",
}

__all__ = [
    "FeatkitError",
    "__version__",
    "open_dataset",
    "load_backbone",
    "register_backbone",
    "ExtractOptions",
    "extract",
    "FeatureFile",
    "MapSource",
    "OneVsAllLinearSVM",
    "LinearClassifier",
    "train_svm",
    "evaluate",
    "split_rows",
    "run_protocol",
    "save_svm",
    "load_svm",
    "classifier_for",
    "CamOptions",
    "CamBoxer",
    "class_activation_maps",
    "calibrate",
    "localize",
    "render_cams",
]

if TYPE_CHECKING:
    from featkit.cam import CamBoxer, CamOptions, calibrate, class_activation_maps, localize
    from featkit.data import open_dataset
    from featkit.features import ExtractOptions, FeatureFile, MapSource, extract
    from featkit.linear import (
        LinearClassifier,
        OneVsAllLinearSVM,
        classifier_for,
        evaluate,
        load_svm,
        run_protocol,
        save_svm,
        split_rows,
        train_svm,
    )
    from featkit.models import load_backbone
    from featkit.models.custom import register_backbone
    from featkit.viz import render_cams


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
