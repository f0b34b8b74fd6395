"""SVM design choices compared by cross-validation on the training split only (no test image is read).

    python -m benchmarks.svm_design --features benchmarks/results/features/cub__efficientnet_lite0.h5

For each configuration of :class:`featkit.linear.svm.OneVsAllLinearSVM`
(normalization, fixed or cross-validated C, shared or per-class C) the rows
of the ``train`` split are split again by repeated stratified K-fold (outer
folds); every configuration is fitted on the outer training part (``C="auto"``
then runs its own inner CV there) and scored on the held-out part. The test
split of the features file is never touched, so these figures can justify a
design choice. Writes ``svm_design.md`` / ``.csv``: mean accuracy +- standard
error over the repeats, and each configuration's paired difference to the
default.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.model_selection import StratifiedKFold
from sklearn.svm import LinearSVC

from benchmarks.tables import write_table
from featkit.errors import FeatkitError
from featkit.features.store import FeatureFile
from featkit.linear.protocol import split_rows
from featkit.linear.svm import OneVsAllLinearSVM

DEFAULT = "C=auto, l2, shared C (default)"
CONFIGS: dict[str, dict[str, Any]] = {
    "LinearSVC(C=1), raw features": {"sklearn": True},
    "C=1, l2": {"C": 1.0},
    DEFAULT: {},
    "C=auto, l2, per-class C": {"per_class_C": True},
    "C=auto, none, shared C": {"normalize": "none"},
    "C=auto, none, per-class C": {"normalize": "none", "per_class_C": True},
}


def _fit_predict(config: dict[str, Any], X: np.ndarray, y: np.ndarray, X_val: np.ndarray) -> np.ndarray:
    if config.get("sklearn"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return LinearSVC(C=1.0, max_iter=5000).fit(X, y).predict(X_val)
    return OneVsAllLinearSVM(**config, n_jobs=-1).fit(X, y).predict(X_val)


def outer_cv_accuracy(X: np.ndarray, y: np.ndarray, folds: int, repeats: int) -> dict[str, np.ndarray]:
    """Accuracy (repeats,) of every configuration, each repeat pooled over its ``folds`` outer folds."""
    correct = {name: np.zeros(repeats) for name in CONFIGS}
    for r in range(repeats):
        for train, val in StratifiedKFold(folds, shuffle=True, random_state=r).split(X, y):
            for name, config in CONFIGS.items():
                correct[name][r] += np.sum(_fit_predict(config, X[train], y[train], X[val]) == y[val])
    return {name: c / y.size for name, c in correct.items()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=Path, required=True, help="features.h5 with a train split")
    parser.add_argument("--folds", type=int, default=5, help="outer CV folds (default 5)")
    parser.add_argument("--repeats", type=int, default=5, help="outer CV repeats with other shuffles (default 5)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    try:
        with FeatureFile(args.features) as features:
            rows = split_rows(features, "train")
            X, y = features.gap[rows].astype(np.float64), features.labels[rows]
            name = Path(str(features.attrs.get("dataset", "?"))).name
            backbone = features.attrs.get("backbone", "?")
    except FeatkitError as exc:
        print(f"svm_design: error: {exc}", file=sys.stderr)
        return 2
    acc = outer_cv_accuracy(X, y, args.folds, args.repeats)
    se = np.sqrt(args.repeats)
    rows_out = [["configuration", "accuracy (%)", "difference to the default (points, paired)"]]
    for config_name, a in acc.items():
        diff = 100 * (a - acc[DEFAULT])
        rows_out.append([config_name, f"{100 * a.mean():.2f} +- {100 * a.std(ddof=1) / se:.2f}",
                         "-" if config_name == DEFAULT else f"{diff.mean():+.2f} +- {diff.std(ddof=1) / se:.2f}"])
    print(write_table(rows_out, args.out, "svm_design", _note(f"{name} ({backbone} GAP features)", y, args)))
    return 0


def _note(what: str, y: np.ndarray, args: argparse.Namespace) -> str:
    return (f"SVM configurations on {what}, scored by {args.repeats} x {args.folds}-fold stratified "
            f"cross-validation inside the train split ({y.size} images, {np.unique(y).size} classes); the test "
            "split is not read. Mean +- standard error over the repeats. C=auto chooses C by its own 3-fold CV "
            "inside each outer training part.")


if __name__ == "__main__":
    raise SystemExit(main())
