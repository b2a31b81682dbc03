"""`make tune`: real Optuna storages, real worker processes, real MLflow, on a tiny ridge problem.

The synthetic competition has 20 informative features, 90 training rows and little noise, so
ridge's default alpha (10) shrinks far too much and a tuned alpha (~0.03) is several times better.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from pipeline import cli, config, train, tune

ROOT = Path(__file__).resolve().parents[1]
FOLDS = 3
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)

# Runs the real CLI with each CV slowed down by a second, so that a signal lands mid-trial.
SLOW_CLI = """
import sys, time
from pipeline import cv
real = cv.cross_validate
def slow(*args, **kwargs):
    time.sleep(1.0)
    return real(*args, **kwargs)
cv.cross_validate = slow
from pipeline.cli import main
sys.exit(main(sys.argv[1:]))
"""


def write_competition(folder: Path, name: str = "synth") -> tuple[Path, Path]:
    """A seeded regression competition: (config file, data folder)."""
    data = folder / "data"
    data.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    n_train, n_test, n_features = 90, 30, 20
    X = rng.normal(size=(n_train + n_test, n_features))
    y = X @ rng.normal(size=n_features) + 0.1 * rng.normal(size=n_train + n_test)
    frame = pd.DataFrame(X, columns=[f"x{i}" for i in range(n_features)])
    frame.insert(0, "id", np.arange(1, n_train + n_test + 1))
    frame.iloc[:n_train].assign(target=y[:n_train]).to_csv(data / "train.csv", index=False)
    frame.iloc[n_train:].to_csv(data / "test.csv", index=False)
    pd.DataFrame({"id": frame["id"].iloc[n_train:], "target": 0.0}).to_csv(data / "sample_submission.csv", index=False)
    toml = folder / f"{name}.toml"
    toml.write_text(
        f'name = "{name}"\ntarget = "target"\nid = "id"\ntask = "regression"\nmetric = "rmse"\n'
        f'[cv]\nfolds = {FOLDS}\nseed = 0\n[model]\nname = "ridge"\n'
    )
    return toml, data


@pytest.fixture(scope="module")
def competition(tmp_path_factory) -> tuple[Path, Path]:
    return write_competition(tmp_path_factory.mktemp("synth"))


@pytest.fixture
def tune_dir(workdir, monkeypatch) -> Path:
    """conftest's ``workdir`` (cwd, own MLflow store) with no Optuna storage named in the environment."""
    monkeypatch.delenv("OPTUNA_STORAGE", raising=False)
    return workdir


def subprocess_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def tune_args(competition, *extra: str) -> list[str]:
    toml, data = competition
    return ["tune", "--config", str(toml), "--data-dir", str(data), "--model", "ridge", *extra]


def load(storage: str, name: str = "synth/ridge") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=tune._open_storage(tune.storage_url(storage), create=False))


def mlflow_run_id(output: str) -> str:
    return re.findall(r"mlflow run ([0-9a-f]{32})", output)[-1]


def children_of(parent_id: str) -> list:
    client = MlflowClient()
    parent = client.get_run(parent_id)
    return client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'",
                               max_results=1000)


