"""Tests of featkit.linear.svm: sklearn compatibility, the exact score contract, CV determinism."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.metrics import average_precision_score
from sklearn.svm import LinearSVC
from sklearn.utils import estimator_checks
from sklearn.utils.estimator_checks import parametrize_with_checks

from featkit.errors import FeatkitError
from featkit.linear.svm import (
    C_RULE,
    DEFAULT_C_GRID,
    OneVsAllLinearSVM,
    _pick_C,
    average_precision,
    cross_validate_C,
    describe_C_grid,
    mean_average_precision,
)


def _blobs(n: int = 120, k: int = 20, n_classes: int = 3, spread: float = 4.0, seed: int = 0):
    rng = np.random.default_rng(seed)
    means = spread * rng.standard_normal((n_classes, k))
    y = np.arange(n) % n_classes
    return means[y] + rng.standard_normal((n, k)), y


# -- scikit-learn's estimator checks --------------------------------------------------


# Both checks pass their multi-class half and then assert sklearn's binary convention
# decision_function(X).shape == (N,); here it is (N, 2) by design (two one-vs-all SVMs,
# one CAM weight vector per class). test_two_classes_give_two_columns covers that case.
_BINARY_SHAPE = "decision_function is (N, n_classes) also for 2 classes, by design, not sklearn's (N,)"


def _expected_failed_checks(estimator: OneVsAllLinearSVM) -> dict[str, str]:
    return {"check_classifiers_train": _BINARY_SHAPE, "check_classifiers_classes": _BINARY_SHAPE}


@parametrize_with_checks([OneVsAllLinearSVM(C=1.0)], expected_failed_checks=_expected_failed_checks)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


# -- the score contract ---------------------------------------------------------------


@pytest.mark.parametrize("normalize", ["l2", "none"])
def test_decision_function_is_reproduced_from_coef(normalize):
    X, y = _blobs(seed=1)
    m = OneVsAllLinearSVM(C=0.5, normalize=normalize, n_jobs=1).fit(X, y)
    assert m.coef_.shape == (3, 20) and m.coef_.dtype == np.float64
    assert m.intercept_.shape == (3,) and m.C_.shape == (3,) and m.n_features_in_ == 20
    Xs = X / np.linalg.norm(X, axis=1, keepdims=True) if normalize == "l2" else X
    np.testing.assert_allclose(m.decision_function(X), Xs @ m.coef_.T + m.intercept_, rtol=0, atol=1e-10)


def test_two_classes_give_two_columns():
    X, y = _blobs(n_classes=2, seed=2)
    m = OneVsAllLinearSVM(C=1.0).fit(X, y)
    assert m.decision_function(X).shape == (X.shape[0], 2)
    assert m.coef_.shape == (2, X.shape[1])
    np.testing.assert_array_equal(m.predict(X), m.classes_[m.decision_function(X).argmax(axis=1)])


def test_separable_data_is_learned_perfectly():
    X, y = _blobs(n=90, spread=6.0, seed=3)
    assert OneVsAllLinearSVM(C=1.0).fit(X, y).score(X, y) == 1.0


def test_auto_C_is_deterministic_and_from_the_grid():
    X, y = _blobs(n=90, spread=0.6, seed=4)
    a = OneVsAllLinearSVM(n_jobs=2).fit(X, y)
    b = OneVsAllLinearSVM(n_jobs=2).fit(X, y)
    assert a.C_[0] in DEFAULT_C_GRID and np.all(a.C_ == a.C_[0])
    np.testing.assert_array_equal(a.C_, b.C_)
    np.testing.assert_array_equal(a.coef_, b.coef_)
    np.testing.assert_array_equal(a.cv_scores_, b.cv_scores_)
    assert a.cv_scores_.shape == (len(DEFAULT_C_GRID),)
    assert a.cv_class_scores_.shape == (len(DEFAULT_C_GRID), 3)


def test_C_rule_is_the_cv_argmax_with_ties_to_the_smaller_C():
    grid = np.array([0.25, 0.5, 1.0, 2.0, 4.0])
    # A lone maximum wins even beside a higher-mean neighbourhood (no smoothing of the curve).
    assert _pick_C(grid, np.array([0.80, 0.90, 0.90, 0.70, 0.91])) == 4.0
    assert _pick_C(grid, np.array([0.80, 0.92, 0.70, 0.70, 0.70])) == 0.5
    # Ties (a flat top) go to the smallest C; NaN (no positives) is never picked.
    assert _pick_C(grid, np.array([0.80, 0.90, 0.90, 0.90, 0.85])) == 0.5
    assert _pick_C(grid, np.array([np.nan, 0.6, 0.6, np.nan, 0.5])) == 0.5
    assert _pick_C(grid[:1], np.array([0.3])) == 0.25


def test_auto_C_records_the_rule_and_the_score_of_the_chosen_C():
    X, y = _blobs(n=90, spread=0.6, seed=4)
    m = OneVsAllLinearSVM(n_jobs=1).fit(X, y)
    assert m.C_rule_ == C_RULE
    best = np.flatnonzero(m.cv_scores_ == m.cv_scores_.max())[0]
    assert m.C_[0] == m.C_grid_[best] and m.cv_score_ == m.cv_scores_.max()
    assert OneVsAllLinearSVM(C=2.0).fit(X, y).C_rule_ == "fixed"


def test_describe_C_grid():
    assert describe_C_grid(DEFAULT_C_GRID) == "2^-6..2^6 (13 values)"
    assert describe_C_grid([10.0, 0.01, 1.0]) == "0.01..10 (3 values)"


def test_per_class_C_picks_one_C_per_class_from_the_grid():
    X, y = _blobs(n=90, spread=0.6, seed=4)
    m = OneVsAllLinearSVM(per_class_C=True, C_grid=[0.01, 0.1, 1.0, 10.0], n_jobs=1).fit(X, y)
    assert m.C_.shape == (3,) and set(m.C_) <= {0.01, 0.1, 1.0, 10.0}


def test_threads_do_not_change_the_result():
    X, y = _blobs(n=150, k=30, n_classes=5, spread=1.0, seed=5)
    one = OneVsAllLinearSVM(C=1.0, n_jobs=1).fit(X, y)
    two = OneVsAllLinearSVM(C=1.0, n_jobs=2).fit(X, y)
    np.testing.assert_array_equal(one.coef_, two.coef_)
    np.testing.assert_array_equal(one.intercept_, two.intercept_)


@pytest.mark.parametrize("dual", [True, False])
def test_agrees_with_sklearn_linearsvc(dual):
    X, y = _blobs(n=400, k=30, n_classes=4, spread=0.7, seed=6)
    ours = OneVsAllLinearSVM(C=0.1, normalize="none", n_jobs=1).fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = LinearSVC(C=0.1, loss="squared_hinge", dual=dual, intercept_scaling=1, max_iter=5000).fit(X, y)
    assert np.mean(ours.predict(X) == ref.predict(X)) >= 0.98


def test_weights_equal_liblinears_own_python_api():
    """The vectorized node arrays (zeros dropped, built in chunks) are what LIBLINEAR expects."""
    from liblinear import liblinearutil

    from featkit.linear import svm

    rng = np.random.default_rng(13)
    X = np.maximum(rng.standard_normal((50, 7)), 0)  # ReLU-like: many zeros
    y_pm = np.where(rng.random(50) < 0.4, 1.0, -1.0)
    ours = svm._train_binary(svm._LiblinearRows(X, chunk_rows=3), y_pm, 0.7, 0.01)
    model = liblinearutil.train(y_pm, X, "-s 2 -c 0.7 -e 0.01 -B 1 -q")
    w, b = model.get_decfun(label_idx=0)
    sign = 1.0 if model.get_labels()[0] == 1 else -1.0
    np.testing.assert_allclose(ours, sign * np.r_[w, b], rtol=0, atol=1e-12)


def test_string_labels_round_trip():
    X, y = _blobs(seed=7)
    names = np.array(["albatross", "bunting", "cowbird"])[y]
    m = OneVsAllLinearSVM(C=1.0).fit(X, names)
    assert list(m.classes_) == ["albatross", "bunting", "cowbird"]
    assert set(m.predict(X)) <= set(names)


# -- multi-label (SUN Attribute) ------------------------------------------------------


def test_multilabel_scores_and_map():
    rng = np.random.default_rng(8)
    X = rng.standard_normal((120, 15))
    Y = (X[:, :4] + 0.3 * rng.standard_normal((120, 4)) > 0).astype(int)
    m = OneVsAllLinearSVM(multilabel=True, C_grid=[0.1, 1.0], n_jobs=1).fit(X, Y)
    scores = m.decision_function(X)
    assert scores.shape == (120, 4) and m.predict(X).shape == (120, 4)
    assert m.C_.shape == (4,)
    mAP = m.score(X, Y)
    assert mAP == pytest.approx(np.mean([average_precision_score(Y[:, j], scores[:, j]) for j in range(4)]))
    assert mAP > 0.9


@pytest.mark.parametrize(
    "check",
    [
        "check_classifiers_multilabel_output_format_decision_function",
        "check_classifiers_multilabel_output_format_predict",
        "check_classifiers_multilabel_representation_invariance",
    ],
)
def test_multilabel_sklearn_checks(check):
    getattr(estimator_checks, check)("OneVsAllLinearSVM", OneVsAllLinearSVM(C=1.0, multilabel=True))


def test_multilabel_constant_column_is_a_constant_classifier():
    rng = np.random.default_rng(9)
    X = rng.standard_normal((40, 5))
    Y = np.column_stack([(X[:, 0] > 0).astype(int), np.zeros(40, int)])
    m = OneVsAllLinearSVM(C=1.0, multilabel=True).fit(X, Y)
    assert np.all(m.coef_[1] == 0) and m.intercept_[1] == -1.0


def test_average_precision_matches_sklearn_with_ties():
    rng = np.random.default_rng(10)
    Y = rng.integers(0, 2, (60, 5))
    S = np.round(rng.standard_normal((60, 5)), 1)  # many ties
    ref = [average_precision_score(Y[:, j], S[:, j]) for j in range(5)]
    np.testing.assert_allclose(average_precision(Y, S), ref, rtol=1e-12)
    assert mean_average_precision(Y, S) == pytest.approx(np.mean(ref))


def test_cross_validate_C_shapes():
    X, y = _blobs(n=60, seed=11)
    Y = np.eye(3, dtype=int)[y]
    grid, shared, per_class = cross_validate_C(X, Y, [1.0, 0.1], n_jobs=1)
    np.testing.assert_array_equal(grid, [0.1, 1.0])
    assert shared.shape == (2,) and per_class.shape == (2, 3)
    assert np.all((shared >= 0) & (shared <= 1))


# -- errors -----------------------------------------------------------------------------


def test_single_class_is_a_clear_error():
    X, _ = _blobs(n=10)
    with pytest.raises(FeatkitError, match="only one class"):
        OneVsAllLinearSVM(C=1.0).fit(X, np.zeros(10))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_features_are_a_clear_error(bad):
    X, y = _blobs(n=12)
    X[3, 2] = bad
    with pytest.raises(FeatkitError, match="NaN or inf .* re-extract"):
        OneVsAllLinearSVM(C=1.0).fit(X, y)
    m = OneVsAllLinearSVM(C=1.0).fit(_blobs(n=12)[0], y)
    with pytest.raises(FeatkitError, match="re-extract"):
        m.decision_function(X)


def test_length_mismatch_is_a_clear_error():
    X, y = _blobs(n=12)
    with pytest.raises(FeatkitError, match="different lengths"):
        OneVsAllLinearSVM(C=1.0).fit(X, y[:-1])


@pytest.mark.parametrize(
    "params",
    [{"C": -1.0}, {"C": "best"}, {"normalize": "l1"}, {"cv": 1}, {"C_grid": []}, {"tol": 0.0}],
)
def test_bad_parameters_are_clear_errors(params):
    X, y = _blobs(n=12)
    with pytest.raises(FeatkitError):
        OneVsAllLinearSVM(**params).fit(X, y)


@pytest.mark.parametrize("y", [[0, 1], [0, 0, 1, 1]])
def test_too_few_samples_for_cv(y):
    X = np.arange(2.0 * len(y)).reshape(len(y), 2)
    with pytest.raises(FeatkitError, match="CV folds"):
        OneVsAllLinearSVM(C="auto", cv=3).fit(X, y)
