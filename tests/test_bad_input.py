"""Bad input to ``submit`` on house prices, case by case (issue 15's audit and the ones that held).

Every bad case fails with one line (``error: ...``, exit 2) before any work: no MLflow run, no
training started, nothing in the working folder changed (an earlier submission stays
byte-identical), and within seconds: each case's time to fail is measured, checked and reported
at the end of the module. The formats that Kaggle, spreadsheets and scripts write (a byte-order
mark, CRLF, Latin-1, UTF-16, gzip or zip, semicolons with decimal commas, tabs, test columns in
another order) read as the plain files do and give the same predictions; unseen categories and
empty columns train.

A fast model (ridge) on the real house-prices config with 2 folds keeps it to seconds.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import statistics
import time
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import (
    fast_house_prices_config,
    mlflow_runs,
    run_cli,
    snapshot,
    synthetic_frames,
    tiny_house_prices,
)

from pipeline import config
from pipeline.data import tabular
from pipeline.tasks import kfold

OLD_SUBMISSION = b"Id,SalePrice\n1,123456.0\n"
FILES = ("train.csv", "test.csv", "sample_submission.csv")
TIMINGS: dict[str, float] = {}


def house_frames() -> dict[str, pd.DataFrame]:
    """conftest's tiny House Prices table, with a float column with gaps and a mostly empty text one."""
    frames = {name: frame.copy() for name, frame in tiny_house_prices().items() if frame is not None}
    rng = np.random.default_rng(7)
    for name in ("train.csv", "test.csv"):
        frame = frames[name]
        frontage = rng.normal(70, 15, len(frame)).round(2)
        frame.insert(3, "LotFrontage", np.where(rng.random(len(frame)) < 0.2, np.nan, frontage))
        frame["Alley"] = np.where(rng.random(len(frame)) < 0.2, "Grvl", None)
        frames[name] = frame.reset_index(drop=True)
    frames["sample_submission.csv"] = frames["sample_submission.csv"].reset_index(drop=True)
    return frames


def write(data: Path, frames: dict[str, pd.DataFrame], **to_csv) -> None:
    for name, frame in frames.items():
        frame.to_csv(data / name, index=False, **to_csv)


def cell(frame: pd.DataFrame, column: str, row: int, value) -> pd.DataFrame:
    """``frame`` with one cell replaced; ``row`` counts from 0 (the file's row ``row + 2``)."""
    frame = frame.copy()
    if isinstance(value, str):
        frame[column] = frame[column].astype(object)
    elif isinstance(value, float) and not pd.api.types.is_float_dtype(frame[column]):
        frame[column] = frame[column].astype(float)
    frame.loc[frame.index[row], column] = value
    return frame


def spy_on_fits(monkeypatch) -> list[str]:
    """Every model fit (k-fold, the portfolio's or tuning's) or refit started, by name."""
    started = []
    for name in ("fit_model", "fit_all"):
        real = getattr(kfold, name)

        def spy(*args, _real=real, _name=name, **kwargs):
            started.append(_name)
            return _real(*args, **kwargs)

        monkeypatch.setattr(kfold, name, spy)
    return started


@pytest.fixture
def house(workdir, monkeypatch):
    """(workdir, data folder, frames, config): the files written, an earlier submission beside
    them, and a spy on training: ``trained`` lists every cross-validation or refit started."""
    data = workdir / "data"
    data.mkdir()
    frames = house_frames()
    write(data, frames)
    (workdir / "submission.csv").write_bytes(OLD_SUBMISSION)
    config = fast_house_prices_config(workdir)
    return workdir, data, frames, config, spy_on_fits(monkeypatch)


def submit(data: Path, config: Path | None, *extra) -> tuple[object, float]:
    """``submit`` with ridge into submission.csv, and the seconds it took; ``config`` None: none."""
    started = time.perf_counter()
    config_args = ["--config", config] if config is not None else []
    result = run_cli("submit", *config_args, "--data-dir", data, "--model", "ridge", "-o", "submission.csv", *extra)
    return result, time.perf_counter() - started


