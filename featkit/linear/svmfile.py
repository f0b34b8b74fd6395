"""svm.h5: one-vs-all SVM weights with the provenance of the features they were trained on.

svm.h5 holds ``weight`` (C, K), ``bias`` (C), ``classes`` (C), ``C`` and the
CV curve, and attributes: the solver and its options (``C_mode``, ``C_rule``,
``cv_folds``, ``cv_score`` of the chosen C), the feature
normalization, the provenance of the features and what the SVM was trained on
(``trained_split``, ``trained_fold``, ``trained_n_images``,
``trained_images_sha256`` of the image list, the rows in ``trained/rows`` and
the training images' content fingerprints in ``trained/fingerprints``, so
scoring can refuse them, in this file by row and in any file by content).
It is written atomically; :func:`classifier_for` refuses an SVM whose feature
provenance differs from the features it is applied to.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from featkit import __version__
from featkit.errors import FeatkitError
from featkit.features.lock import OutputLock, remove_stale_temps, temp_name
from featkit.features.schema import ABSENT_MEANS, MATCH_KEYS
from featkit.features.store import FeatureFile
from featkit.linear.classifier import LinearClassifier, trained_attrs
from featkit.linear.svm import OneVsAllLinearSVM
from featkit.outputs import check_output_file, h5_image, write_bytes
from featkit.validation import as_int, damaged, int_attr, read_array, read_strings, require_schema

SVM_SCHEMA_VERSION = 1
_STR = h5py.string_dtype("utf-8")


def save_svm(path: str | Path, svm: OneVsAllLinearSVM, classes: list[str], features: FeatureFile,
             trained_on: dict[str, Any], overwrite: bool = False) -> Path:
    """Write svm.h5 atomically (temp file + rename): an existing file is replaced only on success."""
    path = check_output_file(path, overwrite=overwrite, example="svm.h5", inputs=[features.path])
    with OutputLock(path):
        # what killed saves of this output left: temps of dead pids, and older versions' .svm-*.h5 after an hour
        remove_stale_temps(path, legacy_glob=".svm-*.h5")
        if path.exists() and not overwrite:
            raise FeatkitError(f"{path} already exists; choose another output or pass overwrite=True to replace it")
        _write_svm(path, svm, classes, features, trained_on)
    return path


def _write_svm(path: Path, svm: OneVsAllLinearSVM, classes: list[str], features: FeatureFile,
               trained_on: dict[str, Any]) -> None:
    fa = features.attrs

    def build(h5: h5py.File) -> None:
        h5.create_dataset("weight", data=np.asarray(svm.coef_, dtype=np.float64))
        h5.create_dataset("bias", data=np.asarray(svm.intercept_, dtype=np.float64))
        h5.create_dataset("classes", data=np.array(classes, dtype=object), dtype=_STR)
        h5.create_dataset("C", data=np.asarray(svm.C_, dtype=np.float64))
        if getattr(svm, "C_grid_", None) is not None:
            h5.create_dataset("cv/C_grid", data=svm.C_grid_)
            h5.create_dataset("cv/scores", data=svm.cv_scores_)
        a = h5.attrs
        a["featkit_version"] = __version__
        a["schema_version"] = SVM_SCHEMA_VERSION
        a["kind"] = "one-vs-all linear SVM"
        a["solver"] = "liblinear -s 2 (L2-regularized L2-loss SVC, primal) -B 1"
        a["C_mode"] = "auto (cross-validation)" if svm.C == "auto" else "fixed"
        a["C_rule"] = getattr(svm, "C_rule_", "fixed")
        if getattr(svm, "cv_score_", None) is not None:
            a["cv_score"] = float(svm.cv_score_)
        a["per_class_C"] = bool(svm.per_class_C)
        a["cv_folds"] = int(svm.cv)
        a["tol"] = float(svm.tol)
        a["random_state"] = int(svm.random_state)
        a["normalize"] = svm.normalize
        a["multilabel"] = bool(svm.multilabel)
        a["created"] = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
        for key in (*MATCH_KEYS, "dataset", "schema_version"):
            value = fa.get(key, ABSENT_MEANS.get(key))
            if value is not None:
                a[f"features_{key}"] = value
        a["features_file"] = str(features.path.resolve())
        for key, value in trained_attrs(trained_on).items():
            if key == "trained_rows":  # too long for an attribute on large datasets
                h5.create_dataset("trained/rows", data=np.asarray(value, dtype=np.int64))
            elif key == "trained_fingerprints":
                h5.create_dataset("trained/fingerprints", data=np.asarray(value, dtype=object), dtype=_STR)
            else:
                a[key] = value

    write_bytes(path, h5_image(build), prefix=temp_name(path))  # built in memory: a full disk cannot crash HDF5


def load_svm(path: str | Path) -> LinearClassifier:
    """svm.h5 at ``path``, every entry validated (:mod:`featkit.validation`) before use."""
    path = Path(path)
    if not path.is_file():
        raise FeatkitError(f"SVM file {path} does not exist; train one with svm-train")
    try:
        with h5py.File(path, "r") as h5:
            if "weight" not in h5 or h5.attrs.get("kind") != "one-vs-all linear SVM":
                raise FeatkitError(f"{path} is not a featkit svm.h5 (no SVM weights); use svm-train")
            return _read_svm(h5, path)
    except OSError as exc:
        raise FeatkitError(f"{path} is not a readable HDF5 file ({exc})") from exc


def _read_svm(h5: h5py.File, path: Path) -> LinearClassifier:
    fix = "train it again with svm-train"
    require_schema(h5.attrs, SVM_SCHEMA_VERSION, path, fix)
    weight = read_array(h5, "weight", path, shape=(None, None), finite=True, fix=fix).astype(np.float64)
    n_classes, channels = weight.shape
    if n_classes < 1 or channels < 1:
        raise damaged(path, f"weight has shape {weight.shape}, expected (classes, channels)", fix)
    bias = read_array(h5, "bias", path, shape=(n_classes,), finite=True, fix=fix).astype(np.float64)
    classes = read_strings(h5, "classes", path, length=n_classes, fix=fix)
    attrs = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in h5.attrs.items()}
    normalize = attrs.get("normalize")
    if normalize not in ("l2", "none"):
        raise damaged(path, f"attribute normalize is {normalize!r}, expected 'l2' or 'none'", fix)
    if "trained/rows" in h5:
        rows = read_array(h5, "trained/rows", path, kinds="iu", shape=(None,), fix=fix).astype(np.int64)
        n = attrs.get("trained_n_images")
        if rows.size and (rows.min() < 0 or np.any(np.diff(rows) <= 0)) or (n is not None and as_int(n) != rows.size):
            raise damaged(path, f"trained/rows is not the {n} increasing row numbers of the training images", fix)
        attrs["trained_rows"] = rows
    if "trained/fingerprints" in h5:
        attrs["trained_fingerprints"] = np.asarray(read_strings(h5, "trained/fingerprints", path, fix=fix), dtype=object)
    if "trained_fold" in attrs:
        int_attr(attrs, "trained_fold", path, fix=fix)
    if "C" in h5:
        attrs["C_values"] = read_array(h5, "C", path, shape=(None,), finite=True, fix=fix)
    return LinearClassifier(weight, bias, classes, str(normalize), str(path), "svm", attrs)


def check_matches(classifier: LinearClassifier, features: FeatureFile, *, need_same_classes: bool = True) -> None:
    """Refuse (one line, naming the field) to apply weights to features made otherwise, or of another class list.

    Every key of MATCH_KEYS (backbone, weights, layer, pooling, input size, mean/std, precision, resize,
    crop) is compared; a key an older svm.h5 lacks is unknown and let through.
    """
    fa = features.attrs
    for key in MATCH_KEYS:
        have = classifier.attrs.get(f"features_{key}")
        want = fa.get(key, ABSENT_MEANS.get(key))
        if have is not None and want is not None and not _same(have, want):
            raise FeatkitError(
                f"{classifier.source} was trained on other features ({key}: {have} there, {want} in "
                f"{features.path}); train an SVM on these features (svm-train)"
            )
    if classifier.weight.shape[1] != int(fa.get("channels") or classifier.weight.shape[1]):
        raise FeatkitError(
            f"{classifier.source} has {classifier.weight.shape[1]} weights per class but {features.path} has "
            f"{fa.get('channels')} channels; train an SVM on these features"
        )
    if need_same_classes and not classifier.is_head and classifier.classes != features.classes:
        raise FeatkitError(
            f"{classifier.source} has another class list than {features.path} "
            f"({len(classifier.classes)} vs {len(features.classes)} classes); train an SVM on these features"
        )


def _same(a: Any, b: Any) -> bool:
    """Equal provenance values: numbers to float32 precision (mean, std), anything else exactly."""
    x, y = np.asarray(a), np.asarray(b)
    if x.dtype.kind in "fiu" and y.dtype.kind in "fiu" and x.shape == y.shape:
        return bool(np.allclose(x, y, rtol=1e-6, atol=0.0))
    return bool(x.tolist() == y.tolist())


def classifier_for(features: FeatureFile, svm_path: str | Path | None) -> LinearClassifier:
    """The SVM at ``svm_path`` checked against ``features``, or the backbone head when None."""
    if svm_path is None or str(svm_path) == "head":
        head = features.head()
        if head is None:
            layer = features.attrs.get("feature_layer")
            raise FeatkitError(f"{features.path} has no backbone head (its features come from layer {layer!r}, "
                               "which has no classifier of its own); pass an svm.h5 from svm-train: SVM weights give "
                               "CAMs at any layer")
        return LinearClassifier.from_head(head, features.attrs)
    classifier = load_svm(svm_path)
    check_matches(classifier, features)
    return classifier
