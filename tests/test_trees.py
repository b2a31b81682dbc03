"""LightGBM, XGBoost, CatBoost and the scikit-learn forests through ``Pipeline(features, model)``:
every task, early stopping, the time limit, seeds, unseen categories, and the pickled pipeline."""

from __future__ import annotations

import io

import cloudpickle
import joblib
import numpy as np
import pandas as pd
import pytest

from models import registry
from models.boosters import LightGBMRegressor
from models.boosting import MIN_VALIDATION_ROWS, Patience, as_frame, validation_split
from pipeline import config, params
from pipeline.tasks import kfold

BOOSTERS = ("lightgbm", "xgboost", "catboost")
FORESTS = ("extra_trees", "random_forest")
SMALL = {"max_iter": 60, "n_iter_no_change": 10, "learning_rate": 0.2}  # the boosters' ceiling for the fast tests
TINY_FOREST = {"n_estimators": 10}


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    monkeypatch.setenv("KP_THREADS", "1")  # models/threads.budget(): small tables, a shared machine


def frame(n=400, seed=0):
    """Numbers with gaps, a text column with gaps, a many-level text column (frequency and target
    encoded), number codes; and a signal in each kind."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    zone = rng.choice(["north", "south", "east", "west"], n)
    X = pd.DataFrame({
        "x": np.where(rng.random(n) < 0.15, np.nan, x),
        "zone": pd.Series(np.where(rng.random(n) < 0.1, None, zone), dtype="str"),
        "street": pd.Series([f"s{i}" for i in rng.integers(0, 120, n)], dtype="str"),
        "rooms": rng.integers(1, 6, n),
    })
    signal = 2.0 * x + np.where(zone == "north", 2.0, 0.0) + 0.3 * X["rooms"] + rng.normal(scale=0.3, size=n)
    return X, signal


def target(signal: np.ndarray, task: str) -> np.ndarray:
    if task == "regression":
        return np.asarray(signal)
    if task == "binary":
        return np.where(signal > np.median(signal), "yes", "no")
    return np.asarray(pd.cut(signal, 3, labels=["low", "mid", "high"]).astype(str))


def name_for(model: str, task: str) -> str:
    return model if task == "regression" else f"{model}_classifier"


def params_for(model: str, **more) -> dict:
    return {**(TINY_FOREST if model in FORESTS else SMALL), **more}


def fitted_pipeline(model: str, task: str, seed=0, **params):
    X, signal = frame(seed=seed)
    comp = config.load("trees-test", target="y", id_column="key")
    entry = registry.get(name_for(model, task), "tabular")
    given = params_for(model, **params)
    return kfold.build_estimator(comp, entry.build(**given), entry.feature_encoding(given)).fit(X, target(signal, task))


@pytest.mark.parametrize("task", ["regression", "binary", "multiclass"])
@pytest.mark.parametrize("model", BOOSTERS + FORESTS)
def test_each_model_learns_each_task_through_its_pipeline(model, task):
    pipe = fitted_pipeline(model, task)
    X_test, signal = frame(n=200, seed=1)
    y_test = target(signal, task)
    predicted = pipe.predict(X_test)
    if task == "regression":
        assert np.corrcoef(predicted, y_test)[0, 1] > 0.8
        return
    assert set(predicted) <= set(y_test) and np.mean(predicted == y_test) > 0.6
    proba = pipe.predict_proba(X_test)
    assert proba.shape == (200, 2 if task == "binary" else 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    expected = "NativePreprocessor" if model in BOOSTERS else "TabularPreprocessor"
    assert type(pipe.steps[-2][1]).__name__ == expected


@pytest.mark.parametrize("model", BOOSTERS)
def test_early_stopping_keeps_the_best_round_before_the_ceiling(model):
    fitted = fitted_pipeline(model, "regression", max_iter=3000, learning_rate=0.3).steps[-1][1]
    assert fitted.validation_rows_ == 40  # a tenth of the 400 rows fit on
    assert fitted.best_iteration_ < fitted.n_iter_ < 3000  # stopped, and kept an earlier round
    assert not fitted.stopped_for_time_  # early stopping ended it, not a clock
    unstopped = fitted_pipeline(model, "regression", max_iter=40, early_stopping=False).steps[-1][1]
    assert unstopped.validation_rows_ == 0 and unstopped.n_iter_ == unstopped.best_iteration_ == 40


def test_patience_grows_with_the_rounds_to_the_best_loss():
    patience = Patience(3, 0.5)
    # The best at round 9 (0-based: 10 rounds to reach it): half of 10 is 5 rounds of patience, more than 3.
    losses = [10.0 - r for r in range(10)] + [5.0] * 10
    ends = [r for r, loss in enumerate(losses) if patience.ends(r, loss)]
    assert patience.best_round == 9 and ends[0] == 14
    early = Patience(3, 0.5)  # the best at round 1: the floor of 3 rounds rules
    assert [early.ends(r, loss) for r, loss in enumerate([2.0, 1.0, 1.5, 1.5, 1.5])] == [False] * 4 + [True]


@pytest.mark.parametrize("model", BOOSTERS)
def test_each_booster_waits_the_share_of_its_best_round_where_enough_rows_are_held_out(model):
    X, signal = frame(n=5_000)
    entry = registry.get(model, "tabular")
    given = {"max_iter": 3000, "learning_rate": 0.05, "n_iter_no_change": 5, "patience_share": 1.0}
    pipe = kfold.build_estimator(config.load("trees-test", target="y", id_column="key"), entry.build(**given),
                                 entry.feature_encoding(given)).fit(X, signal)
    fitted = pipe.steps[-1][1]
    assert fitted.validation_rows_ == 500 and fitted.best_iteration_ > 5  # the share, not the floor, decides
    assert fitted.n_iter_ - fitted.best_iteration_ == fitted.best_iteration_  # as many rounds waited as it took
    few = fitted_pipeline(model, "regression", max_iter=3000, learning_rate=0.05, n_iter_no_change=5,
                          patience_share=1.0).steps[-1][1]
    assert few.validation_rows_ == 40 and few.n_iter_ - few.best_iteration_ == 5  # 40 rows: the fixed patience


@pytest.mark.parametrize("task", ["regression", "binary"])
@pytest.mark.parametrize("model", BOOSTERS)
def test_a_time_limit_stops_the_fit_at_the_end_of_a_round(model, task):
    # Any round takes longer than a nanosecond: the first round's end is past the limit.
    fitted = fitted_pipeline(model, task, max_iter=500, time_limit=1e-9).steps[-1][1]
    assert fitted.n_iter_ == 1 and fitted.best_iteration_ == 1
    assert fitted.stopped_for_time_  # short of rounds: the portfolio's next folds learn faster
    with pytest.raises(ValueError, match="time_limit=-1.0: a positive number of seconds"):
        fitted_pipeline(model, task, time_limit=-1.0)


@pytest.mark.parametrize("model", BOOSTERS + FORESTS)
def test_same_seed_same_predictions(model):
    X_test, _ = frame(n=100, seed=2)
    a = fitted_pipeline(model, "binary", random_state=3).predict_proba(X_test)
    b = fitted_pipeline(model, "binary", random_state=3).predict_proba(X_test)
    np.testing.assert_array_equal(a, b)
    other = fitted_pipeline(model, "binary", random_state=4).predict_proba(X_test)
    assert not np.array_equal(a, other)


@pytest.mark.parametrize("model", BOOSTERS)
def test_unseen_categories_and_gaps_at_predict_time(model):
    pipe = fitted_pipeline(model, "regression")
    X_test, _ = frame(n=50, seed=3)
    X_test["zone"] = pd.Series(["mars"] * 25 + [None] * 25, dtype="str")
    X_test["street"] = pd.Series([f"new{i}" for i in range(50)], dtype="str")
    X_test["x"] = np.nan
    predicted = pipe.predict(X_test)
    assert predicted.shape == (50,) and np.isfinite(predicted).all()


@pytest.mark.parametrize("model", BOOSTERS + FORESTS)
def test_the_fitted_pipeline_round_trips_through_pickles(model):
    pipe = fitted_pipeline(model, "multiclass")
    X_test, _ = frame(n=80, seed=4)
    expected = pipe.predict_proba(X_test)
    buffer = io.BytesIO()
    joblib.dump(pipe, buffer)
    buffer.seek(0)
    for loaded in (cloudpickle.loads(cloudpickle.dumps(pipe)), joblib.load(buffer)):
        np.testing.assert_array_equal(loaded.predict_proba(X_test), expected)


def test_a_many_level_text_column_through_the_native_pipeline():
    rng = np.random.default_rng(5)
    n = 12_000
    city = rng.integers(0, 10_000, n)
    X = pd.DataFrame({"city": pd.Series([f"city{i}" for i in city], dtype="str"),
                      "note": pd.Series(rng.choice(["a", "b", None], n), dtype="str"),
                      "x": np.where(rng.random(n) < 0.2, np.nan, rng.normal(size=n))})
    y = (city % 7) + np.nan_to_num(X["x"].to_numpy()) + rng.normal(scale=0.1, size=n)
    comp = config.load("trees-test", target="y", id_column="key")
    pipe = kfold.build_estimator(comp, LightGBMRegressor(max_iter=50), "native").fit(X, y)
    features = pipe[:-1].transform(X.head(3))
    assert list(features.columns) == ["note", "x", "city_frequency", "city_target"]  # 10k levels: encoded
    assert isinstance(features["note"].dtype, pd.CategoricalDtype)
    assert np.isfinite(pipe.predict(X.head(100))).all()


def test_the_validation_split_is_seeded_stratified_and_kept_out_of_small_tables():
    classes = np.repeat([0, 1, 2], [300, 90, 10])
    fit_rows, held = validation_split(400, 0.1, 0, classes)
    assert np.bincount(classes[held]).tolist() == [30, 9, 1]
    assert len(np.intersect1d(fit_rows, held)) == 0 and len(fit_rows) + len(held) == 400
    assert np.array_equal(held, validation_split(400, 0.1, 0, classes)[1])
    assert not np.array_equal(held, validation_split(400, 0.1, 1, classes)[1])
    assert validation_split(10 * MIN_VALIDATION_ROWS - 10, 0.1, 0) is None


def _round_errors(model, X_val, y_val) -> np.ndarray:
    """The held-out errors after each round the fit trained: a row per round."""
    booster = model.booster_
    if model.__class__.__name__.startswith("LightGBM"):
        rounds = [booster.predict(X_val, num_iteration=i) for i in range(1, model.n_iter_ + 1)]
    else:
        import xgboost
        matrix = xgboost.DMatrix(as_frame(X_val))
        rounds = [booster.predict(matrix, iteration_range=(0, i)) for i in range(1, model.n_iter_ + 1)]
    return np.asarray(rounds) - y_val


@pytest.mark.parametrize("model", BOOSTERS)
def test_early_stopping_watches_the_competitions_mae_where_asked(model):
    rng = np.random.default_rng(3)
    X = rng.normal(size=(600, 3))
    y = 3 * X[:, 0] + X[:, 1] ** 2 + rng.standard_t(1.5, size=600)  # heavy tails: MAE and MSE disagree
    comp = config.load("trees-test", target="y", id_column="key")
    resolved = params.resolve(comp, model, tuned=False, metric="mae", cli={"max_iter": 300, "learning_rate": 0.1})
    assert resolved.values["eval_metric"] == "mae" and resolved.sources["eval_metric"] == "metric"
    stopped = registry.create(model, "tabular", **{**SMALL, **resolved.values})
    assert "eval_metric" not in params.resolve(comp, model, tuned=False, metric="rmse").values
    assert params.resolve(comp, model, tuned=False, metric="mae", cli={"eval_metric": None}).values["eval_metric"] is None
    assert "eval_metric" not in params.resolve(comp, "ridge", tuned=False, metric="mae").values  # takes none
    stopped.fit(X, y)
    fit_rows, held = validation_split(600, 0.1, 0)
    if model == "catboost":
        history = stopped.booster_.get_evals_result()["validation"]["MAE"]
        assert stopped.best_iteration_ == int(np.argmin(history)) + 1
        return
    errors = _round_errors(stopped, X[held], y[held])
    least_mae, least_mse = np.argmin(np.abs(errors).mean(axis=1)), np.argmin((errors ** 2).mean(axis=1))
    assert least_mae != least_mse  # so the test tells the two apart
    assert stopped.best_iteration_ == least_mae + 1  # the first round of least held-out MAE


def test_a_classifier_refuses_an_mae_to_stop_on():
    with pytest.raises(ValueError, match="is for regression"):
        registry.create("lightgbm_classifier", "tabular", eval_metric="mae").fit(np.eye(40), [0, 1] * 20)
    with pytest.raises(ValueError, match="eval_metric='auc'"):
        registry.create("xgboost", "tabular", eval_metric="auc").fit(np.eye(40), np.arange(40.0))


@pytest.mark.parametrize("model", BOOSTERS)
def test_the_absolute_error_loss_fits_the_median_where_squared_error_fits_the_mean(model):
    rng = np.random.default_rng(5)
    X = rng.normal(size=(800, 2))
    typical = 2 * X[:, 0]
    y = typical + np.where(rng.random(800) < 0.2, rng.exponential(20, 800), 0.0)  # a fifth far above
    fits = {loss: registry.create(model, "tabular", **{**SMALL, "loss": loss, "max_iter": 200, "learning_rate": 0.1,
                                                         "early_stopping": False}).fit(X, y)
            for loss in ("squared_error", "absolute_error")}
    X_new = rng.normal(size=(400, 2))
    bias = {loss: float(np.mean(fit.predict(X_new) - 2 * X_new[:, 0])) for loss, fit in fits.items()}
    # The median of y given x is the typical value (4 rows in 5); the mean sits 4 above it.
    assert abs(bias["absolute_error"]) < 2.0 < 3.0 < bias["squared_error"]


def test_a_classifier_refuses_a_regression_loss():
    with pytest.raises(ValueError, match="loss='absolute_error' is for regression"):
        registry.create("xgboost_classifier", "tabular", loss="absolute_error").fit(np.eye(40), [0, 1] * 20)
    with pytest.raises(ValueError, match="loss='huber': one of squared_error, absolute_error"):
        registry.create("lightgbm", "tabular", loss="huber").fit(np.eye(40), np.arange(40.0))


def test_native_categories_split_on_a_category_of_many_levels_and_encode_one_of_thousands():
    X, signal = frame()  # street: 120 levels
    comp = config.load("trees-test", target="y", id_column="key")
    assert kfold.native_levels_differ(comp, X) and not kfold.native_levels_differ(comp, X.drop(columns="street"))
    encoded = kfold.build_estimator(comp, LightGBMRegressor(**SMALL), "native").fit(X, signal)
    assert list(encoded[:-1].transform(X.head(3)).columns) == ["x", "zone", "rooms", "street_frequency", "street_target"]
    native = kfold.build_estimator(comp, LightGBMRegressor(**SMALL, native_categories=True), "native_levels").fit(X, signal)
    features = native[:-1].transform(X.head(3))
    assert list(features.columns) == ["x", "zone", "street", "rooms"]
    assert isinstance(features["street"].dtype, pd.CategoricalDtype)
    many = X.assign(street=[f"s{i}" for i in range(len(X))])  # a level a row: still encoded
    assert "street" not in kfold.build_estimator(comp, LightGBMRegressor(**SMALL, native_categories=True),
                                                 "native_levels").fit(many, signal)[:-1].transform(many.head(3)).columns
