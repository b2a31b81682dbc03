"""The stage loop over a Task: what it fits on which rows, and the order of its checks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import write_house_prices
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.pipeline import Pipeline

from pipeline import config, stages
from pipeline.data import tabular
from pipeline.errors import UserError
from pipeline.tasks import kfold


class RecordFitRows(TransformerMixin, BaseEstimator):
    """A feature step that records the index of the rows each of its fits sees."""

    fits: list[set] = []

    def fit(self, X, y=None):
        RecordFitRows.fits.append(set(X.index))
        return self

    def transform(self, X):
        return X


@pytest.fixture
def recorded(monkeypatch):
    original = kfold.build_features
    RecordFitRows.fits = []

    def recording(comp, encoding="onehot", crafted=()):
        return Pipeline([("record", RecordFitRows()), *original(comp, encoding, crafted).steps])

    monkeypatch.setattr(kfold, "build_features", recording)
    return RecordFitRows.fits


def _houses(workdir, n_train=60):
    return write_house_prices(workdir / "houses", seed=3, n_train=n_train)


def _competition(**extra) -> config.Competition:
    raw = {"name": "tiny-houses", "target": "SalePrice", "id": "Id", "task": "regression", "metric": "rmse",
           "cv": {"folds": 3, "seed": 5}, **extra}
    return config.from_dict(raw, "test")


@pytest.mark.parametrize("model, refit", [("ridge", False), ("ensemble", False), ("ensemble", True),
                                          ("lightgbm", False)])  # lightgbm: the native features
def test_feature_steps_are_fit_on_the_training_fold_only(workdir, recorded, model, refit):
    folder = _houses(workdir)
    comp = _competition(outliers="GrLivArea > 2500", model={"name": model},
                        ensemble={"models": ["ridge", "lasso"], "refit": refit})
    outcome = stages.run(comp, folder, output=workdir / "submission.csv", tuned=False)

    data = tabular.load(comp, folder)
    X, y = data.train.drop(columns=["SalePrice", "Id"]), data.train["SalePrice"]
    outliers = set(X.index[X["GrLivArea"] > 2500])
    assert outliers, "the data must have outlier rows for this test to mean anything"
    expected = [set(X.index[train]) - outliers for train, _ in kfold.splitter(comp, "regression").split(X, y)]
    # One fit per fold (an ensemble's members share it); the fold models are the final model, or
    # with refit, each selected member is fit again on every row but the outliers.
    refits = sum(w > 0 for w in (outcome.weights or {model: 1.0}).values()) if refit else 0
    assert recorded == [*expected, *[set(X.index) - outliers] * refits]


def test_outlier_rows_leave_training_but_not_scoring():
    comp = _competition(outliers="GrLivArea > 2000 and SalePrice < 150000")
    X = pd.DataFrame({"GrLivArea": [1000, 2500, 2500, 3000], "LotArea": [1, 2, 3, 4]})
    y = pd.Series([100000, 140000, 200000, np.nan])
    assert kfold.outlier_mask(comp, X, y).tolist() == [False, True, False, False]
    X_fit, y_fit = kfold.drop_outliers(comp, X, y)
    assert X_fit.index.tolist() == [0, 2, 3] and y_fit.index.tolist() == [0, 2, 3]
    assert not kfold.outlier_mask(_competition(), X, y).any()


def test_an_impossible_upload_stops_every_task_before_any_work(workdir, monkeypatch):
    """The check comes first, for a tabular and an image competition alike."""
    loaded = []
    for name in ("house-prices", "digit-recognizer"):
        comp = config.load(name)
        monkeypatch.setattr(type(stages.for_competition(comp)), "load",
                            lambda self, data_dir: loaded.append(data_dir))
        with pytest.raises(UserError, match="no Kaggle credentials"):
            stages.run(comp, workdir, output=workdir / "s.csv", upload_message="m")
    assert loaded == []
