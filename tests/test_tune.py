"""`make tune` (pipeline.tune, pipeline.studies): real Optuna storages, real worker processes, real
MLflow, on a tiny ridge problem.

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
from types import SimpleNamespace

import optuna
import pandas as pd
import pytest
from conftest import linear_frame
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from models import registry
from pipeline import cli, config, metrics, processes, stages, studies, tune
from pipeline.tasks import Plan, for_competition
from pipeline.tune import pruners, workers
from pipeline.tune.objective import Objective

ROOT = Path(__file__).resolve().parents[1]
FOLDS = 3
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
SLOW_FIXTURES = {"tuned"}  # a study that the tests below inspect (tests/conftest.py)

# Runs the real CLI with each CV slowed down by a second, so that a signal lands mid-trial.
SLOW_CLI = """
import signal, sys, time
# Ctrl-C as in a terminal, even where the shell that started the tests ignores SIGINT for its
# background jobs (a child inherits the ignoring, and Python then installs no handler).
signal.signal(signal.SIGINT, signal.default_int_handler)
from pipeline.tasks.tabular import TabularTask
real = TabularTask.cross_validate
def slow(*args, **kwargs):
    time.sleep(1.0)
    return real(*args, **kwargs)
TabularTask.cross_validate = slow
from pipeline.cli import main
sys.exit(main(sys.argv[1:]))
"""


def write_competition(folder: Path, name: str = "synth") -> tuple[Path, Path]:
    """A seeded regression competition: (config file, data folder)."""
    data = folder / "data"
    data.mkdir(parents=True, exist_ok=True)
    n_train = 90
    frame, y = linear_frame(n_train, 30, 20, noise=0.1)
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
    return optuna.load_study(study_name=name, storage=studies.open_storage(studies.storage_url(storage), create=False))


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
        study = studies.load_study(str(journal), "synth/ridge") if journal.is_file() else None
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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
    storage = studies.open_storage(url, create=False)
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


def test_the_study_names_its_metric_for_the_dashboard(tuned):
    """optuna-dashboard labels its axis with the study's metric names ("Objective 0" without)."""
    _, _, study, _ = tuned
    assert study.metric_names == ["rmse"]


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
    assert studies.best_params(comp, "ridge") == outcome.best_params
    tuned_run = stages.run(comp, competition[1], model="ridge", tuned=True)
    default_run = stages.run(comp, competition[1], model="ridge", tuned=False)
    assert tuned_run.params == outcome.best_params and default_run.params == {}
    assert tuned_run.cv_score == pytest.approx(outcome.best_value)
    assert tuned_run.cv_score < 0.5 * default_run.cv_score


@pytest.mark.parametrize("study", ["best", "ignore"])
def test_submit_uses_the_study_unless_told_to_ignore_it(tuned, competition, monkeypatch, tmp_path, capsys, study):
    _, outcome, _, journal = tuned
    monkeypatch.setenv("OPTUNA_STORAGE", str(journal))
    toml, data = competition
    code = cli.main(["submit", "--config", str(toml), "--data-dir", str(data), "--model", "ridge",
                     "--output", str(tmp_path / "submission.csv"), "--study", study])
    out = capsys.readouterr().out
    assert code == 0
    logged = MlflowClient().get_run(mlflow_run_id(out)).data.params
    alphas = [float(v) for k, v in logged.items() if k.endswith("alpha")]
    if study == "best":
        assert "best trial of its Optuna study" in out
        assert alphas == [pytest.approx(outcome.best_params["alpha"])]
    else:
        assert "Optuna" not in out
        assert alphas == []


def test_best_params_without_a_study_is_none_and_creates_nothing(competition, tune_dir, tmp_path):
    comp = config.load("synth", config_file=competition[0])
    assert studies.best_params(comp, "ridge") is None
    assert studies.best_params(comp, "ridge", storage=f"sqlite:///{tmp_path / 'none.db'}") is None
    assert not (tune_dir / ".optuna").exists() and not (tmp_path / "none.db").exists()


def test_best_params_return_derived_model_params_verbatim(competition, tune_dir):
    comp = config.load("synth", config_file=competition[0])
    storage = str(tune_dir / "journal.log")
    study = studies.load_study(storage, "synth/mlp", create=True, direction="minimize")
    study.add_trial(optuna.trial.create_trial(
        params={"width": 64, "depth": 2},
        distributions={"width": optuna.distributions.CategoricalDistribution([64, 128]),
                       "depth": optuna.distributions.IntDistribution(1, 3)},
        value=0.2,
        user_attrs={"model_params": {"hidden": [64, 64], "lr": 0.01}},
    ))
    assert studies.best_params(comp, "mlp", storage=storage) == {"hidden": (64, 64), "lr": 0.01}
    assert studies.best_params(comp, "ridge", storage=storage) is None


