"""The second layer (issue 30): a level-two model on the level-one members' out-of-fold
predictions, its cross-fitted score, the holdout check that decides whether it is used, and the
registered model that carries it to ``predict``."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import CLOCK, TimedRidge, registered_model, run_cli, write_competition
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.linear_model import LinearRegression

from models import ensemble as ensembles
from models import stacking
from models.time_limit import TimeLimit
from pipeline import permutation
from pipeline.config import Competition, CVConfig
from pipeline.metrics import get as get_metric
from pipeline.tasks import configuration, portfolio, results, stack


class OneColumn(BaseEstimator, RegressorMixin):
    """A line through one column of the features: a member that sees part of the signal only."""

    def __init__(self, column: int = 0):
        self.column = column

    def fit(self, X, y):
        self.line_ = LinearRegression().fit(np.asarray(X, dtype=float)[:, [self.column]], y)
        return self

    def predict(self, X):
        return self.line_.predict(np.asarray(X, dtype=float)[:, [self.column]])


@pytest.fixture(scope="module")
def column_models():
    """``first_column``, ``second_column``, ``third_column``: x1, x2, x3 of a three-number table."""
    names = ("first_column", "second_column", "third_column")
    with (registered_model(names[0], lambda **p: OneColumn(column=0)),
          registered_model(names[1], lambda **p: OneColumn(column=1)),
          registered_model(names[2], lambda **p: OneColumn(column=2))):
        yield names


@pytest.fixture
def memorizing_model():
    """One nearest neighbour: on a row it was fit on, it returns that row's target exactly."""
    from sklearn.neighbors import KNeighborsRegressor

    with registered_model("memorizing_stack_test", lambda **params: KNeighborsRegressor(n_neighbors=1)) as name:
        yield name


def switch_table(n: int, seed: int = 0) -> tuple[pd.DataFrame, pd.Series]:
    """y is x2 where x1 > 0 and x3 elsewhere: a member on x2 is right on one half, one on x3 on the
    other; no weighted average of the two is, a second layer that sees x1 beside them can be."""
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.uniform(-1, 1, size=(n, 3)), columns=["x1", "x2", "x3"])
    y = np.where(X.x1 > 0, X.x2, X.x3) + rng.normal(scale=0.05, size=n)
    return X, pd.Series(y, name="target")


def fitted_run(X, y, models, folds=3) -> tuple[portfolio.Portfolio, portfolio.Outcome]:
    comp = Competition(name="stacking", target="target", id="id", cv=CVConfig(folds=folds))
    configs = tuple(configuration.Configuration(name, name) for name in models)
    run = portfolio.Portfolio(comp, X, y, 10, task="regression", metric=get_metric("rmse"), configs=configs,
                              methods={"select": ensembles.greedy_weights}, proba=False,
                              time_limit=TimeLimit(None, clock=CLOCK))
    return run, run.run()


def test_the_stack_score_is_the_metric_of_predictions_from_fold_models_that_never_saw_the_rows(column_models):
    X, y = switch_table(300)
    run, outcome = fitted_run(X, y, column_models[1:])
    stacked = stack.level_two(run, outcome)
    members = stack.members_of(run, outcome)
    columns = stacking.level_one_columns([f.oof for f in members], [f.config.name for f in members])
    assert len(stacked.level_two) == 3
    for k, (features, model) in enumerate(stacked.level_two):
        held = np.flatnonzero(run.folds == k)
        assert not np.isin(run.features.fit_index[(0, k)], held).any()  # its features and model: other rows
        by_hand = model.predict(stacking.joined(features.transform(X.iloc[held]), columns.iloc[held]))
        np.testing.assert_allclose(stacked.oof[held], by_hand)
    assert stacked.score == pytest.approx(get_metric("rmse").score(y.to_numpy(), stacked.oof))


def test_the_stacks_fold_models_give_its_out_of_fold_predictions_for_permutation_importance(column_models):
    X, y = switch_table(300)
    run, outcome = fitted_run(X, y, column_models[1:])
    stacked = stack.level_two(run, outcome)
    result = stack.applied(results.of_outcome(outcome, run.inverse, run.metric, run, None, False), stacked, outcome,
                           run, None)
    assert isinstance(result.fitted, stacking.StackedEnsemble)
    per_fold = permutation.fold_models(result.fitted, {}, folds=3, repeats=1)
    np.testing.assert_allclose(permutation.predict_out_of_fold(per_fold, X, run.folds, None), stacked.oof)


def test_a_member_that_memorises_its_rows_gives_the_stack_nothing(column_models, memorizing_model):
    """The target is noise. Out of fold, the 1-NN member's guesses are noise too, and so is the
    stack's: no better than the spread of y. Fed what the members say on their own training rows
    (the 1-NN repeats each row's target), the same level-two fit would claim far better."""
    X, _ = switch_table(300)
    y = pd.Series(np.random.default_rng(5).normal(size=300), name="target")
    run, outcome = fitted_run(X, y, (memorizing_model, column_models[0]))
    stacked = stack.level_two(run, outcome)
    assert stacked.score > 0.95 * y.std()
    assert not stacked.used
    names = [f.config.name for f in outcome.fitted]
    in_sample = [f.bag.predict(X) for f in outcome.fitted]
    leaked = stack._fit(run, in_sample, names, [s for s in run.splits if s[0] == 0], passthrough=True)[0]
    assert run.score(leaked) < 0.8 * y.std()


