"""Each boosting library's run: its MLflow model, loaded back with pyfunc, gives the submission."""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
import pytest
from conftest import run_cli, synthetic_frames, write_competition


@pytest.mark.parametrize("model, task, placeholder", [
    ("lightgbm", "regression", 0.0),
    ("xgboost_classifier", "binary", 0.5),  # roc_auc: probabilities
    ("catboost_classifier", "multiclass", 0),  # text labels
])
def test_the_logged_booster_scores_raw_test_rows_as_the_submission(workdir, monkeypatch, model, task, placeholder):
    monkeypatch.setenv("KP_THREADS", "1")
    train, test, _ = synthetic_frames(task, n_train=80)
    data = write_competition(workdir / "data", train, test, placeholder=placeholder)
    name = f"trees-{task}"
    result = run_cli("submit", "-c", name, "--target", "target", "--id", "id", "--data-dir", data,
                     "--model", model, "-p", "max_iter=30", "-o", workdir / "submission.csv")
    assert result.code == 0, result.err
    fitted = mlflow.sklearn.load_model(f"models:/{name}@champion")
    ensemble = fitted.steps[-1][1]  # SelectColumns, then the fold models (models.ensemble.FoldBag) averaged
    for fold_model in ensemble.members[0][1].estimators:
        assert type(fold_model.steps[-2][1]).__name__ == "NativePreprocessor"
    predicted = np.asarray(mlflow.pyfunc.load_model(f"models:/{name}@champion").predict(pd.read_csv(data / "test.csv")))
    written = pd.read_csv(workdir / "submission.csv").set_index("id")["target"].loc[test["id"]].to_numpy()
    if task == "multiclass":
        np.testing.assert_array_equal(predicted, written)
    else:
        np.testing.assert_allclose(predicted[:, 1] if predicted.ndim == 2 else predicted, written, rtol=1e-9)
