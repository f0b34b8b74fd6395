"""Training time at equal accuracy: featkit's OneVsAllLinearSVM vs scikit-learn's LinearSVC.

Both solve the same problems -- one-vs-rest L2-regularized squared-hinge SVMs
with a regularized bias (``intercept_scaling=1``) on L2-normalized features --
and each runs with its own defaults otherwise (featkit: LIBLINEAR's primal
solver at its default tolerance 0.01, warm starts along the C grid, classes in
threads; LinearSVC: ``dual="auto"``, ``tol=1e-4``, classes one after the other).
Two kinds of rows per problem, each against a scikit-learn baseline timed in
the same run:

* C chosen on the training set: featkit ``C="auto"`` vs
  ``GridSearchCV(Normalizer + LinearSVC)`` over the SAME C grid
  (featkit's DEFAULT_C_GRID) and the SAME folds (the CV splitter featkit
  uses, handed to GridSearchCV; checked to give identical folds), both
  refitting on the whole training set at the chosen C. Both use all cores
  (featkit threads, GridSearchCV processes).
* a fixed C: featkit (1 thread and all cores) vs LinearSVC (one thread: it
  has no parallelism).

Problems: real features (``--features``, a featkit ``features.h5`` with the
official train/test split, or an ``.npz``) score the whole multi-class
classifier (test accuracy). Synthetic class-structured features
(``--synthetic``) may time only the one-vs-rest problems of their first few
classes, each on ALL rows (the cost of a one-vs-all fit is the sum of its
independent per-class problems); those rows score the test mean average
precision of the timed classes, and their C search maximizes the CV mAP (the
multi-label form of both estimators). Problems above ``--cv-max-rows``
training rows get fixed-C rows only.

Usage::

    featkit extract CUB_ROOT --dataset cub200 -o cub.h5
    python -m benchmarks.perf_svm --features cub.h5      # + SUN397-scale and 100k-row synthetic problems
    python -m benchmarks.perf_svm --synthetic 19850,1280,397,8 --cv-timed 4 --no-default-synthetic
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from joblib import effective_n_jobs
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV, KFold, StratifiedKFold
from sklearn.multiclass import OneVsRestClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import Normalizer
from sklearn.svm import LinearSVC

from benchmarks.tables import write_table
from featkit.linear.svm import DEFAULT_C_GRID, OneVsAllLinearSVM, mean_average_precision

COLUMNS = (
    "problem", "C selection", "method", "test metric", "n", "K", "classes", "SVMs timed", "test n",
    "workers", "C", "fit s", "speedup ratio", "score %", "score - baseline",
)
TEXT_COLUMNS = 4  # the first four columns are text, the rest numbers (right-aligned)
DEFAULT_SYNTHETIC = ((19850, 1280, 397, 4), (100000, 1280, 397, 2))


@dataclass
class Problem:
    """Train/test arrays; ``timed`` < number of classes means one-vs-rest columns of the first classes only."""

    name: str
    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    timed: int

    @property
    def n_classes(self) -> int:
        return int(np.unique(self.y_train).size)

    @property
    def subset(self) -> bool:
        return self.timed < self.n_classes

    def targets(self, y: np.ndarray, timed: int | None = None) -> np.ndarray:
        """Labels for the estimators: class labels, or the 0/1 columns of the first ``timed`` classes."""
        timed = self.timed if timed is None else timed
        if timed >= self.n_classes:
            return y
        return (y[:, None] == np.arange(timed)[None, :]).astype(np.int64)


def make_synthetic(n: int, k: int, n_classes: int, *, test_per_class: int = 50, noise: float = 5.0,
                   seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Class-structured non-negative features: ``relu(mean_class + noise * N(0, 1))``, seeded.

    Class means are standard normal in K dims; ReLU makes the features
    non-negative with about half zeros, like GAP features of ReLU networks.
    ``n`` balanced training rows (class sizes differ by at most one) and
    ``test_per_class`` test rows per class. ``noise`` is relative to the
    means' spread.
    """
    if n_classes < 2 or n < 2 * n_classes or k < 1 or test_per_class < 1:
        raise SystemExit(f"--synthetic needs N >= 2 * classes >= 4 and K >= 1, got {n},{k},{n_classes}")
    rng = np.random.default_rng(seed)
    means = rng.standard_normal((n_classes, k)).astype(np.float32)

    def draw(labels: np.ndarray) -> np.ndarray:
        X = np.empty((labels.size, k), dtype=np.float32)
        for lo in range(0, labels.size, 8192):  # in chunks: no float64 temporary of the whole set
            block = labels[lo : lo + 8192]
            noise_block = rng.standard_normal((block.size, k), dtype=np.float32)
            X[lo : lo + block.size] = np.maximum(means[block] + noise * noise_block, 0.0)
        return X

    y_train = np.arange(n) % n_classes
    y_test = np.repeat(np.arange(n_classes), test_per_class)
    return draw(y_train), y_train, draw(y_test), y_test