def test_trials_of_dead_workers_fail_and_live_ones_stay_running(tune_dir):
    study = studies.load_study(str(tune_dir / "journal.log"), "synth/ridge", create=True, direction="minimize")
    zombie = subprocess.Popen(["true"])  # exits at once; not waited for, so a zombie
    gone = subprocess.Popen(["true"])
    gone.wait()
    time.sleep(0.3)
    host = socket.gethostname()
    owners = [f"{host}:{zombie.pid}:?", f"{host}:{gone.pid}:?", processes.identity(), f"elsewhere:{gone.pid}:?"]
    trials = []
    for worker in owners:
        trial = study.ask()
        trial.set_user_attr("worker", worker)
        trials.append(trial.number)
    assert workers.fail_dead_trials(study) == trials[:2]
    states = [study.trials[n].state for n in trials]
    assert states == [TrialState.FAIL, TrialState.FAIL, TrialState.RUNNING, TrialState.RUNNING]
    zombie.wait()


def test_tune_errors_are_one_line(competition, tune_dir, capsys):
    toml, data = competition
    assert cli.main(["tune", "--config", str(toml), "--data-dir", str(data), "--model", "nope"]) == cli.EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert err.startswith("error: unknown model 'nope'") and err.count("\n") == 1
    assert cli.main(["tune", "--config", str(toml), "--trials", "0"]) == cli.EXIT_USER_ERROR


def test_an_ensemble_is_tuned_through_its_members_with_their_config_params(competition, tune_dir, capsys):
    toml, data = competition
    ensemble = tune_dir / "ensemble.toml"
    ensemble.write_text(toml.read_text().replace('name = "ridge"', 'name = "ensemble"')
                        + '[ensemble]\nmodels = ["ridge", "gbm"]\n[ensemble.params.ridge]\nfit_intercept = false\n')
    comp = config.load("synth", config_file=ensemble)
    task = for_competition(comp)
    loaded = task.load(data)
    # A member's study starts from what the ensemble fits it with: its [ensemble.params.<member>].
    ridge = registry.get("ridge", "tabular").defaults
    assert Objective(task, loaded, "ridge").first_trial() == {**ridge, "fit_intercept": False}
    assert Objective(task, loaded, "gbm").first_trial() == registry.get("gbm", "tabular").defaults
    assert cli.main(["tune", "--config", str(ensemble), "--data-dir", str(data)]) == cli.EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert "MODEL=<one of ridge gbm>" in err and err.count("\n") == 1


# --- the objective, the pruners and the storage, without a competition -----------------------


class FakeTask:
    """Just what the objective asks of a task: a ridge plan and a CV that replays given epoch logs."""

    registry_kind = "tabular"

    def __init__(self, progress_unit: str, epochs: list[dict], fold_scores: tuple[float, ...] = (1.0, 2.0)):
        self.progress_unit, self.epochs, self.fold_scores = progress_unit, epochs, fold_scores
        self.plans: list[dict | None] = []

    def plan(self, data, *, model=None, cli_params=None, tuned=True, study_params=None, time_limit=None):
        assert not tuned and data == "data"
        self.plans.append(study_params)
        return Plan("regression", metrics.get("rmse"), model or "ridge", {"ridge": {"alpha": 10.0, **(study_params or {})}})

    def untuned_params(self, plan):
        return {"fit_intercept": False}

    def cross_validate(self, data, plan, *, on_fold=None, on_epoch=None, progress=False):
        for fold, score in enumerate(self.fold_scores):
            for log in self.epochs:
                if on_epoch:
                    on_epoch(fold, log, len(self.epochs))
            if on_fold:
                on_fold(fold, score)
        return SimpleNamespace(score=sum(self.fold_scores) / len(self.fold_scores), fold_scores=list(self.fold_scores))


def run_one_trial(task: FakeTask) -> optuna.trial.FrozenTrial:
    objective = Objective(task, "data", "ridge")
    study = optuna.create_study(direction=objective.direction, pruner=objective.pruner())
    study.optimize(objective, n_trials=1)
    return study.trials[0]