# --- the bad cases: each breaks one thing, and names the fragments its error line must hold ------

def _frames_case(name, change):
    """A case that rewrites one file: ``change(frame)`` returns the new frame."""
    def apply(work, data, frames):
        write(data, {name: change(frames[name])})
    return apply


def _bytes_case(name, content):
    def apply(work, data, frames):
        (data / name).write_bytes(content(frames) if callable(content) else content)
    return apply


def _unlink(name):
    def apply(work, data, frames):
        (data / name).unlink()
    return apply


def _no_data_folder(work, data, frames):
    for name in FILES:
        (data / name).unlink()
    data.rmdir()


def _truncated_gzip(frames):
    return gzip.compress(frames["train.csv"].to_csv(index=False).encode())[:200]


def _ragged(frames):
    lines = frames["train.csv"].to_csv(index=False).splitlines()
    lines[4] += ",999"
    return ("\n".join(lines) + "\n").encode()


def _repeated_header(frames):
    train = frames["train.csv"]
    text = train.to_csv(index=False)
    header, rest = text.split("\n", 1)
    return (header.replace("GrLivArea", "LotArea") + "\n" + rest).encode()


def _constant_classes(work, data, frames):
    """A competition without a config (--target/--id), whose target is 1 in every row."""
    train, test, _ = synthetic_frames("binary")
    write(data, {"train.csv": train.assign(target=1), "test.csv": test,
                 "sample_submission.csv": pd.DataFrame({"id": test["id"], "target": 0})})
    return ["-c", "constant-target", "--target", "target", "--id", "id"]


def _output_is_a_folder(work, data, frames):
    (work / "out").mkdir()
    return ["-o", work / "out"]


def _output_under_a_file(work, data, frames):
    return ["-o", work / "submission.csv" / "new.csv"]


def _output_unwritable(work, data, frames):
    if os.geteuid() == 0:  # root writes anywhere its permission bits forbid: sysfs refuses it too
        return ["-o", "/sys/submission.csv"]
    locked = work / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    return ["-o", locked / "submission.csv"]


def _outliers(rule):
    def apply(work, data, frames):
        config = work / "house-prices-fast.toml"
        text = config.read_text()
        old = 'outliers = "GrLivArea > 4000 and SalePrice < 300000"'
        assert old in text
        config.write_text(text.replace(old, f'outliers = "{rule}"'))
    return apply


def _one_row(work, data, frames):
    write(data, {"train.csv": frames["train.csv"].iloc[:1].assign(Alley=np.nan),
                 "test.csv": frames["test.csv"].assign(Alley="Pave")})


