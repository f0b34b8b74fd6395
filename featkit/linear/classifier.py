"""Linear class weights w_k^c as CAMs and scoring need them: from a trained SVM or a backbone head.

A :class:`LinearClassifier` is the (C, K) weight matrix, the bias, the class
names and the feature normalization the weights expect, built once by
:meth:`LinearClassifier.from_estimator` (an SVM) or
:meth:`LinearClassifier.from_head` (the backbone's own ImageNet classifier).
With ``normalize="l2"`` an image's score is ``(F / ||F||) @ w + b``; since
``||F||`` is one positive number per image, ``sum_k w_k^c f_k(x, y)`` on the
raw maps is that image's CAM up to a positive factor: the same shape and the
same boxes. The class ranking is not exactly ``mean(CAM) + b`` (the bias is
added after the ``1 / ||F||`` factor), so every caller ranks classes with
:meth:`LinearClassifier.decision_function`, the SVM's own scores.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from featkit.errors import FeatkitError
from featkit.features.schema import MATCH_KEYS
from featkit.features.store import FeatureFile, Head
from featkit.linear.svm import OneVsAllLinearSVM, normalize_rows

TOP_K = 5

ClassifierKind = Literal["svm", "head"]


@dataclass(frozen=True)
class LinearClassifier:
    """One row of weights per class, the normalization they expect, and where they came from."""

    weight: np.ndarray  # (C, K)
    bias: np.ndarray  # (C,)
    classes: list[str]
    normalize: str = "none"  # "l2" | "none"
    source: str = "weights"
    """Where the weights came from (a file name, 'head'): for messages and reports."""
    kind: ClassifierKind = "svm"
    """'svm': trained on the features' own classes; 'head': the backbone's classifier (ImageNet classes)."""
    attrs: dict[str, Any] = field(default_factory=dict)

    def trained_on(self) -> str:
        """'test split, fold 0' style: what the weights were trained on ('' when unknown, e.g. the head)."""
        split = self.attrs.get("trained_split")
        if split is None:
            return ""
        return f"{split} split, fold {self.attrs.get('trained_fold', 0)}"

    def training_note(self) -> str:
        """A warning when the weights were trained on the test split ('' otherwise): it is allowed (an upper
        bound), but every score on that split must say it is not held out."""
        if self.attrs.get("trained_split") != "test":
            return ""
        return (f"note: {self.source} was trained on the {self.trained_on()}; "
                "its scores on that split are not held-out estimates")

    @classmethod
    def from_estimator(
        cls, svm: OneVsAllLinearSVM, classes: Sequence[str], source: str = "svm", attrs: dict[str, Any] | None = None
    ) -> LinearClassifier:
        """The weights of a fitted :class:`OneVsAllLinearSVM` with the dataset's class names.

        What ``train_svm`` recorded on the SVM (``trained_on_``) becomes ``trained_*`` attributes,
        so scoring it refuses its training rows as it does for an svm.h5.
        """
        recorded = trained_attrs(getattr(svm, "trained_on_", {}))
        return cls(np.asarray(svm.coef_, np.float64), np.asarray(svm.intercept_, np.float64), list(classes),
                   svm.normalize, source, "svm", {**recorded, **(attrs or {})})

    @classmethod
    def from_head(cls, head: Head, features_attrs: dict[str, Any]) -> LinearClassifier:
        """The backbone's own linear head stored in a features file (no normalization, raw GAP)."""
        return cls(np.asarray(head.weight, np.float64), np.asarray(head.bias, np.float64), list(head.classes),
                   "none", "head", "head", {f"features_{k}": features_attrs.get(k) for k in MATCH_KEYS})

    @property
    def is_head(self) -> bool:
        return self.kind == "head"

    def decision_function(self, gap: np.ndarray) -> np.ndarray:
        """Class scores (N, C) of GAP features, with the stored normalization."""
        x = normalize_rows(np.asarray(gap, dtype=np.float64), self.normalize)
        return x @ self.weight.T.astype(np.float64) + self.bias

    def class_index(self, name: str) -> int:
        try:
            return self.classes.index(name)
        except ValueError:
            close = [c for c in self.classes if name.lower() in c.lower()][:5]
            hint = f"; did you mean {', '.join(close)}" if close else f" ({len(self.classes)} classes)"
            raise FeatkitError(f"class {name!r} is not one of the classifier's classes{hint}") from None

    def knows_classes_of(self, features: FeatureFile) -> bool:
        """Whether any dataset class is one of ours (else only class-agnostic numbers make sense)."""
        return not self.is_head or bool(set(features.classes) & set(self.classes))

    def class_mapping(self, features: FeatureFile) -> np.ndarray:
        """Our row of each dataset class, so labels can pick GT-known CAMs.

        An SVM from ``svm-train`` has the dataset's own classes; any classifier
        whose classes include every dataset class by name works too.
        """
        if self.classes == features.classes:
            return np.arange(len(features.classes), dtype=np.int64)
        known = {name: i for i, name in enumerate(self.classes)}
        missing = [c for c in features.classes if c not in known]
        if missing:
            raise FeatkitError(
                f"{self.source} does not predict class {missing[0]!r} of {features.path} "
                f"({len(missing)} of {len(features.classes)} classes missing); this needs the dataset's "
                "classes: train an SVM on these features (svm-train)"
            )
        return np.array([known[c] for c in features.classes], dtype=np.int64)


def trained_attrs(trained_on: dict[str, Any]) -> dict[str, Any]:
    """``train_svm``'s record as the ``trained_*`` attributes an svm.h5 (and its classifier) carries."""
    return {f"trained_{key}": value for key, value in trained_on.items()}


def top_classes(scores: np.ndarray, k: int = TOP_K) -> np.ndarray:
    """Indices (N, min(k, C)) of the highest scores, best first (stable for ties)."""
    k = min(k, scores.shape[1])
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]
