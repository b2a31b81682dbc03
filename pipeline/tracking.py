"""The one MLflow wrapper (the only module under pipeline/ that imports mlflow): where runs go,
how they end, the artifact helpers, and the runs that tuning writes in one go.

Runs end FINISHED, FAILED on an exception, or KILLED on Ctrl-C or SIGTERM; never left RUNNING:
every run carries a ``process`` tag (``processes.identity()``), and a new top-level run first
closes, as KILLED, the RUNNING runs of its experiment whose process is gone (``kill -9``, a crash).

Several processes may start together on a new SQLite store (``make submit`` twice, tuning
workers): MLflow's first schema migration and experiment creation are not safe to race, so each
process does its first access to a SQLite store, and every get-or-create of an experiment, under
an exclusive ``flock`` on the store's folder. A server (``http://``) needs no local lock; there a
lost race to create an experiment is settled by reading the winner's.
"""

from __future__ import annotations

import fcntl
import functools
import json
import logging
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import mlflow
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature, infer_signature
from mlflow.pyfunc import scoring_server
from mlflow.tracking import MlflowClient

from pipeline import processes, store_checks
from pipeline.errors import UserError

logging.getLogger("mlflow").setLevel(logging.WARNING)
logging.getLogger("alembic").setLevel(logging.WARNING)

# MLflow params hold at most this many characters each (MAX_PARAM_VAL_LENGTH): longer ones are
# cut here, rather than by MLflow with a warning for each.
PARAM_LIMIT = 6000
# The tag naming the process that runs a run; tune parent runs before it had "tune.process".
PROCESS_TAG = "process"
_OLD_PROCESS_TAGS = ("tune.process",)


class Terminated(KeyboardInterrupt):
    """SIGTERM inside a top-level ``run``: the run is closed KILLED and this goes on up.

    A KeyboardInterrupt, so that whatever stops cleanly on Ctrl-C stops on SIGTERM too; the CLI
    tells them apart to exit 143 rather than 130.
    """


def is_main_process() -> bool:
    """False on every ``torchrun`` rank but 0 (``RANK``): only rank 0 writes MLflow."""
    return os.environ.get("RANK", "0") == "0"


def _rank_zero_only(function):
    """Under ``torchrun`` the other ranks train beside rank 0 and log nothing: a no-op there."""
    return functools.wraps(function)(lambda *args, **kw: function(*args, **kw) if is_main_process() else None)


_NO_RUN = SimpleNamespace(info=SimpleNamespace(run_id="", experiment_id="", run_name=""))  # other ranks' run


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def artifact_root(uri: str) -> str | None:
    # Keep artifacts beside a SQLite store instead of in whatever folder the run started from.
    path = _sqlite_path(uri)
    return (path.parent / "mlartifacts").resolve().as_uri() if path is not None else None


def _sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (relative or absolute), else None."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri.removeprefix("sqlite:///").split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


@contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """An exclusive lock, among processes on this machine, on the folder of a SQLite store.

    The folder, not a file beside the database: no lock file is left behind, and SQLite's own
    POSIX locks on the database file are untouched (closing any descriptor of that file would
    drop them). Other stores need none; a file system without ``flock`` goes unlocked.
    """
    path = _sqlite_path(uri)
    if path is None:
        yield
        return
    # Seconds of imports that the first store access does, outside the lock: not one after another.
    import mlflow.store.tracking.sqlalchemy_store  # noqa: F401

    folder = path.resolve().parent
    folder.mkdir(parents=True, exist_ok=True)
    handle = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
        except OSError:
            pass
        yield
    finally:
        os.close(handle)  # releases the lock


_ready: set[str] = set()


def _client() -> MlflowClient:
    """A client of ``tracking_uri()``, whose store this process first opened under the lock."""
    uri = tracking_uri()
    if uri not in _ready:
        with _store_lock(uri):
            MlflowClient(uri).search_experiments(max_results=1)  # creates and migrates a new store
        _ready.add(uri)
    return MlflowClient(uri)


