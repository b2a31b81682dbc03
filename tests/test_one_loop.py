"""One loop, one score (issue 28): tune's trials and submit fit through the same
``Portfolio.fit``, on the same folds and rows, so their figures agree to the last digit; the
loop reads each model's declared capabilities; a time limit that cuts a configuration keeps it;
the plan is read-only all the way down."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
from conftest import (
    CLOCK,
    TimedRidge,
    linear_frame,
    registered_model,
    synthetic_frames,
    write_competition,
)
from mlflow.tracking import MlflowClient
from sklearn.linear_model import Ridge

from models import registry
from models.time_limit import TimeLimit
from pipeline import config, models_io, params, stages, studies, tune
from pipeline.config import Competition, CVConfig
from pipeline.errors import UserError
from pipeline.metrics import get as get_metric
from pipeline.tasks import configuration, portfolio, results
from pipeline.tasks.tabular import TabularTask


def _regression_competition(folder, *, outliers: str | None = None, model: str = "ridge"):
    n_train = 80
    frame, y = linear_frame(n_train, 20, 8, noise=0.3)
    train = frame.iloc[:n_train].assign(target=y[:n_train])
    if outliers:
        train.loc[:2, "x0"] = 9.0  # three rows the rule names, with targets far off the line
        train.loc[:2, "target"] = 40.0
    data = write_competition(folder / "data", train, frame.iloc[n_train:], placeholder=0.0)
    rule = f'outliers = "{outliers}"\n' if outliers else ""
    toml = folder / "loop.toml"
    toml.write_text(f'name = "loop"\ntarget = "target"\nid = "id"\ntask = "regression"\nmetric = "rmse"\n{rule}'
                    f'[cv]\nfolds = 3\nseed = 0\n[model]\nname = "{model}"\n')
    return config.load("loop", config_file=toml), data


def test_the_tuner_and_submit_call_the_one_loop_and_agree_to_the_last_digit(workdir, monkeypatch):
    comp, data = _regression_competition(workdir)
    monkeypatch.setenv("OPTUNA_STORAGE", str(workdir / "journal.log"))
    calls: list[str] = []
    real = portfolio.Portfolio.fit

    def spy(self, config, **options):
        calls.append(config.name)
        return real(self, config, **options)

    monkeypatch.setattr(portfolio.Portfolio, "fit", spy)
    outcome = tune.tune(comp, data, model="ridge", n_trials=6)
    trials = len(calls)
    assert trials == 6  # every trial, pruned ones too, went through the loop
    study = studies.load_study(str(workdir / "journal.log"), "loop/ridge")
    untuned = stages.run(comp, data, model="ridge", tuned=False)
    tuned = stages.run(comp, data, model="ridge", tuned=True)
    assert len(calls) == trials + 2  # and so did both submits
    assert study.trials[0].value == untuned.cv_score  # the first trial is the untuned configuration
    assert tuned.cv_score == outcome.best_value  # what tune optimised is what submit reports
    assert tuned.cv_score <= untuned.cv_score
    assert tuned.params == outcome.best_params


def test_every_figure_scores_the_rows_the_plan_keeps_and_the_outliers_get_their_own_name(workdir):
    comp, data = _regression_competition(workdir, outliers="x0 > 5")
    comp = config.load("loop", config_file=workdir / "loop.toml")
    result = stages.run(comp, data, model="ridge", tuned=False)
    run = MlflowClient().get_run(result.run_id)
    oof = pd.read_csv(MlflowClient().download_artifacts(result.run_id, "oof_predictions.csv", str(workdir)))
    kept = oof["id"] > 3  # the three rows the rule names
    rmse = get_metric("rmse")
    assert result.cv_score == pytest.approx(rmse.score(oof["actual"][kept], oof["oof_prediction"][kept]), rel=1e-12)
    assert run.data.metrics["cv_rmse"] == result.cv_score
    with_outliers = run.data.metrics["cv_rmse_with_outliers"]
    assert with_outliers == pytest.approx(rmse.score(oof["actual"], oof["oof_prediction"]), rel=1e-12)
    assert with_outliers > 2 * result.cv_score
    assert result.scores["ridge"] == result.cv_score  # the model line is the headline


# --- declared capabilities --------------------------------------------------------------------

def test_each_tabular_entry_declares_what_its_estimators_do():
    for entry in registry.list_models(kind="tabular"):
        declared = entry.capabilities
        built = entry.build()
        assert declared.stops_itself == ("time_limit" in built.get_params()), entry.name
        if declared.seed_param is not None:
            assert entry.build(**{declared.seed_param: 7}).get_params() != built.get_params(), entry.name
        assert entry.feature_encoding({}) in registry.ENCODINGS
    assert not registry.get("extra_trees_classifier", "tabular").capabilities.rebaggable
    assert registry.get("lasso", "tabular").capabilities.seed_param is None  # deterministic: one fit is every seed


class Recording(Ridge):
    """A ridge that has ``time_limit`` and ``random_state`` parameters but declares neither."""

    fits: list[dict] = []

    def __init__(self, alpha=1.0, time_limit=None, random_state=0):
        super().__init__(alpha=alpha)
        self.time_limit, self.random_state = time_limit, random_state

    def fit(self, X, y, sample_weight=None):
        Recording.fits.append({"time_limit": self.time_limit, "random_state": self.random_state})
        return super().fit(X, y, sample_weight)


@pytest.fixture
def undeclared():
    Recording.fits = []
    with registered_model("undeclared_test", lambda **p: Recording(**p)) as name:
        yield name


def _loop(configs, limit: TimeLimit, seeds: int = 1, n: int = 90):
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"x1": rng.normal(size=n), "x2": rng.normal(size=n)})
    y = pd.Series(2 * X.x1 - X.x2 + rng.normal(scale=0.1, size=n), name="target")
    comp = Competition(name="loop", target="target", id="id", cv=CVConfig(folds=3))
    return portfolio.Portfolio(comp, X, y, 10, task="regression", metric=get_metric("rmse"), configs=configs,
                               methods={}, time_limit=limit, proba=False, seeds=seeds)


def test_the_loop_reads_declarations_not_parameter_names(undeclared):
    run = _loop((configuration.Configuration("u", undeclared),), TimeLimit(600), seeds=3)
    fitted = run.fit(run.configs[0])
    assert len(Recording.fits) == 3  # one fit a fold: no seed declared, so three seeds are one
    assert all(fit == {"time_limit": None, "random_state": 0} for fit in Recording.fits)  # no time share either
    assert fitted.seeds == []


def test_a_name_serves_every_task_kind_and_a_portfolio_configuration_by_its_name(workdir):
    train, test, _ = synthetic_frames("binary")
    data_dir = write_competition(workdir / "binary", train, test)
    comp = config.load("binary", target="target", id_column="id")
    task = TabularTask(comp)
    data = task.load(data_dir)
    assert params.check_model("mlp", "tabular", "binary").name == "mlp_classifier"
    plan = task.plan(data, model="mlp", tuned=False)
    assert plan.models[plan.model] == "mlp_classifier"
    large = task.plan(data, model="lightgbm_large", tuned=False)
    assert large.models["lightgbm_large"] == "lightgbm_classifier"
    assert large.params["num_leaves"] == 128 and large.sources["lightgbm_large"]["num_leaves"] == "portfolio"
    assert large.study_keys["lightgbm_large"] == "lightgbm_large"
    assert task.plan(data, model="lightgbm", tuned=False).study_keys["lightgbm"] == "lightgbm_classifier"


# --- a time limit keeps what finished ---------------------------------------------------------

@pytest.fixture
def slow_model():
    with registered_model("slow_ridge_test", lambda **p: TimedRidge(**{"seconds": 25.0, **p})) as name:
        yield name


def test_a_configuration_cut_after_some_folds_is_still_the_model_scored_on_the_rows_it_covers(slow_model):
    """60 s, no reserve, folds of 25 s: after a fold the two left cannot end, so the run ends with
    that fold's model, scored on the rows it held out; the registry sees one fold."""
    CLOCK.now = 1000.0
    limit = TimeLimit(60, started=CLOCK.now, reserve=0.0, clock=CLOCK)
    run = _loop((configuration.Configuration("slow", slow_model),), limit)
    outcome = run.run()
    (one,) = outcome.fitted
    assert not one.complete and not outcome.finished
    assert len(one.fold_scores) == 1 and len(one.bag.estimators) == 1
    covered = run.folds == 0
    np.testing.assert_array_equal(one.covered, covered)
    rmse = get_metric("rmse")
    assert one.score == pytest.approx(rmse.score(run.y_true[covered], one.oof[covered]), rel=1e-12)
    result = results.of_outcome(outcome, lambda v: v, rmse, run, None, False)
    assert result.score == one.score and (result.folds[~covered] == -1).all()
    coverage = models_io.Coverage.of(run.comp, result)
    assert (coverage.folds, coverage.rows) == (1, int(covered.sum()))
    assert CLOCK.now <= limit.work_deadline


