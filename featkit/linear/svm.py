"""One-vs-all linear SVMs on GAP features (Zhou et al., CVPR 2016, Sec. 4).

The paper trains one linear SVM per class on global-average-pooled (GAP)
features and reuses the SVM weights as class-activation-map (CAM) weights.
:class:`OneVsAllLinearSVM` does exactly that with LIBLINEAR (L2-regularized
L2-loss SVC, primal solver ``-s 2``, bias ``-B 1``), one binary problem per
class, the classes trained in parallel threads.

Choices. No test image was looked at to make them: the figures below come
from cross-validation inside the training split only (``python -m
benchmarks.svm_design``, table in ``benchmarks/results/svm_design.md``): the
CUB-200-2011 sample's 300 training images (10 classes; 1280-d GAP features of
EfficientNet-Lite0, ImageNet weights, 224x224 warp), scored by
5 repeats of 5-fold stratified cross-validation, ``C="auto"`` running its own
3-fold CV inside every outer training part. Mean accuracy +- s.e. over the
repeats, and the paired difference to the default:

=====================================  ==============  =============
configuration                          accuracy (%)    vs default
=====================================  ==============  =============
LinearSVC(C=1), raw features           83.87 +- 0.56   -0.07 +- 0.49
C=1, normalize="l2"                    84.40 +- 0.27   +0.47 +- 0.23
C="auto", "l2", shared C (default)     83.93 +- 0.12
C="auto", "l2", per-class C            82.87 +- 0.52   -1.07 +- 0.44
C="auto", "none", shared C             83.93 +- 0.19   +0.00 +- 0.18
C="auto", "none", per-class C          83.73 +- 0.41   -0.20 +- 0.36
=====================================  ==============  =============

* Shared C, not per-class C (shared is 1.07 +- 0.44 points better): each
  class has only ~30 positives, so a per-class CV choice is noisy, and
  classes trained at different C give scores on different scales, which
  hurts the arg-max across classes.
* ``"l2"`` vs ``"none"`` (+0.00 +- 0.18 points, a tie): ``"l2"`` is the
  default because it makes C scale-free: with ``||x|| = 1`` the same grid fits any backbone,
  whereas raw GAP norms (~14 here) scale the equivalent C by 1/14**2.
  (``"none"`` therefore expresses the default grid in units of the mean
  squared feature norm.) ``"standardize"`` is not offered: it would not fold
  into per-image CAM weights.
* ``C="auto"`` vs a fixed ``C=1``: here the fixed C is 0.47 +- 0.23 points
  better, most likely because the CV pick wanders over the flat top of the
  curve (next bullet). ``"auto"`` stays the default: where that plateau lies depends on
  the data (number of images, separability), and a fixed C carries no
  evidence from one dataset to the next; pass ``C=1`` to skip the search.
* The C rule (:data:`C_RULE`) was fixed a priori, not compared on any split:
  the arg-max of the CV curve, ties to the smaller C, as scikit-learn's
  GridSearchCV and VISSL's SVM trainer do. The CV accuracy of a few hundred
  images moves in steps of one validation image and is flat over a wide
  range of C (the training images are linearly separable), so the chosen C
  is itself noisy within that plateau; the ties rule keeps the strongest
  regularization among equal scores.
* Time, C="auto" (13 C x 3 folds x 10 classes + the final fit): the "cub"
  rows of benchmarks/results/perf_svm.md (2 cores): 1.06 s with n_jobs=1,
  1.29 s with n_jobs=2, against 5.32 s for GridSearchCV(LinearSVC) over the
  same grid and folds (5.0x and 4.1x), at the same C (0.5) and accuracy; at
  SUN397 scale (19,850 rows) the same C search is 3.1x faster. At one fixed
  C, LinearSVC is faster on CUB (0.09 s vs 0.13-0.16 s) and 1.4x slower at
  19,850 rows, 1.7x with featkit's second thread (ctypes releases the GIL in
  each LIBLINEAR call).
"""

from __future__ import annotations

import ctypes
import numbers
import warnings
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

