"""What a competitor sees (issue 29): the model leaderboard, importances, the out-of-fold figures,
the id and target taken from the sample submission, and progress bars only on a terminal."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import artifact_names, mlflow_runs, run_cli, synthetic_frames, write_competition
from test_portfolio import CLOCK, _portfolio, timed_model  # noqa: F401  (timed_model: a fixture)

from models.time_limit import TimeLimit
from pipeline import model_board, plots
from pipeline.data import sample_columns
from pipeline.tasks import portfolio

FIGURES = {"roc_curve.png", "pr_curve.png", "confusion_matrix.png", "calibration.png"}


# --- the table, from the portfolio's records ---------------------------------------------------

def _board(configs, limit) -> pd.DataFrame:
    outcome = _portfolio(configs, limit).run()
    weights = dict(zip((f.config.name for f in outcome.fitted), outcome.selection.weights, strict=True))
    return model_board.from_portfolio(outcome, weights, 10, final=None, greater_is_better=False).set_index("model")


def test_the_leaderboard_lists_skipped_and_dropped_configurations_with_their_reasons(timed_model):  # noqa: F811
    """As in test_portfolio: ``dear`` is priced past the time left, ``last`` is not started, and
    ``misjudged`` (a second run) cannot finish its folds."""
    configs = tuple(portfolio.Configuration(name, timed_model, {"seconds": 10.0}, cost) for name, cost in
                    [("first", 1.0), ("second", 1.0), ("dear", 5.0), ("cheap", 0.5), ("last", 0.5)])
    CLOCK.now = 1000.0
    board = _board(configs, TimeLimit(100, started=CLOCK.now, clock=CLOCK))
    assert set(board.index[:3]) == {"first", "second", "cheap"} and list(board.index[3:]) == ["dear", "last"]
    assert (board.loc[["first", "second", "cheap"], "status"] == "finished").all()
    assert board.loc["dear", "status"] == "skipped" and board.loc["dear", "reason"] == "about 150 s, 32 s left"
    assert board.loc["last", "status"] == "skipped" and board.loc["last", "reason"] == "not started: 2 s of work left"
    assert board.loc["first", "fit_seconds"] == pytest.approx(30.0)  # three folds of 10 s on the fake clock
    assert board.loc["first", "bags"] == 1 and np.isfinite(board.loc["first", "cv_std"])
    assert board.loc[["first", "second", "cheap"], "weight"].sum() == pytest.approx(1.0)
    assert board.loc[["dear", "last"], "cv_score"].isna().all()

    configs = (portfolio.Configuration("quick", timed_model, {"seconds": 10.0}, 1.0),
               portfolio.Configuration("misjudged", timed_model, {"seconds": 25.0}, 1.0))
    CLOCK.now = 1000.0
    board = _board(configs, TimeLimit(80, started=CLOCK.now, reserve=0.0, clock=CLOCK))
    assert board.loc["misjudged", "status"] == "dropped"
    assert board.loc["misjudged", "reason"] == "after 1 of 3 folds (a fold takes 25 s, 25 s left)"


def test_the_printed_table_has_a_row_per_model_and_blank_cells_for_what_did_not_run():
    rows = [model_board.finished_row("a", 0.5, [0.4, 0.6], 3.0, 0.2, 400, weight=1.0),
            model_board.Row("b", "skipped", reason="about 9 s, 2 s left")]
    text = model_board.render(model_board.table(rows, greater_is_better=True), "auc").splitlines()
    assert text[0].split()[:4] == ["model", "status", "cv", "auc"]
    assert text[1].split() == ["a", "finished", "0.50000", "0.10000", "3.0", "0.500", "1.000", "1"]
    assert text[2].split() == ["b", "skipped", "about", "9", "s,", "2", "s", "left"]


# --- the figures ------------------------------------------------------------------------------

def test_the_display_figures_for_each_kind_of_classifier():
    rng = np.random.default_rng(0)
    actual = rng.choice(["no", "yes"], size=80)
    proba = np.clip((actual == "yes") * 0.6 + rng.random(80) * 0.4, 0, 1)
    assert set(plots.classification_figures(actual, proba, ["no", "yes"], title="t")) == FIGURES
    two_columns = np.column_stack([1 - proba, proba])
    assert set(plots.classification_figures(actual, two_columns, ["no", "yes"], title="t")) == FIGURES
    classes = np.array(["a", "b", "c"])
    actual = rng.choice(classes, size=90)
    proba = rng.dirichlet(np.ones(3), size=90)
    figures = plots.classification_figures(actual, proba, classes, title="t")
    assert set(figures) == {"confusion_matrix.png", "calibration.png"}
    assert figures["confusion_matrix.png"].axes[0].get_xlabel() == "Predicted label"


def test_a_regression_run_logs_predicted_against_actual_and_residuals_and_its_leaderboard(workdir):
    folder = _folder(workdir, task="regression", n_train=60)
    result = run_cli("train", "--data-dir", folder, "--model", "ridge", "--study", "ignore")
    assert result.code == 0, result.err
    (run,) = mlflow_runs("my-table")
    names = artifact_names(run)
    assert {"predicted_vs_actual.png", "residuals.png", "leaderboard.csv"} <= names and not FIGURES & names


def test_the_comparison_chart_zooms_to_the_scores_and_marks_the_final_model_whatever_its_name():
    figure = plots.model_comparison({"lightgbm": 0.127, "ridge": 0.139, "portfolio": 0.125}, "rmse", final="portfolio")
    ax = figure.axes[0]
    low, high = ax.get_xlim()
    assert 0.1 < low < 0.125 and 0.139 < high < 0.16
    colours = {bar.get_y(): bar.get_facecolor() for bar in ax.patches}
    assert len({c for c in colours.values()}) == 2  # one orange bar among the blue ones


# --- a folder is enough -----------------------------------------------------------------------

def _folder(tmp, task="binary", target="target", n_train=120):
    train, test, _ = synthetic_frames(task, n_train=n_train, n_test=30, target=target)
    return write_competition(tmp / "my-table", train, test, target=target)


def test_the_id_and_target_come_from_the_sample_submission(tmp_path):
    folder = _folder(tmp_path)
    assert sample_columns.infer(folder) == ("id", "target")
    assert sample_columns.infer(folder, target="x1") == ("id", "x1")
    (folder / "sample_submission.csv").write_text("id,p_a,p_b\n1,0,0\n")  # class columns: the one train column test lacks
    assert sample_columns.infer(folder) == ("id", "target")
    (folder / "test.csv").unlink()
    assert sample_columns.infer(folder) is None  # not a table's files: left to the other readers


def test_a_column_in_another_case_is_found_and_a_misspelt_one_suggested(workdir):
    folder = _folder(workdir, target="Default")
    result = run_cli("train", "--data-dir", folder, "--target", "default", "--model", "logistic", "--study", "ignore")
    assert result.code == 0, result.err
    assert "target: column 'default' is 'Default' in train.csv" in result.out.splitlines()
    result = run_cli("train", "--data-dir", folder, "--target", "Defualt", "--model", "logistic")
    assert result.code == 2
    assert result.err_lines == ["error: train.csv: missing column 'Defualt' (did you mean 'Default'?)"]


# --- a binary run with only its folder --------------------------------------------------------

@pytest.fixture
def binary_run(workdir):
    folder = _folder(workdir)
    result = run_cli("train", "--data-dir", folder, "--model", "lightgbm_classifier", "--study", "ignore")
    assert result.code == 0, result.err
    (run,) = [r for r in mlflow_runs("my-table") if "mlflow.parentRunId" not in r.data.tags]
    return folder, result, run


def test_a_binary_run_from_its_folder_logs_the_leaderboard_importance_and_figures(binary_run):
    folder, result, run = binary_run
    assert "columns: id 'id' and target 'target' from sample_submission.csv" in result.out
    assert {"leaderboard.csv", "feature_importance.csv", "feature_importance.png", *FIGURES} <= artifact_names(run)
    lines = result.out.rstrip().splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("leaderboard (accuracy):"))
    assert lines[header + 2].split()[:2] == ["lightgbm_classifier", "finished"] and len(lines) == header + 3
    board = model_board.of_run(run.info.run_id)
    assert board.loc[0, "cv_score"] == pytest.approx(run.data.metrics["cv_accuracy"])
    shown = run_cli("model-board", run.info.run_id)
    assert shown.code == 0 and shown.out.splitlines() == [line[2:] for line in lines[header + 1:]]


def test_permutation_importance_is_added_to_a_finished_run(binary_run):
    folder, _, run = binary_run
    # the limit counts from the process start: this one is pytest's
    result = run_cli("importance", run.info.run_id, "--data-dir", folder, "--time-limit", "86400")
    assert result.code == 0, result.err
    # one model: its unshuffled out-of-fold score is the run's CV score
    assert f"out-of-fold accuracy {run.data.metrics['cv_accuracy']:.5f} on 120 rows" in result.out
    from pipeline import tracking

    path = tracking.download_artifact(run.info.run_id, "feature_importance.csv", folder)
    frame = pd.read_csv(path).set_index("feature")
    assert {"permutation", "permutation_std", "gain"} <= set(frame.columns)
    assert frame.loc["x1", "permutation"] > frame.loc["zone", "permutation"]  # x1 carries the signal


# --- progress -----------------------------------------------------------------------------------

def test_progress_bars_only_on_a_terminal_or_when_asked(workdir):
    folder = _folder(workdir, n_train=60)
    quiet = run_cli("train", "--data-dir", folder, "--model", "logistic", "--study", "ignore")
    assert quiet.code == 0 and "configuration 1 of 1" not in quiet.err
    shown = run_cli("train", "--data-dir", folder, "--model", "logistic", "--study", "ignore", "--progress")
    assert shown.code == 0 and "configuration 1 of 1: logistic" in shown.err
    assert quiet.out.count("\n") == shown.out.count("\n")  # the lines are the same either way


# --- clean lines --------------------------------------------------------------------------------

@pytest.mark.slow
def test_a_table_command_line_carries_no_image_only_flags():
    import subprocess

    from conftest import REPO

    def submit_line(*variables: str) -> str:
        made = subprocess.run(["make", "-n", "-f", str(REPO / "Makefile"), "-o", ".venv/.installed", "PY=python",
                               "submit", *variables], capture_output=True, text=True, check=True, cwd=REPO)
        return " ".join(next(line for line in made.stdout.splitlines() if "pipeline submit" in line).split())

    plain = submit_line("DATA_DIR=x")
    assert not any(flag in plain for flag in ("--nproc", "--nnodes", "--node-rank", "--master-port"))
    assert "--nproc '2' --master-port '29600'" in submit_line("NPROC=2", "MASTER_PORT=29600")