# --- the plan, frozen -------------------------------------------------------------------------

def test_the_plan_is_read_only_all_the_way_down_and_pickles(workdir):
    train, test, _ = synthetic_frames("regression")
    data_dir = write_competition(workdir / "regression", train, test)
    task = TabularTask(config.load("regression", target="target", id_column="id"))
    plan = task.plan(task.load(data_dir), model="ridge", tuned=False, cli_params={"alpha": 2.0})
    with pytest.raises(TypeError):
        plan.members["ridge"]["alpha"] = 3.0
    with pytest.raises(TypeError):
        plan.members["other"] = {}
    with pytest.raises(TypeError):
        plan.sources["ridge"]["alpha"] = "study"
    assert plan.params == {"alpha": 2.0} and plan.sources["ridge"] == {"alpha": "command line"}
    assert pickle.loads(pickle.dumps(plan.members)) == plan.members


class SeededSlowRidge(Ridge):
    def __init__(self, alpha=1.0, random_state=0):
        super().__init__(alpha=alpha)
        self.random_state = random_state

    def fit(self, X, y, sample_weight=None):
        CLOCK.now += 10.0
        return super().fit(X, y, sample_weight)


@pytest.fixture
def seeded_slow_model():
    with registered_model("seeded_slow_test", lambda **p: SeededSlowRidge(**p),
                          capabilities=registry.Capabilities(seed_param="random_state")) as name:
        yield name