import numpy as np
from joblib import effective_n_jobs
from liblinear import liblinear as _ll
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_consistent_length, check_is_fitted, validate_data

from featkit.errors import FeatkitError

__all__ = [
    "C_RULE",
    "DEFAULT_C_GRID",
    "OneVsAllLinearSVM",
    "average_precision",
    "cross_validate_C",
    "describe_C_grid",
    "mean_average_precision",
    "normalize_rows",
]

#: Default grid for ``C="auto"``: 2**-6 .. 2**6 in factors of 2 (13 values), fixed
#: a priori. With L2-normalized features ``||x|| = 1`` (plus the bias feature 1),
#: so C is on a fixed scale whatever the backbone; factor-2 steps are the spacing
#: of LIBLINEAR's own C search; the range runs from strong regularization into
#: the hard-margin regime, where a larger C changes nothing. On the CUB sample's
#: training split the 3-fold CV accuracy climbs from 78.0 % at 2**-6 and stays
#: between 83.0 and 84.7 % from 2**-3 to 2**6 (``cv/scores`` in svm.h5).
DEFAULT_C_GRID: tuple[float, ...] = tuple(float(2.0**e) for e in range(-6, 7))

# LIBLINEAR solver -s 2 (L2R_L2LOSS_SVC, primal trust-region/line-search Newton).
# Why primal and not the dual coordinate descent -s 1, although -s 1 is faster per
# thread on both regimes we measured (C=1, L2-normalized, 1 thread: CUB 300 x 1280,
# n < K: 0.037 s vs 0.044 s; synthetic 10000 x 1280 x 40 classes, n > K: 7.8 s vs
# 11.6 s):
#  * Determinism. -s 1 shuffles its coordinates with C rand(), an unseeded global
#    state: refitting the same data in one process already changes coef_ (by 1e-3
#    on CUB), and threads interleave their draws. -s 2 has no randomness, so fit is
#    reproducible and n_jobs=1 and n_jobs=2 give bit-identical coef_.
#  * Threads. glibc's rand() takes a lock on every draw, so -s 1 barely scales
#    (synthetic: 7.8 s -> 7.9 s with 2 threads) while -s 2 does (11.6 s -> 7.2 s):
#    on 2 cores the primal solver ends up as fast as the dual one.
#  * Warm starts. Only the primal solvers accept init_sol; the C grid search
#    starts each C from the previous solution.
_SOLVER = int(_ll.solver_names.L2R_L2LOSS_SVC)

_NODE_DTYPE = np.dtype(_ll.feature_node)
_P_DOUBLE = ctypes.POINTER(ctypes.c_double)
_P_P_NODE = ctypes.POINTER(ctypes.POINTER(_ll.feature_node))


# --------------------------------------------------------------------------
# LIBLINEAR plumbing
# --------------------------------------------------------------------------


class _LiblinearRows:
    """X in LIBLINEAR's node format, built once and shared read-only by all threads.

    The python binding's ``problem(y, x)`` converts a dense array element by
    element in Python (slow at GAP sizes) and ties x
    to one y. Here the nodes are
    written with vectorized numpy, zeros dropped (ReLU features are ~45 %
    zeros), and each binary problem only gets its own y and an array of row
    pointers, so a CV fold is a pointer subset, not a copy.
    """

    def __init__(self, X: np.ndarray, chunk_rows: int = 4096) -> None:
        n, k = X.shape
        counts = np.count_nonzero(X, axis=1).astype(np.int64)
        starts = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(counts + 2, out=starts[1:])  # + bias node + terminator node
        nodes = np.zeros(int(starts[-1]), dtype=_NODE_DTYPE)
        for lo in range(0, n, chunk_rows):  # in chunks: the index arrays stay small
            block = X[lo : lo + chunk_rows]
            nonzero = block != 0
            rows, cols = np.nonzero(nonzero)
            # The j-th nonzero of the block (row-major) sits after 2 extra nodes per earlier row.
            pos = starts[lo] + np.arange(rows.size, dtype=np.int64) + 2 * rows
            nodes["index"][pos] = cols + 1  # LIBLINEAR features are 1-based
            nodes["value"][pos] = block[nonzero]
        nodes["index"][starts[1:] - 2] = k + 1  # bias feature (-B 1)
        nodes["value"][starts[1:] - 2] = 1.0
        nodes["index"][starts[1:] - 1] = -1  # end of row
        self.nodes = nodes
        self.n_features = k
        self.pointers = (
            np.uint64(nodes.ctypes.data) + starts[:-1].astype(np.uint64) * np.uint64(_NODE_DTYPE.itemsize)
        )

    def problem(self, y: np.ndarray, rows: np.ndarray | None = None) -> _ll.problem:
        """A LIBLINEAR problem over ``rows`` (all if None) with labels ``y`` (+1/-1)."""
        pointers = self.pointers if rows is None else np.ascontiguousarray(self.pointers[rows])
        y = np.ascontiguousarray(y, dtype=np.float64)
        prob = _ll.problem.__new__(_ll.problem)  # skip the slow python __init__
        prob.l = int(y.shape[0])
        prob.n = self.n_features + 1  # + bias feature
        prob.bias = 1.0
        prob.y = y.ctypes.data_as(_P_DOUBLE)
        prob.x = pointers.ctypes.data_as(_P_P_NODE)
        prob._keepalive = (y, pointers, self.nodes)  # the C struct only holds raw pointers
        return prob