def _experiment_id(name: str) -> str:
    """The id of experiment ``name``, created (or restored, if deleted) when needed."""
    uri = tracking_uri()
    with _store_lock(uri):
        mlflow.set_tracking_uri(uri)
        client = MlflowClient(uri)
        found = client.get_experiment_by_name(name)
        if found is None:
            try:
                return client.create_experiment(name, artifact_location=artifact_root(uri))
            except MlflowException:
                found = client.get_experiment_by_name(name)  # another process created it first
                if found is None:
                    raise
        if found.lifecycle_stage == "deleted":
            client.restore_experiment(found.experiment_id)
        _ready.add(uri)
        return found.experiment_id


def close_dead_runs(experiment_id: str) -> list[str]:
    """End KILLED every RUNNING run of the experiment whose process (its ``process`` tag, or the
    older ``tune.process``) is gone from this host. Returns their run ids."""
    client = _client()
    closed, token = [], None
    while True:
        page = client.search_runs([experiment_id], "attributes.status = 'RUNNING'", max_results=1000,
                                  page_token=token)
        for found in page:
            tags = found.data.tags
            owner = next((tags[k] for k in (PROCESS_TAG, *_OLD_PROCESS_TAGS) if k in tags), None)
            if owner and not processes.is_alive(owner):
                client.set_terminated(found.info.run_id, status="KILLED")
                closed.append(found.info.run_id)
        token = page.token
        if not token:
            return closed


def close_dead_runs_of(experiment: str) -> list[str]:
    """``close_dead_runs`` for the experiment named ``experiment``, when there is one (none is created)."""
    found = _client().get_experiment_by_name(experiment)
    return close_dead_runs(found.experiment_id) if found is not None else []


def _terminate(signum, frame) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM while closing: no more waiting
    raise Terminated()


@contextmanager
def run(
    experiment: str,
    run_name: str,
    *,
    tags: Mapping[str, str] = {},
    nested: bool = False,
) -> Iterator[mlflow.ActiveRun]:
    """Start a run (or a child run of the active one) and close it with a status that tells what
    happened: FINISHED; FAILED on an exception; KILLED on KeyboardInterrupt, re-raised, or on
    SIGTERM (top-level runs in the main thread), raised as ``Terminated``. Under ``torchrun`` only
    rank 0 starts one (the others get a stand-in with an empty ``info.run_id``, and log nothing)."""
    if not is_main_process():
        yield _NO_RUN
        return
    experiment_id = _experiment_id(experiment)
    installed, previous = False, None
    if not nested:
        close_dead_runs(experiment_id)
        try:
            previous, installed = signal.signal(signal.SIGTERM, _terminate), True
        except ValueError:  # not the main thread
            pass
    try:
        active = mlflow.start_run(experiment_id=experiment_id, run_name=run_name, nested=nested,
                                  tags={**tags, PROCESS_TAG: processes.identity()})
        try:
            yield active
        except KeyboardInterrupt:  # Terminated included
            mlflow.end_run("KILLED")
            raise
        except BaseException as exc:  # FAILED; a full disk: one line naming it (store_checks.end_failed)
            store_checks.end_failed(mlflow.end_run, exc, tracking_uri(), _sqlite_path(tracking_uri()))
            raise
        else:
            mlflow.end_run("FINISHED")
    finally:
        if installed:
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def active_run_id() -> str:
    return _active().info.run_id


def active_experiment_id() -> str:
    return _active().info.experiment_id


def _active() -> mlflow.ActiveRun:
    active = mlflow.active_run()
    if active is None:
        raise RuntimeError("no MLflow run is active: call this inside tracking.run(...)")
    return active


def record_run(
    experiment_id: str,
    *,
    run_name: str,
    tags: Mapping[str, str],
    params: Mapping[str, Any],
    metrics: Sequence[tuple[str, float, int]],
    start_ms: int,
    end_ms: int,
    status: str,
) -> str:
    """A run that is over, written in one go (one child run per Optuna trial): its tags (give
    ``mlflow.parentRunId`` for a child run), params (cut to PARAM_LIMIT characters), metrics as
    (key, value, step) all timed ``end_ms``, and its end ``status`` (FINISHED, FAILED or KILLED).
    Returns the run id."""
    client = _client()
    created = client.create_run(experiment_id, start_time=start_ms, run_name=run_name,
                                tags={PROCESS_TAG: processes.identity(), **tags})
    run_id = created.info.run_id
    try:  # the client sends them in as many batches as MLflow's limits ask
        client.log_batch(run_id, params=[Param(store_checks.param_name(k), str(v)[:PARAM_LIMIT]) for k, v in params.items()],
                         metrics=[Metric(key, float(value), end_ms, int(step)) for key, value, step in metrics])
    except BaseException:
        client.set_terminated(run_id, status="FAILED", end_time=end_ms)
        raise
    client.set_terminated(run_id, status=status, end_time=end_ms)
    return run_id


