"""What keeps a 300k-row table within memory (bench/scale.py measures it): the test file read with
the training file's types, the one-hot width budget of the column roles, the preprocessor
writing a float32 matrix in row chunks (the same as in one piece, without full-size copies), and
prediction in chunks equal to prediction in one piece."""

from __future__ import annotations

import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from features import tabular as tabular_features
from features.roles import MAX_ONEHOT_CELLS, MAX_ONEHOT_WIDTH, ColumnRoles, infer_roles, summary
from features.tabular import TabularPreprocessor, _as_category_text
from models import registry
from pipeline import config
from pipeline.data import csvfiles, tabular
from pipeline.errors import UserError
from pipeline.metrics import get as get_metric
from pipeline.tasks import kfold

# --- the test file is read with the training file's types -------------------------------------


def write(folder: Path, train: pd.DataFrame, test: pd.DataFrame, sample: pd.DataFrame | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    train.to_csv(folder / "train.csv", index=False)
    test.to_csv(folder / "test.csv", index=False)
    (sample if sample is not None else pd.DataFrame({"key": test["key"], "y": 0.0})).to_csv(
        folder / "sample_submission.csv", index=False)
    return folder


def frames(n: int = 40):
    rng = np.random.default_rng(0)
    train = pd.DataFrame({"key": np.arange(n), "code": rng.choice(["A1", "B2", "007"], n),
                          "size": rng.normal(size=n).round(3), "rooms": rng.integers(1, 6, n),
                          "y": rng.normal(size=n)})
    # Test: codes that all look like numbers, sizes that happen to be whole, rooms with a gap.
    test = pd.DataFrame({"key": np.arange(n, n + 6), "code": ["007", "12", "007", "12", "3", "3"],
                         "size": [1, 2, 3, 4, 5, 6], "rooms": [1, 2, None, 4, 5, 1]})
    return train, test


def competition():
    return config.load("scale-test", target="y", id_column="key")


def test_test_file_is_read_with_the_training_types(tmp_path):
    data = tabular.load(competition(), write(tmp_path / "d", *frames()))
    test = data.test
    assert test["code"].dtype == data.train["code"].dtype == "str"
    assert test["code"].tolist() == ["007", "12", "007", "12", "3", "3"]  # the zeros kept
    assert test["size"].dtype == "float64" and data.train["size"].dtype == "float64"
    assert pd.api.types.is_numeric_dtype(test["rooms"])  # whole numbers with a gap: floats, still numbers
    assert tabular.types_for_test_file(data.train, "y") == {"code": "str", "size": "float64"}


def test_text_ids_stay_text_in_test_and_sample(tmp_path):
    train, test = frames()
    train["key"] = [f"{i:04d}x" for i in range(len(train))]
    test["key"] = ["0100", "0101", "0102", "0103", "0104", "0105"]
    sample = pd.DataFrame({"key": test["key"], "y": 0.0})
    data = tabular.load(competition(), write(tmp_path / "d", train, test, sample))
    assert data.test["key"].tolist() == data.sample["key"].tolist() == test["key"].tolist()


def test_text_in_a_numeric_test_column_is_still_named_by_row(tmp_path):
    train, test = frames()
    test["size"] = test["size"].astype(object)
    test.loc[3, "size"] = "big"
    with pytest.raises(UserError, match=r"test.csv: column 'size' is numeric but row 5 holds 'big'"):
        tabular.load(competition(), write(tmp_path / "d", train, test))


def test_types_and_decimal_commas(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a;b;c\n007;60,5;x\n8;1,25;y\n")
    frame = csvfiles.read(path, dtype={"a": "str", "b": "float64", "c": "str"})
    assert frame["a"].tolist() == ["007", "8"] and frame["b"].tolist() == [60.5, 1.25]


# --- the one-hot width budget -----------------------------------------------------------------


def many_categories(n: int = 400, columns: int = 12, levels: int = 30, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = {f"c{i:02d}": rng.choice([f"v{j}" for j in range(levels - i)], size=n) for i in range(columns)}
    return pd.DataFrame({**frame, "x": rng.normal(size=n)})


def test_one_hot_width_stays_within_the_budget():
    X = many_categories()
    y = np.random.default_rng(1).normal(size=len(X))
    width = X.drop(columns="x").nunique().sum()
    assert width == sum(range(19, 31)) > 100
    roles = infer_roles(X, max_onehot_width=100)
    over = [c for c, r in roles.items() if r == "over_budget"]
    kept = [c for c, r in roles.items() if r == "category"]
    assert over == [f"c{i:02d}" for i in range(len(over))]  # the most levels go first
    assert X[kept].nunique().sum() <= 100 < X[kept + over[-1:]].nunique().sum()
    assert "categories past the one-hot width budget (frequency + target encoding)" in summary(roles)

    features = Pipeline([("roles", ColumnRoles(max_onehot_width=100)), ("preprocess", TabularPreprocessor())])
    matrix = features.fit_transform(X, y)
    encoder = features.named_steps["preprocess"].categorical_steps_[-1]
    assert sum(len(c) for c in encoder.categories_) <= 100
    names = set(features.named_steps["roles"].get_feature_names_out())
    assert all({f"{c}_frequency", f"{c}_target"} <= names for c in over)
    assert matrix.shape[1] == 1 + sum(len(c) for c in encoder.categories_) + 2 * len(over)


def test_more_rows_get_fewer_one_hot_columns():
    X = many_categories()  # 12 columns of 19..30 levels, 294 one-hot columns
    rows = len(X)
    for cells, width in ((rows * 300, 294), (rows * 100, 100), (rows * 40, 40)):
        roles = infer_roles(X, max_onehot_cells=cells)
        kept = [c for c, r in roles.items() if r == "category"]
        assert X[kept].nunique().sum() <= width
        assert (width == 294) == ("over_budget" not in roles.values())
    fitted = ColumnRoles(max_onehot_cells=rows * 40).fit(X, np.zeros(rows))
    assert fitted.roles_ == infer_roles(X, max_onehot_cells=rows * 40)
    # the budget's width is the same 320 columns up to 300,000 rows, then shrinks with the rows
    assert MAX_ONEHOT_CELLS // 300_000 == MAX_ONEHOT_WIDTH and MAX_ONEHOT_CELLS // 1_000_000 == 96


def test_default_budget_and_none():
    X = many_categories(columns=12, levels=40)  # 12 columns of 29..40 levels: 414 one-hot columns
    assert sum(1 for r in infer_roles(X).values() if r == "over_budget") > 0
    assert "over_budget" not in infer_roles(X, max_onehot_width=None).values()
    small = many_categories(columns=3, levels=10)
    assert ColumnRoles().fit(small, np.zeros(len(small))).transform(small) is small  # nothing changes


# --- encoding once, and chunked prediction ----------------------------------------------------


def test_category_text_matches_the_per_value_labels():
    frame = pd.DataFrame({"s": pd.Series(["a", None, "b"], dtype="str"), "f": [20.0, np.nan, 2.5],
                          "i": [1, 2, 3], "o": pd.Series([1, "x", None], dtype=object), "b": [True, False, True]})
    assert _as_category_text(frame).tolist() == [["a", "20", "1", "1", "True"],
                                                 ["__missing__", "__missing__", "2", "x", "False"],
                                                 ["b", "2.5", "3", "__missing__", "True"]]


def test_preprocessor_fit_transform_equals_fit_then_transform():
    X = many_categories(columns=4).assign(gap=lambda f: f["x"].where(f["x"] > 0))
    assert np.array_equal(TabularPreprocessor().fit_transform(X), TabularPreprocessor().fit(X).transform(X))


def test_the_matrix_is_float32_and_the_same_in_row_chunks(monkeypatch):
    X = many_categories(n=300, columns=4).assign(gap=lambda f: f["x"].where(f["x"] > 0))
    whole = TabularPreprocessor().fit_transform(X)  # one chunk: fewer rows than CHUNK_ROWS
    monkeypatch.setattr(tabular_features, "CHUNK_ROWS", 7)  # 43 chunks, the last of 6 rows
    chunked = TabularPreprocessor().fit_transform(X)
    assert whole.dtype == chunked.dtype == np.float32
    np.testing.assert_array_equal(chunked, whole)
    numbers = StandardScaler().fit_transform(SimpleImputer().fit_transform(X[["x", "gap"]]))
    np.testing.assert_allclose(chunked[:, :2], numbers, rtol=1e-6, atol=1e-6)


def scale_like(n: int, seed: int = 0) -> pd.DataFrame:
    """bench/scale.py's table in small: numbers with gaps, categories, a number code, a
    many-level string and a date."""
    rng = np.random.default_rng(seed)
    frame = {f"n{i}": np.where(rng.random(n) < 0.05, np.nan, rng.normal(size=n)) for i in range(30)}
    frame["colour"] = pd.array(rng.choice(["red", "green", "blue", "amber"], n), dtype="str")
    frame["grade"] = pd.array(rng.choice([f"G{i}" for i in range(12)], n), dtype="str")
    frame["code"] = rng.integers(1, 8, n)
    frame["city"] = pd.array(np.char.add("c", rng.integers(0, 3000, n).astype(str)), dtype="str")
    days = pd.Timestamp("2022-01-01") + pd.to_timedelta(rng.integers(0, 700, n), unit="D")
    frame["day"] = pd.array(days.strftime("%Y-%m-%d"), dtype="str")
    return pd.DataFrame(frame)


def test_a_fold_matrix_is_built_without_full_size_copies():
    # What Python allocates while one fold's one-hot features are fit and transformed: at most 16
    # bytes a cell of the matrix (the column roles' frame, the imputer's float64 copy while it
    # fits, the float32 matrix: 12). A float64 matrix stacked from every step's copies took 20.
    X = scale_like(50_000)
    y = np.random.default_rng(1).normal(size=len(X))
    features = kfold.build_features(competition(), "onehot")
    tracemalloc.start()
    try:
        matrix = features.fit_transform(X, y)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert matrix.dtype == np.float32 and matrix.shape == (len(X), 61)
    assert peak <= 16 * matrix.size


@pytest.mark.parametrize(("name", "metric"), [("hist_gbm", "rmse"), ("ridge", "rmse"),
                                              ("hist_gbm_classifier", "roc_auc"), ("logistic", "accuracy")])
def test_chunked_prediction_equals_one_piece(name, metric):
    X = many_categories(n=300, columns=3, levels=8).assign(city=lambda f: [f"t{i % 70}" for i in range(len(f))])
    score = X["x"] + (X["c00"] == "v1")
    y = score if metric == "rmse" else (score > 0).astype(int)
    comp = competition()
    params = {"max_iter": 20} if name.startswith("hist_gbm") else {}
    entry = registry.get(name, "tabular")
    fitted = kfold.build_estimator(comp, entry.build(**params), entry.feature_encoding(params)).fit(X, y)
    chosen = get_metric(metric)
    if metric != "rmse":
        chosen = chosen.with_classes(np.array([0, 1]))
    whole = kfold.predict(fitted, X, chosen, chunk_rows=None)
    chunked = kfold.predict(fitted, X, chosen, chunk_rows=70)
    assert chunked.shape == whole.shape == (len(X),)
    np.testing.assert_allclose(chunked, whole, rtol=1e-12, atol=1e-12)  # a matrix product's rounding at most
    matrix = kfold.build_features(comp).fit_transform(X, y)
    model = registry.create(name, "tabular", **params).fit(matrix, y)
    np.testing.assert_allclose(kfold.predict(model, matrix, chosen, chunk_rows=64),
                               kfold.predict(model, matrix, chosen, chunk_rows=None), rtol=1e-12, atol=1e-12)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_freed_heap_memory_goes_back_to_the_system():
    import psutil

    from pipeline import processes

    blocks = [np.ones(2000) for _ in range(10_000)]  # 16 KB each: glibc's heap, not an mmap of its own
    kept = blocks[::50]  # one block in fifty stays: the freed pages between them cannot shrink the heap's top
    del blocks
    before = psutil.Process().memory_info().rss
    processes.release_memory()
    assert before - psutil.Process().memory_info().rss > 100e6  # of the 160 MB freed
    assert len(kept) == 200
