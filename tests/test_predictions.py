"""Out-of-fold and test predictions by member, fold and repeat: a notebook's blend recomputes the
run's CV from them, and the same seed writes the same bytes."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from conftest import mlflow_runs, run_cli, synthetic_frames, write_competition

from pipeline import metrics
from pipeline import predictions as predictions_io
from pipeline.tasks import configuration


def test_oof_frame_has_a_row_per_held_out_row_and_repeat_and_a_column_per_class():
    ids, actual = pd.Series([7, 8, 9], name="Id"), pd.Series(["a", "b", "a"])
    folds = [np.array([0, 1, -1]), np.array([1, 0, 0])]
    members = {"m": [np.array([0.2, 0.9, 0.0]), np.array([0.3, 0.8, 0.1])]}
    frame = predictions_io.oof_frame(ids, actual, folds, members, classes=["a", "b"])
    assert list(frame.columns) == ["Id", "repeat", "fold", "actual", "m:a", "m:b"]
    assert frame["Id"].tolist() == [7, 8, 7, 8, 9]  # row 9 was never held out in repeat 0
    assert frame["repeat"].tolist() == [0, 0, 1, 1, 1] and frame["fold"].tolist() == [0, 1, 1, 0, 0]
    np.testing.assert_allclose(frame["m:b"], [0.2, 0.9, 0.3, 0.8, 0.1])
    np.testing.assert_allclose(frame["m:a"] + frame["m:b"], 1.0)
    test = predictions_io.test_frame(pd.Series([1, 2], name="Id"), {"m": np.array([[0.4, 0.6], [1.0, 0.0]])},
                                     classes=["a", "b"])
    assert list(test.columns) == ["Id", "m:a", "m:b"]


def _download(run_id: str, name: str, folder: Path) -> Path:
    return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=f"predictions/{name}",
                                                    dst_path=str(folder)))


@pytest.mark.slow
def test_an_ensemble_run_logs_every_member_and_its_blend(workdir):
    train, test, _ = synthetic_frames("regression", n_train=60, n_test=24)
    folder = write_competition(workdir / "comp", train, test)
    result = run_cli("submit", "--data-dir", folder, "--target", "target", "--id", "id", "--repeats", "2",
                     "--output", "submission.csv")
    assert result.code == 0, result.err
    (run,) = [r for r in mlflow_runs() if r.data.tags.get("mlflow.parentRunId") is None]
    oof = pd.read_csv(_download(run.info.run_id, "oof.csv", workdir / "dl"))
    # lightgbm_levels is left out: the table has no category of 51 to 254 levels
    members = [c.name for c in configuration.load("regression") if c.name != "lightgbm_levels"]
    assert list(oof.columns) == ["id", "repeat", "fold", "actual", *members, "portfolio"]
    assert len(oof) == 2 * len(train) and sorted(oof["repeat"].unique()) == [0, 1]
    for _, rows in oof.groupby("repeat"):  # every training row once a repeat, folds 0..4
        assert sorted(rows["id"]) == sorted(train["id"]) and sorted(rows["fold"].unique()) == [0, 1, 2, 3, 4]
    weights = np.array([float(run.data.params[f"weight.{m}"]) for m in members])
    # The blend column is the members' columns under the run's weights: a notebook can redo it.
    np.testing.assert_allclose(oof[members].to_numpy() @ weights, oof["portfolio"], rtol=1e-3)
    rmse = metrics.get("rmse")
    each = [rmse.score(rows["actual"].to_numpy(), rows["portfolio"].to_numpy()) for _, rows in oof.groupby("repeat")]
    assert np.mean(each) == pytest.approx(run.data.metrics["cv_rmse"], rel=0.2)  # the cross-fitted CV is near
    predicted = pd.read_csv(_download(run.info.run_id, "test.csv", workdir / "dl"))
    kept = [m for m, w in zip(members, weights, strict=True) if w > 0]  # the final model's members
    assert kept and list(predicted.columns) == ["id", *kept, *(["portfolio"] if len(kept) > 1 else [])]
    submission = pd.read_csv(workdir / "submission.csv").set_index("id").loc[predicted["id"]]
    blend = predicted["portfolio"] if len(kept) > 1 else predicted[kept[0]]
    np.testing.assert_allclose(blend, submission["target"], rtol=1e-9)


@pytest.mark.slow
def test_a_classifier_logs_probabilities_per_class(workdir):
    train, test, _ = synthetic_frames("multiclass", n_train=90, n_test=24)
    folder = write_competition(workdir / "comp", train, test)
    pd.DataFrame({"id": test["id"], "high": 0.3, "low": 0.3, "middle": 0.4}).to_csv(
        folder / "sample_submission.csv", index=False)  # a probability column per class
    result = run_cli("submit", "--data-dir", folder, "--target", "target", "--id", "id", "--model",
                     "logistic", "--metric", "log_loss", "--output", "submission.csv")
    assert result.code == 0, result.err
    (run,) = mlflow_runs()
    oof = pd.read_csv(_download(run.info.run_id, "oof.csv", workdir / "dl"))
    classes = ["logistic:high", "logistic:low", "logistic:middle"]
    assert list(oof.columns) == ["id", "repeat", "fold", "actual", *classes]
    np.testing.assert_allclose(oof[classes].sum(axis=1), 1.0)
    predicted = pd.read_csv(_download(run.info.run_id, "test.csv", workdir / "dl"))
    assert list(predicted.columns) == ["id", *classes] and len(predicted) == len(test)


@pytest.mark.slow
def test_the_same_seed_writes_byte_identical_submissions_and_prediction_files(workdir):
    train, test, _ = synthetic_frames("binary", n_train=80, n_test=30)
    folder = write_competition(workdir / "comp", train, test)
    for name in ("first.csv", "second.csv"):
        result = run_cli("submit", "--data-dir", folder, "--target", "target", "--id", "id", "--output", name)
        assert result.code == 0, result.err
    assert (workdir / "first.csv").read_bytes() == (workdir / "second.csv").read_bytes()
    first, second = sorted((r for r in mlflow_runs() if r.data.tags.get("mlflow.parentRunId") is None),
                           key=lambda r: r.info.start_time)
    for name in ("oof.csv", "test.csv"):
        one = _download(first.info.run_id, name, workdir / "one").read_bytes()
        other = _download(second.info.run_id, name, workdir / "other").read_bytes()
        assert one == other and len(one) > 1000
