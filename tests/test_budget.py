"""The time limit (``--time-limit``/``TIME=``) and repeated k-fold (``--repeats``), issue 12.

The plan's cuts are checked on given costs (``budget.fit``); a generated competition checks that a
run keeps to its limit end to end, and that the CV stops at a fold boundary when its deadline
comes, with the scores and the ensemble taken from the folds that ran.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
from conftest import mlflow_runs, run_cli, synthetic_frames, write_competition

from pipeline import config
from pipeline.errors import UserError
from pipeline.metrics import get as get_metric
from pipeline.tasks import budget, kfold
from pipeline.tasks.budget import Cost

pytestmark = pytest.mark.usefixtures("one_thread")

MEMBERS = {"hist_gbm_classifier": {}, "logistic": {}, "mlp_classifier": {}}


def competition(**cv) -> config.Competition:
    return config.from_dict({"name": "t", "target": "target", "id": "id", "cv": cv}, "test")


def costs(booster_step=0.01, net_epoch=0.1) -> dict[str, Cost]:
    return {"hist_gbm_classifier": Cost(0.0, booster_step, 300, "max_iter"),
            "logistic": Cost(0.5),
            "mlp_classifier": Cost(0.0, net_epoch, 100, "max_seconds")}


def test_a_plan_that_fits_is_left_whole():
    fitted = budget.fit(competition(), MEMBERS, 0.1, costs(), seconds=1000)
    assert (fitted.members, fitted.folds, fitted.repeats, fitted.cuts) == (MEMBERS, 5, 1, [])


def test_cuts_come_in_order_repeats_folds_net_then_booster():
    comp = competition(repeats=3)
    # worst case per fit: 0.1 + 3 + 0.5 + 10 = 13.6 s; 5x3 + 1.25 fits = 221 s
    loose = budget.fit(comp, MEMBERS, 0.1, costs(), seconds=220 / budget.PLANNED_SHARE)
    assert loose.repeats == 2 and loose.folds == 5 and loose.cuts == ["repeats 3 -> 2"]

    tight = budget.fit(comp, MEMBERS, 0.1, costs(), seconds=60 / budget.PLANNED_SHARE)
    assert tight.repeats == 1 and tight.folds == 3
    assert tight.cuts[:2] == ["repeats 3 -> 1", "folds 5 -> 3"]
    seconds = tight.members["mlp_classifier"]["max_seconds"]
    assert 1.0 <= seconds < 10  # its share of what the others leave: 60 / 4.5 fits - 3.6 s
    assert "max_iter" not in tight.members["hist_gbm_classifier"]

    tighter = budget.fit(comp, MEMBERS, 0.1, costs(), seconds=16 / budget.PLANNED_SHARE)
    assert "mlp_classifier" not in tighter.members  # under ten epochs' time: left out
    assert any(cut.startswith("mlp_classifier left out") for cut in tighter.cuts)
    assert tighter.members["hist_gbm_classifier"]["max_iter"] < 300
    assert tighter.members["logistic"] == {}


def test_the_booster_keeps_a_minimum_of_iterations_and_folds_go_to_two_last():
    fitted = budget.fit(competition(), {"hist_gbm": {}}, 0.0, {"hist_gbm": Cost(0.0, 1.0, 600, "max_iter")},
                        seconds=10)
    assert fitted.folds == 2
    assert fitted.members["hist_gbm"]["max_iter"] == budget.MIN_ITERATIONS
    assert fitted.cuts == ["folds 5 -> 3", f"hist_gbm max_iter 600 -> {budget.MIN_ITERATIONS}", "folds 3 -> 2"]


def test_the_probe_times_each_member_by_its_knob():
    train, _, _ = synthetic_frames("binary", n_train=400, seed=3)
    X, y = train.drop(columns=["target", "id"]), train["target"]
    features, found = budget.probe(competition(), X, y, MEMBERS, get_metric("roc_auc"))
    assert features > 0
    assert found["hist_gbm_classifier"].knob == "max_iter" and found["hist_gbm_classifier"].steps == 300
    assert found["mlp_classifier"].knob == "max_seconds" and found["mlp_classifier"].per_step > 0
    assert found["logistic"].knob is None and found["logistic"].fixed > 0


def test_a_run_keeps_to_its_time_limit_and_says_what_it_cut(workdir, capsys):
    train, test, _ = synthetic_frames("binary", n_train=3000, n_test=200, seed=5)
    folder = write_competition(workdir / "limited", train, test, placeholder=0.5)
    limit = 20
    started = time.perf_counter()
    result = run_cli("submit", "--data-dir", folder, "--target", "target", "--id", "id", "--time-limit", limit,
                     "--param", "max_iter=100000", "--param", "early_stopping=False",
                     "--model", "hist_gbm_classifier", "-o", workdir / "s.csv")
    seconds = time.perf_counter() - started
    assert result.code == 0, result.err
    assert seconds < limit * 1.25, seconds  # imports and loading aside, the plan's margin absorbs misses
    assert "max_iter 100000 ->" in result.out
    run = next(r for r in mlflow_runs("limited") if "mlflow.parentRunId" not in r.data.tags)
    assert "max_iter 100000 ->" in run.data.params["time_limit.cuts"]
    assert len(pd.read_csv(workdir / "s.csv")) == 200


def test_the_cv_stops_at_its_deadline_and_the_ensemble_uses_the_folds_that_ran():
    train, _, _ = synthetic_frames("binary", n_train=300, seed=2)
    X, y = train.drop(columns=["target", "id"]), train["target"]
    metric = get_metric("roc_auc").with_classes(np.array([0, 1]))
    models = {"hist_gbm_classifier": {"max_iter": 50}, "logistic": {}}
    results = kfold.cross_validate_many(competition(folds=5), X, y, task="binary", metric=metric, models=models,
                                        proba=True, deadline=time.perf_counter())
    folds = results["logistic"].folds
    assert set(np.unique(folds)) == {-1, 0}  # the first fold always runs; then the deadline had passed
    held = folds == 0
    expected = metric.score(y.to_numpy()[held], results["logistic"].oof[held])
    assert results["logistic"].score == pytest.approx(expected)


def test_one_fold_in_time_gives_the_best_member_alone(workdir):
    train, test, _ = synthetic_frames("binary", n_train=300, n_test=40, seed=4)
    folder = write_competition(workdir / "onefold", train, test, placeholder=0.5)
    from pipeline import stages

    comp = config.load("onefold", target="target", id_column="id", time_limit=1e-3)
    outcome = stages.run(comp, folder, output=workdir / "s.csv")
    assert sorted(outcome.weights.values())[-2:] == [0.0, 1.0] and sum(outcome.weights.values()) == 1.0
    assert outcome.cv_score == outcome.scores[max(outcome.weights, key=outcome.weights.get)]


def test_repeats_give_each_repeat_its_score_and_the_spread(workdir):
    train, test, _ = synthetic_frames("regression", n_train=120, n_test=30, seed=6)
    folder = write_competition(workdir / "repeated", train, test, placeholder=0.0)
    result = run_cli("submit", "--data-dir", folder, "--target", "target", "--id", "id", "--repeats", "3",
                     "-o", workdir / "s.csv")
    assert result.code == 0, result.err
    assert "over 3 repeats" in result.out
    run = next(r for r in mlflow_runs("repeated") if "mlflow.parentRunId" not in r.data.tags)
    metrics = run.data.metrics
    each = [metrics[f"repeat{r}_rmse"] for r in range(3)]
    assert len(set(each)) == 3  # reshuffled: each repeat its own folds
    assert metrics["cv_rmse"] == pytest.approx(np.mean(each))
    assert metrics["cv_rmse_repeats_std"] == pytest.approx(np.std(each))
    assert run.data.params["cv.repeats_run"] == "3"


def test_repeats_reshuffle_and_average_out_of_fold():
    train, _, _ = synthetic_frames("regression", n_train=90, seed=7)
    X, y = train.drop(columns=["target", "id"]), train["target"]
    comp = competition(folds=3, repeats=2)
    result = kfold.cross_validate_many(comp, X, y, task="regression", metric=get_metric("rmse"),
                                       models={"ridge": {}})["ridge"]
    first, second = result.repeats
    assert not np.array_equal(first.folds, second.folds)
    np.testing.assert_allclose(result.oof, (first.oof + second.oof) / 2)
    assert result.score == pytest.approx((first.score + second.score) / 2)
    assert len(result.fold_scores) == 6


@pytest.mark.parametrize("raw, message", [
    ({"cv": {"repeats": 0}}, "[cv] repeats must be an integer >= 1"),
    ({"time_limit": -5}, "time_limit must be a positive number of seconds"),
    ({"time_limit": "soon"}, "time_limit must be a positive number of seconds"),
])
def test_wrong_repeats_or_time_limit_is_one_line(raw, message):
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace("]", r"\]")):
        config.from_dict({"name": "t", "target": "y", "id": "id", **raw}, "test")


def test_the_command_line_refuses_a_time_limit_that_is_not_positive(workdir, capsys):
    from pipeline.cli import main

    assert main(["train", "--target", "y", "--id", "id", "--time-limit", "0"]) == 2
    assert "--time-limit: must be positive" in capsys.readouterr().err
