"""Issue 21's bad input: what a run must never touch, ids as written, every check before the MLflow
run, the model name that submit, predict and serve share, and a fair @champion.

Each bad case: one ``error:`` line, exit 2, no fold fit, no MLflow run, nothing in the working
folder changed (an earlier submission byte-identical). The cases that must work are checked for
their exact output. In-process CLI calls (``conftest.run_cli``) with ridge or logistic on tiny
tables keep it to seconds.
"""

from __future__ import annotations

import os
import shlex
import socket
import subprocess

import numpy as np
import pandas as pd
import pytest
from conftest import REPO, mlflow_runs, run_cli, snapshot, synthetic_frames
from mlflow.tracking import MlflowClient
from test_bad_input import OLD_SUBMISSION, house, spy_on_fits, submit  # noqa: F401 (house: a fixture)

from pipeline import config, models_io, processes, tracking
from pipeline.metrics import get as get_metric

BAD_LINE = "error: "


@pytest.fixture
def trained(monkeypatch) -> list[str]:
    """Every model fit (k-fold, the portfolio's or tuning's) or refit started."""
    return spy_on_fits(monkeypatch)


def files_but_the_store(folder) -> dict[str, bytes]:
    """``snapshot`` without MLflow's store (loading a model writes a note in its artifacts)."""
    return {name: data for name, data in snapshot(folder).items()
            if not name.startswith("mlartifacts/") and name != "mlflow.db"}


def assert_refused(result, fragments, workdir, before, trained) -> None:
    assert result.code == 2, (result.out, result.err)
    assert len(result.err_lines) == 1 and result.err.startswith(BAD_LINE), result.err
    for fragment in fragments:
        assert fragment in result.err, (fragment, result.err)
    assert trained == []
    assert mlflow_runs() == []
    assert snapshot(workdir) == before
    assert (workdir / "submission.csv").read_bytes() == OLD_SUBMISSION


# --- 1. an output is never an input ------------------------------------------------------------

def _symlink_to_train(work, data):
    (work / "link.csv").symlink_to(data / "train.csv")
    return work / "link.csv"


def _an_image(work, data):
    (data / "images").mkdir()
    (data / "images" / "0001.png").write_bytes(b"\x89PNG")
    return data / "images" / "0001.png"


OUTPUTS = {
    "the test file": (lambda work, data: data / "test.csv", "is the input file"),
    "the train file": (lambda work, data: data / "train.csv", "is the input file"),
    "the sample, by a relative path": (lambda work, data: "data/../data/sample_submission.csv", "is the input file"),
    "a symlink to the train file": (_symlink_to_train, "is the input file"),
    "the config file": (lambda work, data: work / "house-prices-fast.toml", "is the input file"),
    "a file in a subfolder of the data": (_an_image, "is a file of the data folder"),
}


def test_an_output_beside_or_under_the_data_files_is_fine_when_it_is_new(tmp_path):
    from pipeline.data.files import check_not_an_input

    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "submission.csv").write_text("earlier")  # --data-dir . with an earlier submission
    for fine in (data / "submission.csv", data / "images" / "new.csv", tmp_path / "out" / "s.csv"):
        check_not_an_input(fine, [data / "train.csv", data / "test.csv"], [data])


@pytest.mark.parametrize("case", list(OUTPUTS))
def test_submit_never_writes_over_an_input(house, case):  # noqa: F811
    workdir, data, _, config_file, trained = house
    output, fragment = OUTPUTS[case]
    target = output(workdir, data)
    before = snapshot(workdir)
    result = run_cli("submit", "--config", config_file, "--data-dir", data, "--model", "ridge", "-o", target)
    assert_refused(result, ["--output", fragment], workdir, before, trained)


# --- 2. ids as written --------------------------------------------------------------------------

