"""The one MLflow wrapper: where runs go, how they end, and the artifact helpers.

Runs end FINISHED, FAILED on an exception, or KILLED on Ctrl-C or SIGTERM; never left RUNNING.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import joblib
import mlflow
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

logging.getLogger("mlflow").setLevel(logging.WARNING)
logging.getLogger("alembic").setLevel(logging.WARNING)

# MLflow params hold at most this many characters each.
_PARAM_LIMIT = 6000


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def artifact_root(uri: str) -> str | None:
    # Keep artifacts beside a SQLite store instead of in whatever folder the run started from.
    if uri.startswith("sqlite:///"):
        return (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts").resolve().as_uri()
    return None


def _experiment_id(name: str) -> str:
    client = MlflowClient()
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    return client.create_experiment(name, artifact_location=artifact_root(tracking_uri()))


def git_commit() -> str:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent,
        )
    except OSError:
        return "unknown"
    return done.stdout.strip() or "unknown"


class _Terminated(BaseException):
    """SIGTERM, turned into an exception so the run is closed as KILLED."""


@contextmanager
def run(
    experiment: str,
    run_name: str,
    *,
    tags: Mapping[str, str] = {},
    nested: bool = False,
) -> Iterator[mlflow.ActiveRun]:
    """Start a run (or a child run) and close it with a status that tells what happened."""
    mlflow.set_tracking_uri(tracking_uri())
    experiment_id = _experiment_id(experiment)
    active = mlflow.start_run(experiment_id=experiment_id, run_name=run_name, nested=nested, tags=dict(tags))
    previous = None
    if not nested:
        def terminate(signum, frame):
            raise _Terminated()

        try:
            previous = signal.signal(signal.SIGTERM, terminate)
        except ValueError:  # not the main thread
            previous = None
    try:
        yield active
    except (KeyboardInterrupt, _Terminated):
        mlflow.end_run("KILLED")
        raise KeyboardInterrupt from None
    except BaseException:
        mlflow.end_run("FAILED")
        raise
    else:
        mlflow.end_run("FINISHED")
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def log_params(params: Mapping[str, Any]) -> None:
    mlflow.log_params({k: str(v)[:_PARAM_LIMIT] for k, v in params.items()})


def log_curves(prefix: str, history: list[dict[str, float]]) -> None:
    """Per-epoch curves as step metrics, sent in one batch (one round trip, not one per point)."""
    run_id = mlflow.active_run().info.run_id
    metrics = [
        Metric(key=f"{prefix}{key}", value=float(value), timestamp=0, step=int(log["epoch"]))
        for log in history
        for key, value in log.items()
        if key != "epoch"
    ]
    for start in range(0, len(metrics), 1000):
        MlflowClient().log_batch(run_id, metrics=metrics[start : start + 1000])


def log_frame(frame, name: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        frame.to_csv(path, index=False)
        mlflow.log_artifact(str(path))


def log_figure(figure, name: str) -> None:
    mlflow.log_figure(figure, name)


def log_pickle(obj: Any, name: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        joblib.dump(obj, path)
        mlflow.log_artifact(str(path))


def log_json(obj: Any, name: str) -> None:
    mlflow.log_text(json.dumps(obj, indent=2, default=str), name)


def log_metrics(values: Mapping[str, float], step: int | None = None) -> None:
    mlflow.log_metrics({k: float(v) for k, v in values.items()}, step=step)
