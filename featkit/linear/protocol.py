"""Training and scoring under a dataset's split protocol.

Rows used are those with a readable image (status ok) and a label (or
attribute targets for multi-label data); the split column of the chosen fold
says which are train and test. Metrics: accuracy, mean per-class accuracy,
top-5 and a confusion matrix; mean average precision for multi-label data.

A classifier is never scored on rows it was trained on: an SVM records its
training rows (and the image list they index) and the content fingerprints of
its training images, scoring defaults to the SVM's own fold (``fold=None``),
and :func:`refuse_training_rows` refuses any overlap, so a fold-1 SVM cannot be
scored on fold 0's test split (which holds fold-1 training images) by
accident, nor on its own training images listed again in another file
(another layout, other paths or split names: :mod:`featkit.features.overlap`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from featkit.errors import FeatkitError
from featkit.features.integrity import require_usable
from featkit.features.overlap import FittedImages, Overlap, overlap, refuse_fitted
from featkit.features.schema import STATUS_OK
from featkit.features.store import FeatureFile
from featkit.linear.classifier import LinearClassifier
from featkit.linear.svm import OneVsAllLinearSVM, average_precision

log = logging.getLogger(__name__)


def multilabel(features: FeatureFile) -> bool:
    return features.attributes is not None


def split_rows(features: FeatureFile, split: str, fold: int = 0, splits: np.ndarray | None = None) -> np.ndarray:
    """Indices of usable rows in ``split`` of ``fold``; a clear error when there are none.

    ``splits`` (N, F) replaces the file's split table (a protocol re-drawn for a small sample).
    """
    splits = features.splits if splits is None else splits
    if not 0 <= fold < splits.shape[1]:
        raise FeatkitError(f"fold {fold} does not exist; {features.path} has folds 0..{splits.shape[1] - 1}")
    usable = features.status == STATUS_OK
    if not multilabel(features):
        usable &= features.labels >= 0
    rows = np.flatnonzero(usable & (splits[:, fold] == split))
    if rows.size == 0:
        present = sorted({s for s in splits[:, fold] if s})
        hint = (f"splits present: {', '.join(present)}" if present else
                "the dataset has no split (a plain folder or list): extract it again with holdout=0.25 for a "
                "stratified held-out quarter (or put the images in train/ and val/ folders)")
        in_split = (features.status == STATUS_OK) & (splits[:, fold] == split)
        if in_split.any() and not multilabel(features):
            hint = (f"its {int(in_split.sum())} extracted images have no label (a csv without the label column, or "
                    "with it empty); give every training image a label")
        raise FeatkitError(f"no usable images in split {split!r} of fold {fold} in {features.path}; {hint}")
    return rows


def eval_split(features: FeatureFile, fold: int = 0, splits: np.ndarray | None = None) -> str:
    """The split scores are reported on: 'test', or 'val' in a file that has a val split but no test split
    (a torchvision-style train/val tree)."""
    table = features.splits if splits is None else splits
    present = set(table[:, fold]) if 0 <= fold < table.shape[1] else set()
    return "val" if "test" not in present and "val" in present else "test"


def targets(features: FeatureFile, rows: np.ndarray) -> np.ndarray:
    if multilabel(features):
        attributes = features.attributes
        assert attributes is not None
        return (attributes[rows] > 0).astype(np.int64)
    return features.labels[rows]


def train_svm(
    features: FeatureFile,
    split: str = "train",
    fold: int = 0,
    C: float | Literal["auto"] = "auto",
    normalize: Literal["l2", "none"] = "l2",
    per_class_C: bool = False,
    n_jobs: int | None = -1,
    splits: np.ndarray | None = None,
) -> tuple[OneVsAllLinearSVM, dict[str, Any]]:
    """Fit the one-vs-all SVM on one split of one fold; returns it and what it was trained on.

    Training on 'test' is allowed (a deliberate upper bound); the split is recorded in what it was
    trained on, and :meth:`LinearClassifier.training_note` makes every later report say so.

    The record (split, fold, n_images, rows, images_sha256 of the file's image list, the training
    images' content fingerprints) is also kept on the SVM as ``trained_on_``, for
    :meth:`LinearClassifier.from_estimator` and svm.h5.
    """
    check_svm_options(C, n_jobs)
    require_usable(features)
    rows = split_rows(features, split, fold, splits)
    gap = features.gap[rows]
    y = targets(features, rows)
    n_classes = len(features.classes)
    if not multilabel(features):
        missing = sorted(set(range(n_classes)) - set(np.unique(y).tolist()))
        if len(missing) == n_classes - 1:
            raise FeatkitError(
                f"split {split!r} of {features.path} has only one class ({features.classes[int(y[0])]}); "
                "one-vs-all SVMs need at least two"
            )
        if missing:
            names = ", ".join(features.classes[i] for i in missing[:5])
            raise FeatkitError(f"classes without training images in split {split!r}: {names}; check the split")
    cv = 3
    if C == "auto" and not multilabel(features):
        smallest = int(np.bincount(y, minlength=n_classes).min())
        if smallest < 2:
            log.warning("a class has a single training image: C cannot be cross-validated, using C=1")
            C = 1.0
        cv = max(2, min(cv, smallest))
    svm = OneVsAllLinearSVM(C=C, cv=cv, normalize=normalize, per_class_C=per_class_C, n_jobs=n_jobs,
                            multilabel=multilabel(features))
    svm.fit(gap, y)
    trained_on = {"split": split, "fold": fold, "n_images": int(rows.size), "rows": rows,
                  "images_sha256": features.images_sha256, "fingerprints": features.fingerprints[rows]}
    svm.trained_on_ = trained_on  # LinearClassifier.from_estimator keeps it, so scoring can refuse these rows
    return svm, trained_on


def classifier_fold(classifier: LinearClassifier, fold: int | None) -> int:
    """``fold``; when None the fold the classifier was trained on (0 for a head or an SVM without one)."""
    if fold is not None:
        return int(fold)
    trained = classifier.attrs.get("trained_fold")
    return 0 if classifier.is_head or trained is None else int(trained)


def training_rows(classifier: LinearClassifier, features: FeatureFile) -> np.ndarray | None:
    """Rows of ``features`` the classifier was trained on; None when none of them is in this file.

    The rows are compared only when the SVM's image list is this file's (same paths in the same
    order: the features file itself, a copy, or a crops file of it). An svm.h5 from before the
    rows were stored falls back to its split and fold in this file's table, if it is of this dataset.
    """
    if classifier.is_head:
        return None
    a = classifier.attrs
    rows, digest = a.get("trained_rows"), a.get("trained_images_sha256")
    if rows is not None and digest is not None:
        if digest != features.images_sha256:
            return None
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size and rows.max() >= len(features):
            raise FeatkitError(f"{classifier.source} is damaged: trained/rows names row {int(rows.max())}, but "
                               f"{features.path} (its training file) has {len(features)} rows; train it again")
        return rows
    split, fold = a.get("trained_split"), a.get("trained_fold")
    if split is None or fold is None or a.get("features_dataset") != features.attrs.get("dataset"):
        return None
    if not 0 <= int(fold) < features.splits.shape[1]:
        return None
    return np.flatnonzero(features.splits[:, int(fold)] == split)


def training_images(classifier: LinearClassifier) -> FittedImages | None:
    """The images ``classifier`` was trained on as its record says (None for a head): rows, list, fingerprints."""
    if classifier.is_head:
        return None
    a = classifier.attrs
    rows = a.get("trained_rows")
    prints = a.get("trained_fingerprints")
    return FittedImages(None if rows is None else np.asarray(rows, dtype=np.int64), a.get("trained_images_sha256"),
                        tuple(str(p) for p in (() if prints is None else prints) if p))


def training_overlap(classifier: LinearClassifier, features: FeatureFile,
                     rows: Sequence[int] | np.ndarray) -> Overlap | None:
    """Which of ``rows`` are ``classifier``'s training images (by row or content); None for a head."""
    fitted = training_images(classifier)
    return None if fitted is None else overlap(fitted, features, rows, training_rows(classifier, features))


def refuse_training_rows(classifier: LinearClassifier, features: FeatureFile, rows: Sequence[int] | np.ndarray,
                         what: str) -> None:
    """FeatkitError when any of ``rows`` (``what``: "images of split 'test' of fold 0") trained ``classifier``:
    the same rows of the same image list, or the same image content in any file."""
    fitted = training_images(classifier)
    if fitted is None:
        return
    split, fold = classifier.attrs.get("trained_split"), classifier.attrs.get("trained_fold")
    refuse_fitted(fitted, features, rows, what, f"training images of {classifier.source} (split {split!r} of fold {fold})",
                  f"score its own fold (fold={fold}) or train an SVM on the fold you score",
                  "score images it was not trained on, or train an SVM without them",
                  fitted_rows=training_rows(classifier, features))


def check_svm_options(C: float | str, n_jobs: int | None) -> None:
    """Refuse C that is not 'auto' or a finite positive number, and n_jobs that is not -1, None or >= 1."""
    if C != "auto":
        if isinstance(C, str) or not (math.isfinite(C) and C > 0):
            raise FeatkitError(f"C must be 'auto' or a finite positive number, got C={C}")
    if n_jobs is not None and not (n_jobs == -1 or n_jobs >= 1):
        raise FeatkitError(f"n_jobs must be -1 (all cores) or a number of threads >= 1, got {n_jobs}")


@dataclass
class Metrics:
    """Scores of a classifier on one split."""

    n_images: int
    accuracy: float = float("nan")
    mean_per_class_accuracy: float = float("nan")
    top5: float = float("nan")
    map: float = float("nan")
    per_class: list[tuple[str, int, float]] = field(default_factory=list)  # (class, n, accuracy or AP)
    confusion: np.ndarray | None = None

    def value(self, metric: str) -> float:
        """The manifest's metric ('accuracy', 'mean_per_class_accuracy' or 'map')."""
        return float(getattr(self, metric))


def score(scores: np.ndarray, y: np.ndarray, classes: list[str], is_multilabel: bool = False) -> Metrics:
    """Metrics of (N, C) scores against integer labels (or an (N, C) 0/1 matrix)."""
    n = len(y)
    if is_multilabel:
        ap = average_precision(y, scores)
        per_class = [(c, int(y[:, j].sum()), float(ap[j])) for j, c in enumerate(classes)]
        return Metrics(n, map=float(np.nanmean(ap)), per_class=per_class)
    pred = scores.argmax(axis=1)
    k = min(5, scores.shape[1])
    topk = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    confusion = np.zeros((len(classes), len(classes)), dtype=np.int64)
    np.add.at(confusion, (y, pred), 1)
    per_class = []
    for j, c in enumerate(classes):
        members = y == j
        if members.any():
            per_class.append((c, int(members.sum()), float((pred[members] == j).mean())))
    return Metrics(
        n,
        accuracy=float((pred == y).mean()),
        mean_per_class_accuracy=float(np.mean([acc for _, _, acc in per_class])),
        top5=float((topk == y[:, None]).any(axis=1).mean()),
        per_class=per_class,
        confusion=confusion,
    )


def evaluate(classifier: LinearClassifier, features: FeatureFile, split: str | None = None,
             fold: int | None = None, splits: np.ndarray | None = None) -> Metrics:
    """Scores of ``classifier`` on ``split`` of ``fold`` (None: the classifier's own training fold).

    ``split`` None is :func:`eval_split` ('test', or 'val' for a train/val tree). Refuses (FeatkitError)
    rows the classifier was trained on.
    """
    require_usable(features)
    fold = classifier_fold(classifier, fold)
    split = eval_split(features, fold, splits) if split is None else split
    if classifier.classes != features.classes:
        raise FeatkitError(
            f"{classifier.source} predicts {len(classifier.classes)} other classes than the "
            f"{len(features.classes)} of {features.path}; evaluate an SVM trained on these features"
        )
    rows = split_rows(features, split, fold, splits)
    refuse_training_rows(classifier, features, rows, f"images of split {split!r} of fold {fold}")
    scores = classifier.decision_function(features.gap[rows])
    return score(scores, targets(features, rows), classifier.classes, multilabel(features))


@dataclass
class ProtocolResult:
    """One metric over the folds of a protocol: mean +- std for random draws."""

    metric: str
    per_fold: list[float]
    metrics: list[Metrics] = field(default_factory=list)
    """Every score of each fold, in fold order."""

    @property
    def mean(self) -> float:
        return float(np.mean(self.per_fold))

    @property
    def std(self) -> float:
        """Population standard deviation over the folds (numpy's default, ddof=0)."""
        return float(np.std(self.per_fold)) if len(self.per_fold) > 1 else 0.0

    def __str__(self) -> str:
        pct = 100 * self.mean
        return f"{pct:.2f} +- {100 * self.std:.2f}" if len(self.per_fold) > 1 else f"{pct:.2f}"


def dataset_metric(features: FeatureFile) -> str:
    """The metric the dataset's manifest reports (mAP for multi-label data, else accuracy when unknown)."""
    from featkit.data import load_manifest, manifest_names

    name = str(features.attrs.get("dataset", ""))
    if name in manifest_names():
        return load_manifest(name).metric
    return "map" if multilabel(features) else "accuracy"


FoldDone = Callable[[int, OneVsAllLinearSVM, dict[str, Any], Metrics], None]
"""``on_fold(fold, svm, trained_on, metrics)``: called after each fold (to save its SVM, print its line)."""


def run_protocol(features: FeatureFile, metric: str, folds: int | None = None, splits: np.ndarray | None = None,
                 on_fold: FoldDone | None = None, kept: Mapping[int, LinearClassifier] | None = None,
                 on_kept: Callable[[int, LinearClassifier, Metrics], None] | None = None,
                 **svm_options: Any) -> ProtocolResult:
    """Train on 'train' and score on 'test' (:func:`eval_split`) for each fold (all folds of the file by default).

    ``kept``: folds whose SVM a run before this one already trained (see :func:`kept_fold`): scored, not
    trained again, and reported through ``on_kept``."""
    table = features.splits if splits is None else splits
    if folds is not None and folds < 1:
        raise FeatkitError(f"folds must be at least 1 (or left out for all {table.shape[1]} folds), got {folds}")
    n_folds = table.shape[1] if folds is None else min(folds, table.shape[1])
    values, scores = [], []
    for fold in range(n_folds):
        if kept is not None and fold in kept:
            scores.append(evaluate(kept[fold], features, "test", fold, table))
            values.append(scores[-1].value(metric))
            if on_kept is not None:
                on_kept(fold, kept[fold], scores[-1])
            continue
        svm, trained_on = train_svm(features, fold=fold, splits=table, **svm_options)
        classifier = LinearClassifier.from_estimator(svm, features.classes, f"SVM of fold {fold}")
        scores.append(evaluate(classifier, features, None, fold, table))
        values.append(scores[-1].value(metric))
        log.info("fold %d: %s %.4f", fold, metric, values[-1])
        if on_fold is not None:
            on_fold(fold, svm, trained_on, scores[-1])
    return ProtocolResult(metric, values, scores)


def kept_fold(classifier: LinearClassifier, features: FeatureFile, fold: int, C: float | str, normalize: str,
              per_class_C: bool) -> LinearClassifier:
    """``classifier`` (an svm.h5 a protocol run saved for ``fold``) when it is what this run would train:
    these features and image list, that fold's train split, the same C, normalization and C rule;
    else FeatkitError saying what differs."""
    a = classifier.attrs
    fixed = a.get("C_values")
    same_C = (C == "auto" and str(a.get("C_mode", "")).startswith("auto")) or (
        C != "auto" and a.get("C_mode") == "fixed" and fixed is not None and np.allclose(fixed, float(C)))
    checks = [
        ("fold", a.get("trained_fold"), fold), ("split", a.get("trained_split"), "train"),
        ("image list", a.get("trained_images_sha256"), features.images_sha256),
        ("normalize", a.get("normalize"), normalize), ("per-class C", bool(a.get("per_class_C")), bool(per_class_C)),
        ("C", "same" if same_C else a.get("C_mode"), "same"),
    ]
    for what, have, want in checks:
        if have != want:
            raise FeatkitError(f"{classifier.source} already exists from another run ({what}: {have} there, {want} "
                               "now); choose another output folder or pass overwrite=True to replace it")
    return classifier
