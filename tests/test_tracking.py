"""The MLflow wrapper: runs end FINISHED, FAILED or KILLED, never RUNNING, in the store asked for.

SIGTERM is sent to this process rather than to a `python -m pipeline train` child: the child's
imports alone take 5-15 s here, and the handler under test is the same.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time

import mlflow
import pytest
from conftest import REPO, mlflow_runs
from mlflow.tracking import MlflowClient

from pipeline import processes, tracking
from pipeline.errors import UserError


@pytest.fixture
def mlflow_warnings():
    """What MLflow logs (its logger does not propagate to pytest's caplog)."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    logging.getLogger("mlflow").addHandler(handler)
    yield records
    logging.getLogger("mlflow").removeHandler(handler)


def only_run():
    [run] = mlflow_runs("exp")
    return run


def test_a_run_that_completes_ends_finished_with_its_params_and_tags(workdir, mlflow_warnings):
    with tracking.run("exp", "ok", tags={"competition": "c"}) as active:
        tracking.log_params({"a": 1, "long": "x" * 10_000})
        tracking.log_metrics({"score": 0.5})
        run_id = active.info.run_id
    run = only_run()
    assert run.info.run_id == run_id and run.info.status == "FINISHED"
    assert run.data.params["a"] == "1" and len(run.data.params["long"]) == 6000
    assert run.data.tags["competition"] == "c" and run.data.metrics["score"] == 0.5
    assert mlflow.active_run() is None
    assert [r.getMessage() for r in mlflow_warnings] == []  # the long param was cut here, not by MLflow


def test_a_run_that_raises_ends_failed_and_the_error_goes_on(workdir):
    with pytest.raises(ZeroDivisionError):
        with tracking.run("exp", "boom"):
            1 / 0  # noqa: B018
    assert only_run().info.status == "FAILED"
    assert mlflow.active_run() is None


def test_ctrl_c_ends_killed(workdir):
    with pytest.raises(KeyboardInterrupt) as raised:
        with tracking.run("exp", "interrupted"):
            raise KeyboardInterrupt
    assert type(raised.value) is KeyboardInterrupt  # not Terminated: the CLI exits 130, not 143
    assert only_run().info.status == "KILLED"
    assert mlflow.active_run() is None


def test_sigterm_ends_killed_and_the_old_handler_comes_back(workdir):
    def before(signum, frame):
        raise AssertionError("the handler from before the run was called")

    original = signal.signal(signal.SIGTERM, before)
    try:
        with pytest.raises(tracking.Terminated):
            with tracking.run("exp", "terminated"):
                assert signal.getsignal(signal.SIGTERM) is not before
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)  # the handler interrupts this
        assert signal.getsignal(signal.SIGTERM) is before
        with tracking.run("exp", "quiet"):
            pass
        assert signal.getsignal(signal.SIGTERM) is before
    finally:
        signal.signal(signal.SIGTERM, original)
    assert issubclass(tracking.Terminated, KeyboardInterrupt)
    assert {r.info.run_name: r.info.status for r in mlflow_runs("exp")} == {"terminated": "KILLED",
                                                                            "quiet": "FINISHED"}


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
        tracking.log_curves("fold0_", [{"epoch": 0, "loss": 2.0}, {"epoch": 1, "loss": 1.0}])
        tracking.log_text("some notes", "notes.txt")
        (workdir / "weights.pt").write_bytes(b"\x00\x01")
        tracking.log_artifact(workdir / "weights.pt")
    client = MlflowClient()
    experiment = client.get_experiment_by_name("exp")
    assert experiment.artifact_location == (workdir / "mlartifacts").resolve().as_uri()
    run_dir = workdir / "mlartifacts" / active.info.run_id / "artifacts"
    assert sorted(p.name for p in run_dir.iterdir()) == ["frame.csv", "info.json", "notes.txt", "weights.pt"]
    assert (run_dir / "notes.txt").read_text() == "some notes"
    assert (run_dir / "weights.pt").read_bytes() == b"\x00\x01"
    history = client.get_metric_history(active.info.run_id, "fold0_loss")
    assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == [(0, 2.0), (1, 1.0)]


