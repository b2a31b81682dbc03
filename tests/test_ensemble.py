"""models.ensemble: blend, stack and greedy weights, honest cross-fitting, the fold bag and the prefit ensemble."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.linear_model import LinearRegression, Ridge
from sklearn.tree import DecisionTreeRegressor

from models.ensemble import (
    METHODS,
    FoldBag,
    PrefitEnsemble,
    blend_weights,
    cross_fit,
    greedy_weights,
    stack_weights,
)


def predictions(n=300, models=3, seed=0):
    """Out-of-fold predictions of ``models`` base models: independent, so any mixture is identifiable."""
    rng = np.random.default_rng(seed)
    return rng.normal(loc=10.0, scale=2.0, size=(n, models))


def mse(P, y, weights, intercept=0.0):
    return float(np.mean((P @ weights + intercept - y) ** 2))


# --- blend_weights -----------------------------------------------------------------------------


def test_blend_recovers_a_known_mixture():
    P = predictions()
    true = np.array([0.2, 0.5, 0.3])
    weights, intercept = blend_weights(P, P @ true)
    np.testing.assert_allclose(weights, true, atol=1e-4)
    assert intercept == 0.0


def test_blend_recovers_a_single_model():
    P = predictions(models=4, seed=1)
    weights, _ = blend_weights(P, P[:, 2])
    np.testing.assert_allclose(weights, [0, 0, 1, 0], atol=1e-4)


def test_blend_recovers_a_mixture_of_models_as_close_as_house_price_models():
    """Log prices: the models differ by ~0.1, so the squared errors are tiny; a loose optimiser
    tolerance would stop near the uniform starting point."""
    rng = np.random.default_rng(0)
    truth = rng.normal(12.0, 0.4, size=500)
    P = truth[:, None] + rng.normal(0.0, 0.1, size=(500, 3))
    true = np.array([0.2, 0.5, 0.3])
    weights, _ = blend_weights(P, P @ true)
    np.testing.assert_allclose(weights, true, atol=1e-4)


@pytest.mark.parametrize("mixture, naive", [
    # least squares, even with sum(w) = 1, wants a negative weight: not the clipped answer
    ([1.2, -0.6, 0.4], [0.75, 0.0, 0.25]),
    # the best non-negative weights sum to 0.8: not those weights rescaled
    ([0.6, 0.2, 0.0], [0.75, 0.25, 0.0]),
])
def test_blend_finds_the_best_point_of_the_simplex(mixture, naive):
    P = predictions(seed=2)
    y = P @ np.array(mixture)
    weights, intercept = blend_weights(P, y)
    assert np.all(weights >= 0)
    assert weights.sum() == pytest.approx(1.0, abs=1e-12)
    assert intercept == 0.0
    # no point of a fine grid over the simplex does better, and the naive answer does worse
    best = mse(P, y, weights)
    grid = [np.array([a, b, 1 - a - b]) for a in np.linspace(0, 1, 41) for b in np.linspace(0, 1 - a, 41)]
    assert best <= min(mse(P, y, w) for w in grid) + 1e-9
    assert best < mse(P, y, np.array(naive)) - 0.05


def test_blend_beats_the_uniform_average():
    P = predictions(seed=3)
    y = 0.7 * P[:, 0] + 0.3 * P[:, 1] + np.random.default_rng(3).normal(scale=0.5, size=len(P))
    weights, _ = blend_weights(P, y)
    assert mse(P, y, weights) < mse(P, y, np.full(3, 1 / 3)) - 0.1


# --- stack_weights -----------------------------------------------------------------------------


def test_stack_recovers_known_linear_weights_and_intercept():
    P = predictions(seed=4)
    weights, intercept = stack_weights(P, 3.0 + P @ np.array([0.6, 0.0, 0.9]))
    np.testing.assert_allclose(weights, [0.6, 0.0, 0.9], atol=1e-8)
    assert intercept == pytest.approx(3.0, abs=1e-6)
    assert isinstance(intercept, float)


def test_stack_weights_are_non_negative():
    P = predictions(seed=5)
    weights, intercept = stack_weights(P, 1.0 + 0.8 * P[:, 0] - 0.5 * P[:, 1])
    assert np.all(weights >= 0)
    assert weights[1] == 0.0
    assert weights[0] > 0.5


def test_methods_name_both_ways():
    assert METHODS == {"blend": blend_weights, "stack": stack_weights, "select": greedy_weights}


# --- cross_fit ---------------------------------------------------------------------------------


def folds_of(n, k, seed=0):
    return np.random.default_rng(seed).permutation(np.arange(n) % k)


@pytest.mark.parametrize("method", ["blend", "stack"])
def test_cross_fit_weights_for_a_fold_never_see_its_rows(method):
    """Fold 0's target follows model 0, fold 1's model 1: weights learned on the other fold give
    that other model; weights that saw the held-out fold would be a mix of both."""
    P = predictions(n=200, models=2, seed=6)
    folds = np.repeat([0, 1], 100)
    y = np.where(folds == 0, P[:, 0], P[:, 1])
    out = cross_fit(P, y, folds, method)
    np.testing.assert_allclose(out[folds == 0], P[folds == 0, 1], atol=1e-4)
    np.testing.assert_allclose(out[folds == 1], P[folds == 1, 0], atol=1e-4)


@pytest.mark.parametrize("method", ["blend", "stack"])
def test_cross_fit_a_fold_is_blind_to_its_own_target(method):
    """Changing fold k's target changes no prediction of fold k (and does change others')."""
    P = predictions(n=240, seed=7)
    y = P @ np.array([0.5, 0.3, 0.2]) + np.random.default_rng(7).normal(scale=0.3, size=240)
    folds = folds_of(240, 4, seed=7)
    base = cross_fit(P, y, folds, method)
    for fold in range(4):
        held = folds == fold
        y_changed = y.copy()
        y_changed[held] = P[held, 2] * 3.0 - 5.0
        changed = cross_fit(P, y_changed, folds, method)
        np.testing.assert_array_equal(changed[held], base[held])
        assert not np.allclose(changed[~held], base[~held])


@pytest.mark.parametrize("method", ["blend", "stack"])
def test_cross_fit_equals_weights_learned_on_the_other_folds(method):
    P = predictions(n=150, seed=8)
    y = 1.0 + P @ np.array([0.1, 0.6, 0.3]) + np.random.default_rng(8).normal(scale=0.5, size=150)
    folds = folds_of(150, 5, seed=8)
    out = cross_fit(P, y, folds, method)
    for fold in range(5):
        held = folds == fold
        weights, intercept = METHODS[method](P[~held], y[~held])
        np.testing.assert_allclose(out[held], P[held] @ weights + intercept, rtol=1e-10)


@pytest.mark.parametrize("method", ["blend", "stack"])
def test_cross_fit_learns_nothing_from_rows_outside_fit_rows_but_predicts_them(method):
    P = predictions(n=200, seed=9)
    y = P @ np.array([0.3, 0.3, 0.4])
    folds = folds_of(200, 4, seed=9)
    fit_rows = np.ones(200, dtype=bool)
    fit_rows[::7] = False  # outliers: left out of the weights, still predicted
    y_wild = y.copy()
    y_wild[~fit_rows] = 1e6  # would drag any weights that learned from them
    out = cross_fit(P, y_wild, folds, method, fit_rows=fit_rows)
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out, y, atol=1e-3)  # the clean mixture, on every row
    np.testing.assert_array_equal(out, cross_fit(P, y, folds, method, fit_rows=fit_rows))


def test_cross_fit_unknown_method():
    P = predictions(n=20)
    with pytest.raises(KeyError):
        cross_fit(P, P[:, 0], folds_of(20, 2), "median")


# --- FoldBag and PrefitEnsemble ----------------------------------------------------------------


def regression_data(n=120, seed=10):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    y = 2.0 * X[:, 0] - X[:, 1] + np.sin(3 * X[:, 2]) + rng.normal(scale=0.1, size=n)
    return X, y


MEMBERS = [("linear", LinearRegression()), ("ridge", Ridge(alpha=10.0)), ("tree", DecisionTreeRegressor(max_depth=3, random_state=0))]


def _bag(model, X, y, folds=3):
    """``model`` fit on each fold's training rows, as the k-fold loop leaves it."""
    index = np.arange(len(y)) % folds
    return FoldBag([clone(model).fit(X[index != k], y[index != k]) for k in range(folds)])


