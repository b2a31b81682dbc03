"""Competition configs: TOML files, ad-hoc competitions from --target/--id, task and metric inference."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from conftest import mlflow_runs, run_cli, synthetic_frames, write_competition

from pipeline import config, metrics
from pipeline.errors import UserError

# --- loading ----------------------------------------------------------------------------------------


def test_house_prices_config_resolves():
    comp = config.load("house-prices")
    assert "house-prices" in config.available()
    assert (comp.target, comp.id, comp.task, comp.metric) == ("SalePrice", "Id", "regression", "log_rmse")
    assert comp.kaggle == "house-prices-advanced-regression-techniques"
    assert comp.target_transform == "log" and comp.bundled == "ames"
    assert comp.categorical == ("MSSubClass", "MoSold")
    assert comp.train_file == "train.csv"


def test_ad_hoc_competition_from_target_and_id():
    comp = config.load("my-comp", target="label", id_column="row_id")
    assert (comp.name, comp.target, comp.id) == ("my-comp", "label", "row_id")
    assert comp.task is None and comp.metric is None  # inferred later
    assert comp.kaggle == "my-comp"  # its name is its Kaggle slug, for downloads and uploads
    assert comp.cv == config.CVConfig()


def test_overrides_replace_fields_and_none_is_ignored():
    comp = config.load("house-prices", task="binary", metric=None)
    assert comp.task == "binary" and comp.metric == "log_rmse"


def test_toml_sections_map_onto_fields(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(
        'name = "c"\ntarget = "y"\nid = "k"\n'
        '[files]\ntrain = "tr.csv"\ntest = "te.csv"\n'
        '[columns]\ncategorical = ["zone"]\ndrop = ["junk"]\n'
        '[cv]\nfolds = 3\nseed = 7\n'
        '[model]\nname = "ridge"\nparams = { alpha = 2.5 }\n'
    )
    comp = config.load("ignored", config_file=path)
    assert comp.name == "c" and (comp.train_file, comp.test_file) == ("tr.csv", "te.csv")
    assert comp.sample_submission_file == "sample_submission.csv"
    assert comp.categorical == ("zone",) and comp.drop == ("junk",)
    assert (comp.cv.folds, comp.cv.seed) == (3, 7)
    assert comp.model == config.ModelConfig("ridge", {"alpha": 2.5})
    with pytest.raises(dataclasses.FrozenInstanceError):
        comp.target = "z"


def test_as_params_flattens_every_setting_to_strings():
    comp = config.load("house-prices")
    params = comp.as_params()
    assert all(isinstance(v, str) for v in params.values())
    assert params["target"] == "SalePrice" and params["cv.folds"] == "5" and params["kind"] == "tabular"
    assert params["features.skew.method"] == "box-cox"
    assert params["categorical"] == str(("MSSubClass", "MoSold"))
    # every field appears, nested tables as dotted keys
    for f in dataclasses.fields(comp):
        assert any(key == f.name or key.startswith(f.name + ".") for key in params), f.name


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('name = "c"\ntarget = "y"\nid = "k"\ncv = 3\n', r"\[cv\] must be a table"),
        ('name = "c"\ntarget = "y"\nid = "k"\n[files]\nvalid = "v.csv"\n', "unknown key 'valid'"),
        ('name = "c"\ntarget = "y"\nid = "k"\n[columns]\nordinal = ["a"]\n', "unknown key 'ordinal'"),
        ('name = "c"\ntarget = "y"\nid = "k"\n[columns]\ninfer = "yes"\n', "infer must be true or false"),
        ('name = "c"\ntarget = "y"\nid = "k"\ntarget_transform = "sqrt"\n', "target_transform"),
        ('name = "c"\ntarget = "y"\nid = "k"\nkind = "audio"\n', "kind 'audio'"),
        ('name = "c"\ntarget = "y"\nid = "k"\n[cv]\nholdout = 1.5\n', "holdout"),
        ('name = "c"\ntarget = 3\nid = "k"\n', "'target' is required and must be a string"),
    ],
)
def test_wrong_configs_are_user_errors(tmp_path, text, message):
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(UserError, match=message):
        config.load("c", config_file=path)


def test_unknown_competition_needs_target_and_id():
    with pytest.raises(UserError, match="--target and --id"):
        config.load("nope", target="y")
    with pytest.raises(UserError, match="house-prices"):  # lists the known ones
        config.load("nope")


# --- inference, as pipeline/metrics.py documents it ----------------------------------------------


@pytest.mark.parametrize(
    ("values", "task"),
    [
        (["a", "b", "a"], "binary"),
        ([0, 1, 1, 0], "binary"),
        ([2.5, 7.5, 2.5], "binary"),
        (["cat", "dog", "emu"], "multiclass"),
        ([1, 2, 3, 4, 5, 6], "multiclass"),
        (list(range(21)), "regression"),
        ([1.5, 2.25, 3.0, 8.0], "regression"),
        ([1.0, 2.0, 3.0, np.nan], "multiclass"),  # integral floats, a missing value ignored
    ],
)
def test_infer_task(values, task):
    assert metrics.infer_task(pd.Series(values)) == task


def test_infer_metric():
    assert metrics.infer_metric("regression", None) == "rmse"
    assert metrics.infer_metric("binary", pd.Series([0.5, 0.5])) == "roc_auc"
    assert metrics.infer_metric("binary", pd.Series([0, 1])) == "accuracy"
    assert metrics.infer_metric("binary", pd.Series(["yes", "no"])) == "accuracy"
    assert metrics.infer_metric("binary", None) == "accuracy"
    assert metrics.infer_metric("multiclass", pd.Series([0.5])) == "accuracy"
    assert set(metrics.METRICS) >= {"log_rmse", "rmse", "accuracy", "roc_auc"}


def test_log_rmse_needs_positive_values():
    assert metrics.get("log_rmse").score(np.array([100.0, 100.0]), np.array([100.0, 100.0])) == 0.0
    assert metrics.get("log_rmse").score(np.array([1.0]), np.array([np.e])) == pytest.approx(1.0)
    with pytest.raises(UserError):
        metrics.get("log_rmse").score(np.array([1.0]), np.array([0.0]))
    with pytest.raises(UserError, match="unknown metric"):
        metrics.get("no_such_metric")


# --- config-free competitions end to end ---------------------------------------------------------


def submit_ad_hoc(workdir, task, *, placeholder, model, extra=()):
    train, test, truth = synthetic_frames(task)
    data = write_competition(workdir / "data", train, test, placeholder=placeholder)
    result = run_cli("submit", "-c", f"synthetic-{task}", "--target", "target", "--id", "id", "--data-dir", data,
                     "--model", model, "-o", "submission.csv", *extra)
    assert result.code == 0, result.err
    text = (workdir / "submission.csv").read_text()
    submission = pd.read_csv(workdir / "submission.csv")
    assert list(submission.columns) == ["id", "target"]
    assert submission["id"].tolist() == test["id"].tolist()
    [run] = mlflow_runs(f"synthetic-{task}")
    assert run.info.status == "FINISHED"
    return result, text, submission, truth, run


def test_binary_with_integer_sample_submits_0_1_integers(workdir):
    result, text, submission, truth, run = submit_ad_hoc(workdir, "binary", placeholder=0, model="logistic")
    assert "task: binary, metric: accuracy" in result.out
    assert (run.data.params["task"], run.data.params["metric"]) == ("binary", "accuracy")
    values = [line.split(",")[1] for line in text.splitlines()[1:]]
    assert set(values) <= {"0", "1"} and len(set(values)) == 2  # integers, not 0.0/1.0 nor probabilities
    assert (submission["target"].to_numpy() == truth).mean() > 0.75
    assert 0.75 < run.data.metrics["cv_accuracy"] <= 1.0


def test_binary_with_probability_sample_submits_probabilities(workdir):
    result, _, submission, truth, run = submit_ad_hoc(workdir, "binary", placeholder=0.5, model="logistic")
    assert "task: binary, metric: roc_auc" in result.out
    p = submission["target"].to_numpy()
    assert ((p >= 0) & (p <= 1)).all() and len(np.unique(p)) > 2
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(truth, p) > 0.85


def test_multiclass_text_target(workdir):
    result, _, submission, truth, run = submit_ad_hoc(workdir, "multiclass", placeholder="middle", model="logistic")
    assert "task: multiclass, metric: accuracy" in result.out
    assert set(submission["target"]) <= {"high", "low", "middle"}
    assert (submission["target"].to_numpy() == truth).mean() > 0.6  # chance is about 0.4


def test_regression_from_target_and_id_only(workdir):
    result, _, submission, truth, run = submit_ad_hoc(workdir, "regression", placeholder=0.0, model="ridge")
    assert "task: regression, metric: rmse" in result.out
    assert "local test" not in result.out  # no held-back labels outside the bundled data
    predictions = submission["target"].to_numpy()
    rmse = np.sqrt(np.mean((predictions - truth) ** 2))
    assert rmse < 0.5 * np.std(truth)  # far better than predicting the mean
    assert run.data.metrics["cv_rmse"] < 0.5 * np.std(truth)


def test_task_and_metric_overrides_beat_inference(workdir):
    result, *_ = submit_ad_hoc(workdir, "binary", placeholder=0, model="ridge", extra=("--task", "regression",
                                                                                        "--metric", "mae"))
    assert "task: regression, metric: mae" in result.out