def load_features(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str]:
    """``X_train, y_train, X_test, y_test, source`` from a featkit ``.h5`` (official split, fold 0) or an ``.npz``."""
    if path.suffix in (".h5", ".hdf5"):
        from featkit.features.store import FeatureFile
        from featkit.linear.protocol import split_rows

        with FeatureFile(path) as features:
            train, test = split_rows(features, "train"), split_rows(features, "test")
            gap, labels, a = np.asarray(features.gap), features.labels, features.attrs
            source = (f"{path.name}: `featkit extract --dataset {a.get('dataset')}` of {len(features)} images, "
                      f"{a.get('backbone')} at {a.get('input_size')} px, official train/test split")
            return gap[train], labels[train], gap[test], labels[test], source
    with np.load(path) as d:
        missing = {"X_train", "y_train", "X_test", "y_test"} - set(d.files)
        if missing:
            raise SystemExit(f"{path}: missing arrays {sorted(missing)}")
        return d["X_train"], d["y_train"], d["X_test"], d["y_test"], f"{path.name}: npz"


def _timed(fit: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``repeats`` calls of ``fit``."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # shows up in the score instead
            fit()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def _score(problem: Problem, decision: np.ndarray) -> float:
    """Test accuracy (whole classifier) or test mAP of the timed classes, in %."""
    if problem.subset:  # one timed column comes back as a vector from scikit-learn
        return 100 * mean_average_precision(problem.targets(problem.y_test), decision.reshape(len(decision), -1))
    classes = np.unique(problem.y_train)
    return 100 * float(np.mean(classes[decision.argmax(axis=1)] == problem.y_test))


def _splitter(problem: Problem, cv: int) -> KFold | StratifiedKFold:
    """The splitter featkit's ``cross_validate_C`` builds (random_state=0), to hand to GridSearchCV."""
    if problem.subset:
        return KFold(cv, shuffle=True, random_state=0)
    return StratifiedKFold(cv, shuffle=True, random_state=0)


def _check_same_folds(problem: Problem, cv: int, timed: int) -> None:
    """GridSearchCV's folds are featkit's: featkit splits on the class index, GridSearchCV on the labels."""
    y = problem.targets(problem.y_train, timed)
    ours = _splitter(problem, cv).split(problem.X_train, np.unique(y, return_inverse=True)[1] if y.ndim == 1 else None)
    theirs = _splitter(problem, cv).split(problem.X_train, y)
    for (a, _), (b, _) in zip(ours, theirs, strict=True):
        if not np.array_equal(a, b):
            raise SystemExit(f"{problem.name}: featkit and GridSearchCV folds differ")


def _row(problem: Problem, timed: int, selection: str, method: str, workers: int, C: float, seconds: float,
         score: float) -> dict[str, object]:
    return {
        "problem": problem.name, "n": problem.X_train.shape[0], "K": problem.X_train.shape[1],
        "classes": problem.n_classes, "SVMs timed": timed, "test n": problem.X_test.shape[0],
        "C selection": selection, "method": method, "workers": workers, "C": f"{C:g}",
        "fit s": seconds, "test metric": "mAP (timed classes)" if problem.subset else "accuracy",
        "score %": score,
    }


def _with_ratios(rows: list[dict[str, object]]) -> list[dict[str, object]]:
    """speedup ratio = baseline s / this s; score - baseline in points (baseline: the last row)."""
    base = rows[-1]
    for r in rows:
        r["speedup ratio"] = f"{float(base['fit s']) / float(r['fit s']):.2f}"  # type: ignore[arg-type]
        r["score - baseline"] = f"{float(r['score %']) - float(base['score %']):+.2f}"  # type: ignore[arg-type]
        r["fit s"] = f"{float(r['fit s']):.3g}"  # type: ignore[arg-type]
        r["score %"] = f"{float(r['score %']):.2f}"  # type: ignore[arg-type]
    return rows


def cv_rows(problem: Problem, grid: Sequence[float], cv: int, timed: int, n_jobs: int, repeats: int,
            featkit_serial: bool) -> list[dict[str, object]]:
    """featkit ``C="auto"`` (all cores; also 1 thread if ``featkit_serial``) vs GridSearchCV(LinearSVC)."""
    sub = Problem(problem.name, problem.X_train, problem.y_train, problem.X_test, problem.y_test, timed)
    _check_same_folds(sub, cv, timed)
    y = sub.targets(sub.y_train)
    selection = f"{cv}-fold CV over {len(grid)} C, same folds"
    rows = []
    for jobs in sorted({1, int(effective_n_jobs(n_jobs))}) if featkit_serial else [n_jobs]:
        ours = OneVsAllLinearSVM(C="auto", C_grid=grid, cv=cv, n_jobs=jobs, multilabel=sub.subset)
        seconds = _timed(lambda est=ours: est.fit(sub.X_train, y), repeats)  # type: ignore[misc]
        score = _score(sub, ours.decision_function(sub.X_test))
        rows.append(_row(sub, timed, selection, "featkit OneVsAllLinearSVM(C='auto')", effective_n_jobs(jobs),
                         float(ours.C_[0]), seconds, score))
    svc = OneVsRestClassifier(LinearSVC()) if sub.subset else LinearSVC()
    key = "onevsrestclassifier__estimator__C" if sub.subset else "linearsvc__C"
    theirs = GridSearchCV(make_pipeline(Normalizer(), svc), {key: list(grid)}, cv=_splitter(sub, cv),
                          scoring="average_precision" if sub.subset else "accuracy", n_jobs=n_jobs)
    seconds = _timed(lambda: theirs.fit(sub.X_train, y), repeats)
    score = _score(sub, theirs.decision_function(sub.X_test))
    rows.append(_row(sub, timed, selection, "scikit-learn GridSearchCV(LinearSVC) (baseline)",
                     effective_n_jobs(n_jobs), float(theirs.best_params_[key]), seconds, score))
    return _with_ratios(rows)


def fixed_rows(problem: Problem, C: float, n_jobs: int, repeats: int) -> list[dict[str, object]]:
    """featkit at C (1 thread, all cores) vs LinearSVC at C (one thread)."""
    y = problem.targets(problem.y_train)
    rows = []
    for jobs in sorted({1, int(effective_n_jobs(n_jobs))}):
        ours = OneVsAllLinearSVM(C=C, n_jobs=jobs, multilabel=problem.subset)
        seconds = _timed(lambda est=ours: est.fit(problem.X_train, y), repeats)  # type: ignore[misc]
        rows.append(_row(problem, problem.timed, "fixed C", "featkit OneVsAllLinearSVM", jobs, C, seconds,
                         _score(problem, ours.decision_function(problem.X_test))))
    svc = OneVsRestClassifier(LinearSVC(C=C)) if problem.subset else LinearSVC(C=C)
    theirs = make_pipeline(Normalizer(), svc)
    seconds = _timed(lambda: theirs.fit(problem.X_train, y), repeats)
    rows.append(_row(problem, problem.timed, "fixed C", "scikit-learn LinearSVC (baseline)", 1, C, seconds,
                     _score(problem, theirs.decision_function(problem.X_test))))
    return _with_ratios(rows)


def _parse_synthetic(text: str) -> tuple[int, int, int, int]:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) not in (3, 4):
        raise argparse.ArgumentTypeError(f"expected N,K,CLASSES[,TIMED] (integers), got {text!r}")
    n, k, c = values[:3]
    return n, k, c, values[3] if len(values) == 4 else c


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--features", type=Path, action="append", default=[],
                        help="featkit features.h5 (official split) or npz with X_train, y_train, X_test, y_test")
    parser.add_argument("--synthetic", type=_parse_synthetic, action="append", metavar="N,K,CLASSES[,TIMED]",
                        help="synthetic problem: N training rows, K dims, CLASSES classes; time the one-vs-rest "
                             "problems of the first TIMED classes only (default: all). Default: "
                             + " and ".join(",".join(map(str, s)) for s in DEFAULT_SYNTHETIC))
    parser.add_argument("--no-default-synthetic", action="store_true", help="no synthetic problem unless given")
    parser.add_argument("--noise", type=float, default=5.0, help="synthetic noise std (default 5.0)")
    parser.add_argument("--test-per-class", type=int, default=50, help="synthetic test rows per class (default 50)")
    parser.add_argument("--C", type=float, default=1.0, help="C of the fixed-C rows (default 1.0)")
    parser.add_argument("--cv", type=int, default=3, help="CV folds (default 3, featkit's default)")
    parser.add_argument("--cv-max-rows", type=int, default=20000,
                        help="problems with more training rows get fixed-C rows only (default 20000: the 100k-row "
                             "C-grid CV would exceed a 25-minute run on 2 shared cores)")
    parser.add_argument("--cv-timed", type=int, default=1,
                        help="synthetic C search: one-vs-rest problems of this many first classes (default 1)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="median of this many fits on problems up to 5000 rows; one fit above (default 3)")
    parser.add_argument("--n-jobs", type=int, default=-1, help="workers (default -1: all cores)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)

    specs = list(args.synthetic or []) + ([] if args.synthetic or args.no_default_synthetic
                                          else list(DEFAULT_SYNTHETIC))
    problems: list[tuple[Problem, bool]] = []  # (problem, is_real)
    sources = []
    for path in args.features:
        X_train, y_train, X_test, y_test, source = load_features(path)
        problems.append((Problem(path.stem, X_train, y_train, X_test, y_test, timed=10**9), True))
        sources.append(source)
    for n, k, c, timed in specs:
        name = f"synthetic {n} x {k}, {c} classes"
        problems.append((Problem(name, *make_synthetic(n, k, c, test_per_class=args.test_per_class,
                                                     noise=args.noise), timed=timed), False))

    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    rows: list[dict[str, object]] = []
    for problem, real in problems:
        problem.timed = min(problem.timed, problem.n_classes)
        repeats = args.repeats if problem.X_train.shape[0] <= 5000 else 1
        groups = []
        if problem.X_train.shape[0] <= args.cv_max_rows:
            timed = problem.n_classes if real else min(args.cv_timed, problem.timed)
            groups.append(cv_rows(problem, DEFAULT_C_GRID, args.cv, timed, args.n_jobs, repeats,
                                  featkit_serial=real))
        groups.append(fixed_rows(problem, args.C, args.n_jobs, repeats))
        for group in groups:
            for row in group:
                print(", ".join(f"{key}={row[key]}" for key in COLUMNS), flush=True)
            rows += group
    total = time.perf_counter() - started
    load = f"1-minute load average {load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end"

    cores = os.cpu_count()
    note = (
        f"All rows in one run of `python -m benchmarks.perf_svm {' '.join(argv if argv is not None else sys.argv[1:])}`"
        f" on one machine: {cores} CPU cores (os.cpu_count()), shared with other jobs ({load}: absolute "
        "times are inflated by that load, the ratios within a group are what to compare); python "
        f"{sys.version.split()[0]}; {total / 60:.1f} min in all.\n\n"
        "n = training rows; test n = test rows; fit s = wall time of the fit (median of "
        f"{args.repeats} on problems up to 5000 rows, else one), C search and refit included; "
        "speedup ratio = the baseline's fit s / this row's fit s, within the same group of rows "
        "(baseline: the scikit-learn row below it); score - baseline in points.\n\n"
        f"C selection: {args.cv}-fold CV over featkit's DEFAULT_C_GRID (2**-6 .. 2**6, 13 values) on the "
        "training rows only, with the same fold indices for both (featkit's StratifiedKFold/KFold with "
        "random_state=0, handed to GridSearchCV); featkit picks the arg-max of the CV curve smoothed over 3 "
        "grid points, GridSearchCV the raw arg-max (ties: the smaller C). Workers: featkit threads, "
        "GridSearchCV processes; LinearSVC alone has no parallelism.\n\n"
        + "".join(f"Features {src}.\n\n" for src in sources)
        + "SVMs timed: the real features train every class. The synthetic problems "
        f"(relu(class mean + {args.noise:g} * N(0, 1)), seeded) time the one-vs-rest SVMs of their first "
        "classes only, each on all training rows, and score their test mAP; a full one-vs-all fit costs "
        "about classes / SVMs timed times as much. Problems above "
        f"{args.cv_max_rows} training rows get fixed-C rows only: a full C-grid CV there would exceed "
        "the run's time budget."
    )
    table = [list(COLUMNS)] + [[str(r[c]) for c in COLUMNS] for r in rows]
    write_table(table, args.out, "perf_svm", note, align_right_from=TEXT_COLUMNS)
    print(f"wrote {args.out / 'perf_svm.md'} and {args.out / 'perf_svm.csv'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
