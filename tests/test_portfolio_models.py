"""Each library of the portfolio, run as the one model of a submit (in process, small tables): its
registered MLflow model (the fold models, averaged) loads with pyfunc and predicts exactly what the
run's submission holds; the default portfolio's ensemble does too; and two runs with one seed
write byte-identical submissions."""

from __future__ import annotations

import dataclasses

import mlflow
import numpy as np
import pandas as pd
import pytest
from conftest import synthetic_frames, write_competition

from models.time_limit import TimeLimit
from pipeline import config, stages

pytestmark = pytest.mark.usefixtures("one_thread")

LIBRARIES = ["lightgbm", "catboost", "xgboost", "hist_gbm", "extra_trees", "ridge"]


def _competition(folder, task: str, placeholder, **options):
    train, test, _ = synthetic_frames(task, n_train=150, n_test=40, seed=3)
    write_competition(folder, train, test, placeholder=placeholder)
    comp = config.load(folder.name, target="target", id_column="id")
    return dataclasses.replace(comp, **{"cv": config.CVConfig(folds=3, seed=0), **options})


def _pyfunc(run_id: str, folder) -> np.ndarray:
    model = mlflow.pyfunc.load_model(f"runs:/{run_id}/model")
    return np.asarray(model.predict(pd.read_csv(folder / "test.csv")))


@pytest.mark.parametrize("library", LIBRARIES)
def test_a_library_model_round_trips_through_mlflow_and_equals_the_submission(workdir, library):
    folder = workdir / f"reg-{library}"
    comp = _competition(folder, "regression", 0.0)
    outcome = stages.run(comp, folder, model=library, output=folder / "submission.csv", tuned=False)
    submitted = pd.read_csv(folder / "submission.csv")
    np.testing.assert_allclose(_pyfunc(outcome.run_id, folder), submitted["target"].to_numpy(), rtol=1e-9)


@pytest.mark.parametrize("library", ["lightgbm_classifier", "catboost_classifier", "xgboost_classifier"])
def test_a_classifier_library_round_trips_with_probabilities(workdir, library):
    folder = workdir / f"bin-{library}"
    comp = _competition(folder, "binary", 0.5)
    outcome = stages.run(comp, folder, model=library, output=folder / "submission.csv", tuned=False)
    submitted = pd.read_csv(folder / "submission.csv")["target"].to_numpy()
    assert ((submitted >= 0) & (submitted <= 1)).all() and len(np.unique(submitted)) > 2
    np.testing.assert_allclose(_pyfunc(outcome.run_id, folder)[:, 1], submitted, rtol=1e-9)


@pytest.mark.slow
def test_the_default_portfolio_round_trips_and_one_seed_gives_the_same_bytes(workdir):
    folder = workdir / "portfolio"
    comp = _competition(folder, "regression", 0.0)
    first = stages.run(comp, folder, output=folder / "first.csv", tuned=False)
    second = stages.run(comp, folder, output=folder / "second.csv", tuned=False)
    assert (folder / "first.csv").read_bytes() == (folder / "second.csv").read_bytes()
    assert first.cv_score == second.cv_score
    submitted = pd.read_csv(folder / "first.csv")["target"].to_numpy()
    np.testing.assert_allclose(_pyfunc(first.run_id, folder), submitted, rtol=1e-9)


def test_seeds_average_several_fits_and_the_run_records_them(workdir, capsys):
    folder = workdir / "seeds"
    comp = _competition(folder, "regression", 0.0, cv=config.CVConfig(folds=3, seed=0, seeds=3))
    outcome = stages.run(comp, folder, model="hist_gbm", output=folder / "submission.csv", tuned=False)
    out = capsys.readouterr().out
    assert "over 3 seeds (0 to 2)" in out
    run = mlflow.get_run(outcome.run_id)
    assert run.data.params["cv.seeds"] == "3"
    submitted = pd.read_csv(folder / "submission.csv")["target"].to_numpy()
    np.testing.assert_allclose(_pyfunc(outcome.run_id, folder), submitted, rtol=1e-9)


def test_a_time_limited_run_keeps_to_its_limit_and_says_where_it_stopped(workdir, capsys):
    folder = workdir / "limited"
    comp = _competition(folder, "regression", 0.0)
    limit = TimeLimit(40)
    stages.run(comp, folder, output=folder / "submission.csv", tuned=False, time_limit=limit)
    out = capsys.readouterr().out
    assert limit.elapsed() <= 40 * 1.02 + 5  # generous: a shared CPU
    assert "portfolio finished at" in out or "skipped" in out or "not started" in out
