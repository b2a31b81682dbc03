"""Column roles (features/roles.py): each role inferred, each encoded, fit on training rows only;
and a competition without a config file, named after its folder, that never reads another's."""

from __future__ import annotations

import pickle
import shlex
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import REPO, mlflow_runs, run_cli
from sklearn.base import clone

from features.roles import ColumnRoles, infer_roles, summary
from pipeline import config

N = 120


def table(seed: int = 0, n: int = N) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    words = np.array(["the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "again", "today"])
    return pd.DataFrame({
        "row": np.arange(5000, 5000 + n),                                       # id: a dense range
        "flat": 7,                                                              # constant
        "case": [f"case-{rng.integers(1e9):09d}-{i}" for i in range(n)],       # unique per row
        "grade": rng.choice([1, 2, 3, 4], size=n),                              # number codes
        "colour": rng.choice(["red", "green", "blue"], size=n),                 # category
        "ticket": [f"T{v}" for v in rng.integers(0, 70, size=n)],              # many levels
        "day": pd.Series(pd.Timestamp("2021-01-01") + pd.to_timedelta(rng.integers(0, 900, n), unit="D"))
                 .dt.strftime("%Y-%m-%d"),                                      # dates
        "stamp": pd.Series(pd.Timestamp("2022-05-01") + pd.to_timedelta(rng.integers(0, 10**6, n), unit="min"))
                   .dt.strftime("%Y-%m-%d %H:%M:%S"),                           # timestamps
        "note": [" ".join(rng.choice(words, size=rng.integers(3, 12))) for _ in range(n)],  # free text
        "size": rng.normal(size=n).round(4),                                    # numbers
        "count": rng.integers(0, 500, size=n),                                  # many integers: numbers
    })


EXPECTED = {"row": "id", "flat": "constant", "case": "row_unique", "grade": "category_code", "colour": "category",
            "ticket": "high_card", "day": "date", "stamp": "date", "note": "text", "size": "numeric",
            "count": "numeric"}


def test_each_role_is_inferred():
    assert infer_roles(table()) == EXPECTED


def test_without_infer_only_columns_one_hot_cannot_handle_change_role():
    roles = infer_roles(table(), infer=False)
    assert roles == {**EXPECTED, "row": "numeric", "flat": "numeric", "grade": "numeric"}


def test_given_roles_win():
    roles = infer_roles(table(), categorical=["count"], numeric=["grade"], drop=["size"], text=["colour"],
                        date=[], high_cardinality=["case"])
    assert (roles["count"], roles["grade"], roles["size"], roles["colour"], roles["case"]) == (
        "category", "numeric", "dropped", "text", "high_card")


def test_summary_is_one_line_naming_each_role():
    line = summary(infer_roles(table()), "Id")
    assert "\n" not in line and line.startswith("id Id; id 1: row; constant (dropped) 1: flat")
    assert "dates 2: day, stamp" in line and "text (length, words, TF-IDF model) 1: note" in line


def test_encoding_of_each_role():
    X, y = table(), np.random.default_rng(1).normal(size=N)
    step = ColumnRoles()
    out = step.fit_transform(X, y)
    assert not {"row", "flat", "case", "ticket", "day", "stamp", "note"} & set(out.columns)
    assert out["grade"].map(type).eq(str).all() and set(out["grade"]) == {"1", "2", "3", "4"}
    assert out["colour"].equals(X["colour"]) and out["size"].equals(X["size"])
    day = pd.to_datetime(X["day"])
    assert out["day_year"].tolist() == day.dt.year.tolist()
    assert out["day_month"].tolist() == day.dt.month.tolist()
    assert out["day_dayofweek"].tolist() == day.dt.dayofweek.tolist()
    assert out["day_days"].tolist() == (day - day.min()).dt.days.tolist()
    assert "day_hour" not in out and out["stamp_hour"].tolist() == pd.to_datetime(X["stamp"]).dt.hour.tolist()
    assert out["note_words"].tolist() == X["note"].str.split().str.len().tolist()
    assert out["note_length"].tolist() == X["note"].str.len().tolist()
    shares = X["ticket"].value_counts(normalize=True)
    assert out["ticket_frequency"].tolist() == pytest.approx(X["ticket"].map(shares).tolist())
    assert "ticket_target" in out
    assert list(step.get_feature_names_out()) == list(out.columns)
    assert out.drop(columns=["grade", "colour"]).dtypes.map(pd.api.types.is_numeric_dtype).all()


def test_target_encoding_is_cross_fitted_on_the_training_rows():
    X = table()
    y = X["ticket"].str[1:].astype(int) % 2 + np.random.default_rng(2).normal(scale=0.1, size=N)
    step = ColumnRoles()
    crossed = step.fit_transform(X, y)["ticket_target"]
    refit = step.transform(X)["ticket_target"]
    assert not np.allclose(crossed, refit)  # a row's own target never encodes it
    binary = ColumnRoles().fit_transform(X, (y > 0.5).astype(int))
    assert binary["ticket_target"].between(0, 1).all()
    classes = ColumnRoles().fit_transform(X, np.where(y > 0.5, "b", "a") + np.where(X["size"] > 0, "x", "y"))
    assert sum(c.endswith("_target") for c in classes.columns) == 4  # one per class for several classes


def test_learned_from_the_fit_rows_only():
    train, test = table(0), table(1)
    step = ColumnRoles().fit(train, np.zeros(N))
    out = step.transform(test)
    start = pd.to_datetime(train["day"]).min()
    assert out["day_days"].tolist() == (pd.to_datetime(test["day"]) - start).dt.days.tolist()
    unseen = ~test["ticket"].isin(train["ticket"])
    assert (out.loc[unseen, "ticket_frequency"] == 0).all()
    assert list(out.columns) == list(step.get_feature_names_out())


def test_clones_pickles_and_passes_plain_frames_through():
    X, y = table(), np.zeros(N)
    step = ColumnRoles(infer=False, max_onehot=40)
    assert clone(step).get_params() == step.get_params()
    fitted = pickle.loads(pickle.dumps(step.fit(X, y)))
    assert fitted.transform(X).equals(step.transform(X))
    plain = X[["colour", "size", "count", "grade"]]
    assert ColumnRoles(infer=False).fit(plain).transform(plain) is plain  # house prices: nothing changes


# --- a competition from its files alone --------------------------------------------------------


def titanic_like(folder: Path, n_train: int = 150, n_test: int = 50) -> None:
    rng = np.random.default_rng(3)
    n = n_train + n_test
    sex = rng.choice(["male", "female"], size=n)
    pclass = rng.choice([1, 2, 3], size=n)
    titles = np.where(sex == "male", "Mr.", "Mrs.")
    frame = pd.DataFrame({
        "PassengerId": np.arange(1, n + 1),
        "Pclass": pclass,
        "Name": [f"Surname{i}, {t} Given{i % 17} Middle" for i, t in enumerate(titles)],
        "Sex": sex,
        "Age": np.where(rng.random(n) < 0.2, np.nan, rng.uniform(1, 70, n).round()),
        "Ticket": [f"PC {v}" for v in rng.integers(0, 90, size=n)],
        "Embarked": rng.choice(["S", "C", "Q"], size=n),
    })
    survived = ((sex == "female") & (pclass < 3) | (rng.random(n) < 0.15)).astype(int)
    folder.mkdir(parents=True)
    frame.iloc[:n_train].assign(Survived=survived[:n_train]).to_csv(folder / "train.csv", index=False)
    frame.iloc[n_train:].to_csv(folder / "test.csv", index=False)
    pd.DataFrame({"PassengerId": frame["PassengerId"][n_train:], "Survived": 0}).to_csv(
        folder / "sample_submission.csv", index=False)


def test_competition_name_never_borrows_a_config():
    assert config.competition_name(None, data_dir=Path("files/titanic"), columns_given=True) == "titanic"
    assert config.competition_name(None, data_dir=Path("k/digit-recognizer")) == "digit-recognizer"  # has a config
    assert config.competition_name(None, data_dir=Path("files/titanic")) == "house-prices"  # as before
    assert config.competition_name("spaceship", data_dir=Path("files/titanic")) == "spaceship"
    assert config.competition_name(None, config_file=Path("x/my-comp.toml")) == "my-comp"
    assert config.competition_name(None) == "house-prices"  # `make submit`: the bundled run


@pytest.mark.slow
def test_a_competition_without_config_runs_from_its_files(workdir):
    titanic_like(workdir / "titanic")
    result = run_cli("submit", "--data-dir", workdir / "titanic", "--target", "Survived", "--id", "PassengerId",
                     "-o", "submission.csv")
    assert result.code == 0, result.err  # not house prices' "must be positive for the log transform"
    assert "task: binary, metric: accuracy (inferred)" in result.out
    [roles] = [line for line in result.out.splitlines() if line.startswith("columns: ")]
    assert "id PassengerId" in roles and "number codes (one-hot) 1: Pclass" in roles
    assert "text (length, words, TF-IDF model) 1: Name" in roles and "many levels (frequency + target encoding) 1: Ticket" in roles
    [run] = [r for r in mlflow_runs("titanic") if "mlflow.parentRunId" not in r.data.tags]  # the default ensemble's
    assert mlflow_runs("house-prices") == []
    assert run.data.params["columns.roles"] == roles.removeprefix("columns: ")
    assert run.data.params["infer_roles"] == "True" and run.data.params["target_transform"] == "None"
    submission = pd.read_csv(workdir / "submission.csv")
    assert set(submission["Survived"]) <= {0, 1} and run.data.metrics["cv_accuracy"] > 0.7


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_passes_target_id_and_metric_and_keeps_the_default_run():
    def dry(*args):
        return subprocess.run(["make", "-n", "-s", "submit", *args], cwd=REPO, capture_output=True, text=True,
                              env={"PATH": "/usr/bin:/bin", "VENV": ".venv"}).stdout
    line = " ".join(shlex.split(dry("DATA_DIR=d/titanic", "TARGET=Survived", "ID=PassengerId", "METRIC=f1")))
    assert "--data-dir d/titanic --target Survived --id PassengerId --metric f1" in line
    assert "--competition" not in line
    plain = dry()
    assert "--competition" not in plain and "--target" not in plain  # the CLI's default: house prices
    assert "--competition digit-recognizer" in " ".join(shlex.split(dry("COMPETITION=digit-recognizer")))


def test_config_names_roles_and_infer(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('name = "c"\ntarget = "y"\nid = "k"\n[columns]\ntext = ["Name"]\ndate = ["When"]\n'
                    'high_cardinality = ["Ticket"]\ninfer = true\n')
    comp = config.load("c", config_file=path)
    assert (comp.text, comp.date, comp.high_cardinality, comp.infer_roles) == (("Name",), ("When",), ("Ticket",), True)
    assert config.load("house-prices").infer_roles is False  # a config keeps its own features
    assert config.load("new-one", target="y", id_column="k").infer_roles is True