def test_a_bag_predicts_the_mean_of_its_fold_models_and_fit_changes_nothing():
    X, y = regression_data()
    X_new, _ = regression_data(n=40, seed=11)
    bag = _bag(Ridge(alpha=1.0), X, y)
    expected = np.mean([e.predict(X_new) for e in bag.estimators], axis=0)
    before = bag.predict(X_new)
    np.testing.assert_allclose(before, expected, rtol=1e-12)
    assert bag.fit(X_new, -np.ones(40)) is bag  # already fit: a frozen estimator
    np.testing.assert_array_equal(bag.predict(X_new), before)


def test_the_prefit_ensemble_is_the_weighted_sum_of_its_bags_plus_intercept():
    X, y = regression_data()
    X_new, _ = regression_data(n=40, seed=11)
    bags = [(name, _bag(model, X, y)) for name, model in MEMBERS]
    ensemble = PrefitEnsemble(bags, [0.5, 0.0, 0.5], intercept=1.5)
    expected = 1.5 + 0.5 * bags[0][1].predict(X_new) + 0.5 * bags[2][1].predict(X_new)
    np.testing.assert_allclose(ensemble.predict(X_new), expected, rtol=1e-12)


def test_the_prefit_ensemble_applies_the_target_transform_inverse():
    X, y = regression_data()
    bags = [("ridge", _bag(Ridge(), X, y))]
    logged = PrefitEnsemble(bags, [1.0], target_transform="log")
    np.testing.assert_allclose(logged.predict(X), np.exp(bags[0][1].predict(X)), rtol=1e-12)