def _train_binary(
    data: _LiblinearRows,
    y_pm: np.ndarray,
    C: float,
    tol: float,
    rows: np.ndarray | None = None,
    init: np.ndarray | None = None,
) -> np.ndarray:
    """Weights ``[w, b]`` (length K + 1) of one L2-loss SVM; ``+1`` is the positive side.

    A problem with a single label (a multi-label column that is all 0 or all 1,
    or a CV fold without a positive) gets the constant classifier ``w = 0,
    b = +-1`` instead of a LIBLINEAR call.
    """
    k = data.n_features
    n_pos = int(np.count_nonzero(y_pm > 0))
    if n_pos in (0, y_pm.shape[0]):
        w = np.zeros(k + 1)
        w[k] = 1.0 if n_pos else -1.0
        return w
    prob = data.problem(y_pm, rows)
    param = _ll.parameter(f"-s {_SOLVER} -c {float(C)!r} -e {float(tol)!r} -B 1 -q")
    if init is not None:
        # LIBLINEAR (>= 2.20) puts label +1 first for +1/-1 data, so a previous
        # solution is already in its orientation.
        init = np.ascontiguousarray(init, dtype=np.float64)
        param.init_sol = init.ctypes.data_as(_P_DOUBLE)
    err = _ll.liblinear.check_parameter(prob, param)
    if err:
        raise RuntimeError(f"LIBLINEAR rejected its parameters: {err.decode()}")
    # ctypes.CDLL releases the GIL for the duration of this call: threads run
    # LIBLINEAR truly in parallel (measured: see the module docstring).
    model = _ll.toPyModel(_ll.liblinear.train(prob, param))
    w = np.ctypeslib.as_array(model.w, shape=(k + 1,)).copy()
    if model.get_labels()[0] != 1:  # LIBLINEAR's w is for its first label
        w = -w
    del model  # frees the C model
    return w


def _thread_map(fn: Callable[[int], np.ndarray], tasks: Iterable[int], n_jobs: int | None) -> list[np.ndarray]:
    """``[fn(t) for t in tasks]`` on ``n_jobs`` threads (joblib's -1 / None semantics), in order.

    Threads, not processes: LIBLINEAR runs with the GIL released (ctypes.CDLL),
    the node array is shared instead of pickled to workers, and the result
    order -- hence coef_ -- does not depend on the schedule.
    """
    tasks = list(tasks)
    n_threads = max(1, min(int(effective_n_jobs(n_jobs)), len(tasks)))
    if n_threads == 1:
        return [fn(t) for t in tasks]
    with ThreadPoolExecutor(max_workers=n_threads) as pool:
        return list(pool.map(fn, tasks))


