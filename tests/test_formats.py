"""Submission formats: binary probabilities or labels, one probability column per class (named by
the class or by ``<target>_<class>``), ranked labels for MAP@k; a multiclass log-loss run end to end."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import mlflow_runs, run_cli, synthetic_frames
from sklearn.metrics import log_loss

from pipeline import submission as submit
from pipeline.errors import UserError

PROBA = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])


def test_class_columns_named_by_the_class_values_in_the_sample_order():
    sample = pd.DataFrame({"id": [2, 1], "Class_3": 0.0, "Class_1": 0.0, "Class_2": 0.0})
    built = submit.build(sample, pd.Series([1, 2]), PROBA, "id", labels=False,
                         classes=("Class_1", "Class_2", "Class_3"), target="target")
    assert list(built.columns) == ["id", "Class_3", "Class_1", "Class_2"]
    assert built.loc[0].tolist() == [2, 0.6, 0.1, 0.3] and built.loc[1].tolist() == [1, 0.1, 0.7, 0.2]


def test_class_columns_named_target_underscore_class():
    sample = pd.DataFrame({"id": [1, 2], "Status_C": 0.0, "Status_CL": 0.0, "Status_D": 0.0})
    built = submit.build(sample, pd.Series([1, 2]), PROBA, "id", labels=False, classes=("C", "CL", "D"),
                         target="Status")
    assert built[["Status_C", "Status_CL", "Status_D"]].to_numpy().tolist() == PROBA.tolist()


def test_integer_classes_match_their_column_names():
    sample = pd.DataFrame({"id": [1, 2], "Cover_1": 0.0, "Cover_2": 0.0, "Cover_3": 0.0})
    built = submit.build(sample, pd.Series([1, 2]), PROBA, "id", labels=False, classes=(1, 2, 3), target="Cover")
    assert built["Cover_3"].tolist() == [0.1, 0.6]


def test_a_column_that_names_no_class_is_a_user_error():
    sample = pd.DataFrame({"id": [1, 2], "a": 0.0, "b": 0.0, "zzz": 0.0})
    with pytest.raises(UserError, match="'zzz' names no class"):
        submit.build(sample, pd.Series([1, 2]), PROBA, "id", labels=False, classes=("a", "b", "c"), target="y")


def test_ranked_labels_for_map_at_k():
    sample = pd.DataFrame({"id": [1, 2], "y": "a b"})
    built = submit.build(sample, pd.Series([1, 2]), PROBA, "id", labels=False, classes=("a", "b", "c"), top_k=2)
    assert built["y"].tolist() == ["a b", "c b"]


def write_multiclass(folder, columns):
    train, test, truth = synthetic_frames("multiclass", n_train=90, n_test=30)
    folder.mkdir()
    train.to_csv(folder / "train.csv", index=False)
    test.to_csv(folder / "test.csv", index=False)
    pd.DataFrame({"id": test["id"], **{c: 1 / 3 for c in columns}}).to_csv(folder / "sample_submission.csv",
                                                                          index=False)
    return truth


@pytest.mark.parametrize("columns", [["high", "low", "middle"], ["target_middle", "target_high", "target_low"]])
def test_multiclass_log_loss_end_to_end(workdir, columns):
    truth = write_multiclass(workdir / "forest", columns)
    result = run_cli("submit", "--data-dir", workdir / "forest", "--target", "target", "--id", "id",
                     "--model", "logistic", "-o", "submission.csv")
    assert result.code == 0, result.err
    assert "task: multiclass, metric: log_loss (inferred)" in result.out
    submission = pd.read_csv(workdir / "submission.csv")
    assert list(submission.columns) == ["id", *columns]
    p = submission[columns].to_numpy()
    assert np.allclose(p.sum(axis=1), 1.0) and ((p > 0) & (p < 1)).all()
    column_of = {c.removeprefix("target_"): c for c in columns}
    by_class = submission[[column_of[c] for c in sorted(column_of)]].to_numpy()
    assert log_loss(truth, by_class) < 0.8  # chance: log(3) = 1.10
    [run] = mlflow_runs("forest")  # named after its folder
    assert run.data.params["metric"] == "log_loss" and run.data.metrics["cv_log_loss"] < 0.8


def test_sample_columns_that_name_no_class_stop_before_any_work(workdir):
    write_multiclass(workdir / "forest", ["high", "low", "middle", "other"])
    result = run_cli("submit", "--data-dir", workdir / "forest", "--target", "target", "--id", "id", "-o", "s.csv")
    assert result.code != 0 and "other" in result.err
    assert mlflow_runs() == []


def test_map_at_2_end_to_end(workdir):
    train, test, truth = synthetic_frames("multiclass", n_train=90, n_test=30)
    folder = workdir / "ranked"
    folder.mkdir()
    train.to_csv(folder / "train.csv", index=False)
    test.to_csv(folder / "test.csv", index=False)
    pd.DataFrame({"id": test["id"], "target": "low middle"}).to_csv(folder / "sample_submission.csv", index=False)
    result = run_cli("submit", "--data-dir", folder, "--target", "target", "--id", "id", "-m", "logistic",
                     "-o", "submission.csv")
    assert result.code == 0, result.err
    assert "metric: map_at_2 (inferred)" in result.out
    ranked = pd.read_csv(workdir / "submission.csv")["target"].str.split()
    assert ranked.str.len().eq(2).all()
    assert np.mean([t in r for t, r in zip(truth, ranked, strict=True)]) > 0.8