def _padded(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(Id=[f"{i * 1060:06d}" for i in frame["Id"]])


def test_zero_padded_ids_come_back_byte_for_byte(house):  # noqa: F811
    workdir, data, frames, config_file, _ = house
    for name in ("train.csv", "test.csv", "sample_submission.csv"):
        _padded(frames[name]).to_csv(data / name, index=False)
    result, _ = submit(data, config_file)
    assert result.code == 0, result.err
    written = (workdir / "submission.csv").read_text().splitlines()
    sample = (data / "sample_submission.csv").read_text().splitlines()
    assert written[0] == sample[0]
    assert [line.split(",")[0] for line in written[1:]] == [line.split(",")[0] for line in sample[1:]]
    assert written[1].startswith("043460,")  # 41 * 1060, its zero kept


def test_an_empty_id_is_named_by_file_column_and_row(house):  # noqa: F811
    workdir, data, frames, config_file, trained = house
    frames["test.csv"].assign(Id=frames["test.csv"]["Id"].astype(float).mask(lambda s: s.index == 3)).to_csv(
        data / "test.csv", index=False)
    before = snapshot(workdir)
    result, _ = submit(data, config_file)
    assert_refused(result, ["test.csv: column 'Id' is empty at row 5"], workdir, before, trained)


# --- 3. a failed run never clobbers the earlier submission ---------------------------------------

def test_a_name_mlflow_refuses_becomes_a_safe_model_name():
    assert models_io.registered_name("kaggle:comp") == "kaggle-comp"
    assert models_io.registered_name("a/b") == "a-b"
    assert models_io.registered_name("house-prices") == "house-prices"


def test_a_name_with_nothing_usable_is_refused_before_any_work(workdir, trained):
    data = workdir / "data"
    train, test, _ = synthetic_frames("regression")
    write_plain(data, train, test)
    (workdir / "submission.csv").write_bytes(OLD_SUBMISSION)
    before = snapshot(workdir)
    result = run_cli("submit", "-c", "::", "--data-dir", data, "--target", "target", "--id", "id", "--model", "ridge")
    assert_refused(result, ["gives no usable model name"], workdir, before, trained)


def test_a_run_that_fails_at_registration_leaves_the_earlier_submission(house, monkeypatch):  # noqa: F811
    workdir, data, _, config_file, _ = house

    def refuse(*args, **kwargs):
        raise RuntimeError("the registry is down")

    monkeypatch.setattr(tracking, "register_model", refuse)
    result, _ = submit(data, config_file)
    assert result.code == 1 and "the registry is down" in result.err
    assert (workdir / "submission.csv").read_bytes() == OLD_SUBMISSION
    assert sorted(p.name for p in workdir.iterdir() if p.name.startswith(".submission")) == []  # no leftovers


# --- 4. @champion compares like with like ---------------------------------------------------------

def test_a_time_limited_run_on_fewer_folds_does_not_take_champion(house):  # noqa: F811
    """The portfolio never cuts folds to keep time (it fits fewer configurations), so a run on
    fewer folds is one whose CV covered less: it never takes the alias, whatever its score. A
    limit too short for any work stops before the run, champion and submission untouched."""
    workdir, data, _, config_file, _ = house
    full, _ = submit(data, config_file, "--study", "ignore")
    assert full.code == 0, full.err
    before = (workdir / "submission.csv").read_bytes()
    cut, _ = submit(data, config_file, "--study", "ignore", "--time-limit", "0.001")
    assert cut.code == 2 and len(cut.err_lines) == 1 and cut.err.startswith("error: time limit"), cut.err
    assert (workdir / "submission.csv").read_bytes() == before
    client = MlflowClient()
    first = client.get_model_version("house-prices", "1")
    assert client.get_model_version_by_alias("house-prices", models_io.CHAMPION).version == 1
    assert (int(first.tags["folds_run"]), int(first.tags["repeats_run"]), int(first.tags["rows_run"])) == (2, 1, 40)
    assert [r.info.status for r in mlflow_runs()] == ["FINISHED"]  # the short run never started one
    # Even with a better score, a run that covers fewer folds stays behind the champion.
    comp = config.load("house-prices-fast", config_file=config_file)
    with tracking.run(comp.name, "register-again"):
        models_io.register(comp, first.run_id, get_metric("log_rmse"), 0.0,
                           models_io.Coverage(first.tags["folds"], 1, 1, 20))
    assert client.get_model_version_by_alias("house-prices", models_io.CHAMPION).version == 1


def test_champion_moves_to_a_run_that_covers_more_or_scores_better_on_as_much(house):  # noqa: F811
    workdir, data, _, config_file, _ = house
    result, _ = submit(data, config_file, "--study", "ignore")
    assert result.code == 0, result.err
    client = MlflowClient()
    run_id = client.get_model_version("house-prices", "1").run_id
    comp = config.load("house-prices-fast", config_file=config_file)
    full = models_io.Coverage("2-fold, seed 42", 2, 1, 40)

    def champion_after(score: float, coverage: models_io.Coverage) -> str:
        with tracking.run(comp.name, "register-again"):
            models_io.register(comp, run_id, get_metric("log_rmse"), score, coverage)
        return str(client.get_model_version_by_alias("house-prices", models_io.CHAMPION).version)

    assert champion_after(0.0, models_io.Coverage("2-fold, seed 42", 1, 1, 20)) == "1"  # v2 covers less
    assert champion_after(0.0, full) == "3"  # as much, and better
    assert champion_after(1.0, models_io.Coverage("2-fold, seed 42", 2, 3, 40)) == "4"  # more repeats
    assert champion_after(0.0, full) == "4"  # fewer repeats: better, but it stays
    assert champion_after(0.0, models_io.Coverage("3-fold, seed 42", 3, 3, 40)) == "4"  # another split


# --- 5, 6. every check before the MLflow run ------------------------------------------------------

def write_plain(data, train, test, sample=None, target="target"):
    data.mkdir(parents=True, exist_ok=True)
    train.to_csv(data / "train.csv", index=False)
    test.to_csv(data / "test.csv", index=False)
    if sample is None:
        sample = pd.DataFrame({"id": test["id"], target: 0})
    sample.to_csv(data / "sample_submission.csv", index=False)


def _config(text: str):
    def apply(work, data):
        path = work / "plain.toml"
        path.write_text('name = "plain"\ntarget = "target"\nid = "id"\n' + text)
        return ["--config", path]
    return apply


def _frames(task, change=lambda train, test: (train, test), sample=None):
    def frames():
        train, test, _ = synthetic_frames(task)
        return (*change(train, test), sample)
    return frames


def _one_rare_class(train, test):
    return train.assign(target=train["target"].where(train.index != 0, "rare")), test


def _text_in_target(train, test):
    return train.assign(target=train["target"].astype(object).where(train.index != 6, "abc")), test


def _only_ids(train, test):
    return train[["id", "target"]], test[["id"]]


def _below_minus_one(train, test):
    return train.assign(target=train["target"] - 200.0), test


AD_HOC = ["--target", "target", "--id", "id"]
CHECKS = {
    "multiclass log loss with a one-column sample": (
        _frames("multiclass"), ["--metric", "log_loss"], "logistic",
        ["sample_submission.csv", "log_loss scores one probability column per class (3 classes)"]),
    "a class with fewer rows than folds": (
        _frames("multiclass", _one_rare_class), [], "logistic",
        ["train.csv: class 'rare' of 'target' has 1 row, fewer than the 5 folds"]),
    "a classification metric on a regression target": (
        _frames("regression"), ["--metric", "roc_auc"], "ridge",
        ["metric roc_auc is for classification", "'target' is regression"]),
    "a regression metric on a classification target": (
        _frames("multiclass"), ["--metric", "rmse"], "logistic",
        ["metric rmse is for regression", "'target' is multiclass", "--task regression"]),
    "no feature columns left": (
        _frames("regression", _only_ids), [], "ridge", ["train.csv: no feature columns left"]),
    "one text value in a numeric target": (
        _frames("regression", _text_in_target), [], "ridge",
        ["train.csv: column 'target' is numeric except at row 8 (value 'abc')"]),
    "rmsle with negative targets": (
        _frames("regression", _below_minus_one), ["--metric", "rmsle"], "ridge",
        ["train.csv: column 'target' holds", "rmsle needs targets of 0 or more"]),
}
CONFIGS = {
    "[cv] seed = -1": ("[cv]\nseed = -1\n", "[cv] seed must be an integer >= 0, got -1"),
    '[cv] seed = "abc"': ('[cv]\nseed = "abc"\n', "[cv] seed must be an integer >= 0, got 'abc'"),
    'categorical = "colour"': ('[columns]\ncategorical = "colour"\n', "[columns] categorical must be a list of names"),
    "unknown columns in a config list": ('[columns]\ndrop = ["x1", "nope", "gone"]\n',
                                         "[columns] drop names unknown columns 'nope', 'gone' (not in train.csv)"),
    "log1p with targets below -1": ('target_transform = "log1p"\n', "log1p needs targets above -1"),
}


@pytest.mark.parametrize("case", list(CHECKS))
def test_each_check_comes_before_the_run(workdir, trained, case):
    frames, extra, model, fragments = CHECKS[case]
    data = workdir / "data"
    write_plain(data, *frames())
    (workdir / "submission.csv").write_bytes(OLD_SUBMISSION)
    before = snapshot(workdir)
    result = run_cli("submit", "--data-dir", data, *AD_HOC, "--model", model, *extra)
    assert_refused(result, fragments, workdir, before, trained)


@pytest.mark.parametrize("case", list(CONFIGS))
def test_each_config_value_is_checked_before_the_run(workdir, trained, case):
    text, fragment = CONFIGS[case]
    data = workdir / "data"
    train, test, _ = synthetic_frames("regression")
    write_plain(data, train.assign(target=train["target"] - 200.0), test)
    (workdir / "submission.csv").write_bytes(OLD_SUBMISSION)
    args = _config(text)(workdir, data)
    before = snapshot(workdir)
    result = run_cli("submit", *args, "--data-dir", data, "--model", "ridge")
    assert_refused(result, [fragment], workdir, before, trained)


# --- 7, 8. predict and serve: the model submit registered, checked before serving -----------------

@pytest.fixture
def registered(workdir):
    """A folder whose name MLflow refuses as a model name, submitted without a config: (folder, args)."""
    data = workdir / "kaggle:comp"
    train, test, _ = synthetic_frames("regression")
    write_plain(data, train, test, sample=pd.DataFrame({"id": test["id"], "target": 0.0}))
    args = ["--data-dir", data, *AD_HOC]
    result = run_cli("submit", *args, "--model", "ridge", "-o", workdir / "first.csv")
    assert result.code == 0, result.err
    assert "registered model kaggle-comp version 1" in result.out
    return data, args


def test_predict_finds_the_model_submit_registered(registered, workdir):
    data, args = registered
    result = run_cli("predict", *args, "-o", workdir / "again.csv")
    assert result.code == 0, result.err
    assert "models:/kaggle-comp@champion" in result.out
    assert (workdir / "again.csv").read_bytes() == (workdir / "first.csv").read_bytes()


@pytest.mark.parametrize("case", ["input", "folder", "sample"])
def test_predict_refuses_its_input_or_a_folder_before_scoring(registered, workdir, case):
    data, args = registered
    (workdir / "out").mkdir()
    output = {"input": data / "test.csv", "folder": workdir / "out", "sample": data / "sample_submission.csv"}[case]
    extra = ["--input", data / "test.csv"] if case == "input" else []
    before = files_but_the_store(workdir)
    result = run_cli("predict", *args, *extra, "-o", output)
    assert result.code == 2 and len(result.err_lines) == 1 and result.err.startswith(BAD_LINE), result.err
    assert files_but_the_store(workdir) == before


def test_blend_refuses_its_input(registered, workdir):
    data, args = registered
    run_ids = [r.info.run_id for r in mlflow_runs()]
    before = files_but_the_store(workdir)
    result = run_cli("blend", *run_ids, run_ids[0], "--input", data / "test.csv", "-o", data / "test.csv")
    assert result.code == 2 and "is the input file" in result.err and len(result.err_lines) == 1, result.err
    assert files_but_the_store(workdir) == before


@pytest.fixture
def no_exec(monkeypatch):
    def refuse(*args):
        raise AssertionError(f"serve started {args}")

    monkeypatch.setattr(os, "execv", refuse)


def test_serve_checks_the_model_and_the_port_first(registered, no_exec):
    data, args = registered
    unknown = run_cli("serve", "--model", "models:/no-such-model@champion", "--port", "5001")
    assert unknown.code == 2 and unknown.err.startswith("error: no model at models:/no-such-model@champion")
    assert len(unknown.err_lines) == 1
    out_of_range = run_cli("serve", *args, "--port", "99999")
    assert out_of_range.code == 2 and out_of_range.err_lines == ["error: --port 99999: a port is 1-65535"]
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        in_use = run_cli("serve", *args, "--port", port)
    assert in_use.code == 2 and len(in_use.err_lines) == 1 and f"cannot listen on 127.0.0.1:{port}" in in_use.err


# --- 9. the smaller ones ------------------------------------------------------------------------

def test_usage_errors_are_one_line_and_help_shows_the_usage(workdir, capsys):
    from pipeline.cli import main

    assert main(["submit", "--no-such-option"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "--no-such-option" in err
    assert main(["submit", "--study", "default"]) == 2
    assert "invalid choice: 'default'" in capsys.readouterr().err
    assert main(["submit", "--help"]) == 0
    assert "--study {best,ignore}" in capsys.readouterr().out


def test_formula_labels_are_escaped_and_numbers_and_ids_are_not(workdir):
    data = workdir / "data"
    train, test, _ = synthetic_frames("multiclass")
    labels = {"high": "=cmd|' /C calc'!A0", "low": "-1.5", "middle": "@middle"}
    ids = [f"-{i}" for i in test["id"]]  # ids that look like formulas stay as the sample has them
    write_plain(data, train.assign(target=train["target"].map(labels)), test.assign(id=ids),
                sample=pd.DataFrame({"id": ids, "target": "x"}))
    result = run_cli("submit", "--data-dir", data, *AD_HOC, "--model", "logistic", "-o", "submission.csv")
    assert result.code == 0, result.err
    written = pd.read_csv("submission.csv", dtype=str, keep_default_na=False)
    assert written["id"].tolist() == ids
    assert set(written["target"]) <= {"'=cmd|' /C calc'!A0", "-1.5", "'@middle"}
    assert "written with a leading '" in result.out


def test_tune_closes_a_parent_run_left_running_even_with_nothing_to_run(workdir):
    data = workdir / "data"
    train, test, _ = synthetic_frames("regression")
    write_plain(data, train, test)
    args = ["tune", "--data-dir", data, *AD_HOC, "--model", "ridge", "--trials", "1", "--storage", workdir / "j.log"]
    assert run_cli(*args).code == 0
    dead = subprocess.Popen(["true"])
    dead.wait()
    dead_identity = processes.identity().rsplit(":", 2)[0] + f":{dead.pid}:1"
    client = MlflowClient()
    experiment = client.get_experiment_by_name("data").experiment_id
    left = client.create_run(experiment, tags={tracking.PROCESS_TAG: dead_identity}).info.run_id
    again = run_cli(*args)
    assert again.code == 0 and "nothing to run" in again.out
    assert client.get_run(left).info.status == "KILLED"


@pytest.mark.slow
def test_the_makefile_passes_model_parameters_and_the_study_choice():
    made = subprocess.run(["make", "-n", "-f", str(REPO / "Makefile"), "-o", ".venv/.installed", "PY=python",
                           "submit", "PARAMS=alpha=1 max_iter=300", "STUDY=ignore"],
                          capture_output=True, text=True, check=True, cwd=REPO)
    line = next(line for line in made.stdout.splitlines() if "pipeline submit" in line)
    assert "--param alpha=1 --param max_iter=300 --study ignore" in " ".join(shlex.split(line))


def test_ids_of_plain_integers_are_numbers_and_any_other_stay_text(tmp_path):
    from pipeline.data.tabular import ids_are_plain_integers

    frame = lambda *ids: pd.DataFrame({"id": pd.Series(ids, dtype="str")})  # noqa: E731
    assert ids_are_plain_integers([frame("1", "20", "-3"), frame("0")], "id")
    assert not ids_are_plain_integers([frame("1", "20"), frame("007")], "id")
    assert not ids_are_plain_integers([frame("1", "2.0")], "id")
    assert not ids_are_plain_integers([frame("1", "+2")], "id")
    assert not ids_are_plain_integers([frame("1", np.nan)], "id")
