"""Bad input: exit code 2, one line on stderr naming the problem, no traceback, nothing written."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import mlflow_runs, run_cli, snapshot, tiny_house_prices

from pipeline import submission
from pipeline.data import tabular as validate
from pipeline.errors import UserError

OLD_SUBMISSION = b"Id,SalePrice\n1,123456.0\n"


@pytest.fixture
def house(workdir):
    """A tiny House Prices folder (the real config applies) and an earlier submission file."""
    frames = {name: frame for name, frame in tiny_house_prices().items() if frame is not None}
    data = workdir / "data"
    data.mkdir()
    for name, frame in frames.items():
        frame.to_csv(data / name, index=False)
    (workdir / "submission.csv").write_bytes(OLD_SUBMISSION)
    return workdir, data, frames


def rewrite(data, name, frame):
    frame.to_csv(data / name, index=False)


def with_text(frame, column, row, text):
    frame = frame.copy()
    frame[column] = frame[column].astype(object)
    frame.loc[frame.index[row], column] = text
    return frame


def break_files(case, data, frames):
    train, test, sample = frames["train.csv"], frames["test.csv"], frames["sample_submission.csv"]
    if case == "missing test file":
        (data / "test.csv").unlink()
    elif case == "missing target column":
        rewrite(data, "train.csv", train.drop(columns=["SalePrice"]))
    elif case == "missing id column in train":
        rewrite(data, "train.csv", train.drop(columns=["Id"]))
    elif case == "missing id column in test":
        rewrite(data, "test.csv", test.drop(columns=["Id"]))
    elif case == "missing id column in sample":
        rewrite(data, "sample_submission.csv", sample.drop(columns=["Id"]))
    elif case == "test has an extra column":
        rewrite(data, "test.csv", test.assign(Colour="red"))
    elif case == "test lacks a feature":
        rewrite(data, "test.csv", test.drop(columns=["LotArea"]))
    elif case == "duplicate train ids":
        rewrite(data, "train.csv", train.assign(Id=train["Id"].where(train.index != 5, train["Id"].iloc[3])))
    elif case == "duplicate test ids":
        rewrite(data, "test.csv", pd.concat([test, test.iloc[[0]]]))
    elif case == "header-only test":
        (data / "test.csv").write_text(",".join(test.columns) + "\n")
    elif case == "zero-byte train":
        (data / "train.csv").write_bytes(b"")
    elif case == "text in a numeric test column":
        rewrite(data, "test.csv", with_text(test, "LotArea", 3, "abc"))
    elif case == "text in a numeric train column":
        rewrite(data, "train.csv", with_text(train, "GrLivArea", 7, "unknown"))
    elif case == "missing target values":
        rewrite(data, "train.csv", train.assign(SalePrice=train["SalePrice"].where(train.index != 4)))
    elif case == "non-positive prices":
        rewrite(data, "train.csv", train.assign(SalePrice=train["SalePrice"].where(train.index != 2, 0)))
    elif case == "sample ids differ from test ids":
        rewrite(data, "sample_submission.csv", sample.assign(Id=sample["Id"] + 1000))
    else:
        raise ValueError(case)


CASES = {
    "missing test file": ["missing file", "test.csv"],
    "missing target column": ["train.csv", "missing column 'SalePrice'"],
    "missing id column in train": ["train.csv", "missing column 'Id'"],
    "missing id column in test": ["test.csv", "missing column 'Id'"],
    "missing id column in sample": ["sample_submission.csv", "missing column 'Id'"],
    "test has an extra column": ["test.csv", "columns differ", "unexpected Colour"],
    "test lacks a feature": ["test.csv", "columns differ", "missing LotArea"],
    "duplicate train ids": ["train.csv", "duplicate id 4"],
    "duplicate test ids": ["test.csv", "duplicate id 41"],
    "header-only test": ["empty file", "test.csv"],
    "zero-byte train": ["empty file", "train.csv"],
    "text in a numeric test column": ["test.csv", "'LotArea'", "row 5", "'abc'"],
    "text in a numeric train column": ["train.csv", "'GrLivArea'", "row 9", "'unknown'"],
    "missing target values": ["train.csv", "'SalePrice'", "missing values", "row 6"],
    "non-positive prices": ["train.csv", "positive"],
    "sample ids differ from test ids": ["sample_submission.csv", "ids differ"],
}


def assert_one_line_error(result, fragments):
    assert result.code == 2, (result.out, result.err)
    assert len(result.err_lines) == 1, result.err
    assert result.err.startswith("error: ")
    assert "Traceback" not in result.err
    for fragment in fragments:
        assert fragment in result.err


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_fails_cleanly_and_writes_nothing(house, case):
    workdir, data, frames = house
    break_files(case, data, frames)
    before = snapshot(workdir)
    result = run_cli("submit", "--data-dir", data, "--model", "ridge", "-o", "submission.csv")
    assert_one_line_error(result, CASES[case])
    assert snapshot(workdir) == before
    assert (workdir / "submission.csv").read_bytes() == OLD_SUBMISSION
    assert mlflow_runs() == []


def write_toml(folder, text):
    path = folder / "bad.toml"
    path.write_text(text)
    return path


HEAD = 'name = "house-prices"\ntarget = "SalePrice"\nid = "Id"\n'
BAD_ARGS = {
    "unknown model": (lambda w: ["--model", "no_such_model"], ["unknown model 'no_such_model'", "ridge"]),
    "model for another task": (lambda w: ["--model", "logistic"], ["'logistic'", "does not do regression"]),
    "unknown competition": (lambda w: ["-c", "no-such-comp"], ["no config for competition 'no-such-comp'",
                                                               "--target and --id"]),
    "target without id": (lambda w: ["-c", "no-such-comp", "--target", "SalePrice"], ["--target and --id"]),
    "missing config file": (lambda w: ["--config", w / "nope.toml"], ["config file not found", "nope.toml"]),
    "unknown top-level key": (lambda w: ["--config", write_toml(w, HEAD + 'colour = "red"\n')],
                              ["bad.toml", "unknown key 'colour'"]),
    "unknown [cv] key": (lambda w: ["--config", write_toml(w, HEAD + "[cv]\nfold = 3\n")],
                         ["bad.toml [cv]", "unknown key 'fold'"]),
    "bad task": (lambda w: ["--config", write_toml(w, HEAD + 'task = "ranking"\n')],
                 ["task 'ranking'", "regression"]),
    "one fold": (lambda w: ["--config", write_toml(w, HEAD + "[cv]\nfolds = 1\n")], ["folds", ">= 2"]),
    "no target": (lambda w: ["--config", write_toml(w, 'name = "x"\nid = "Id"\n')], ["'target' is required"]),
    "invalid TOML": (lambda w: ["--config", write_toml(w, HEAD + "[cv\n")], ["bad.toml", "invalid TOML"]),
    "unknown [features] step": (lambda w: ["--config", write_toml(w, HEAD + "[features.bogus]\nx = 1\n")],
                                ["bad.toml [features]", "bogus"]),
    "bad [features] value": (lambda w: ["--config", write_toml(w, HEAD + '[features.skew]\nmethod = "boxcox"\n')],
                             ["bad.toml [features]", "method", "'boxcox'"]),
    "unknown metric": (lambda w: ["--metric", "gini_score"], ["unknown metric 'gini_score'"]),
}


@pytest.mark.parametrize("case", list(BAD_ARGS))
def test_bad_options_and_configs_fail_cleanly_and_write_nothing(house, case):
    workdir, data, _ = house
    extra, fragments = BAD_ARGS[case]
    args = extra(workdir)
    before = snapshot(workdir)
    result = run_cli("submit", "--data-dir", data, "-o", "submission.csv", *args)
    assert_one_line_error(result, fragments)
    assert snapshot(workdir) == before
    assert mlflow_runs() == []


@pytest.mark.parametrize("param, fragments", [("no_such_param=1", ["'ridge'", "no_such_param"]),
                                               ("alpha=-1", ["'ridge'", "alpha", "-1", "command line"])])
def test_bad_model_parameter_stops_before_the_run_and_keeps_the_submission(house, param, fragments):
    workdir, data, _ = house
    result = run_cli("submit", "--data-dir", data, "--model", "ridge", "-p", param, "-o", "submission.csv")
    assert_one_line_error(result, fragments)
    assert (workdir / "submission.csv").read_bytes() == OLD_SUBMISSION
    assert mlflow_runs() == []  # checked in the plan, before any MLflow run


def test_with_debug_the_error_raises(house):
    workdir, data, _ = house
    (data / "test.csv").unlink()
    with pytest.raises(UserError, match="missing file"):
        run_cli("--debug", "submit", "--data-dir", data, "--model", "ridge")


# --- the checks themselves ------------------------------------------------------------------


def frames_for(test_lot_area):
    train = pd.DataFrame({"Id": [1, 2, 3], "LotArea": [100, 200, 300], "Street": ["Pave", "Grvl", "Pave"],
                          "y": [1.0, 2.0, 3.0]})
    test = pd.DataFrame({"Id": [4, 5], "LotArea": test_lot_area, "Street": ["Pave", None]})
    return train, test, test[["Id"]].assign(y=0.0)


def check(train, test, sample, **kwargs):
    validate.check_frames(train, test, sample, target="y", id_column="Id",
                          files=("train.csv", "test.csv", "sample.csv"), **kwargs)


def test_text_columns_and_missing_numbers_are_fine():
    check(*frames_for([np.nan, 250.0]))


def test_numbers_read_as_text_are_fine_when_they_all_parse():
    check(*frames_for(["150", "250"]))


def test_categorical_override_skips_the_numeric_check():
    train, test, sample = frames_for(["small", "250"])
    with pytest.raises(UserError, match="'small'"):
        check(train, test, sample)
    check(train, test, sample, categorical=("LotArea",))


def test_mostly_numeric_train_column_with_junk_is_flagged():
    train = pd.DataFrame({"Id": range(20), "x": [str(i) for i in range(19)] + ["oops"], "y": range(20)})
    test = pd.DataFrame({"Id": [100], "x": ["3"]})
    with pytest.raises(UserError, match=r"train.csv: column 'x' is numeric but row 21 holds 'oops'"):
        check(train, test, test.assign(y=0))


def test_read_csv_rejects_unreadable_bytes(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_bytes(b"a,b\n\xff\xfe\x00,1\n")
    with pytest.raises(UserError, match="bad.csv"):
        validate.read_csv(path)


def test_check_submission_rejects_what_kaggle_would():
    sample = pd.DataFrame({"Id": [1, 2, 3], "SalePrice": [0.5, 0.5, 0.5]})
    good = pd.DataFrame({"Id": [3, 1, 2], "SalePrice": [1.0, 2.0, 3.0]})
    submission.check_submission(good, sample, id_column="Id", positive=True)
    # Each bad frame breaks one rule only, and must be refused by that rule (its message): a case
    # refused by another check would hide that its own check is gone.
    ids = "ids are not exactly the sample's ids"
    bad = {
        "header": (good.rename(columns={"SalePrice": "price"}), "header"),
        "rows": (good.iloc[:2], "has 2 rows"),
        "repeated id": (good.assign(Id=[1, 1, 2]), ids),
        "other ids": (good.assign(Id=[3, 1, 4]), ids),  # each once, as many as the sample's: not its set
        "NaN": (good.assign(SalePrice=[1.0, np.nan, 3.0]), "NaN or infinite"),
        "inf": (good.assign(SalePrice=[1.0, np.inf, 3.0]), "NaN or infinite"),
        "non-positive": (good.assign(SalePrice=[1.0, 0.0, 3.0]), "non-positive"),
    }
    for what, (frame, message) in bad.items():
        with pytest.raises(UserError, match=message):
            submission.check_submission(frame, sample, id_column="Id", positive=True)
        if what != "non-positive":
            with pytest.raises(UserError, match=message):
                submission.check_submission(frame, sample, id_column="Id", positive=False)
    submission.check_submission(bad["non-positive"][0], sample, id_column="Id", positive=False)