def test_bags_of_classifiers_average_probabilities_even_when_a_fold_lacks_a_class():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    X = rng.normal(size=(90, 3))
    y = np.array(["a", "b", "c"])[np.argmax(X, axis=1)]
    partial = LogisticRegression().fit(X[y != "c"], y[y != "c"])  # a fold that never saw "c"
    full = LogisticRegression().fit(X, y)
    bag = FoldBag([partial, full])
    proba = bag.predict_proba(X)
    assert list(bag.classes_) == ["a", "b", "c"] and np.allclose(proba.sum(axis=1), 1)
    np.testing.assert_allclose(proba[:, 2], full.predict_proba(X)[:, 2] / 2)
    ensemble = PrefitEnsemble([("bag", bag), ("full", FoldBag([full]))], [0.25, 0.75])
    np.testing.assert_allclose(ensemble.predict_proba(X), 0.25 * proba + 0.75 * full.predict_proba(X))
    assert (ensemble.predict(X) == ensemble.classes_[ensemble.predict_proba(X).argmax(axis=1)]).all()


def test_pickles():
    X, y = regression_data()
    ensemble = PrefitEnsemble([(name, _bag(m, X, y)) for name, m in MEMBERS], [0.5, 0.2, 0.3], intercept=-0.5)
    restored = pickle.loads(pickle.dumps(ensemble))
    np.testing.assert_array_equal(restored.predict(X), ensemble.predict(X))


def test_weights_from_a_cross_fit_method_combine_the_bags_as_they_combine_oof():
    """The weights a method learns on OOF predictions plug into the ensemble as they are."""
    X, y = regression_data()
    bags = [(name, _bag(m, X, y)) for name, m in MEMBERS]
    P = np.column_stack([bag.predict(X) for _, bag in bags])
    for method, combine in METHODS.items():
        weights, intercept = combine(P, y)
        ensemble = PrefitEnsemble(bags, list(weights), intercept)
        np.testing.assert_allclose(ensemble.predict(X), P @ weights + intercept, rtol=1e-9, err_msg=method)
