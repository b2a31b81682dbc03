"""Train/test shift: adversarial validation names the column that moved, and stays quiet when
nothing did; --drop-shifted drops it; image competitions skip it."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pandas as pd
import pytest
from conftest import mlflow_runs, run_cli, synthetic_frames, write_competition

from models.time_limit import TimeLimit
from pipeline import config, shift, tracking
from pipeline.data.tabular import TabularData
from pipeline.tasks import for_competition


def _train(workdir, moved: float, *extra: str):
    train, test, _ = synthetic_frames("regression", n_train=600, n_test=300, seed=3)
    test["x1"] = test["x1"] + moved
    folder = write_competition(workdir / "shifty", train, test)
    return run_cli("train", "--data-dir", folder, "--target", "target", "--id", "id", "--model", "ridge", *extra)


def _shift_lines(result) -> list[str]:
    return [line for line in result.out.splitlines() if "shift" in line or "differs" in line]


@pytest.mark.slow
def test_a_shifted_column_is_named_in_a_warning(workdir):
    result = _train(workdir, moved=1.5)
    assert result.code == 0, result.err
    line = next(line for line in result.out.splitlines() if line.startswith("shift: train-vs-test AUC"))
    assert "columns that separate them: x1 " in line  # named first
    warning = next(line for line in result.out.splitlines() if line.startswith("warning: the test set differs"))
    assert "most of all in x1" in warning
    (run,) = mlflow_runs()
    assert run.data.metrics["shift_auc"] > run.data.metrics["shift_threshold"]
    importance = json.loads(open(mlflow.artifacts.download_artifacts(
        run_id=run.info.run_id, artifact_path="shift_columns.json", dst_path=str(workdir / "dl"))).read())
    assert next(iter(importance)) == "x1" and "id" not in importance and "target" not in importance


@pytest.mark.slow
def test_an_unshifted_table_measures_near_half_and_gives_no_warning(workdir):
    result = _train(workdir, moved=0.0)
    assert result.code == 0, result.err
    assert not any(line.startswith("warning") for line in result.out.splitlines())
    (run,) = mlflow_runs()
    assert abs(run.data.metrics["shift_auc"] - 0.5) < 0.08


@pytest.mark.slow
def test_drop_shifted_drops_the_worst_columns_and_says_so(workdir):
    result = _train(workdir, 1.5, "--drop-shifted", "1")
    assert result.code == 0, result.err
    assert "shift: dropping x1 (--drop-shifted 1)" in result.out
    (run,) = mlflow_runs()
    assert run.data.params["shift.dropped"] == "x1"
    inputs = mlflow.models.get_model_info(f"runs:/{run.info.run_id}/{tracking.MODEL}").signature.inputs
    assert "x1" not in inputs.input_names() and "x2" in inputs.input_names()  # the model never saw it


def test_the_threshold_grows_on_small_tables_and_is_the_chosen_auc_on_large_ones():
    assert shift.Shift(0.7, {}, (60, 24)).threshold > 0.7  # chance alone reaches 0.7 at this size
    assert shift.Shift(0.7, {}, (20_000, 20_000)).threshold == shift.WARN_AUC
    assert shift.Shift(0.7, {}, (20_000, 20_000)).shifted


def test_image_competitions_skip_it():
    task = for_competition(config.load("digit-recognizer"))
    data = object()
    assert task.check_shift(data, None) is data


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def test_it_keeps_to_its_share_of_the_time_limit_and_permutes_only_the_most_separating_columns(monkeypatch):
    """A 100 s limit gives the check 10 s; a fold that takes 6 s leaves too little for a second,
    so the AUC is on the first fold's rows. Of 30 columns, only the 3 that separate most alone are
    permuted, the shifted one among them."""
    clock = Clock()

    class SixSeconds(shift.HistGradientBoostingClassifier):
        def fit(self, X, y, sample_weight=None):
            clock.now += 6.0
            return super().fit(X, y, sample_weight)

    monkeypatch.setattr(shift, "HistGradientBoostingClassifier", SixSeconds)
    monkeypatch.setattr(shift, "MAX_PERMUTED", 3)
    rng = np.random.default_rng(0)
    train = pd.DataFrame(rng.normal(size=(300, 30)), columns=[f"c{i}" for i in range(30)])
    test = pd.DataFrame(rng.normal(size=(150, 30)), columns=train.columns).assign(c17=lambda f: f.c17 + 2.0)
    limit = TimeLimit(100, started=0.0, reserve=0.0, clock=clock)
    measured = shift.measure(train, test, time_limit=limit.within(limit.left() * shift.TIME_SHARE))
    assert clock.now == 6.0  # one fold of three
    assert sum(measured.rows) == 150  # a third of the 450 rows: the first fold's held-out part
    assert len(measured.importance) == 3 and next(iter(measured.importance)) == "c17"
    assert measured.auc > 0.8


def test_it_is_not_measured_when_not_one_fold_fits(capsys, monkeypatch):
    train, test, _ = synthetic_frames("regression", n_train=60, n_test=24)
    data = TabularData(train, test, test[["id"]], "local:x")
    monkeypatch.setattr(shift, "measure", lambda *a, **k: None)
    limit = TimeLimit(20, started=0.0, reserve=0.0, clock=lambda: 0.0)
    assert shift.check(data, id_column="id", target="target", time_limit=limit) is data
    assert "shift: not measured (time limit: not one fold fit in its 2 s)" in capsys.readouterr().out
