"""Shared fixtures: an isolated working folder with its own MLflow store, synthetic competitions,
and a fake ``kaggle`` command-line client (the only thing faked: Kaggle's web API).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import Ridge

REPO = Path(__file__).resolve().parents[1]
KAGGLE_SLUG = "house-prices-advanced-regression-techniques"
FAKE_USERNAME = "dummy-user-4f1c9a"
FAKE_KEY = "dummy-key-8b2e77d0c3"
_ISOLATED_VARS = ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN", "KAGGLE_CONFIG_DIR",
                  "DATA_DIR", "COMPETITION")


# --- markers --------------------------------------------------------------------------------

@pytest.hookimpl(tryfirst=True)  # before -m selects by marker
def pytest_collection_modifyitems(config, items):
    """A test that uses a fixture its module names in ``SLOW_FIXTURES`` (a training or a server
    that the module's tests share) is ``slow``; ``@pytest.mark.cuda`` tests run only where torch
    sees a CUDA GPU."""
    for item in items:
        if set(getattr(getattr(item, "module", None), "SLOW_FIXTURES", ())) & set(item.fixturenames):
            item.add_marker(pytest.mark.slow)
    marked = [item for item in items if item.get_closest_marker("cuda") is not None]
    if not marked:
        return
    import torch

    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is false)")
        for item in marked:
            item.add_marker(skip)


# --- MLflow ---------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory) -> Path:
    """Matplotlib's font cache, built once for the whole session rather than in every HOME."""
    return tmp_path_factory.mktemp("mpl-cache")


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory) -> Path:
    """An empty, fully migrated MLflow SQLite store, built once: creating one takes seconds."""
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


def _isolate(mp: pytest.MonkeyPatch, folder: Path, template: Path, cache: Path) -> None:
    """cwd and the MLflow store in ``folder``, an empty HOME beside it, no Kaggle credentials."""
    folder.mkdir(parents=True, exist_ok=True)
    home = folder.parent / f"{folder.name}-home"
    home.mkdir(exist_ok=True)
    mp.chdir(folder)
    mp.setenv("HOME", str(home))
    mp.setenv("MPLCONFIGDIR", str(cache))
    for name in _ISOLATED_VARS:
        mp.delenv(name, raising=False)
    # Never the real client: a fixture that wants a working one installs the fake.
    mp.setenv("KAGGLE_CLI", str(folder / "no-kaggle-client-here"))
    shutil.copyfile(template, folder / "mlflow.db")
    mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{folder / 'mlflow.db'}")
    # mlflow.set_tracking_uri (tracking.run calls it) outlives a test and beats the variable
    # for MlflowClient(): point it here now, and forget it afterwards (_forget_tracking_uri).
    import mlflow

    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])


def _forget_tracking_uri() -> None:
    import mlflow

    mlflow.set_tracking_uri(None)  # also unsets MLFLOW_TRACKING_URI; monkeypatch restores it after


@pytest.fixture
def workdir(tmp_path, monkeypatch, mlflow_template, shared_cache):
    """A fresh working folder: cwd, its own MLflow store, an empty HOME, no Kaggle credentials."""
    _isolate(monkeypatch, tmp_path, mlflow_template, shared_cache)
    yield tmp_path
    _forget_tracking_uri()


@pytest.fixture(scope="module")
def module_workdir(tmp_path_factory, mlflow_template, shared_cache):
    """``workdir`` shared by the tests of one module (for a run they all inspect)."""
    folder = tmp_path_factory.mktemp("module-work")
    with pytest.MonkeyPatch.context() as mp:
        _isolate(mp, folder, mlflow_template, shared_cache)
        yield folder, mp
        _forget_tracking_uri()


