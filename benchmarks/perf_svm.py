"""Fit time and accuracy: featkit's OneVsAllLinearSVM vs scikit-learn's LinearSVC.

Both solve the same problem -- one-vs-rest L2-regularized squared-hinge SVMs
with a regularized bias (``intercept_scaling=1``) at the same C on
L2-normalized features -- and both are used with their own defaults otherwise:
featkit trains the classes in parallel threads with LIBLINEAR's primal solver
at its default tolerance; LinearSVC trains them one after the other with
``dual="auto"`` and ``tol=1e-4``. The accuracy columns show whether the
speed costs anything.

Usage::

    python benchmarks/perf_svm.py                          # synthetic 20000 x 1280, 397 classes
    python benchmarks/perf_svm.py --features cub_gap.npz   # + real features
                                                           #   (X_train, y_train, X_test, y_test)
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from joblib import effective_n_jobs
from sklearn.exceptions import ConvergenceWarning
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import Normalizer
from sklearn.svm import LinearSVC

from featkit.linear.svm import OneVsAllLinearSVM

COLUMNS = (
    "problem",
    "n",
    "K",
    "classes",
    "featkit s",
    "LinearSVC s",
    "speedup ratio",
    "featkit acc",
    "LinearSVC acc",
    "acc diff",
)


def make_synthetic(
    n: int, k: int, n_classes: int, *, noise: float = 5.0, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Gaussian classes: unit-variance means in K dims plus isotropic noise; 50/50 train/test.

    Balanced classes (sizes differ by at most one), half of each class (rounded
    down) in train. ``noise`` is the noise std relative to the means' spread; 5.0 keeps
    the 397-class problem well below 100 % accuracy, so the accuracy columns
    mean something.
    """
    if n_classes < 2 or n < 2 * n_classes or k < 1:
        raise SystemExit(f"--synthetic needs N >= 2 * classes >= 4 and K >= 1, got {n},{k},{n_classes}")
    rng = np.random.default_rng(seed)
    means = rng.standard_normal((n_classes, k))
    y = np.arange(n) % n_classes
    X = means[y] + noise * rng.standard_normal((n, k))
    train = np.zeros(n, dtype=bool)
    for c in range(n_classes):  # half of each class in train
        idx = rng.permutation(np.flatnonzero(y == c))
        train[idx[: idx.size // 2]] = True
    return X[train], y[train], X[~train], y[~train]


def load_features(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``X_train, y_train, X_test, y_test`` from an ``.npz`` file."""
    with np.load(path) as d:
        missing = {"X_train", "y_train", "X_test", "y_test"} - set(d.files)
        if missing:
            raise SystemExit(f"{path}: missing arrays {sorted(missing)}")
        return d["X_train"], d["y_train"], d["X_test"], d["y_test"]


def _timed_fit(est: object, X: np.ndarray, y: np.ndarray) -> float:
    start = time.perf_counter()
    est.fit(X, y)  # type: ignore[attr-defined]
    return time.perf_counter() - start


def run_problem(
    name: str,
    data: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    C: float,
    n_jobs: int,
) -> dict[str, object]:
    """One table row: both estimators fitted once on the train half, scored on the test half."""
    X_tr, y_tr, X_te, y_te = data
    ours = OneVsAllLinearSVM(C=C, normalize="l2", n_jobs=n_jobs)
    theirs = make_pipeline(Normalizer(), LinearSVC(C=C, loss="squared_hinge", intercept_scaling=1.0))
    t_ours = _timed_fit(ours, X_tr, y_tr)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # reported via the accuracy instead
        t_theirs = _timed_fit(theirs, X_tr, y_tr)
    acc_ours = float(ours.score(X_te, y_te))
    acc_theirs = float(theirs.score(X_te, y_te))
    return {
        "problem": name,
        "n": int(X_tr.shape[0]),
        "K": int(X_tr.shape[1]),
        "classes": int(np.unique(y_tr).size),
        "featkit s": round(t_ours, 3),
        "LinearSVC s": round(t_theirs, 3),
        "speedup ratio": round(t_theirs / t_ours, 2),
        "featkit acc": round(100 * acc_ours, 2),
        "LinearSVC acc": round(100 * acc_theirs, 2),
        "acc diff": round(100 * (acc_ours - acc_theirs), 2),
    }


def write_results(rows: Sequence[dict[str, object]], out: Path, note: str) -> tuple[Path, Path]:
    """``perf_svm.md`` (markdown table + how it was run) and ``perf_svm.csv`` in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    md, csv_path = out / "perf_svm.md", out / "perf_svm.csv"
    lines = [
        "# OneVsAllLinearSVM vs LinearSVC",
        "",
        note,
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "|".join("---" for _ in COLUMNS) + "|",
    ]
    lines += ["| " + " | ".join(str(r[c]) for c in COLUMNS) + " |" for r in rows]
    lines += [
        "",
        "n = training samples (half of each class; the test set holds the rest); times are one fit each;",
        "speedup ratio = LinearSVC s / featkit s; acc in %, acc diff = featkit - LinearSVC (points).",
    ]
    md.write_text("\n".join(lines) + "\n")
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return md, csv_path


def _parse_synthetic(text: str) -> tuple[int, int, int]:
    try:
        n, k, c = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N,K,C (three integers), got {text!r}") from None
    return n, k, c


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--features", type=Path, help="npz with X_train, y_train, X_test, y_test")
    parser.add_argument(
        "--synthetic", type=_parse_synthetic, default=(20000, 1280, 397), metavar="N,K,C",
        help="synthetic problem size (default 20000,1280,397)",
    )
    parser.add_argument("--noise", type=float, default=5.0, help="synthetic noise std (default 5.0)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--C", type=float, default=1.0)
    parser.add_argument("--n-jobs", type=int, default=-1, help="featkit threads (default -1: all cores)")
    args = parser.parse_args(argv)

    rows = []
    n, k, c = args.synthetic
    problems = [(f"synthetic (noise {args.noise:g})", make_synthetic(n, k, c, noise=args.noise))]
    if args.features is not None:
        problems.append((args.features.stem, load_features(args.features)))
    for name, data in problems:
        row = run_problem(name, data, args.C, args.n_jobs)
        print(", ".join(f"{key}={row[key]}" for key in COLUMNS), flush=True)
        rows.append(row)
    threads = effective_n_jobs(args.n_jobs)
    note = (
        f"C = {args.C:g}, L2-normalized features, featkit threads = {threads} "
        f"(os.cpu_count() = {os.cpu_count()}); python {sys.version.split()[0]}."
    )
    md, csv_path = write_results(rows, args.out, note)
    print(f"wrote {md} and {csv_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