BAD = {
    # reading the files
    "missing test file": (_unlink("test.csv"), ["missing file", "test.csv"]),
    "missing sample file": (_unlink("sample_submission.csv"), ["missing file", "sample_submission.csv"]),
    "missing data folder": (_no_data_folder, ["data folder not found"]),
    "zero-byte train": (_bytes_case("train.csv", b""), ["empty file", "train.csv"]),
    "header-only test": (_bytes_case("test.csv", lambda f: (",".join(f["test.csv"].columns) + "\n").encode()),
                         ["empty file", "test.csv", "no rows"]),
    "binary test file": (_bytes_case("test.csv", b"Id,LotArea\n\x00\x01\x02\xff\n"),
                         ["unreadable CSV", "test.csv", "NUL bytes"]),
    "ragged train row": (_bytes_case("train.csv", _ragged), ["unreadable CSV", "train.csv", "line 5"]),
    "truncated gzip train": (_bytes_case("train.csv", _truncated_gzip), ["unreadable CSV", "train.csv", "gzip"]),
    "repeated column name": (_bytes_case("train.csv", _repeated_header),
                             ["train.csv", "column 'LotArea' appears twice in the header"]),
    # columns
    "missing target column": (_frames_case("train.csv", lambda f: f.drop(columns=["SalePrice"])),
                              ["train.csv", "missing column 'SalePrice'"]),
    "missing id in train": (_frames_case("train.csv", lambda f: f.drop(columns=["Id"])),
                            ["train.csv", "missing column 'Id'"]),
    "missing id in test": (_frames_case("test.csv", lambda f: f.drop(columns=["Id"])),
                           ["test.csv", "missing column 'Id'"]),
    "missing id in sample": (_frames_case("sample_submission.csv", lambda f: f.drop(columns=["Id"])),
                             ["sample_submission.csv", "missing column 'Id'"]),
    "test has an extra column": (_frames_case("test.csv", lambda f: f.assign(Colour="red")),
                                 ["test.csv columns differ", "unexpected Colour"]),
    "test lacks a feature": (_frames_case("test.csv", lambda f: f.drop(columns=["LotArea"])),
                             ["test.csv columns differ", "missing LotArea"]),
    "test reordered and lacks a feature": (
        _frames_case("test.csv", lambda f: f[f.columns[::-1]].drop(columns=["GrLivArea"])),
        ["test.csv columns differ", "missing GrLivArea"]),
    # ids
    "duplicate train ids": (_frames_case("train.csv", lambda f: cell(f, "Id", 5, 4)),
                            ["train.csv", "duplicate id 4 in 'Id'"]),
    "duplicate test ids": (_frames_case("test.csv", lambda f: pd.concat([f, f.iloc[[0]]])),
                           ["test.csv", "duplicate id 41"]),
    "duplicate sample ids": (_frames_case("sample_submission.csv", lambda f: pd.concat([f, f.iloc[[2]]])),
                             ["sample_submission.csv", "duplicate id 43"]),
    "sample ids differ from test ids": (_frames_case("sample_submission.csv", lambda f: f.assign(Id=f["Id"] + 1000)),
                                        ["sample_submission.csv", "ids differ"]),
    # the sample's shape
    "sample with two target columns": (_frames_case("sample_submission.csv", lambda f: f.assign(Other=1)),
                                       ["sample_submission.csv", "one target column besides 'Id', has 2",
                                        "SalePrice, Other"]),
    "sample with no target column": (_frames_case("sample_submission.csv", lambda f: f[["Id"]]),
                                     ["sample_submission.csv", "one target column besides 'Id', has 0"]),
    # values
    "text in a numeric test column": (_frames_case("test.csv", lambda f: cell(f, "LotArea", 3, "abc")),
                                      ["test.csv", "column 'LotArea' is numeric but row 5 holds 'abc'"]),
    "text in a numeric train column": (_frames_case("train.csv", lambda f: cell(f, "GrLivArea", 7, "unknown")),
                                       ["train.csv", "column 'GrLivArea' is numeric but row 9 holds 'unknown'"]),
    "inf in a test column": (_frames_case("test.csv", lambda f: cell(f, "LotArea", 3, np.inf)),
                             ["test.csv", "column 'LotArea' holds inf at row 5", "finite"]),
    "-inf in a train column": (_frames_case("train.csv", lambda f: cell(f, "LotFrontage", 10, -np.inf)),
                               ["train.csv", "column 'LotFrontage' holds -inf at row 12", "finite"]),
    "1e308 in a train column": (_frames_case("train.csv", lambda f: cell(f, "LotArea", 2, 1e308)),
                                ["train.csv", "column 'LotArea' holds 1e+308 at row 4", "too large"]),
    "1e400 in a test column": (_bytes_case("test.csv", lambda f: cell(f["test.csv"], "LotFrontage", 6, 12345.678)
                                           .to_csv(index=False).replace("12345.678", "1e400").encode()),
                               ["test.csv", "column 'LotFrontage' holds inf at row 8"]),
    "inf in the target": (_frames_case("train.csv", lambda f: cell(f, "SalePrice", 6, np.inf)),
                          ["train.csv", "column 'SalePrice' holds inf at row 8"]),
    "missing target values": (_frames_case("train.csv", lambda f: cell(f, "SalePrice", 4, np.nan)),
                              ["train.csv", "target 'SalePrice' has missing values (row 6)"]),
    "non-positive prices": (_frames_case("train.csv", lambda f: cell(f, "SalePrice", 2, 0)),
                            ["train.csv", "target 'SalePrice' must be positive"]),
    "text target": (_frames_case("train.csv", lambda f: cell(f, "SalePrice", 3, "expensive")),
                    ["train.csv", "column 'SalePrice' is numeric except at row 5 (value 'expensive')"]),
    "constant target": (_frames_case("train.csv", lambda f: f.assign(SalePrice=1)),
                        ["train.csv: target 'SalePrice' is 1 in every row: nothing to learn"]),
    "constant classification target": (_constant_classes,
                                       ["train.csv: target 'target' is 1 in every row: nothing to learn"]),
    "one-row train": (_one_row, ["train.csv: 1 row, too few for 2-fold cross-validation"]),
    # the output
    "output is a folder": (_output_is_a_folder, ["--output", "out is a folder: name a file in it"]),
    "output under a file": (_output_under_a_file, ["--output", "submission.csv is a file, not a folder"]),
    "output folder unwritable": (_output_unwritable, ["--output", "cannot write in"]),
    # the config's outlier rule
    "outlier rule with bad syntax": (_outliers("GrLivArea >"), ["outliers", "invalid syntax"]),
    "outlier rule on an unknown column": (_outliers("NoSuchColumn > 4000"),
                                          ["outliers", "unknown column 'NoSuchColumn'", "train.csv"]),
    "outlier rule that calls code": (_outliers("__import__('os').getcwd() > 0"),
                                     ["outliers", "function calls are not allowed"]),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line_before_any_work(house, case):
    workdir, data, frames, config, trained = house
    change, fragments = BAD[case]
    extra = change(workdir, data, frames) or []
    before = snapshot(workdir)
    result, seconds = submit(data, None if extra[:1] == ["-c"] else config, *extra)  # -c: no config file
    TIMINGS[case] = seconds
    assert result.code == 2, (result.out, result.err)
    assert len(result.err_lines) == 1 and result.err.startswith("error: "), result.err
    for fragment in fragments:
        assert fragment in result.err, (fragment, result.err)
    assert trained == []  # no fold was fit, no refit started: early, counted rather than timed
    assert mlflow_runs() == []  # found before the MLflow run starts
    assert snapshot(workdir) == before  # nothing written: the earlier submission is byte-identical
    assert (workdir / "submission.csv").read_bytes() == OLD_SUBMISSION


@pytest.fixture(scope="module", autouse=True)
def report_timings(request):
    """At the end of the module: how long the bad cases took to fail."""
    yield
    if not TIMINGS:
        return
    values = sorted(TIMINGS.values())
    slowest = max(TIMINGS, key=TIMINGS.get)
    line = (f"bad input: {len(values)} cases failed in {statistics.median(values):.3f} s (median), "
            f"{values[-1]:.3f} s at most ({slowest})")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
        print(f"\n{line}")


# --- the formats that work: the same predictions as the plain files ------------------------------

def _reordered(data, frames):
    write(data, {"test.csv": frames["test.csv"][frames["test.csv"].columns[::-1]]})


def _bom(data, frames):
    write(data, frames, encoding="utf-8-sig")


def _crlf(data, frames):
    write(data, frames, lineterminator="\r\n")


def _renamed(frames, old, new):
    return {name: frame.replace({"Neighborhood": {old: new}}) if "Neighborhood" in frame else frame
            for name, frame in frames.items()}


def _latin1(data, frames):
    write(data, _renamed(frames, "NAmes", "Nörth Ämes"), encoding="latin-1")


def _utf16_tabs(data, frames):  # Excel's "Unicode text"
    write(data, _renamed(frames, "NAmes", "Nörth Ämes"), encoding="utf-16", sep="\t")


def _gzip(data, frames):
    for name, frame in frames.items():
        (data / name).write_bytes(gzip.compress(frame.to_csv(index=False).encode()))


def _zip(data, frames):
    for name, frame in frames.items():
        with zipfile.ZipFile(data / name, "w") as archive:
            archive.writestr(name, frame.to_csv(index=False))


def _semicolons(data, frames):  # a European spreadsheet: decimal commas
    write(data, frames, sep=";", decimal=",")


def _tabs(data, frames):
    write(data, frames, sep="\t")


SAME = {
    "test columns in another order": _reordered,
    "byte-order mark": _bom,
    "CRLF line ends": _crlf,
    "Latin-1": _latin1,
    "UTF-16 with tabs": _utf16_tabs,
    "gzip": _gzip,
    "zip": _zip,
    "semicolons and decimal commas": _semicolons,
    "tabs": _tabs,
}


@pytest.fixture(scope="module")
def plain_predictions(module_workdir):
    """The submission from the plain files."""
    folder, _ = module_workdir
    data = folder / "data"
    data.mkdir()
    write(data, house_frames())
    result, _ = submit(data, fast_house_prices_config(folder))
    assert result.code == 0, result.err
    return pd.read_csv(folder / "submission.csv")


@pytest.mark.slow
@pytest.mark.parametrize("case", list(SAME))
def test_formats_read_as_the_plain_files(house, plain_predictions, case):
    workdir, data, frames, config, trained = house
    SAME[case](data, frames)
    train = tabular.read_csv(data / "train.csv")
    assert list(train.columns) == list(frames["train.csv"].columns)  # a BOM or a separator: no mangled names
    assert pd.api.types.is_float_dtype(train["LotFrontage"])  # decimal commas included
    result, _ = submit(data, config)
    assert result.code == 0, result.err
    assert "order" not in (result.out + result.err).lower()  # nothing said about the column order
    submission = pd.read_csv(workdir / "submission.csv")
    assert submission["Id"].tolist() == plain_predictions["Id"].tolist()
    np.testing.assert_allclose(submission["SalePrice"], plain_predictions["SalePrice"], rtol=1e-9)
    assert [r.info.status for r in mlflow_runs()] == ["FINISHED"]


TRAINS = {
    "unseen categories in test": lambda f: {"test.csv": f["test.csv"].assign(Neighborhood="Brand New")},
    "a column empty in both files": lambda f: {"train.csv": f["train.csv"].assign(Alley=np.nan),
                                               "test.csv": f["test.csv"].assign(Alley=np.nan)},
    "empty in train, text in test": lambda f: {"train.csv": f["train.csv"].assign(Alley=np.nan),
                                               "test.csv": f["test.csv"].assign(Alley="Pave")},
    "empty in test, numbers in train": lambda f: {"test.csv": f["test.csv"].assign(LotFrontage=np.nan)},
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(TRAINS))
def test_odd_but_valid_columns_train(house, case):
    workdir, data, frames, config, trained = house
    write(data, TRAINS[case](frames))
    result, _ = submit(data, config)
    assert result.code == 0, result.err
    submission = pd.read_csv(workdir / "submission.csv")
    assert submission["Id"].tolist() == frames["sample_submission.csv"]["Id"].tolist()
    assert np.isfinite(submission["SalePrice"]).all() and (submission["SalePrice"] > 0).all()
    assert [r.info.status for r in mlflow_runs()] == ["FINISHED"]


def test_an_empty_train_column_takes_the_type_of_its_test_values(tmp_path):
    frames = house_frames()
    write(tmp_path, {"train.csv": frames["train.csv"].assign(Alley=np.nan),
                     "test.csv": frames["test.csv"].assign(Alley="Pave"),
                     "sample_submission.csv": frames["sample_submission.csv"]})
    data = tabular.load(config.load("house-prices"), tmp_path)
    assert not pd.api.types.is_numeric_dtype(data.train["Alley"])
    assert list(data.test.columns) == [c for c in data.train.columns if c != "SalePrice"]