def _fit_columns(
    data: _LiblinearRows, Y_pm: np.ndarray, C: np.ndarray, tol: float, n_jobs: int | None
) -> np.ndarray:
    """One binary SVM per column of ``Y_pm`` (N, C) with the per-column ``C``; returns (C, K + 1)."""
    weights = _thread_map(lambda j: _train_binary(data, Y_pm[:, j], C[j], tol), range(Y_pm.shape[1]), n_jobs)
    return np.vstack(weights)


def fit_row_subsets(
    X: np.ndarray, problems: Sequence[tuple[np.ndarray, np.ndarray]], C: float, tol: float = 0.01,
    n_jobs: int | None = -1,
) -> np.ndarray:
    """One L2-loss linear SVM (``-s 2 -B 1``) per ``(rows, y)`` problem on rows of ``X``: (P, K + 1) as ``[w, b]``.

    ``y`` is +1/-1 per listed row. The rows share one LIBLINEAR node array,
    so P problems over subsets of a large X (map cells of the images of each
    class, say) cost one conversion, and they train in parallel threads.
    """
    data = _LiblinearRows(np.ascontiguousarray(X, dtype=np.float64))
    jobs = [(np.asarray(rows, dtype=np.int64), np.where(np.asarray(y) > 0, 1.0, -1.0)) for rows, y in problems]
    return np.vstack(_thread_map(lambda j: _train_binary(data, jobs[j][1], C, tol, rows=jobs[j][0]),
                                 range(len(jobs)), n_jobs)).reshape(len(jobs), X.shape[1] + 1)


def _path_scores(
    data: _LiblinearRows,
    X_val: np.ndarray,
    y_pm: np.ndarray,
    train: np.ndarray,
    C_grid: np.ndarray,
    tol: float,
) -> np.ndarray:
    """Validation decision values (G, n_val) of one class along the ascending C grid.

    Each C starts from the previous solution (a warm start, as LIBLINEAR's own
    ``-C`` search does); the chain is sequential, so the result is deterministic.
    """
    y_train = y_pm[train]
    out = np.empty((C_grid.size, X_val.shape[0]), dtype=np.float32)  # G x N x C of them per fold
    w: np.ndarray | None = None
    for g, C in enumerate(C_grid):
        w = _train_binary(data, y_train, float(C), tol, rows=train, init=w)
        out[g] = X_val @ w[:-1] + w[-1]
    return out