def finished_runs(experiment: str) -> list:
    """The experiment's top-level FINISHED runs, newest first (none when it does not exist)."""
    found = _client().get_experiment_by_name(experiment)
    return [] if found is None else [r for r in _client().search_runs(
        [found.experiment_id], "attributes.status = 'FINISHED'", max_results=5000, order_by=["start_time DESC"])
        if "mlflow.parentRunId" not in r.data.tags]


def update_run(run_id: str, *, tags: Mapping[str, str] = {}, metrics: Mapping[str, float] = {}) -> None:
    """Tags and metrics added to a run that may be over (a leaderboard score arrives later)."""
    now = int(time.time() * 1000)
    _client().log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
                        tags=[RunTag(k, str(v)) for k, v in tags.items()])


def run_params(run_id: str) -> dict[str, str]:
    """A finished run's params; a run that is not there is bad input."""
    try:
        return _client().get_run(run_id).data.params
    except MlflowException as exc:
        raise UserError(f"no run {run_id!r} in {tracking_uri()} ({str(exc).strip().splitlines()[0]})") from None


def download_artifact(run_id: str, path: str, dest: Path) -> Path | None:
    """The run's artifact ``path`` copied into ``dest``; None when the run has none."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one file: no bar on the console
    try:
        return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path, dst_path=str(dest),
                                                        tracking_uri=tracking_uri()))
    except (MlflowException, OSError):
        return None


def load_estimator(run_id: str, dest: Path):
    """The scikit-learn estimator a run logged as its model."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        return mlflow.sklearn.load_model(f"runs:/{run_id}/{MODEL}", dst_path=str(dest))  # sink-ok: the user's own run
    except (MlflowException, OSError) as exc:
        raise UserError(f"run {run_id}: no scikit-learn model ({str(exc).strip().splitlines()[-1]})") from None


@contextmanager
def reopened(run_id: str) -> Iterator[None]:
    """A finished run active again, to log more to it (``log_frame``, ``log_figure``); it ends FINISHED."""
    with mlflow.start_run(run_id=run_id, log_system_metrics=False):
        yield


def ui_command(port: int, workers: int) -> list[str]:
    """The argv of the MLflow server that ``python -m pipeline ui`` execs, on 127.0.0.1:``port``
    over ``tracking_uri()``, artifacts beside a SQLite store. Sets MLFLOW_SERVER_ENABLE_JOB_EXECUTION
    =false unless set (MLflow 3's unused job runner adds a dozen processes), and creates or migrates
    a SQLite store under the store lock first: the server never races a starting ``submit``."""
    uri = tracking_uri()
    if uri.startswith(("http://", "https://")):
        raise UserError(f"MLFLOW_TRACKING_URI is a tracking server already: browse {uri}")
    if _sqlite_path(uri) is not None:
        _client()
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
               "--backend-store-uri", uri, "--workers", str(workers)]
    root = artifact_root(uri)
    if root is not None:  # artifacts of experiments the server itself creates: beside the store too
        command += ["--artifacts-destination", root]
    os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    return command


@_rank_zero_only
def log_params(params: Mapping[str, Any]) -> None:
    mlflow.log_params({store_checks.param_name(k): str(v)[:PARAM_LIMIT] for k, v in params.items()})


@_rank_zero_only
def log_metrics(values: Mapping[str, float], step: int | None = None) -> None:
    mlflow.log_metrics({k: float(v) for k, v in values.items()}, step=step)


