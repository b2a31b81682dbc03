"""Torch tabular models as scikit-learn estimators, and the tabular entries of the registry."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.base import BaseEstimator, clone
from sklearn.metrics import accuracy_score, r2_score
from sklearn.utils.validation import NotFittedError

from models import registry, tabular
from models.tabular import (
    ResidualBoostedRegressor,
    TorchClassifier,
    TorchRegressor,
    _mlp,
    auto_batch_size,
)


def linear_data(n=256, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3)).astype(np.float32)
    y = 3.0 * X[:, 0] - 2.0 * X[:, 1] + 0.5 * X[:, 2] + 100.0 + rng.normal(scale=0.1, size=n)
    return X, y


def blobs(n_per_class=60, seed=0):
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 3.0], [3.0, -2.0], [-3.0, -2.0]])
    X = np.concatenate([c + rng.normal(size=(n_per_class, 2)) for c in centres]).astype(np.float32)
    y = np.repeat(np.array(["north", "east", "west"], dtype=object), n_per_class)
    order = rng.permutation(len(y))
    return X[order], y[order]


FAST = {"epochs": 40, "batch_size": 32, "lr": 0.03}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("hidden", [(), (16,)])
def test_same_seed_same_predictions(hidden):
    X, y = linear_data(n=128)
    a = TorchRegressor(hidden=hidden, dropout=0.1, seed=3, **FAST).fit(X, y).predict(X)
    b = TorchRegressor(hidden=hidden, dropout=0.1, seed=3, **FAST).fit(X, y).predict(X)
    np.testing.assert_array_equal(a, b)
    c = TorchRegressor(hidden=hidden, dropout=0.1, seed=4, **FAST).fit(X, y).predict(X)
    assert not np.array_equal(a, c)


def test_linear_regressor_recovers_a_linear_target():
    X, y = linear_data()
    X_test, y_test = linear_data(n=100, seed=1)
    model = TorchRegressor(hidden=(), epochs=60, batch_size=32, lr=0.05).fit(X, y)
    assert r2_score(y_test, model.predict(X_test)) > 0.99
    # the target is standardised inside: the offset of 100 comes back
    assert abs(model.predict(X_test).mean() - y_test.mean()) < 0.5
    weight = model.net_[0].weight.detach().numpy()[0] * model.y_std_
    np.testing.assert_allclose(weight, [3.0, -2.0, 0.5], atol=0.15)


def test_mlp_regressor_fits_well():
    X, y = linear_data()
    X_test, y_test = linear_data(n=100, seed=1)
    model = TorchRegressor(hidden=(32,), **FAST).fit(X, y)
    assert r2_score(y_test, model.predict(X_test)) > 0.95


def test_classifier_beats_chance_and_keeps_the_labels():
    X, y = blobs()
    X_test, y_test = blobs(seed=1)
    model = TorchClassifier(hidden=(16,), **FAST).fit(X, y)
    assert set(model.classes_) == {"north", "east", "west"}
    predicted = model.predict(X_test)
    assert set(predicted) <= set(model.classes_)
    assert accuracy_score(y_test, predicted) > 0.9  # chance is 1/3
    proba = model.predict_proba(X_test)
    assert proba.shape == (len(X_test), 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    assert (model.classes_[proba.argmax(axis=1)] == predicted).all()


def test_history_has_one_entry_per_epoch_and_the_loss_falls():
    X, y = linear_data(n=128)
    seen = []
    model = TorchRegressor(hidden=(), epochs=15, batch_size=32, lr=0.03).fit(X, y, on_epoch=seen.append)
    assert [log["epoch"] for log in model.history_] == list(range(15))
    assert seen == model.history_
    losses = [log["train_loss"] for log in model.history_]
    assert all(np.isfinite(losses))
    assert losses[-1] < 0.2 * losses[0]


def test_clone_gives_an_unfitted_copy_with_the_same_params():
    model = TorchRegressor(hidden=(8, 4), dropout=0.2, lr=0.01, epochs=3, seed=9)
    model.fit(*linear_data(n=64))
    copy = clone(model)
    assert copy.get_params() == model.get_params()
    assert not hasattr(copy, "net_")
    with pytest.raises(NotFittedError):
        copy.predict(np.zeros((2, 3), dtype=np.float32))
    assert clone(TorchClassifier(hidden=(5,))).get_params()["hidden"] == (5,)


def test_xavier_init():
    torch.manual_seed(0)
    net = _mlp(300, 1, hidden=(200, 100), dropout=0.0)
    linears = [m for m in net if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(300, 200), (200, 100), (100, 1)]
    for layer in linears:
        fan_in, fan_out = layer.in_features, layer.out_features
        bound = np.sqrt(6.0 / (fan_in + fan_out))
        weight = layer.weight.detach().numpy()
        assert np.abs(weight).max() <= bound
        assert (layer.bias.detach().numpy() == 0).all()
        if weight.size > 1000:  # uniform on [-bound, bound]: variance bound^2 / 3
            assert weight.var() == pytest.approx(bound**2 / 3, rel=0.1)


def _plain(params: dict) -> dict:
    """Nested estimators (a meta-estimator's parts) by type: a clone holds new ones, whose own
    params ``get_params()`` lists separately."""
    return {k: type(v).__name__ if isinstance(v, BaseEstimator) else v for k, v in params.items()}


def test_registry_builds_the_tabular_models_with_their_defaults():
    linear = registry.create("linear", "tabular")
    assert isinstance(linear, TorchRegressor) and linear.hidden == () and linear.lr == 0.03
    mlp = registry.create("mlp", "tabular", epochs=7)
    assert isinstance(mlp, TorchRegressor) and mlp.hidden == (256,) and mlp.epochs == 7
    assert isinstance(registry.create("mlp_classifier", "tabular"), TorchClassifier)
    tabular = registry.list_models(kind="tabular")
    assert {"ridge", "linear", "mlp", "logistic"} <= {e.name for e in tabular}
    for entry in tabular:
        estimator = entry.build()
        assert _plain(clone(estimator).get_params()) == _plain(estimator.get_params()), entry.name
    assert {e.name for e in registry.list_models(kind="tabular", task="binary")} >= {"logistic", "mlp_classifier"}
    with pytest.raises(KeyError, match="unknown model"):
        registry.get("no_such_model", "tabular")


def test_registering_a_name_twice_is_refused():
    registry.get("ridge", "tabular")  # the built-ins are loaded
    with pytest.raises(ValueError, match="registered twice"):
        registry.register("ridge")(lambda **params: None)


def test_search_spaces_suggest_buildable_params():
    import optuna

    for name in ("linear", "mlp", "ridge"):
        entry = registry.get(name, "tabular")
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
        params = entry.space(study.ask())
        estimator = entry.build(**params)
        assert estimator.get_params()[next(iter(params))] == params[next(iter(params))]


def test_residual_boosting_beats_its_linear_model_and_its_booster_alone():
    # A linear trend plus an interaction: the elastic net misses the interaction, and a few
    # hundred shallow trees approximate the trend only in steps.
    from sklearn.ensemble import GradientBoostingRegressor
    from sklearn.linear_model import ElasticNet

    rng = np.random.default_rng(0)
    X = rng.normal(size=(800, 6))
    y = 3 * X[:, 0] + 2 * X[:, 1] + 1.5 * ((X[:, 2] > 0) & (X[:, 3] > 0)) + 0.1 * rng.normal(size=800)
    train, test = slice(0, 600), slice(600, None)
    linear = ElasticNet(alpha=1e-3)
    booster = GradientBoostingRegressor(n_estimators=200, max_depth=3, random_state=0)
    errors = {
        name: np.mean((model.fit(X[train], y[train]).predict(X[test]) - y[test]) ** 2)
        for name, model in {
            "linear": clone(linear),
            "booster": clone(booster),
            "both": ResidualBoostedRegressor(linear=linear, booster=booster),
        }.items()
    }
    assert errors["both"] < 0.5 * min(errors["linear"], errors["booster"]), errors


def test_elasticnet_gbm_is_registered_with_a_search_space_and_pickles():
    import pickle

    import optuna

    entry = registry.get("elasticnet_gbm", "tabular")
    params = entry.space(optuna.trial.FixedTrial(
        {"alpha": 1e-3, "l1_ratio": 0.5, "n_estimators": 500, "learning_rate": 0.02,
         "max_depth": 3, "min_samples_leaf": 10, "subsample": 0.8}
    ))
    model = registry.create("elasticnet_gbm", "tabular", **params)
    assert model.booster.n_estimators == 500 and model.linear.l1_ratio == 0.5
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(100, 3)), rng.normal(size=100)
    fitted = model.fit(X, y)
    np.testing.assert_allclose(pickle.loads(pickle.dumps(fitted)).predict(X), fitted.predict(X))


# --- early stopping, batch size and time ceiling of the torch models -------------------------


def noisy_classes(n=1500, seed=0):
    """Weak signal, noisy labels: a wide net at a high rate overfits within a few epochs."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 8)).astype(np.float32)
    y = np.where(X[:, 0] + rng.normal(scale=2.0, size=n) > 0, "yes", "no").astype(object)
    return X, y


OVERFITS = {"hidden": (128,), "lr": 0.01, "epochs": 100, "n_iter_no_change": 3}


@pytest.fixture
def split_from_100_rows(monkeypatch):
    """Hold out from 100 rows, not 1,000: the tests' tables stay small and quick to fit."""
    monkeypatch.setattr(tabular, "MIN_VALIDATION_ROWS", 100)


@pytest.mark.usefixtures("split_from_100_rows")
def test_early_stopping_keeps_the_best_epoch_of_a_held_out_tenth():
    X, y = noisy_classes()
    seen = []
    model = TorchClassifier(**OVERFITS).fit(X, y, on_epoch=seen.append)
    assert model.validation_rows_ == 150 and model.batch_size_ == 64
    losses = [log["val_loss"] for log in model.history_]
    assert seen == model.history_ and [log["epoch"] for log in seen] == list(range(len(seen)))
    assert model.best_epoch_ == int(np.argmin(losses))
    # it stopped on its own: three epochs in a row without a better validation loss
    assert len(losses) == model.best_epoch_ + 1 + 3 < 100
    # the weights kept are the best epoch's: they score the held-out rows as that epoch did
    codes = model.label_encoder_.transform(y)
    _, held = model._validation_split(len(y), codes)
    proba = model.predict_proba(X[held])
    log_loss = -np.mean(np.log(proba[np.arange(len(held)), codes[held]]))
    assert log_loss == pytest.approx(losses[model.best_epoch_], rel=1e-4)


def test_the_split_starts_at_a_thousand_held_out_rows():
    assert tabular.MIN_VALIDATION_ROWS == 1000
    assert TorchRegressor()._validation_split(9_000, None) is None
    train, held = TorchRegressor()._validation_split(10_000, None)
    assert len(held) == 1000 and len(train) == 9000
    assert TorchRegressor(validation_fraction=0.5)._validation_split(2_000, None) is not None
    assert TorchRegressor(validation_fraction=0.96)._validation_split(20_000, None) is None  # 800 left to train


@pytest.mark.usefixtures("split_from_100_rows")
def test_the_split_is_stratified_seeded_and_keeps_a_rare_class_for_training():
    codes = np.array([0] * 900 + [1] * 300 + [2] * 40 + [3])
    model = TorchClassifier(seed=5)
    train, held = model._validation_split(len(codes), codes)
    assert len(np.intersect1d(train, held)) == 0 and len(train) + len(held) == len(codes)
    assert [int((codes[held] == c).sum()) for c in range(4)] == [90, 30, 4, 0]  # the lone 3 trains
    again, held_again = TorchClassifier(seed=5)._validation_split(len(codes), codes)
    np.testing.assert_array_equal(held, held_again)
    assert not np.array_equal(held, TorchClassifier(seed=6)._validation_split(len(codes), codes)[1])
    # a number of rows, as scikit-learn's validation_fraction may be
    assert len(TorchRegressor(validation_fraction=200)._validation_split(1000, None)[1]) == 200
    assert TorchRegressor(early_stopping=False)._validation_split(10_000, None) is None


def test_a_small_table_trains_on_every_row_as_without_early_stopping():
    X, y = linear_data(n=300)  # a tenth is 30 rows: too few to stop on
    on = TorchRegressor(hidden=(8,), epochs=12, seed=1).fit(X, y)
    off = TorchRegressor(hidden=(8,), epochs=12, seed=1, early_stopping=False).fit(X, y)
    assert on.validation_rows_ == 0 and len(on.history_) == 12 and on.best_epoch_ == 11
    assert "val_loss" not in on.history_[0]
    np.testing.assert_array_equal(on.predict(X), off.predict(X))


@pytest.mark.usefixtures("split_from_100_rows")
def test_early_stopping_is_reproducible_with_a_seed():
    X, y = noisy_classes(n=1200)
    first = TorchClassifier(**OVERFITS, seed=2).fit(X, y)
    second = TorchClassifier(**OVERFITS, seed=2).fit(X, y)
    assert first.best_epoch_ == second.best_epoch_
    assert [log["val_loss"] for log in first.history_] == [log["val_loss"] for log in second.history_]
    np.testing.assert_array_equal(first.predict_proba(X), second.predict_proba(X))


def test_auto_batch_size_bounds_the_steps_of_an_epoch():
    assert [auto_batch_size(n) for n in (10, 1_000, 6_400, 9_000, 12_800, 100_000, 270_000, 10**7)] == [
        64, 64, 64, 64, 128, 1024, 2048, 2048]
    X, y = linear_data(n=200)
    assert TorchRegressor(epochs=1).fit(X, y).batch_size_ == 64
    explicit = TorchRegressor(epochs=1, batch_size=32, lr=0.01).fit(X, y)
    assert explicit.batch_size_ == 32 and explicit.lr_ == 0.01  # an integer, as given, and lr with it
    # a table of 20k rows: 18k train, batch 128 (2^round(log2(180))), 140 steps an epoch
    big = np.random.default_rng(0).normal(size=(20_000, 3)).astype(np.float32)
    model = TorchRegressor(epochs=1).fit(big, big[:, 0])
    assert model.validation_rows_ == 2_000 and model.batch_size_ == 128
    assert model.lr_ == pytest.approx(1e-3 * np.sqrt(2))  # Adam's square-root rule from a batch of 64


@pytest.mark.usefixtures("split_from_100_rows")
def test_time_limit_stops_at_the_end_of_the_epoch_that_passes_it():
    X, y = noisy_classes()
    seen = []
    model = TorchClassifier(**{**OVERFITS, "n_iter_no_change": 50}, time_limit=1e-6).fit(X, y, on_epoch=seen.append)
    assert len(model.history_) == len(seen) == 1 and "val_loss" in model.history_[0]
    assert model.best_epoch_ == 0
    X, y = linear_data(n=128)  # no split: the last epoch's weights
    assert len(TorchRegressor(epochs=50, time_limit=1e-6).fit(X, y).history_) == 1


def test_an_epoch_callback_may_stop_the_fit():
    X, y = noisy_classes()

    class Pruned(Exception):
        pass

    def prune(log):
        if log["epoch"] == 2:
            raise Pruned

    with pytest.raises(Pruned):
        TorchClassifier(**OVERFITS).fit(X, y, on_epoch=prune)


@pytest.mark.parametrize("params, message", [
    ({"early_stopping": "auto"}, "early_stopping"),
    ({"validation_fraction": 1.0}, "validation_fraction"),
    ({"validation_fraction": 0}, "validation_fraction"),
    ({"n_iter_no_change": 0}, "n_iter_no_change"),
    ({"batch_size": "big"}, "batch_size"),
    ({"batch_size": 0}, "batch_size"),
    ({"time_limit": 0}, "time_limit"),
])
def test_bad_training_params_are_refused_with_their_name(params, message):
    X, y = linear_data(n=32)
    with pytest.raises(ValueError, match=message):
        TorchRegressor(epochs=1, **params).fit(X, y)


def test_the_registered_torch_models_stop_early_by_default():
    for name in ("linear", "mlp", "mlp_classifier"):
        params = registry.create(name, "tabular").get_params()
        assert params["early_stopping"] is True and params["validation_fraction"] == 0.1
        assert params["batch_size"] == "auto" and params["time_limit"] is None