@pytest.mark.parametrize(("seconds", "seeds"), [(100, [0, 1]), (40, [])])
def test_seeds_shrink_to_what_the_first_fit_says_the_time_pays_for(seeded_slow_model, seconds, seeds):
    """20 seeds of 10 s fits on 3 folds: 100 s pay for two seeds a fold (0.8 of 100 s / 30 s), 40 s
    for one, which is no seeding at all; the limit holds either way."""
    CLOCK.now = 1000.0
    limit = TimeLimit(seconds, started=CLOCK.now, reserve=0.0, clock=CLOCK)
    run = _loop((configuration.Configuration("seeded", seeded_slow_model),), limit, seeds=20)
    (one,) = run.run().fitted
    assert one.complete and one.seeds == seeds and len(one.seed_scores) == len(seeds)
    assert len(one.bag.estimators) == 3 * max(len(seeds), 1)
    assert CLOCK.now <= limit.work_deadline


def test_with_nothing_fit_yet_any_time_left_is_tried(undeclared):
    """2 s left for 3 folds is less than the floor of a fit each, but nothing has been fit: a fold
    may take far less (here no time at all), so the configuration runs rather than the run ending
    with nothing."""
    CLOCK.now = 1000.0
    limit = TimeLimit(10, started=CLOCK.now - 8.0, reserve=0.0, clock=CLOCK)
    outcome = _loop((configuration.Configuration("u", undeclared),), limit).run()
    assert [f.config.name for f in outcome.fitted] == ["u"] and outcome.fitted[0].complete
    CLOCK.now = 1010.0  # nothing left at all: not started
    with pytest.raises(UserError, match="not one model finished a fold"):
        _loop((configuration.Configuration("u", undeclared),), limit).run()


class Overrunning(Ridge):
    """Stops itself, it says, but takes 25 s a fit whatever its time_limit."""

    def __init__(self, alpha=1.0, time_limit=None):
        super().__init__(alpha=alpha)
        self.time_limit = time_limit

    def fit(self, X, y, sample_weight=None):
        CLOCK.now += 25.0
        return super().fit(X, y, sample_weight)


@pytest.fixture
def overrunning():
    with registered_model("overrunning_test", lambda **p: Overrunning(**p),
                          capabilities=registry.Capabilities(stops_itself=True)) as name:
        yield name


def test_a_model_past_its_share_is_not_dropped_while_the_run_has_the_time(overrunning, undeclared):
    """Its share is 0.6 of 100 s; three 25 s folds overrun it but fit in the run's 100 s, so it
    finishes (diamonds_cut at 60 s had its LightGBM dropped after 4 of 5 folds)."""
    CLOCK.now = 1000.0
    limit = TimeLimit(100, started=CLOCK.now, reserve=0.0, clock=CLOCK)
    run = _loop((configuration.Configuration("over", overrunning), configuration.Configuration("u", undeclared)), limit)
    fitted = run.fit(run.configs[0], share=portfolio.CONFIG_SHARE)
    assert fitted is not None and fitted.complete and CLOCK.now == 1075.0
