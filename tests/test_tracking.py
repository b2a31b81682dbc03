"""The MLflow wrapper: runs end FINISHED, FAILED or KILLED, never RUNNING, in the store asked for.

SIGTERM is sent to this process rather than to a `python -m pipeline train` child: the child's
imports alone take 5-15 s here, and the handler under test is the same.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import mlflow
import pytest
from conftest import REPO, mlflow_runs
from mlflow.tracking import MlflowClient

from pipeline import tracking


def only_run():
    [run] = mlflow_runs("exp")
    return run


def test_a_run_that_completes_ends_finished_with_its_params_and_tags(workdir):
    with tracking.run("exp", "ok", tags={"competition": "c"}) as active:
        tracking.log_params({"a": 1, "long": "x" * 10_000})
        tracking.log_metrics({"score": 0.5})
        run_id = active.info.run_id
    run = only_run()
    assert run.info.run_id == run_id and run.info.status == "FINISHED"
    assert run.data.params["a"] == "1" and len(run.data.params["long"]) == 6000
    assert run.data.tags["competition"] == "c" and run.data.metrics["score"] == 0.5
    assert mlflow.active_run() is None


def test_a_run_that_raises_ends_failed_and_the_error_goes_on(workdir):
    with pytest.raises(ZeroDivisionError):
        with tracking.run("exp", "boom"):
            1 / 0  # noqa: B018
    assert only_run().info.status == "FAILED"
    assert mlflow.active_run() is None


def test_ctrl_c_ends_killed(workdir):
    with pytest.raises(KeyboardInterrupt):
        with tracking.run("exp", "interrupted"):
            raise KeyboardInterrupt
    assert only_run().info.status == "KILLED"
    assert mlflow.active_run() is None


def test_sigterm_ends_killed_and_the_old_handler_comes_back(workdir):
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
        with tracking.run("exp", "terminated"):
            assert signal.getsignal(signal.SIGTERM) is not before
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler interrupts this
    assert only_run().info.status == "KILLED"
    assert signal.getsignal(signal.SIGTERM) is before


def test_child_runs_end_on_their_own(workdir):
    with tracking.run("exp", "parent") as parent:
        with pytest.raises(ValueError):
            with tracking.run("exp", "child", nested=True):
                raise ValueError("bad member")
        with tracking.run("exp", "child-ok", nested=True):
            pass
    statuses = {r.info.run_name: r.info.status for r in mlflow_runs("exp")}
    assert statuses == {"parent": "FINISHED", "child": "FAILED", "child-ok": "FINISHED"}
    children = [r for r in mlflow_runs("exp") if r.info.run_name != "parent"]
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}


def test_artifacts_and_curves_land_beside_the_store(workdir):
    import pandas as pd

    with tracking.run("exp", "artifacts") as active:
        tracking.log_frame(pd.DataFrame({"a": [1, 2]}), "frame.csv")
        tracking.log_json({"k": [1, 2]}, "info.json")
        tracking.log_pickle({"weights": [0.5, 0.5]}, "obj.joblib")
        tracking.log_curves("fold0_", [{"epoch": 0, "loss": 2.0}, {"epoch": 1, "loss": 1.0}])
    client = MlflowClient()
    experiment = client.get_experiment_by_name("exp")
    assert experiment.artifact_location == (workdir / "mlartifacts").resolve().as_uri()
    run_dir = workdir / "mlartifacts" / active.info.run_id / "artifacts"
    assert sorted(p.name for p in run_dir.iterdir()) == ["frame.csv", "info.json", "obj.joblib"]
    history = client.get_metric_history(active.info.run_id, "fold0_loss")
    assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == [(0, 2.0), (1, 1.0)]


def test_default_store_is_mlflow_db_in_the_working_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    assert tracking.tracking_uri() == f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////elsewhere/x.db")
    assert tracking.tracking_uri() == "sqlite:////elsewhere/x.db"


def test_git_commit_names_this_checkout():
    commit = tracking.git_commit()
    expected = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=REPO).stdout.strip()
    assert commit == (expected or "unknown")