def mlflow_runs(experiment: str | None = None) -> list:
    """Every run in the store named by ``MLFLOW_TRACKING_URI`` (optionally one experiment's)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=os.environ["MLFLOW_TRACKING_URI"])
    experiments = client.search_experiments()
    ids = [e.experiment_id for e in experiments if experiment is None or e.name == experiment]
    return client.search_runs(ids) if ids else []


def artifact_names(run) -> set[str]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=os.environ["MLFLOW_TRACKING_URI"])
    return {a.path for a in client.list_artifacts(run.info.run_id)}


# --- the command line ------------------------------------------------------------------------

@dataclass
class CliResult:
    code: int
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        return self.err.splitlines()


def run_cli(*args: str | Path) -> CliResult:
    """``python -m pipeline ARGS`` in this process, with stdout and stderr captured."""
    from pipeline.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return CliResult(code, out.getvalue(), err.getvalue())


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes, to show that a failed command wrote nothing."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# --- synthetic competitions ------------------------------------------------------------------

def synthetic_frames(task: str, *, n_train: int = 60, n_test: int = 24, seed: int = 0,
                     id_column: str = "id", target: str = "target") -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    """A small learnable table: two numbers (one with gaps), a text column, a number-coded category.

    ``task`` is "regression" (non-integral floats), "binary" (0/1 integers) or "multiclass"
    (text labels). Returns (train, test, the test rows' true targets); test has no target column.
    """
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    x1 = rng.normal(size=n)
    x2 = rng.normal(size=n)
    colour = rng.choice(["red", "green", "blue"], size=n)
    frame = pd.DataFrame({
        id_column: np.arange(1000, 1000 + n),
        "x1": x1.round(3),
        "x2": np.where(rng.random(n) < 0.1, np.nan, x2.round(3)),
        "colour": colour,
        "zone": rng.choice([10, 20, 30], size=n),
    })
    signal = 2.0 * x1 - x2 + np.where(colour == "red", 1.0, 0.0)
    if task == "regression":
        y = 50.0 + 10.0 * signal + rng.normal(scale=0.5, size=n) + 0.123
    elif task == "binary":
        y = (signal > 0.3).astype(int)
    elif task == "multiclass":
        y = np.where(signal > 1.0, "high", np.where(signal < -1.0, "low", "middle"))
    else:
        raise ValueError(task)
    train = frame.iloc[:n_train].assign(**{target: y[:n_train]})
    test = frame.iloc[n_train:].reset_index(drop=True)
    return train.reset_index(drop=True), test, y[n_train:]


def write_competition(folder: Path, train: pd.DataFrame, test: pd.DataFrame, *, id_column: str = "id",
                      target: str = "target", placeholder: object = 0) -> Path:
    """train.csv, test.csv and a sample_submission.csv whose target column holds ``placeholder``."""
    folder.mkdir(parents=True, exist_ok=True)
    train.to_csv(folder / "train.csv", index=False)
    test.to_csv(folder / "test.csv", index=False)
    pd.DataFrame({id_column: test[id_column], target: placeholder}).to_csv(
        folder / "sample_submission.csv", index=False)
    return folder


def fast_house_prices_config(folder: Path, folds: int = 2) -> Path:
    """The real house-prices.toml, with fewer folds."""
    text = (REPO / "pipeline" / "competitions" / "house-prices.toml").read_text()
    assert "folds = 5" in text
    path = folder / "house-prices-fast.toml"
    path.write_text(text.replace("folds = 5", f"folds = {folds}"))
    return path


def tiny_house_prices(seed: int = 0, n_train: int = 40, n_test: int = 16) -> dict[str, pd.DataFrame]:
    """A few made-up houses in Kaggle's House Prices layout (a handful of its columns)."""
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    frame = pd.DataFrame({
        "Id": np.arange(1, n + 1),
        "MSSubClass": rng.choice([20, 60, 120], size=n),
        "LotArea": rng.integers(4000, 15000, size=n),
        "Neighborhood": rng.choice(["NAmes", "CollgCr", "OldTown"], size=n),
        "OverallQual": rng.integers(3, 10, size=n),
        "GrLivArea": rng.integers(700, 2800, size=n),
        "YearBuilt": rng.integers(1920, 2008, size=n),
        "YrSold": rng.integers(2006, 2011, size=n),
        "MoSold": rng.integers(1, 13, size=n),
    })
    price = 20000 + 60 * frame["GrLivArea"] + 9000 * frame["OverallQual"] + rng.normal(0, 5000, n)
    train = frame.iloc[:n_train].assign(SalePrice=price[:n_train].round().astype(int))
    test = frame.iloc[n_train:]
    return {
        "train.csv": train,
        "test.csv": test,
        "sample_submission.csv": pd.DataFrame({"Id": test["Id"], "SalePrice": 180000}),
        "data_description.txt": None,
    }


def write_house_prices(folder: Path, **options) -> Path:
    """``tiny_house_prices(**options)`` written into ``folder`` as the competition's CSV files."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, frame in tiny_house_prices(**options).items():
        if frame is not None:
            frame.to_csv(folder / name, index=False)
    return folder


# --- the fake Kaggle client ------------------------------------------------------------------

_FAKE_KAGGLE = '''\
#!{python}
"""Stand-in for the kaggle CLI: `competitions download -c SLUG -p DIR -q` writes a zip of the
files in {files!r}; `competitions submit ...` is recorded. Every call is logged as JSON."""
import json, os, pathlib, sys, zipfile

args = sys.argv[1:]
with open({log!r}, "a") as log:
    log.write(json.dumps(args) + "\\n")
fail = pathlib.Path({fail!r})
if fail.is_file():
    print("kaggle: something went wrong", file=sys.stderr)
    print(fail.read_text().strip(), file=sys.stderr)
    sys.exit(1)
home = pathlib.Path(os.environ.get("KAGGLE_CONFIG_DIR") or pathlib.Path.home() / ".kaggle")
if not (os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY")) and not (home / "kaggle.json").is_file():
    print("OSError: Could not find kaggle.json. Make sure it's located in " + str(home), file=sys.stderr)
    sys.exit(1)
def option(flag):
    given = [a for a in args if a.startswith(flag + "=")]
    return given[0].split("=", 1)[1] if given else args[args.index(flag) + 1]
slug = args[args.index("--") + 1]  # the competition, after "--" as the client's positional
if args[:2] == ["competitions", "download"]:
    dest = pathlib.Path(option("-p"))
    with zipfile.ZipFile(dest / (slug + ".zip"), "w") as zipped:
        for path in sorted(pathlib.Path({files!r}).iterdir()):
            zipped.write(path, path.name)
elif args[:2] == ["competitions", "submit"]:
    option("--message")
    if not pathlib.Path(option("-f")).is_file():
        print("file not found", file=sys.stderr)
        sys.exit(1)
    print("Successfully submitted to " + slug)
else:
    print("usage: kaggle competitions {{download,submit}} ...", file=sys.stderr)
    sys.exit(2)
'''


@dataclass
class FakeKaggle:
    folder: Path

    @property
    def files(self) -> Path:
        """What a download delivers (zipped): edit to change the competition's files."""
        return self.folder / "files"

    @property
    def calls(self) -> list[list[str]]:
        log = self.folder / "calls.jsonl"
        return [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []

    def fail(self, message: str) -> None:
        (self.folder / "fail").write_text(message)


@pytest.fixture
def fake_kaggle(workdir, monkeypatch) -> FakeKaggle:
    """A fake ``kaggle`` executable on ``KAGGLE_CLI`` that serves a tiny House Prices table."""
    folder = workdir / "fake-kaggle"
    fake = FakeKaggle(folder)
    fake.files.mkdir(parents=True)
    for name, frame in tiny_house_prices().items():
        if frame is None:
            (fake.files / name).write_text("MSSubClass: the type of dwelling\n")
        else:
            frame.to_csv(fake.files / name, index=False)
    script = folder / "kaggle"
    script.write_text(_FAKE_KAGGLE.format(python=sys.executable, files=str(fake.files),
                                          log=str(folder / "calls.jsonl"), fail=str(folder / "fail")))
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("KAGGLE_CLI", str(script))
    return fake


@pytest.fixture
def kaggle_credentials(monkeypatch) -> tuple[str, str]:
    monkeypatch.setenv("KAGGLE_USERNAME", FAKE_USERNAME)
    monkeypatch.setenv("KAGGLE_KEY", FAKE_KEY)
    return FAKE_USERNAME, FAKE_KEY



@pytest.fixture(scope="module")
def one_thread():
    """Small tensors: one intra-op thread is several times faster on a shared machine."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# --- servers started by tests -----------------------------------------------------------------

def stop_process_group(process: subprocess.Popen) -> None:
    """SIGTERM to the process group (make, mlflow, uvicorn), SIGKILL after 15 s."""
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 10)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        # The leader is gone; wait for the rest of the group (uvicorn's worker) too.
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                os.killpg(process.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)


# --- a fake clock, and a model whose fits take its time (the time limit's tests) -----------------

class FakeClock:
    """``TimeLimit(clock=CLOCK)``: time moves only when a ``TimedRidge`` fits."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


CLOCK = FakeClock()


class TimedRidge(Ridge):
    """A ridge whose every fit takes ``seconds`` of the fake clock."""

    def __init__(self, alpha=1.0, seconds=10.0):
        super().__init__(alpha=alpha)
        self.seconds = seconds

    def fit(self, X, y, sample_weight=None):
        CLOCK.now += self.seconds
        return super().fit(X, y, sample_weight)


@contextlib.contextmanager
def registered_model(name: str, factory, **register_options):
    """``name`` in the tabular model registry for the block only (``registry.register``'s options)."""
    from models import registry

    registry.register(name, **register_options)(factory)
    try:
        yield name
    finally:
        registry._REGISTRY.pop(("tabular", name))


def linear_frame(n_train: int, n_test: int, n_features: int, noise: float) -> tuple[pd.DataFrame, np.ndarray]:
    """A seeded linear regression: an ``id`` column and ``x0``.. for train then test rows, and the targets."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n_train + n_test, n_features))
    y = X @ rng.normal(size=n_features) + noise * rng.normal(size=n_train + n_test)
    frame = pd.DataFrame(X, columns=[f"x{i}" for i in range(n_features)])
    frame.insert(0, "id", np.arange(1, n_train + n_test + 1))
    return frame, y