def wait_for_trial_in_flight(proc: subprocess.Popen, journal: Path, timeout: float = 180) -> None:
    """Poll the journal until a trial has finished and ``proc`` is running the next one."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.communicate()
        study = tune._load_study(str(journal), "synth/ridge") if journal.is_file() else None
        if study is not None:
            trials = study.get_trials(deepcopy=False)
            running = [t for t in trials if t.state == TrialState.RUNNING and "model_params" in t.user_attrs
                       and t.user_attrs["worker"].split(":")[1] == str(proc.pid)]
            if running and any(t.state in FINISHED for t in trials):
                return
        time.sleep(0.2)
    proc.kill()
    raise AssertionError(f"no trial in flight within {timeout} s: {proc.communicate()}")


def snapshot(study: optuna.Study) -> dict[int, tuple]:
    return {t.number: (t.state, t.value, t.params) for t in study.get_trials(states=FINISHED)}


def test_kill_9_and_ctrl_c_mid_trial_then_the_same_command_completes_the_study(competition, tune_dir, capsys):
    journal = tune_dir / ".optuna" / "journal.log"
    n_trials = 5
    args = tune_args(competition, "--trials", str(n_trials))
    slow = [sys.executable, "-c", SLOW_CLI, *args]

    # kill -9 while a trial runs: nothing can clean up, so the trial is left RUNNING.
    proc = subprocess.Popen(slow, cwd=tune_dir, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    wait_for_trial_in_flight(proc, journal)
    proc.send_signal(signal.SIGKILL)
    killed_run = mlflow_run_id(proc.communicate()[0])
    assert MlflowClient().get_run(killed_run).info.status == "RUNNING"
    study = load(str(journal))
    killed = study.get_trials(states=(TrialState.RUNNING,))
    assert len(killed) == 1
    kept = snapshot(study)
    assert kept

    # Ctrl-C while a trial runs: that trial ends FAIL and the MLflow parent run KILLED; and the
    # trial (and the MLflow parent run) the kill -9 left RUNNING were failed when this run started.
    proc = subprocess.Popen(slow, cwd=tune_dir, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    wait_for_trial_in_flight(proc, journal)
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == cli.EXIT_INTERRUPTED, output
    assert f"trial {killed[0].number} was left RUNNING by a worker that is gone: marked FAIL" in output
    study = load(str(journal))
    assert study.trials[killed[0].number].state == TrialState.FAIL
    assert "is gone" in study.trials[killed[0].number].user_attrs["fail_reason"]
    assert not study.get_trials(states=(TrialState.RUNNING,))
    assert len(study.get_trials(states=(TrialState.FAIL,))) == 2
    assert MlflowClient().get_run(mlflow_run_id(output)).info.status == "KILLED"
    assert MlflowClient().get_run(killed_run).info.status == "KILLED"  # closed by the next tune

    # The same command again runs only the remainder and keeps every finished trial.
    before = snapshot(study)
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    study = load(str(journal))
    after = snapshot(study)
    assert len(after) == n_trials
    assert {k: after[k] for k in before} == before
    assert {k: after[k] for k in kept} == kept
    assert f"{n_trials - len(before)} this run" in out
    assert not study.get_trials(states=(TrialState.RUNNING,))
    assert len(children_of(mlflow_run_id(out))) == n_trials - len(before)

    # And once more: nothing left to do.
    assert cli.main(args) == 0
    assert "nothing to run" in capsys.readouterr().out
    assert len(load(str(journal)).trials) == len(study.trials)


def check_parallel_study(study: optuna.Study, n_trials: int) -> None:
    trials = study.get_trials()
    finished = [t for t in trials if t.state in FINISHED]
    assert len(finished) == n_trials
    # A FAIL here may only be a trial that lost the race for the last slot of the budget.
    assert all(t.user_attrs.get("surplus") for t in trials if t.state == TrialState.FAIL)
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    assert sorted(t.number for t in trials) == list(range(len(trials)))
    # Each worker has its own sampler seed: no two trials were proposed the same alpha.
    alphas = [t.params["alpha"] for t in finished]
    assert len(set(alphas)) == len(alphas)
    pids = {int(t.user_attrs["worker"].split(":")[1]) for t in finished}
    assert os.getpid() not in pids  # the trials ran in the worker processes


def test_two_worker_processes_share_the_journal_study(competition, tune_dir, capfd):
    n_trials = 10
    assert cli.main(tune_args(competition, "--trials", str(n_trials), "--jobs", "2")) == 0
    out, err = capfd.readouterr()  # the workers' output too: they write to the same descriptors
    assert "locked" not in out + err and "Traceback" not in err
    check_parallel_study(load(str(tune_dir / ".optuna" / "journal.log")), n_trials)
    children = children_of(mlflow_run_id(out))
    assert sorted(int(r.data.tags["optuna.trial"]) for r in children) == list(range(n_trials))
    assert {r.data.tags["optuna.state"] for r in children} <= {"COMPLETE", "PRUNED"}
    assert all("cv_rmse_running" in r.data.metrics and "alpha" in r.data.params for r in children)


def test_two_worker_processes_share_a_postgresql_study(tune_dir, capfd):
    url = os.environ.get("KP_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("KP_TEST_POSTGRES_URL is not set: .ci/run starts PostgreSQL and sets it (bash .ci/postgres prints it)")
    name = f"synth-{uuid.uuid4().hex[:8]}"
    competition = write_competition(tune_dir / "pg", name)
    n_trials = 8
    code = cli.main(["tune", "--config", str(competition[0]), "--data-dir", str(competition[1]), "--model", "ridge",
                     "--trials", str(n_trials), "--jobs", "2", "--storage", url])
    out, err = capfd.readouterr()
    assert code == 0, err
    assert "heartbeats" in out and "kp:kp@" not in out  # an RDB storage, its password not printed
    storage = tune._open_storage(url, create=False)
    try:
        check_parallel_study(optuna.load_study(study_name=f"{name}/ridge", storage=storage), n_trials)
    finally:
        optuna.delete_study(study_name=f"{name}/ridge", storage=storage)


@pytest.fixture(scope="module")
def tuned(competition, module_workdir):
    """One in-process study of 12 ridge trials, in its own journal file."""
    folder, patch = module_workdir
    journal = folder / "tuned.log"
    patch.setenv("OPTUNA_STORAGE", str(journal))
    comp = config.load("synth", config_file=competition[0])
    outcome = tune.tune(comp, competition[1], model="ridge", n_trials=12)
    patch.delenv("OPTUNA_STORAGE")
    return comp, outcome, load(str(journal)), journal


def test_pruning_stops_poor_trials_after_a_fold(tuned):
    _, outcome, study, _ = tuned
    pruned = study.get_trials(states=(TrialState.PRUNED,))
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert pruned and outcome.counts["PRUNED"] == len(pruned)
    assert all(len(t.intermediate_values) < FOLDS for t in pruned)  # stopped before its last fold
    assert all(sorted(t.intermediate_values) == list(range(FOLDS)) for t in complete)
    for trial in pruned:  # pruned at a fold where it was worse than the complete trials' median
        step = max(trial.intermediate_values)
        assert trial.intermediate_values[step] > min(t.intermediate_values[step] for t in complete)


def test_study_logs_a_parent_run_with_children_best_params_and_plots(tuned):
    _, outcome, study, _ = tuned
    client = MlflowClient()
    parent = client.get_run(outcome.run_id)
    assert parent.info.status == "FINISHED"
    assert float(parent.data.params["best.alpha"]) == pytest.approx(outcome.best_params["alpha"])
    assert parent.data.metrics["best_cv_rmse"] == pytest.approx(study.best_value)
    artifacts = {a.path for a in client.list_artifacts(outcome.run_id)}
    assert {"best_params.json", "optimization_history.png", "param_importances.png", "parallel_coordinate.png"} <= artifacts
    children = children_of(outcome.run_id)
    states = {r.data.tags["optuna.trial"]: r.data.tags["optuna.state"] for r in children}
    assert states == {str(t.number): t.state.name for t in study.trials}
    assert all(r.data.metrics["duration_seconds"] >= 0 for r in children)


def test_tuned_params_beat_the_defaults(tuned, competition, monkeypatch):
    comp, outcome, _, journal = tuned
    monkeypatch.setenv("OPTUNA_STORAGE", str(journal))
    assert tune.best_params(comp, "ridge") == outcome.best_params
    tuned_run = train.run(comp, competition[1], model="ridge", tuned=True)
    default_run = train.run(comp, competition[1], model="ridge", tuned=False)
    assert tuned_run.params == outcome.best_params and default_run.params == {}
    assert tuned_run.cv_score == pytest.approx(outcome.best_value)
    assert tuned_run.cv_score < 0.5 * default_run.cv_score


@pytest.mark.parametrize("params_from", ["best", "default"])
def test_submit_uses_the_study_unless_told_default(tuned, competition, monkeypatch, tmp_path, capsys, params_from):
    _, outcome, _, journal = tuned
    monkeypatch.setenv("OPTUNA_STORAGE", str(journal))
    toml, data = competition
    code = cli.main(["submit", "--config", str(toml), "--data-dir", str(data), "--model", "ridge",
                     "--output", str(tmp_path / "submission.csv"), "--params", params_from])
    out = capsys.readouterr().out
    assert code == 0
    logged = MlflowClient().get_run(mlflow_run_id(out)).data.params
    alphas = [float(v) for k, v in logged.items() if k.endswith("alpha")]
    if params_from == "best":
        assert "best trial of its Optuna study" in out
        assert alphas == [pytest.approx(outcome.best_params["alpha"])]
    else:
        assert "Optuna" not in out
        assert alphas == []


def test_best_params_without_a_study_is_none_and_creates_nothing(competition, tune_dir, tmp_path):
    comp = config.load("synth", config_file=competition[0])
    assert tune.best_params(comp, "ridge") is None
    assert tune.best_params(comp, "ridge", storage=f"sqlite:///{tmp_path / 'none.db'}") is None
    assert not (tune_dir / ".optuna").exists() and not (tmp_path / "none.db").exists()


def test_best_params_return_derived_model_params_verbatim(competition, tune_dir):
    comp = config.load("synth", config_file=competition[0])
    storage = str(tune_dir / "journal.log")
    study = tune._load_study(storage, "synth/mlp", create=True, direction="minimize")
    study.add_trial(optuna.trial.create_trial(
        params={"width": 64, "depth": 2},
        distributions={"width": optuna.distributions.CategoricalDistribution([64, 128]),
                       "depth": optuna.distributions.IntDistribution(1, 3)},
        value=0.2,
        user_attrs={"model_params": {"hidden": [64, 64], "lr": 0.01}},
    ))
    assert tune.best_params(comp, "mlp", storage=storage) == {"hidden": (64, 64), "lr": 0.01}
    assert tune.best_params(comp, "ridge", storage=storage) is None


def test_trials_of_dead_workers_fail_and_live_ones_stay_running(tune_dir):
    study = tune._load_study(str(tune_dir / "journal.log"), "synth/ridge", create=True, direction="minimize")
    zombie = subprocess.Popen(["true"])  # exits at once; not waited for, so a zombie
    gone = subprocess.Popen(["true"])
    gone.wait()
    time.sleep(0.3)
    host = socket.gethostname()
    workers = [f"{host}:{zombie.pid}:?", f"{host}:{gone.pid}:?", tune.worker_id(), f"elsewhere:{gone.pid}:?"]
    trials = []
    for worker in workers:
        trial = study.ask()
        trial.set_user_attr("worker", worker)
        trials.append(trial.number)
    assert tune.fail_dead_trials(study) == trials[:2]
    states = [study.trials[n].state for n in trials]
    assert states == [TrialState.FAIL, TrialState.FAIL, TrialState.RUNNING, TrialState.RUNNING]
    zombie.wait()


def test_tune_errors_are_one_line(competition, tune_dir, capsys):
    toml, data = competition
    assert cli.main(["tune", "--config", str(toml), "--data-dir", str(data), "--model", "nope"]) == cli.EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert err.startswith("error: unknown model 'nope'") and err.count("\n") == 1
    with pytest.raises(SystemExit):
        cli.main(["tune", "--config", str(toml), "--trials", "0"])


def test_an_ensemble_is_tuned_through_its_members_with_their_config_params(competition, tune_dir, capsys):
    toml, data = competition
    ensemble = tune_dir / "ensemble.toml"
    ensemble.write_text(toml.read_text().replace('name = "ridge"', 'name = "ensemble"')
                        + '[ensemble]\nmodels = ["ridge", "gbm"]\n[ensemble.params.ridge]\nfit_intercept = false\n')
    comp = config.load("synth", config_file=ensemble)
    assert tune.config_params_of(comp, "regression", "ridge") == {"fit_intercept": False}
    assert tune.config_params_of(comp, "regression", "gbm") == {}
    assert cli.main(["tune", "--config", str(ensemble), "--data-dir", str(data)]) == cli.EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert "MODEL=<one of ridge gbm>" in err and err.count("\n") == 1