def test_objective_reports_each_fold_running_mean_under_the_fold_pruner():
    task = FakeTask("fold", [{"epoch": 0, "train_loss": 1.0}])
    trial = run_one_trial(task)
    assert trial.state == TrialState.COMPLETE and trial.value == 1.5
    assert trial.intermediate_values == {0: 1.0, 1: 1.5}
    assert trial.user_attrs["fold_scores"] == [1.0, 2.0] and "steps" not in trial.user_attrs
    assert trial.user_attrs["model_params"] == {"alpha": trial.params["alpha"]}
    assert task.plans == [None, {"alpha": trial.params["alpha"]}]  # the base plan, then the trial's
    assert isinstance(Objective(task, "data", "ridge").pruner(), optuna.pruners.PercentilePruner)
    assert Objective(task, "data", "ridge").first_trial() == {"alpha": 10.0, "fit_intercept": False}


def test_objective_reports_each_epoch_at_its_schedule_step_under_the_schedule_pruner():
    logs = [{"epoch": e, "train_loss": 1.0, "val_rmse": 0.5 - 0.1 * e} for e in range(4)]
    trial = run_one_trial(FakeTask("epoch", logs))
    assert trial.state == TrialState.COMPLETE
    steps = [pruners.schedule_step(fold, e, 4) for fold in range(2) for e in range(4)]
    assert trial.intermediate_values == {step: pytest.approx(logs[i % 4]["val_rmse"]) for i, step in enumerate(steps)}
    assert trial.user_attrs["steps"] == "schedule"
    assert isinstance(Objective(FakeTask("epoch", []), "data", "ridge").pruner(), pruners.SchedulePruner)


@pytest.mark.parametrize("unit", ["fold", "epoch"])
def test_a_non_finite_training_loss_prunes_at_once(unit):
    logs = [{"epoch": 0, "train_loss": 1.0, "val_rmse": 0.5}, {"epoch": 1, "train_loss": float("nan"), "val_rmse": 9.0}]
    trial = run_one_trial(FakeTask(unit, logs))
    assert trial.state == TrialState.PRUNED
    assert trial.user_attrs["diverged"] == "fold 0, epoch 2 of 2"
    assert "PRUNED   training diverged (fold 0, epoch 2 of 2) alpha=" in workers.describe(trial, "rmse")


def test_an_objective_needs_a_known_progress_unit():
    with pytest.raises(ValueError, match="progress unit"):
        Objective(FakeTask("batch", []), "data", "ridge")


def test_schedule_pruner_compares_with_each_complete_trial_at_the_same_point_of_its_schedule():
    assert [pruners.schedule_step(0, e, 3) for e in range(3)] == [33, 67, 100]
    assert pruners.schedule_step(2, 0, 4) == 225
    study = optuna.create_study(direction="maximize")
    for values in ({50: 0.5, 100: 0.9}, {34: 0.6, 100: 0.8}, {25: 0.4, 100: 0.7}):
        study.add_trial(optuna.trial.create_trial(value=values[100], intermediate_values=values))

    def running(values: dict[int, float]) -> optuna.trial.FrozenTrial:
        return optuna.trial.create_trial(state=TrialState.RUNNING, intermediate_values=values)

    pruner = pruners.SchedulePruner(n_startup_trials=3, warmup_steps=25)
    assert pruner.prune(study, running({60: 0.45}))  # below the median (0.5) of 0.5, 0.6, 0.4
    assert not pruner.prune(study, running({60: 0.55}))
    assert not pruner.prune(study, running({20: 0.0}))  # still warming up
    assert not pruners.SchedulePruner(n_startup_trials=4).prune(study, running({60: 0.0}))  # too few complete
    assert pruners.fold_pruner()._n_warmup_steps == 1


def test_storage_urls_and_descriptions(tune_dir, monkeypatch):
    assert studies.storage_url() == str(tune_dir / ".optuna" / "journal.log")
    monkeypatch.setenv("OPTUNA_STORAGE", "studies.log")
    assert studies.storage_url() == str(tune_dir / "studies.log")
    assert studies.storage_url("postgresql://kp:secret@db/kp") == "postgresql://kp:secret@db/kp"
    assert studies.describe_storage(str(tune_dir / "studies.log")) == "studies.log"
    assert studies.describe_storage("postgresql://kp:secret@db/kp") == "postgresql://kp:***@db/kp"
    assert studies.describe_storage("a b://user:secret@host") == "a b://..."  # not a SQLAlchemy URL
    comp = SimpleNamespace(name="synth")
    assert studies.study_name(comp, "ridge") == "synth/ridge"