def normalize_rows(X: np.ndarray, mode: str) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero) for ``"l2"``; ``X`` itself for ``"none"``.

    The one place the SVM's feature normalization is written: the estimator and
    :class:`featkit.linear.classifier.LinearClassifier` both call it.
    """
    if mode == "none":
        return X
    if mode != "l2":
        raise FeatkitError(f"normalize must be 'l2' or 'none', got {mode!r}")
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.where(norms == 0, 1.0, norms)


# --------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------


def average_precision(Y_true: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Per-column average precision of ``scores`` (N, C) for 0/1 labels ``Y_true`` (N, C).

    Same definition and tie handling as ``sklearn.metrics.average_precision_score``
    (step-wise sum over distinct thresholds), vectorized over the columns because
    the C search evaluates thousands of columns. Columns without a positive get NaN.
    """
    Y_true = np.asarray(Y_true)
    scores = np.asarray(scores, dtype=np.float64)
    if Y_true.ndim == 1:
        Y_true, scores = Y_true[:, None], scores[:, None]
    if Y_true.shape != scores.shape:
        raise FeatkitError(f"labels {Y_true.shape} and scores {scores.shape} differ in shape")
    n = scores.shape[0]
    order = np.argsort(-scores, axis=0, kind="stable")
    s = np.take_along_axis(scores, order, axis=0)
    tp = np.cumsum(np.take_along_axis(Y_true > 0, order, axis=0), axis=0, dtype=np.float64)
    last = np.ones_like(s, dtype=bool)  # last row of each group of tied scores
    last[:-1] = s[:-1] != s[1:]
    tp_at = np.where(last, tp, 0.0)
    prev = np.zeros_like(tp_at)
    prev[1:] = np.maximum.accumulate(tp_at, axis=0)[:-1]  # tp at the previous threshold
    precision = tp / np.arange(1, n + 1, dtype=np.float64)[:, None]
    n_pos = tp[-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        ap = np.where(last, (tp - prev) * precision, 0.0).sum(axis=0) / n_pos
    return np.where(n_pos > 0, ap, np.nan)


def mean_average_precision(Y_true: np.ndarray, scores: np.ndarray) -> float:
    """Mean over the columns that have a positive of :func:`average_precision`."""
    ap = average_precision(Y_true, scores)
    if np.all(np.isnan(ap)):
        raise FeatkitError("no column of the labels has a positive; mAP is undefined")
    return float(np.nanmean(ap))


# --------------------------------------------------------------------------
# C selection
# --------------------------------------------------------------------------


def cross_validate_C(
    X: np.ndarray,
    Y: np.ndarray,
    C_grid: Sequence[float] | np.ndarray = DEFAULT_C_GRID,
    *,
    cv: int = 3,
    multilabel: bool = False,
    tol: float = 0.01,
    n_jobs: int | None = -1,
    random_state: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cross-validated scores of every C in ``C_grid`` for (already normalized) ``X``.

    ``Y`` is the (N, C) 0/1 indicator matrix (one-hot for multi-class). Folds:
    ``StratifiedKFold(cv, shuffle=True, random_state)`` on the class index
    (``KFold`` for multi-label, which cannot be stratified), so they are the
    same run to run.

    Returns ``(C_grid, shared, per_class)``: the sorted grid (G,), the score of
    the whole one-vs-all classifier per C (G,) -- accuracy of the arg-max class,
    or mAP over the columns for multi-label -- and the average precision of each
    class's own SVM (G, C), each averaged over the folds (NaN where a class has
    no positive in any validation fold).
    """
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y)
    grid = np.sort(np.asarray(C_grid, dtype=np.float64).ravel())
    n, n_cols = Y.shape
    if n < cv:
        raise FeatkitError(f"cannot make {cv} CV folds from {n} samples; pass a fixed C or a smaller cv")
    if multilabel:
        splits = list(KFold(cv, shuffle=True, random_state=random_state).split(X))
    else:
        counts = Y.sum(axis=0)
        if counts.max() < cv:
            raise FeatkitError(
                f"cannot make {cv} stratified CV folds: no class has {cv} samples; pass a fixed C or a smaller cv"
            )
        splits = list(StratifiedKFold(cv, shuffle=True, random_state=random_state).split(X, Y.argmax(axis=1)))
    Y_pm = np.where(Y > 0, 1.0, -1.0)
    data = _LiblinearRows(X)
    shared = np.zeros((cv, grid.size))
    per_class = np.full((cv, grid.size, n_cols), np.nan)
    for f, (train, val) in enumerate(splits):
        X_val = X[val]
        paths = _thread_map(
            lambda j: _path_scores(data, X_val, Y_pm[:, j], train, grid, tol),  # noqa: B023 - used at once
            range(n_cols),
            n_jobs,
        )
        D = np.stack(paths, axis=2)  # (G, n_val, C)
        Y_val = Y[val]
        for g in range(grid.size):
            ap = average_precision(Y_val, D[g])
            per_class[f, g] = ap
            if multilabel:
                shared[f, g] = np.nanmean(ap) if np.any(~np.isnan(ap)) else np.nan
            else:
                shared[f, g] = np.mean(D[g].argmax(axis=1) == Y_val.argmax(axis=1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN classes stay NaN, silently
        return grid, np.nanmean(shared, axis=0), np.nanmean(per_class, axis=0)


#: How ``C="auto"`` picks C from the CV curve; recorded in svm.h5 (``C_rule``).
C_RULE = "cv-argmax, ties to the smaller C"


def _pick_C(grid: np.ndarray, scores: np.ndarray) -> float:
    """The C of the highest CV score; among equal scores, the smallest C.

    Fixed before looking at any result, as scikit-learn's GridSearchCV and
    VISSL's SVM trainer do: the arg-max of the curve itself, nothing fitted to
    its shape. The smaller C on ties is the stronger regularization (smoother
    CAM weights) at no CV cost. ``grid`` is ascending; NaN scores (a class
    without positives) count as the worst.
    """
    s = np.where(np.isnan(scores), -np.inf, np.asarray(scores, dtype=np.float64))
    return float(grid[int(np.flatnonzero(s == s.max())[0])])


def describe_C_grid(grid: Sequence[float] | np.ndarray) -> str:
    """``"2^-6..2^6 (13 values)"`` for a grid of powers of 2, else ``"0.01..10 (4 values)"``."""
    g = np.sort(np.asarray(grid, dtype=np.float64).ravel())
    exponents = np.log2(g)
    if np.allclose(exponents, np.round(exponents), rtol=0, atol=1e-9):
        lo, hi = int(round(exponents[0])), int(round(exponents[-1]))
        span = f"2^{lo}..2^{hi}"
    else:
        span = f"{g[0]:.3g}..{g[-1]:.3g}"
    return f"{span} ({g.size} value{'s' if g.size != 1 else ''})"


# --------------------------------------------------------------------------
# Estimator
# --------------------------------------------------------------------------


class OneVsAllLinearSVM(ClassifierMixin, BaseEstimator):
    """One L2-regularized L2-loss linear SVM per class (LIBLINEAR ``-s 2 -B 1``).

    Parameters
    ----------
    C : float or "auto"
        SVM cost. "auto" picks it from ``C_grid`` by ``cv``-fold CV: the C of
        the highest CV score, the smaller C on ties (:data:`C_RULE`).
    C_grid : sequence of float, optional
        Candidates for "auto"; default :data:`DEFAULT_C_GRID` (2**-6 .. 2**6),
        for ``normalize="none"`` divided by the mean squared feature norm.
    cv : int
        CV folds (stratified, shuffled with ``random_state``).
    normalize : "l2" or "none"
        Scale every sample to unit L2 norm before the SVM ("l2", default: the
        C grid is then independent of the backbone's feature scale).
    per_class_C : bool
        False (default): one C for all classes, chosen by the CV accuracy of
        the whole one-vs-all classifier (mAP for multi-label). True: each
        class's C by its own SVM's CV average precision. Shared C is the
        default because the per-class choice is noisy and breaks the
        comparability of the scores (see the module docstring).
    tol : float
        LIBLINEAR's stopping tolerance ``-e`` (its default for ``-s 2``).
    n_jobs : int or None
        Threads training the classes (-1: all cores). Results do not depend on it.
    random_state : int
        Seed of the CV fold assignment.
    multilabel : bool
        y is an (N, C) 0/1 matrix (SUN Attribute): one SVM per column, CV by mAP,
        ``predict`` gives the (N, C) matrix ``score > 0``, ``score`` the mAP.
    binary_scores : "columns" or "difference"
        With two classes, ``decision_function`` gives both SVMs' scores (N, 2) ("columns", featkit's CAM
        convention) or scikit-learn's binary convention (N,), the second class's score minus the first's
        ("difference": what ``cross_val_score(..., scoring="roc_auc")`` and the other binary scorers need).

    Attributes
    ----------
    coef_ : (n_classes, n_features) float64
        Weights in the space the SVM was trained in (L2-normalized features for
        ``normalize="l2"``), one row per class -- the CAM weights.
    intercept_ : (n_classes,) float64
    classes_ : (n_classes,)
        Sorted labels; ``arange(C)`` for multi-label.
    C_ : (n_classes,) float64
        The C each class was trained with.
    C_rule_ : str
        How C was set: :data:`C_RULE` for ``C="auto"``, ``"fixed"`` otherwise.
    C_grid_, cv_scores_, cv_class_scores_ : only for ``C="auto"``
        The grid, the CV score of the whole classifier per C (G,) and of each
        class (average precision, (G, n_classes)).
    cv_score_ : float, only for ``C="auto"``
        The CV score of the whole classifier at the chosen shared C.
    n_features_in_ : int

    Notes
    -----
    ``decision_function(X) == (X / ||X||_2) @ coef_.T + intercept_`` (exactly;
    ``X @ coef_.T + intercept_`` for ``normalize="none"``). The L2 scaling is a
    per-image factor, so it cannot be folded into ``coef_``; it does not need to
    be for a CAM: with a conv map F (H, W, K) whose GAP is f, the map
    ``M_c = F @ coef_[c]`` is the CAM of the raw features, and the image's
    score is ``M_c.mean() / ||f|| + intercept_[c]``. The positive factor
    ``1 / ||f||`` is shared by all classes of an image, so every CAM has the
    shape (and gives the box) of the trained SVM's weights. Ranking the classes
    by ``M_c.mean() + intercept_[c]`` would differ (the bias is added after the
    factor), so featkit ranks them with :meth:`decision_function`.
    """

    def __init__(
        self,
        C: float | Literal["auto"] = "auto",
        *,
        C_grid: Sequence[float] | None = None,
        cv: int = 3,
        normalize: Literal["l2", "none"] = "l2",
        per_class_C: bool = False,
        tol: float = 0.01,
        n_jobs: int | None = -1,
        random_state: int = 0,
        multilabel: bool = False,
        binary_scores: Literal["columns", "difference"] = "columns",
    ) -> None:
        self.C = C
        self.C_grid = C_grid
        self.cv = cv
        self.normalize = normalize
        self.per_class_C = per_class_C
        self.tol = tol
        self.n_jobs = n_jobs
        self.random_state = random_state
        self.multilabel = multilabel
        self.binary_scores = binary_scores

    # -- sklearn plumbing ---------------------------------------------------

    def __sklearn_tags__(self):  # noqa: ANN204 - sklearn's Tags type
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = False
        if self.multilabel:
            tags.target_tags.multi_output = True
            tags.classifier_tags.multi_label = True
        return tags

    def _check_params(self) -> None:
        if not (self.C == "auto" or (isinstance(self.C, numbers.Real) and self.C > 0)):
            raise FeatkitError(f"C must be a positive number or 'auto', got {self.C!r}")
        if self.normalize not in ("l2", "none"):
            raise FeatkitError(f"normalize must be 'l2' or 'none', got {self.normalize!r}")
        if not (isinstance(self.cv, numbers.Integral) and self.cv >= 2):
            raise FeatkitError(f"cv must be an integer >= 2, got {self.cv!r}")
        if not (isinstance(self.tol, numbers.Real) and self.tol > 0):
            raise FeatkitError(f"tol must be a positive number, got {self.tol!r}")
        if self.C_grid is not None:
            grid = np.asarray(self.C_grid, dtype=np.float64).ravel()
            if grid.size == 0 or not np.all(np.isfinite(grid) & (grid > 0)):
                raise FeatkitError(f"C_grid must be a non-empty list of positive numbers, got {self.C_grid!r}")

    @staticmethod
    def _check_finite(X: np.ndarray) -> None:
        bad = ~np.isfinite(X)
        if bad.any():
            n_rows = int(bad.any(axis=1).sum())
            raise FeatkitError(
                f"features contain NaN or inf values in {n_rows} of {X.shape[0]} rows; "
                "re-extract them (a corrupt image or an overflowing backbone)"
            )

    def _normalize(self, X: np.ndarray) -> np.ndarray:
        return normalize_rows(X, self.normalize)

    def _validate_targets(self, y: np.ndarray) -> np.ndarray:
        """(N, C) 0/1 indicator matrix of y; sets ``classes_``."""
        if self.multilabel:
            y = np.asarray(y)
            if y.ndim != 2 or not np.isin(y, (0, 1)).all():
                raise FeatkitError(f"multilabel=True needs y as an (N, C) matrix of 0/1, got shape {y.shape}")
            self.classes_ = np.arange(y.shape[1])
            return (y > 0).astype(np.int8)
        check_classification_targets(y)
        self.classes_, idx = np.unique(y, return_inverse=True)
        if self.classes_.size < 2:
            raise FeatkitError(
                f"y has only one class ({self.classes_[0]!r}); one-vs-all SVMs need at least two classes"
            )
        Y = np.zeros((idx.size, self.classes_.size), dtype=np.int8)
        Y[np.arange(idx.size), idx] = 1
        return Y

    # -- API ------------------------------------------------------------------

    def fit(self, X: np.ndarray, y: np.ndarray) -> OneVsAllLinearSVM:
        """Train one SVM per class (choosing C by CV first if ``C="auto"``)."""
        self._check_params()
        try:
            check_consistent_length(X, y)
        except ValueError as exc:
            raise FeatkitError(f"X and y have different lengths: {exc}") from None
        X, y = validate_data(
            self,
            X,
            y,
            dtype=np.float64,
            order="C",
            ensure_all_finite=False,
            multi_output=self.multilabel,
        )
        self._check_finite(X)
        Y = self._validate_targets(y)
        Xn = self._normalize(X)
        n_cols = Y.shape[1]
        if self.C == "auto":
            if self.C_grid is not None:
                grid = np.asarray(self.C_grid, dtype=np.float64)
            elif self.normalize == "none":
                # Scaling x by s is (up to the bias penalty) the same SVM with C / s**2:
                # express the default grid in units of the mean squared feature norm.
                mean_sq = float(np.mean(np.einsum("ij,ij->i", Xn, Xn)))
                grid = np.asarray(DEFAULT_C_GRID) / (mean_sq if mean_sq > 0 else 1.0)
            else:
                grid = np.asarray(DEFAULT_C_GRID)
            self.C_grid_, self.cv_scores_, self.cv_class_scores_ = cross_validate_C(
                Xn,
                Y,
                grid,
                cv=self.cv,
                multilabel=self.multilabel,
                tol=self.tol,
                n_jobs=self.n_jobs,
                random_state=self.random_state,
            )
            shared_C = _pick_C(self.C_grid_, self.cv_scores_)
            self.cv_score_ = float(self.cv_scores_[int(np.flatnonzero(self.C_grid_ == shared_C)[0])])
            C_ = np.full(n_cols, shared_C)
            if self.per_class_C:
                for j in range(n_cols):
                    if not np.all(np.isnan(self.cv_class_scores_[:, j])):
                        C_[j] = _pick_C(self.C_grid_, self.cv_class_scores_[:, j])
            self.C_rule_ = C_RULE
        else:
            C_ = np.full(n_cols, float(self.C))
            self.C_rule_ = "fixed"
        W = _fit_columns(_LiblinearRows(Xn), np.where(Y > 0, 1.0, -1.0), C_, self.tol, self.n_jobs)
        self.C_ = C_
        self.coef_ = np.ascontiguousarray(W[:, :-1])
        self.intercept_ = W[:, -1].copy()
        return self

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """Scores (N, C), one column per class, also for two classes (unless ``binary_scores="difference"``).

        ``(X / ||X||_2) @ coef_.T + intercept_`` for ``normalize="l2"``,
        ``X @ coef_.T + intercept_`` for ``"none"``.
        """
        scores = self._class_scores(X)
        if self.binary_scores == "difference" and not self.multilabel and scores.shape[1] == 2:
            return scores[:, 1] - scores[:, 0]
        if self.binary_scores not in ("columns", "difference"):
            raise FeatkitError(f"binary_scores must be 'columns' or 'difference', got {self.binary_scores!r}")
        return scores

    def _class_scores(self, X: np.ndarray) -> np.ndarray:
        """(N, C): one column per class, whatever ``binary_scores`` says."""
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float64, order="C", ensure_all_finite=False, reset=False)
        self._check_finite(X)
        return self._normalize(X) @ self.coef_.T + self.intercept_

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Arg-max class (multi-class) or the (N, C) 0/1 matrix ``score > 0`` (multi-label)."""
        scores = self._class_scores(X)
        if self.multilabel:
            return (scores > 0).astype(np.int64)
        return self.classes_[np.argmax(scores, axis=1)]

    def score(self, X: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None) -> float:
        """Accuracy (multi-class) or mAP over the columns (multi-label, SUN Attribute's metric)."""
        if not self.multilabel:
            return super().score(X, y, sample_weight=sample_weight)
        if sample_weight is not None:
            raise FeatkitError("sample_weight is not supported for the multi-label mAP")
        return mean_average_precision(np.asarray(y), self._class_scores(X))
