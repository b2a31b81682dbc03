"""Submissions: shaped like the sample, checked, written atomically; NaN never reaches the file."""

from __future__ import annotations

import uuid

import numpy as np
import pandas as pd
import pytest
from conftest import mlflow_runs, registered_model, run_cli, write_house_prices
from sklearn.base import BaseEstimator, RegressorMixin

from pipeline import submission as submit
from pipeline.data.files import write_csv_atomic
from pipeline.errors import UserError

# --- build and finalize -----------------------------------------------------------------------


def test_build_follows_the_sample_order_whatever_the_test_order():
    sample = pd.DataFrame({"Id": [3, 1, 2], "SalePrice": [0.0, 0.0, 0.0]})
    built = submit.build(sample, pd.Series([1, 2, 3]), np.array([10.0, 20.0, 30.0]), "Id", labels=False)
    assert built["Id"].tolist() == [3, 1, 2]
    assert built["SalePrice"].tolist() == [30.0, 10.0, 20.0]


def test_labels_take_the_sample_integer_dtype_and_probabilities_stay_floats():
    sample = pd.DataFrame({"id": [1, 2], "y": [0, 0]})
    labels = submit.build(sample, pd.Series([1, 2]), np.array([1.0, 0.0]), "id", labels=True)
    assert labels["y"].dtype == sample["y"].dtype and labels["y"].tolist() == [1, 0]
    proba = submit.build(sample, pd.Series([1, 2]), np.array([0.75, 0.25]), "id", labels=False)
    assert proba["y"].tolist() == [0.75, 0.25]


def test_build_rejects_a_sample_with_two_targets():
    sample = pd.DataFrame({"id": [1], "a": [0], "b": [0]})
    with pytest.raises(UserError, match="one target column"):
        submit.build(sample, pd.Series([1]), np.array([1.0]), "id", labels=False)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -5.0])
def test_finalize_refuses_bad_predictions_and_keeps_the_old_file(tmp_path, bad):
    path = tmp_path / "submission.csv"
    path.write_bytes(b"Id,SalePrice\n1,100.0\n")
    sample = pd.DataFrame({"Id": [1, 2], "SalePrice": [1.0, 1.0]})
    with pytest.raises(UserError):
        submit.finalize(sample, pd.Series([1, 2]), np.array([100.0, bad]), id_column="Id", positive=True,
                        labels=False, path=path)
    assert path.read_bytes() == b"Id,SalePrice\n1,100.0\n"
    assert [p.name for p in tmp_path.iterdir()] == ["submission.csv"]


# --- atomic write -------------------------------------------------------------------------------


def test_write_atomic_writes_the_frame_and_leaves_no_temp_files(tmp_path):
    frame = pd.DataFrame({"Id": [1, 2], "SalePrice": [1.5, 2.5]})
    path = tmp_path / "nested" / "submission.csv"
    write_csv_atomic(frame, path)
    pd.testing.assert_frame_equal(pd.read_csv(path), frame)
    write_csv_atomic(frame.assign(SalePrice=[7.0, 8.0]), path)  # replaces
    assert pd.read_csv(path)["SalePrice"].tolist() == [7.0, 8.0]
    assert [p.name for p in path.parent.iterdir()] == ["submission.csv"]


class _Explodes:
    """A cell that cannot be written: to_csv fails part way through the file."""

    def __init__(self, error: BaseException):
        self.error = error

    def __str__(self) -> str:
        raise self.error


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_a_failure_mid_write_keeps_the_old_file(tmp_path, error):
    path = tmp_path / "submission.csv"
    old = b"Id,SalePrice\n1,100.0\n"
    path.write_bytes(old)
    n = 300_000  # several of to_csv's chunks are written before the last row fails
    values = np.arange(n, dtype=float).astype(object)
    values[-1] = _Explodes(error)
    frame = pd.DataFrame({"Id": np.arange(n), "SalePrice": values})
    with pytest.raises(type(error)):
        write_csv_atomic(frame, path)
    assert path.read_bytes() == old
    assert [p.name for p in tmp_path.iterdir()] == ["submission.csv"]


# --- a model that yields NaN, through the whole command ---------------------------------------------


class NaNRegressor(RegressorMixin, BaseEstimator):
    """Predicts the training mean, but NaN for rows beyond ``limit`` in some (standardised) feature:
    by default every row."""

    def __init__(self, limit: float = -1.0):
        self.limit = limit

    def fit(self, X, y):
        self.mean_ = float(np.mean(y))
        return self

    def predict(self, X):
        X = np.asarray(X, dtype=float)
        return np.where(np.abs(X).max(axis=1) > self.limit, np.nan, self.mean_)


@pytest.fixture
def nan_model():
    name = f"nan_test_model_{uuid.uuid4().hex[:8]}"
    with registered_model(name, lambda **params: NaNRegressor(**params), tasks=("regression",)):
        yield name


@pytest.fixture
def house(workdir):
    data = write_house_prices(workdir / "data")
    (workdir / "submission.csv").write_bytes(b"Id,SalePrice\n1,123.0\n")
    return workdir, data


def _assert_failed_cleanly(result, workdir, fragment):
    assert result.code == 2
    assert len(result.err_lines) == 1 and fragment in result.err
    assert "Traceback" not in result.err
    assert (workdir / "submission.csv").read_bytes() == b"Id,SalePrice\n1,123.0\n"
    assert [r.info.status for r in mlflow_runs()] == ["FAILED"]
    assert not [p for p in workdir.iterdir() if p.name.startswith(".submission.csv")]


@pytest.mark.slow
@pytest.mark.parametrize("config", ["house-prices", "plain"])
def test_nan_predictions_fail_the_run_and_keep_the_submission(house, nan_model, config):
    workdir, data = house
    # house-prices: log target and log_rmse; plain: no config, raw target and rmse.
    args = [] if config == "house-prices" else ["-c", "plain", "--target", "SalePrice", "--id", "Id"]
    result = run_cli("submit", "--data-dir", data, "--model", nan_model, "-o", "submission.csv", *args)
    _assert_failed_cleanly(result, workdir, "NaN")
    assert nan_model in result.err


@pytest.mark.slow
def test_nan_only_on_test_rows_fails_before_the_file_is_touched(house, nan_model):
    workdir, data = house
    test = pd.read_csv(data / "test.csv")
    test.loc[3, "LotArea"] = 10**9  # far outside anything seen in training
    test.to_csv(data / "test.csv", index=False)
    result = run_cli("submit", "--data-dir", data, "--model", nan_model, "-p", "limit=50",
                     "-c", "plain", "--target", "SalePrice", "--id", "Id", "-o", "submission.csv")
    _assert_failed_cleanly(result, workdir, "test predictions")