@_rank_zero_only
def log_curves(prefix: str, history: list[dict[str, float]]) -> None:
    """Per-epoch curves as step metrics, sent in batches (one round trip, not one per point)."""
    metrics = [
        Metric(key=f"{prefix}{key}", value=float(value), timestamp=0, step=int(log["epoch"]))
        for log in history
        for key, value in log.items()
        if key != "epoch"
    ]
    MlflowClient().log_batch(active_run_id(), metrics=metrics)  # the client splits it at MLflow's limits


@_rank_zero_only
def log_artifact(path: str | os.PathLike) -> None:
    """A file (or a folder's files) into the active run's artifacts, under its own name."""
    mlflow.log_artifact(str(path))


@_rank_zero_only
def log_artifact_under(path: str | os.PathLike, artifact_path: str) -> None:
    """A file into the active run's artifacts as ``artifact_path/<its name>``."""
    mlflow.log_artifact(str(path), artifact_path)


@_rank_zero_only
def log_text(text: str, name: str) -> None:
    mlflow.log_text(text, name)


@_rank_zero_only
def log_json(obj: Any, name: str) -> None:
    mlflow.log_text(json.dumps(obj, indent=2, default=str), name)


@_rank_zero_only
def log_frame(frame, name: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        frame.to_csv(path, index=False)
        mlflow.log_artifact(str(path))


@_rank_zero_only
def log_figure(figure, name: str) -> None:
    mlflow.log_figure(figure, name)


@contextmanager
def child_run(suffix: str, *, tags: Mapping[str, str] = {}) -> Iterator[mlflow.ActiveRun]:
    """A child run of the active run, named ``<parent's name>-<suffix>``, carrying the parent's tags."""
    parent = mlflow.get_run(active_run_id())
    inherited = {k: v for k, v in parent.data.tags.items() if not k.startswith("mlflow.")}
    experiment = mlflow.get_experiment(parent.info.experiment_id).name
    with run(experiment, f"{parent.info.run_name}-{suffix}", tags={**inherited, **tags}, nested=True) as child:
        yield child


MODEL = "model"  # a run's MLflow model: runs:/<run id>/model


def log_model(model, inputs: list[dict], output, *, loader_module: str | None = None, **options: Any) -> None:
    """The active run's model, signature ``inputs`` (column specs) -> ``output``: a scikit-learn estimator
    (cloudpickle: skops is 18x bigger, 80x slower), or a folder that ``loader_module._load_pyfunc`` reads."""
    inputs = mlflow.types.Schema.from_json(json.dumps(inputs))
    options.update(name=MODEL, signature=ModelSignature(inputs, infer_signature(None, output).outputs))
    if loader_module is None:
        return mlflow.sklearn.log_model(model, serialization_format="cloudpickle", **options)
    mlflow.pyfunc.log_model(loader_module=loader_module, data_path=str(model), **options)


def load_model(uri: str, dest: Path | None = None):
    """The pyfunc model at ``uri`` (copied into ``dest``): ``.predict(frame)``, ``.metadata``."""
    try:
        return mlflow.pyfunc.load_model(uri, dst_path=dest and str(dest))  # sink-ok: the user's own run's model
    except (MlflowException, OSError) as exc:
        raise UserError(f"no model at {uri}: {str(exc).strip().splitlines()[-1]}") from None


def scoring_app(uri: str):
    """MLflow's scoring server (a FastAPI app) for the model at ``uri``, and its signature's columns."""
    model = load_model(uri)
    schema = model.metadata.get_input_schema()
    return scoring_server.init(model), schema.input_names() if schema and schema.has_input_names() else []


def register_model(uri: str, name: str, tags: Mapping[str, str], alias: str, moves: Callable) -> tuple[str, str]:
    """``uri`` as a new version of model ``name`` with ``tags``, the active run tagged with it; ``alias``
    moves to it if ``moves(tags of the version on it, or None)``. Returns (version, alias's version)."""
    client, version = _client(), str(mlflow.register_model(uri, name, tags=tags).version)
    try:
        current = client.get_model_version_by_alias(name, alias)
    except MlflowException:
        current = None
    if moved := moves(current and current.tags):
        client.set_registered_model_alias(name, alias, version)
    mlflow.set_tags({"registered_model": name, "registered_model_version": version})
    return version, version if moved else str(current.version)