def test_the_stack_is_used_where_the_holdout_says_it_helps(column_models):
    X, y = switch_table(400)
    run, outcome = fitted_run(X, y, column_models[1:])
    assert list(outcome.selection.weights > 0) == [True, True]
    stacked = stack.level_two(run, outcome)
    assert stacked.used, stacked.reason
    assert stacked.score < 0.5 * outcome.selection.score
    assert "held-out fold 0" in stacked.reason


def test_the_holdout_check_turns_off_a_stack_that_only_looks_better(column_models):
    """60 rows of noise on which the stack's cross-fitted score beats the ensemble's (a seed where
    it does: 22 of 40 do): the held-out fold, everything refit without it, says otherwise."""
    rng = np.random.default_rng(32)
    X = pd.DataFrame(rng.uniform(-1, 1, size=(60, 3)), columns=["x1", "x2", "x3"])
    y = pd.Series(rng.normal(size=60), name="target")
    run, outcome = fitted_run(X, y, column_models[1:])
    stacked = stack.level_two(run, outcome)
    assert stacked.score < outcome.selection.score  # the cross-fitted score alone would take it
    assert not stacked.used and "held-out fold 0" in stacked.reason


def test_predict_with_the_registered_stack_gives_the_submission(workdir, column_models):
    X, y = switch_table(400, seed=1)
    frame = X.round(6).assign(id=np.arange(1, 401), target=y.to_numpy())
    data = write_competition(workdir / "data", frame.iloc[:300], frame.iloc[300:].drop(columns="target"))
    config = workdir / "switch.toml"
    config.write_text('name = "switch"\ntarget = "target"\nid = "id"\ntask = "regression"\nmetric = "rmse"\n'
                      '[cv]\nfolds = 3\n[model]\nname = "ensemble"\n'
                      f'[ensemble]\nstack = true\nmodels = ["{column_models[1]}", "{column_models[2]}"]\n')
    result = run_cli("submit", "--config", config, "--data-dir", data, "--no-progress", "-o", workdir / "sub.csv")
    assert result.code == 0, result.err
    assert "stack: cv rmse" in result.out and "used: on held-out fold 0" in result.out
    result = run_cli("predict", "--model", "models:/switch@champion", "--input",
                     data / "test.csv", "--output", workdir / "predicted.csv")
    assert result.code == 0, result.err
    assert (workdir / "predicted.csv").read_bytes() == (workdir / "sub.csv").read_bytes()
    submitted = pd.read_csv(workdir / "sub.csv")["target"].to_numpy()
    # an average of the x2 and x3 members errs by sqrt(1/6) = 0.41 on new rows; the stack far less
    assert np.sqrt(np.mean((submitted - y.iloc[300:].to_numpy()) ** 2)) < 0.3


def test_the_time_kept_for_a_stack_that_is_not_used_goes_to_more_bags():
    """80 s of a fake clock, 40 kept for the stack: two ridges of 3 folds x 5 s take 30, so no bag
    fits in the loop. The stack (a LightGBM over a linear table's ridge) is not used, and the 50 s
    left then buy ``good`` three more bags of 15 s."""
    with registered_model("timed_ridge_stack_test", lambda **params: TimedRidge(**params)) as name:
        configs = (configuration.Configuration("good", name, {"seconds": 5.0, "alpha": 0.1}),
                   configuration.Configuration("flat", name, {"seconds": 5.0, "alpha": 1e9}))
        rng = np.random.default_rng(0)
        X = pd.DataFrame({"x1": rng.normal(size=90), "x2": rng.normal(size=90)})
        y = pd.Series(2 * X.x1 - X.x2 + rng.normal(scale=0.1, size=90), name="target")
        CLOCK.now = 1000.0
        comp = Competition(name="reserve", target="target", id="id", cv=CVConfig(folds=3))
        run = portfolio.Portfolio(comp, X, y, 10, task="regression", metric=get_metric("rmse"), configs=configs,
                                  methods={"select": ensembles.greedy_weights}, proba=False,
                                  time_limit=TimeLimit(80, started=CLOCK.now, reserve=0.0, clock=CLOCK))
        run.reserved = 40.0
        outcome = run.run()
        assert [f.bags for f in outcome.fitted] == [1, 1] and CLOCK.now == 1030.0
        stacked = stack.level_two(run, outcome)
        assert not stacked.used and run.reserved == 0.0
        outcome = stack.rest_to_bags(run, outcome, None)
        assert [f.bags for f in outcome.fitted] == [4, 1] and CLOCK.now == 1075.0
