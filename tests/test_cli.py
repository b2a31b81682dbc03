"""The command line end to end: bundled data, Kaggle through a fake client, error reporting."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import (
    FAKE_KEY,
    FAKE_USERNAME,
    KAGGLE_SLUG,
    REPO,
    artifact_names,
    fast_house_prices_config,
    mlflow_runs,
    run_cli,
    snapshot,
)

from pipeline import config, metrics

SLOW_FIXTURES = {"bundled_submit"}  # tests/conftest.py

# --- bundled data, data then submit: one run that the tests below inspect ----------------------


@pytest.fixture(scope="module")
def bundled_submit(module_workdir):
    folder, _ = module_workdir
    data = run_cli("data", "--data-dir", "data")
    cfg = fast_house_prices_config(folder, folds=2)
    submit = run_cli("submit", "--data-dir", "data", "--config", cfg, "--model", "ridge", "-o", "submission.csv")
    runs = mlflow_runs()
    return folder, data, submit, runs


def test_data_then_submit_succeed_quietly(bundled_submit):
    _, data, submit, _ = bundled_submit
    assert (data.code, data.err) == (0, "")
    assert (submit.code, submit.err) == (0, "")
    assert "bundled:ames" in data.out


def test_submission_is_valid(bundled_submit):
    folder, *_ = bundled_submit
    submission = pd.read_csv(folder / "submission.csv")
    test = pd.read_csv(folder / "data" / "test.csv")
    assert list(submission.columns) == ["Id", "SalePrice"]
    assert len(submission) == len(test)
    assert not submission["Id"].duplicated().any()
    assert set(submission["Id"]) == set(test["Id"])
    prices = submission["SalePrice"].to_numpy(dtype=float)
    assert np.isfinite(prices).all() and (prices > 0).all()
    # Prices, not log prices: the target transform was undone.
    assert 30_000 < np.median(prices) < 500_000


def test_prints_source_and_a_local_score_that_matches_the_labels(bundled_submit):
    folder, _, submit, _ = bundled_submit
    assert "data: bundled:ames" in submit.out
    line = next(row for row in submit.out.splitlines() if row.startswith("local test log_rmse:"))
    printed = float(line.split(":")[1].split()[0])
    submission = pd.read_csv(folder / "submission.csv")
    labels = pd.read_csv(folder / "data" / "test_labels.csv")
    joined = submission.merge(labels, on="Id", suffixes=("_pred", ""))
    assert len(joined) == len(submission)
    expected = metrics.get("log_rmse").score(joined["SalePrice"].to_numpy(), joined["SalePrice_pred"].to_numpy())
    assert printed == pytest.approx(expected, abs=1e-5)
    assert expected < 0.3  # a ridge on Ames does far better than a constant (about 0.4)


def test_one_finished_run_with_the_resolved_config_as_params(bundled_submit):
    folder, *_, runs = bundled_submit
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    resolved = config.load("house-prices", config_file=folder / "house-prices-fast.toml")
    params = run.data.params
    for key, value in resolved.as_params().items():
        if key != "model.name":  # the model actually run: --model beats the config's
            assert params[key] == value[:6000], key
    assert params["cv.folds"] == "2" and params["target"] == "SalePrice"
    assert params["model.name"] == "ridge"
    assert (params["task"], params["metric"]) == ("regression", "log_rmse")


def test_run_metrics_are_per_fold_and_overall(bundled_submit):
    folder, _, submit, runs = bundled_submit
    logged = runs[0].data.metrics
    folds = sorted(k for k in logged if k.startswith("fold") and k.endswith("_log_rmse"))
    assert folds == ["fold0_log_rmse", "fold1_log_rmse"]
    assert all(0 < logged[k] < 1 for k in folds)
    # The overall score is the out-of-fold score printed, and recomputes from the logged predictions.
    printed = next(r for r in submit.out.splitlines() if r.startswith("cv log_rmse:"))
    assert logged["cv_log_rmse"] == pytest.approx(float(printed.split()[2]), abs=1e-5)
    import mlflow

    oof = pd.read_csv(mlflow.artifacts.download_artifacts(
        run_id=runs[0].info.run_id, artifact_path="oof_predictions.csv", dst_path=str(folder / "dl")))
    train = pd.read_csv(folder / "data" / "train.csv")
    assert sorted(oof["Id"]) == sorted(train["Id"])
    # The headline covers the rows the config's outliers rule keeps; the figure with them back in has its own name.
    rows = oof.merge(train, on="Id")
    kept = ~((rows["GrLivArea"] > 4000) & (rows["SalePrice"] < 300000))
    assert (~kept).any()
    log_rmse = metrics.get("log_rmse")
    recomputed = log_rmse.score(oof["actual"][kept].to_numpy(), oof["oof_prediction"][kept].to_numpy())
    assert logged["cv_log_rmse"] == pytest.approx(recomputed, rel=1e-9)
    every = log_rmse.score(oof["actual"].to_numpy(), oof["oof_prediction"].to_numpy())
    assert logged["cv_log_rmse_with_outliers"] == pytest.approx(every, rel=1e-9)
    assert min(logged[k] for k in folds) <= logged["cv_log_rmse"] <= max(logged[k] for k in folds)


def test_run_tags(bundled_submit):
    from models.training import pick_device

    *_, runs = bundled_submit
    tags = runs[0].data.tags
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=REPO).stdout.strip()
    assert tags["competition"] == "house-prices"
    assert tags["data_source"] == "bundled:ames"
    assert tags["git_commit"] == (commit or "unknown")
    assert tags["device"] == str(pick_device())


def test_run_artifacts(bundled_submit):
    import mlflow

    folder, *_, runs = bundled_submit
    run = runs[0]
    assert {"oof_predictions.csv", "predicted_vs_actual.png", "submission.csv"} <= artifact_names(run)
    dl = folder / "dl-artifacts"
    logged_submission = mlflow.artifacts.download_artifacts(
        run_id=run.info.run_id, artifact_path="submission.csv", dst_path=str(dl))
    assert open(logged_submission, "rb").read() == (folder / "submission.csv").read_bytes()
    png = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="predicted_vs_actual.png",
                                              dst_path=str(dl))
    assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    # The logged model is the one that made the submission, and takes the test file's raw rows.
    estimator = mlflow.sklearn.load_model(f"runs:/{run.info.run_id}/model")
    test = pd.read_csv(folder / "data" / "test.csv")
    submission = pd.read_csv(folder / "submission.csv").set_index("Id")
    predicted = estimator.predict(test)
    np.testing.assert_allclose(predicted, submission.loc[test["Id"], "SalePrice"].to_numpy(), rtol=1e-9)


# --- errors ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_user_error_is_one_line_and_debug_shows_the_traceback(tmp_path):
    command = [sys.executable, "-m", "pipeline", "data", "-c", "no-such-competition", "--data-dir", "d"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    plain = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60)
    assert plain.returncode == 2
    assert len(plain.stderr.splitlines()) == 1
    assert plain.stderr.startswith("error: ") and "no-such-competition" in plain.stderr
    assert "Traceback" not in plain.stderr
    debug = subprocess.run([*command[:3], "--debug", *command[3:]], capture_output=True, text=True, cwd=tmp_path,
                           env=env, timeout=60)
    assert debug.returncode != 0
    assert "Traceback" in debug.stderr and "UserError" in debug.stderr
    assert list(tmp_path.iterdir()) == []


def test_models_lists_the_registry(workdir):
    result = run_cli("models", "--kind", "tabular")
    assert result.code == 0
    names = {line.split()[0] for line in result.out.splitlines()}
    assert {"ridge", "linear", "mlp", "logistic", "hist_gbm_classifier"} <= names


# --- Kaggle, through the fake client -------------------------------------------------------------


def no_secrets(*texts: str) -> bool:
    return not any(secret in text for text in texts for secret in (FAKE_USERNAME, FAKE_KEY))


def test_data_downloads_from_kaggle_with_credentials(workdir, fake_kaggle, kaggle_credentials):
    result = run_cli("data", "--data-dir", "data/hp")
    assert result.code == 0, result.err
    dest = workdir / "data" / "hp"
    assert (dest / "SOURCE").read_text().strip() == f"kaggle:{KAGGLE_SLUG}"
    assert f"kaggle:{KAGGLE_SLUG}" in result.out
    served = sorted(p.name for p in fake_kaggle.files.iterdir())
    assert sorted(p.name for p in dest.iterdir()) == sorted([*served, "SOURCE"])  # unzipped, zip gone
    for name in served:
        assert (dest / name).read_bytes() == (fake_kaggle.files / name).read_bytes()
    assert sorted(p.name for p in dest.parent.iterdir()) == ["hp"]  # no staging folder left
    [call] = fake_kaggle.calls
    assert call[:2] == ["competitions", "download"] and call[-2:] == ["--", KAGGLE_SLUG]
    assert "-p" in call and "-q" in call
    assert no_secrets(result.out, result.err)


def test_kaggle_json_in_home_counts_as_credentials(workdir, fake_kaggle):
    kaggle_dir = Path.home() / ".kaggle"
    kaggle_dir.mkdir(parents=True)
    (kaggle_dir / "kaggle.json").write_text('{"username": "u", "key": "k"}')
    result = run_cli("data", "--data-dir", "d")
    assert result.code == 0, result.err
    assert (workdir / "d" / "SOURCE").read_text().strip() == f"kaggle:{KAGGLE_SLUG}"


def test_data_without_credentials_writes_the_bundled_data(workdir, fake_kaggle):
    result = run_cli("data", "--data-dir", "d")
    assert result.code == 0, result.err
    assert (workdir / "d" / "SOURCE").read_text().strip() == "bundled:ames"
    assert len(pd.read_csv(workdir / "d" / "train.csv")) == 1465
    assert fake_kaggle.calls == []


def test_failed_download_is_one_line_and_leaves_no_files(workdir, fake_kaggle, kaggle_credentials):
    fake_kaggle.fail("403 - Forbidden: you must accept this competition's rules")
    result = run_cli("data", "--data-dir", "d")
    assert result.code == 2
    assert len(result.err_lines) == 1
    assert "Kaggle download failed" in result.err and "403" in result.err
    assert "Traceback" not in result.err
    assert not (workdir / "d").exists() or list((workdir / "d").iterdir()) == []
    assert no_secrets(result.out, result.err)


def test_kaggle_data_is_not_topped_up_with_bundled_data(workdir, fake_kaggle, kaggle_credentials, monkeypatch):
    assert run_cli("data").code == 0  # the default folder, data/house-prices
    dest = workdir / "data" / "house-prices"
    (dest / "test.csv").unlink()  # incomplete: submit would fill the default folder
    before = snapshot(dest)
    monkeypatch.delenv("KAGGLE_USERNAME")
    monkeypatch.delenv("KAGGLE_KEY")
    result = run_cli("submit", "--model", "ridge")
    assert result.code == 2
    assert len(result.err_lines) == 1 and "refusing to mix" in result.err
    assert snapshot(dest) == before
    assert not (workdir / "submission.csv").exists()
    # and asking for bundled data into it explicitly is refused the same way
    explicit = run_cli("data", "--bundled")
    assert explicit.code == 2 and "refusing to mix" in explicit.err
    assert snapshot(dest) == before


def test_bundled_data_is_not_topped_up_from_kaggle(workdir, fake_kaggle, kaggle_credentials):
    assert run_cli("data", "--data-dir", "d", "--bundled").code == 0
    before = snapshot(workdir / "d")
    result = run_cli("data", "--data-dir", "d")
    assert result.code == 2 and "refusing to mix" in result.err
    assert snapshot(workdir / "d") == before
    assert fake_kaggle.calls == []


@pytest.fixture
def kaggle_data(workdir, fake_kaggle, kaggle_credentials):
    """A folder downloaded through the fake client, and a fast House Prices config."""
    assert run_cli("data", "--data-dir", "d").code == 0
    return workdir / "d", fast_house_prices_config(workdir)


def test_upload_without_credentials_stops_before_any_work(kaggle_data, fake_kaggle, monkeypatch, workdir):
    data_dir, cfg = kaggle_data
    monkeypatch.delenv("KAGGLE_USERNAME")
    monkeypatch.delenv("KAGGLE_KEY")
    result = run_cli("submit", "--data-dir", data_dir, "--config", cfg, "--model", "ridge",
                     "-o", "sub.csv", "--upload")
    assert result.code != 0
    assert len(result.err_lines) == 1
    assert "credentials" in result.err and "Traceback" not in result.err
    assert not (workdir / "sub.csv").exists() and "cv " not in result.out  # nothing trained
    assert mlflow_runs() == []
    assert [c for c in fake_kaggle.calls if c[:2] == ["competitions", "submit"]] == []


@pytest.mark.slow
def test_upload_calls_kaggle_submit_and_never_shows_the_key(kaggle_data, fake_kaggle, workdir):
    data_dir, cfg = kaggle_data
    result = run_cli("submit", "--data-dir", data_dir, "--config", cfg, "--model", "ridge",
                     "-o", "out/sub.csv", "--upload", "-M", "ridge, 2 folds")
    assert result.code == 0, result.err
    [call] = [c for c in fake_kaggle.calls if c[:2] == ["competitions", "submit"]]
    assert call[:3] == ["competitions", "submit", "-f"] and call[-2:] == ["--", KAGGLE_SLUG]
    assert Path(call[3]) == (workdir / "out" / "sub.csv").resolve()
    assert f"uploaded out/sub.csv to {KAGGLE_SLUG}" in result.out
    [run] = mlflow_runs()
    assert call[4] == f"--message=ridge, 2 folds (run {run.info.run_id})"  # the leaderboard finds its run by it
    assert run.info.status == "FINISHED"
    assert run.data.tags["data_source"] == f"kaggle:{KAGGLE_SLUG}"
    assert no_secrets(result.out, result.err, *run.data.params.values(), *run.data.tags.values(),
                      *run.data.params.keys(), *run.data.tags.keys())


@pytest.mark.slow
def test_failed_upload_is_one_line_and_keeps_the_submission(kaggle_data, fake_kaggle, workdir):
    data_dir, cfg = kaggle_data
    fake_kaggle.fail("400 - Bad Request: submission limit reached")
    result = run_cli("submit", "--data-dir", data_dir, "--config", cfg, "--model", "ridge",
                     "-o", "sub.csv", "--upload")
    assert result.code == 2
    assert result.err_lines == ["error: Kaggle upload failed: 400 - Bad Request: submission limit reached"]
    assert len(pd.read_csv(workdir / "sub.csv")) == len(pd.read_csv(data_dir / "test.csv"))
