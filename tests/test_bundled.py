"""The bundled Ames data written as the Kaggle House Prices files."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from pipeline.data import bundled
from pipeline.data.bundled import write_bundled_house_prices
from pipeline.errors import UserError

FILES = ["sample_submission.csv", "test.csv", "test_labels.csv", "train.csv"]


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    dest = tmp_path_factory.mktemp("house-prices")
    counts = write_bundled_house_prices(dest, seed=0)
    return dest, counts


def read(dest, name):
    return pd.read_csv(dest / name)


def test_writes_the_four_files_and_nothing_else(written):
    dest, counts = written
    assert sorted(p.name for p in dest.iterdir()) == FILES
    assert counts == {"train": 1465, "test": 1465}
    assert not [p for p in dest.parent.iterdir() if p.name.startswith(f".{dest.name}-")]


def test_split_is_disjoint_and_complete(written):
    dest, counts = written
    train, test = read(dest, "train.csv"), read(dest, "test.csv")
    assert (len(train), len(test)) == (counts["train"], counts["test"])
    assert not set(train["Id"]) & set(test["Id"])
    assert sorted([*train["Id"], *test["Id"]]) == list(range(1, 2931))


def test_columns_are_kaggles(written):
    dest, _ = written
    train, test = read(dest, "train.csv"), read(dest, "test.csv")
    assert len(train.columns) == 81
    assert (train.columns[0], train.columns[-1]) == ("Id", "SalePrice")
    assert list(test.columns) == [c for c in train.columns if c != "SalePrice"]


def test_labels_and_sample_submission_follow_test_ids(written):
    dest, _ = written
    test = read(dest, "test.csv")
    labels, sample = read(dest, "test_labels.csv"), read(dest, "sample_submission.csv")
    assert list(labels.columns) == list(sample.columns) == ["Id", "SalePrice"]
    assert list(labels["Id"]) == list(test["Id"]) == list(sample["Id"])
    assert sample["SalePrice"].nunique() == 1


def test_same_seed_same_files_other_seed_other_split(written, tmp_path):
    dest, _ = written
    write_bundled_house_prices(tmp_path / "again", seed=0)
    for name in FILES:
        assert (tmp_path / "again" / name).read_bytes() == (dest / name).read_bytes()
    write_bundled_house_prices(tmp_path / "other", seed=1)
    assert set(read(tmp_path / "other", "test.csv")["Id"]) != set(read(dest, "test.csv")["Id"])


def test_types_and_values_read_back_like_kaggles(written):
    dest, _ = written
    train = read(dest, "train.csv")
    for column in ["LotArea", "GrLivArea", "SalePrice", "LotFrontage", "GarageYrBlt"]:
        assert pd.api.types.is_numeric_dtype(train[column]), column
    assert pd.api.types.is_string_dtype(train["MSZoning"])
    assert (train["SalePrice"] > 0).all()
    assert not re.search(r"\.0[,\n]", (dest / "train.csv").read_text())  # integers, as Kaggle
    labels = read(dest, "test_labels.csv")
    assert (labels["SalePrice"] > 0).all()
    text = pd.read_csv(dest / "train.csv", dtype=str, keep_default_na=False)
    assert "NA" in set(text["Alley"]) and "None" in set(text["MasVnrType"])


def test_missing_bundled_file_is_a_user_error(monkeypatch, tmp_path):
    monkeypatch.setattr(bundled, "BUNDLED_AMES", tmp_path / "absent.csv.gz")
    with pytest.raises(UserError, match="bundled Ames data not found"):
        write_bundled_house_prices(tmp_path / "out")