def test_default_store_is_mlflow_db_in_the_working_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    assert tracking.tracking_uri() == f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////elsewhere/x.db")
    assert tracking.tracking_uri() == "sqlite:////elsewhere/x.db"


def test_git_commit_names_this_checkout():
    commit = processes.git_commit()
    expected = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=REPO).stdout.strip()
    assert commit == (expected or "unknown")


def test_every_run_names_its_process_and_the_active_ids_are_at_hand(workdir):
    with tracking.run("exp", "parent") as parent:
        assert tracking.active_run_id() == parent.info.run_id
        assert tracking.active_experiment_id() == parent.info.experiment_id
        with tracking.run("exp", "child", nested=True) as child:
            assert tracking.active_run_id() == child.info.run_id
    assert {r.info.run_name: r.data.tags["process"] for r in mlflow_runs("exp")} == {
        "parent": processes.identity(), "child": processes.identity()}
    with pytest.raises(RuntimeError, match="no MLflow run is active"):
        tracking.active_run_id()


def _child(code: str, **kwargs) -> subprocess.Popen:
    """``python -c code`` in the repository, with this test's environment (its MLflow store)."""
    return subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=os.environ.copy(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


def dead_identity() -> str:
    """The identity of a process that ran here and is gone."""
    out, _ = _child("from pipeline import processes; print(processes.identity())").communicate(timeout=60)
    identity = out.strip()
    assert not processes.is_alive(identity)
    return identity


@pytest.mark.slow
def test_a_run_whose_process_was_killed_9_is_closed_killed_by_the_next_run(workdir):
    doomed = _child(
        "import os, signal\n"
        "from pipeline import tracking\n"
        "with tracking.run('exp', 'doomed'):\n"
        "    print(tracking.active_run_id(), flush=True)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    out, err = doomed.communicate(timeout=120)
    assert doomed.returncode == -signal.SIGKILL, err
    run_id = out.strip()
    client = MlflowClient()
    left = client.get_run(run_id)
    assert left.info.status == "RUNNING" and left.data.tags["process"].split(":")[1] == str(doomed.pid)

    with tracking.run("exp", "next"):
        pass
    closed = client.get_run(run_id)
    assert closed.info.status == "KILLED" and closed.info.end_time is not None


@pytest.mark.slow
def test_close_dead_runs_ends_only_the_runs_of_dead_processes_here(workdir):
    client = MlflowClient()
    experiment = client.create_experiment("exp")
    other = client.create_experiment("other")
    dead = dead_identity()
    tagged = {
        "dead": {"process": dead},
        "dead-tune": {"tune.process": dead},
        "alive": {"process": processes.identity()},
        "elsewhere": {"process": f"another-host-7f3a:{os.getpid() + 1}:123"},
        "untagged": {},
    }
    ids = {name: client.create_run(experiment, tags=tags, run_name=name).info.run_id for name, tags in tagged.items()}
    finished = client.create_run(experiment, tags={"process": dead}, run_name="finished").info.run_id
    client.set_terminated(finished, status="FINISHED")
    other_run = client.create_run(other, tags={"process": dead}).info.run_id

    closed = tracking.close_dead_runs(experiment)

    assert sorted(closed) == sorted([ids["dead"], ids["dead-tune"]])
    statuses = {name: client.get_run(run_id).info.status for name, run_id in ids.items()}
    assert statuses == {"dead": "KILLED", "dead-tune": "KILLED", "alive": "RUNNING", "elsewhere": "RUNNING",
                        "untagged": "RUNNING"}
    assert client.get_run(finished).info.status == "FINISHED"
    assert client.get_run(other_run).info.status == "RUNNING"
    assert tracking.close_dead_runs(experiment) == []


def test_record_run_writes_a_finished_child_run_in_one_go(workdir, mlflow_warnings):
    params = {f"p{i:03d}": i for i in range(150)}  # more than one log_batch takes
    params["long"] = "y" * 10_000
    curve = [("cv_rmse_running", 1.0 / (step + 1), step) for step in range(1200)]
    with tracking.run("exp", "tune-ridge") as parent:
        run_id = tracking.record_run(
            tracking.active_experiment_id(), run_name="trial-3",
            tags={"mlflow.parentRunId": parent.info.run_id, "optuna.trial": "3"},
            params=params, metrics=[("cv_rmse", 0.25, 0), ("duration_seconds", 1.5, 0), *curve],
            start_ms=1_700_000_000_000, end_ms=1_700_000_060_000, status="FAILED")
    client = MlflowClient()
    written = client.get_run(run_id)
    assert written.info.run_name == "trial-3" and written.info.status == "FAILED"
    assert (written.info.start_time, written.info.end_time) == (1_700_000_000_000, 1_700_000_060_000)
    assert written.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert written.data.tags["optuna.trial"] == "3" and written.data.tags["process"] == processes.identity()
    assert len(written.data.params) == 151 and written.data.params["p149"] == "149"
    assert written.data.params["long"] == "y" * tracking.PARAM_LIMIT
    assert written.data.metrics["cv_rmse"] == 0.25 and written.data.metrics["duration_seconds"] == 1.5
    history = sorted(client.get_metric_history(run_id, "cv_rmse_running"), key=lambda m: m.step)
    assert [(m.step, m.value) for m in history] == [(s, v) for _, v, s in curve]
    assert {m.timestamp for m in history} == {1_700_000_060_000}
    assert client.get_run(parent.info.run_id).info.status == "FINISHED"
    assert [r.getMessage() for r in mlflow_warnings] == []  # the long param was cut here, not by MLflow


@pytest.mark.slow
def test_ui_command_serves_the_store_with_artifacts_beside_it(tmp_path, monkeypatch):
    store = tmp_path / "fresh" / "mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}")
    monkeypatch.delenv("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", raising=False)
    command = tracking.ui_command(5123, 2)
    assert command[:3] == [sys.executable, "-m", "mlflow"] and command[3] == "server"
    options = dict(zip(command[4::2], command[5::2], strict=True))
    assert options == {"--host": "127.0.0.1", "--port": "5123", "--backend-store-uri": f"sqlite:///{store}",
                       "--workers": "2", "--artifacts-destination": (store.parent / "mlartifacts").as_uri()}
    assert os.environ["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    with sqlite3.connect(store) as db:  # created and migrated before the server starts
        tables = {name for (name,) in db.execute("select name from sqlite_master where type = 'table'")}
    assert {"experiments", "runs", "alembic_version"} <= tables

    monkeypatch.setenv("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "true")
    tracking.ui_command(5123, 1)
    assert os.environ["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "true"  # a choice of the user's stays
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    with pytest.raises(UserError, match="tracking server already"):
        tracking.ui_command(5123, 1)


def test_tracking_is_the_only_module_of_the_pipeline_that_imports_mlflow():
    importers = [
        str(path.relative_to(REPO)) for path in sorted((REPO / "pipeline").rglob("*.py"))
        if path.name != "tracking.py" or path.parent.name != "pipeline"
        if re.search(r"^\s*(import mlflow|from mlflow)\b", path.read_text(), re.MULTILINE)
    ]
    assert importers == []


def test_a_run_in_a_deleted_experiment_brings_it_back(workdir):
    client = MlflowClient()
    client.delete_experiment(client.create_experiment("exp"))
    with tracking.run("exp", "again"):
        pass
    assert client.get_experiment_by_name("exp").lifecycle_stage == "active"
    assert only_run().info.status == "FINISHED"
