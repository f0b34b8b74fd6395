"""Re-classification from crops (paper Table 4): CAM boxes or ground-truth boxes -> new features -> SVM.

The CAM of the predicted class gives a box for every train and test image;
the backbone re-extracts features from those crops (same weights, same input
size), and a new one-vs-all SVM is trained and scored on them. The same with
the ground-truth boxes gives the upper bound the paper reports beside it.

The crops file records what it was cut from, so a Table 4 row can be audited:
``images/crop_box`` holds every row's box and the ``crop_*`` root attributes
the method, the CAM options and the source SVM (path, sha256, training fold).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from featkit.cam.boxer import CamBoxer
from featkit.cam.calibration import Calibration
from featkit.cam.foreground import ForegroundModel
from featkit.cam.maps import CamOptions
from featkit.data.base import ImageRecord
from featkit.errors import FeatkitError
from featkit.features.extractor import ExtractJob, ExtractOptions, Progress
from featkit.features.integrity import require_same_images, require_usable
from featkit.features.mapsource import MapSource
from featkit.features.pipeline import run_job
from featkit.features.replay import weights_argument
from featkit.features.schema import STATUS_OK
from featkit.features.store import FeatureFile
from featkit.linear.classifier import LinearClassifier
from featkit.linear.protocol import Metrics, evaluate, train_svm
from featkit.models.weights import sha256_of
from featkit.outputs import check_output_file

BOX_SOURCES = ("cam", "gt")


def predicted_class_boxes(
    features: FeatureFile,
    classifier: LinearClassifier,
    rows: Sequence[int] | np.ndarray,
    cam_options: CamOptions = CamOptions(),
    root: str | Path | None = None,
    batch: int = 64,
    foreground: ForegroundModel | None = None,
) -> np.ndarray:
    """(n, 4) CAM boxes of the top-1 predicted class of each row, in original pixels.

    ``foreground``: the model of a learned method (from a :class:`~featkit.cam.calibration.Calibration`).
    """
    idx = np.asarray(rows, dtype=np.int64)
    predicted = classifier.decision_function(features.gap[idx]).argmax(axis=1)
    where = {int(r): i for i, r in enumerate(idx)}
    boxer = CamBoxer(classifier.weight, cam_options, foreground)
    boxes = np.zeros((len(idx), 4), dtype=np.float64)
    source = MapSource.of(features, root)
    for part, maps in boxer.batches(source, idx, batch):
        positions = np.array([where[int(r)] for r in part])
        cams = boxer.row_cams(source, part, maps, predicted[positions])[:, 0]
        boxes[positions] = boxer.boxes_of(cams, features.sizes[part], source.frames(part))
    return boxes


def crop_provenance(method: str, classifier: LinearClassifier, cam_options: CamOptions,
                    calibration: Calibration | None = None) -> dict[str, object]:
    """Root attributes of a crops file: how its boxes were made (``crop`` stays the one-line summary).

    Every :class:`~featkit.cam.maps.CamOptions` field that changes a box is recorded (``crop_close``,
    ``crop_scales``, ``crop_layer``, ``crop_enhance`` too), and where the threshold was chosen.
    """
    if method == "gt":
        return {"crop": "gt", "crop_method": "gt"}
    source = Path(classifier.source)
    attrs: dict[str, object] = {
        "crop": (f"cam:{classifier.source}:threshold={cam_options.threshold}:"
                 f"normalization={cam_options.normalization}:weights={cam_options.weights}"
                 + ("" if cam_options.method == "cam" else f":method={cam_options.method}")),
        "crop_method": "cam",
        "crop_map_method": cam_options.method,
        "crop_svm": str(source.resolve()) if not classifier.is_head else "head",
        "crop_threshold": float(cam_options.threshold),
        "crop_normalization": cam_options.normalization,
        "crop_cam_weights": cam_options.weights,
        "crop_upsample": cam_options.upsample,
        "crop_close": int(cam_options.close),
        "crop_scales": [float(v) for v in cam_options.scales],
        "crop_layer": cam_options.layer,
        "crop_enhance": float(cam_options.enhance),
        "crop_threshold_chosen_on": ("a priori" if calibration is None
                                     else f"{calibration.split} ({calibration.n_images} images)"),
    }
    if not classifier.is_head and source.is_file():
        attrs["crop_svm_sha256"] = sha256_of(source)
    if "trained_fold" in classifier.attrs:
        attrs["crop_svm_split"] = str(classifier.attrs.get("trained_split", ""))
        attrs["crop_svm_fold"] = int(classifier.attrs["trained_fold"])
    return attrs


@dataclass(frozen=True)
class CropResult:
    path: Path
    boxes: str
    metrics: Metrics


def extract_crops(
    root: str | Path,
    features: FeatureFile,
    classifier: LinearClassifier,
    output: str | Path,
    boxes: str = "cam",
    options: ExtractOptions | None = None,
    cam_options: CamOptions = CamOptions(),
    progress: Progress | None = None,
    calibration: Calibration | None = None,
) -> Path:
    """Features of every image's CAM (or ground-truth) box into ``output`` (a features.h5, resumable).

    ``calibration`` (chosen on the train split) replaces ``cam_options`` and carries a learned method's model.
    """
    if calibration is not None:
        cam_options = calibration.options
    if boxes not in BOX_SOURCES:
        raise FeatkitError(f"boxes must be one of {', '.join(BOX_SOURCES)}, got {boxes!r}")
    check_output_file(output, existing="allow", example="crops.h5", inputs=[features.path, classifier.source])
    if not Path(root).is_dir():
        raise FeatkitError(f"dataset root {root} is not a folder; give the root the features were extracted from")
    require_usable(features)
    rows = np.flatnonzero(features.status == STATUS_OK)
    if rows.size < len(features):
        raise FeatkitError(
            f"{len(features) - rows.size} images of {features.path} were not extracted; crops need every row "
            "(re-extract, or drop the unreadable images from the dataset)"
        )
    require_same_images(features, root, rows)
    if boxes == "gt":
        crop = features.box.astype(np.float64)
        missing = np.isnan(crop).any(axis=1)
        if missing.any():
            raise FeatkitError(
                f"{int(missing.sum())} images of {features.path} have no ground-truth box; "
                "boxes='gt' needs a box per image (CUB), use boxes='cam'"
            )
    else:
        crop = predicted_class_boxes(features, classifier, rows, cam_options, root,
                                     foreground=None if calibration is None else calibration.foreground)
    provenance = crop_provenance(boxes, classifier, cam_options, calibration)
    attrs = features.attrs
    labels, paths, all_boxes = features.labels, features.paths, features.boxes_of()
    records = [ImageRecord(paths[i], int(labels[i]), "", tuple(map(tuple, all_boxes[i].tolist())))
               for i in range(len(features))]
    base = options or ExtractOptions()
    resize, tta = features.geometry
    options = ExtractOptions(
        model=str(attrs["backbone"]), weights=weights_argument(attrs), image_size=int(attrs["input_size"]),
        batch_size=base.batch_size, workers=base.workers, device=base.device, maps=False,
        on_error=base.on_error, overwrite=base.overwrite, precision=str(attrs.get("precision", "float32")),
        resize=resize, tta=tta,
        exif_transpose=attrs.get("orientation") == "exif",
    )
    run_job(ExtractJob(Path(root), records, features.classes, features.splits, str(attrs["dataset"]), Path(output),
                       options, progress, crops=crop, crop_source=str(provenance.pop("crop")), extra=provenance))
    return Path(output)


def crop_accuracy(crops_path: str | Path, split: str = "test", fold: int = 0, **svm_options: object) -> Metrics:
    """Train the one-vs-all SVM on the crop features' training split and score ``split``."""
    with FeatureFile(crops_path) as crops:
        svm, _ = train_svm(crops, fold=fold, **svm_options)  # type: ignore[arg-type]
        classifier = LinearClassifier.from_estimator(svm, crops.classes, "crop-svm")
        return evaluate(classifier, crops, split, fold)
