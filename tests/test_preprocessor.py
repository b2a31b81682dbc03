"""TabularPreprocessor: properties that hold whatever the data (hypothesis), and its contract."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.base import clone

from features.tabular import MISSING_CATEGORY, TabularPreprocessor, infer_column_types

SETTINGS = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])

number = st.one_of(st.none(), st.floats(-1e6, 1e6, allow_nan=False))
word = st.one_of(st.none(), st.sampled_from(["red", "green", "blue", "Ex", "Gd"]))
code = st.one_of(st.none(), st.sampled_from([20, 60, 120]))


@st.composite
def frames(draw, min_rows=1, max_rows=25):
    """Numbers with gaps, a text column (pandas ``str``) with gaps, number-coded categories with gaps."""
    n = draw(st.integers(min_rows, max_rows))
    column = lambda values: draw(st.lists(values, min_size=n, max_size=n))  # noqa: E731
    return pd.DataFrame({
        "area": pd.Series(column(number), dtype="float64"),
        # as read_csv gives them: integers, or floats once a gap is present
        "rooms": pd.Series(column(st.one_of(st.none(), st.integers(0, 9))), dtype=None),
        "colour": pd.Series(column(word), dtype="str"),
        "zone": pd.Series(column(code), dtype=None),
    })


def fitted(frame, **kwargs):
    return TabularPreprocessor(categorical=["zone"], **kwargs).fit(frame)


@SETTINGS
@given(train=frames(), test=frames())
def test_no_nan_out_and_a_stable_width_whatever_goes_in(train, test):
    pre = fitted(train)
    width = len(pre.get_feature_names_out())
    for frame in (train, test, test.iloc[:1]):
        out = pre.transform(frame)
        assert out.shape == (len(frame), width)
        assert np.isfinite(out).all()


@SETTINGS
@given(train=frames(), test=frames(min_rows=2, max_rows=8))
def test_each_row_is_encoded_on_its_own(train, test):
    # A row's output depends on that row only: not on which other rows (or gaps) come with it.
    pre = fitted(train)
    gaps = pd.DataFrame({"area": [np.nan], "rooms": [np.nan], "colour": pd.Series([None], dtype="str"),
                         "zone": [np.nan]})
    together = pre.transform(pd.concat([test, gaps], ignore_index=True))
    assert np.isfinite(together[-1]).all()
    for i in range(len(test)):
        np.testing.assert_allclose(pre.transform(test.iloc[[i]]), together[[i]], rtol=1e-12, atol=1e-12)


@SETTINGS
@given(train=frames(min_rows=3))
def test_the_scaler_learns_from_the_fit_frame_only(train):
    pre = fitted(train)
    test = pd.DataFrame({"area": [1e9, -1e9, 5e8], "rooms": [100.0, 200.0, 300.0],
                         "colour": pd.Series(["red", "pink", None], dtype="str"), "zone": [20.0, 60.0, 999.0]})
    scaler = pre.numeric_steps_[-1]
    imputer = pre.numeric_steps_[0]
    for i, column in enumerate(pre.numeric_columns_):
        values = train[column].to_numpy(dtype=float)
        expected = np.nanmean(values) if np.isfinite(values).any() else 0.0
        assert imputer.statistics_[i] == pytest.approx(expected, rel=1e-9, abs=1e-9)
        assert scaler.mean_[i] == pytest.approx(expected, rel=1e-9, abs=1e-9)
    state = pickle.dumps(pre)
    pre.transform(test)  # transforming is not fitting
    np.testing.assert_array_equal(pickle.loads(state).transform(train), pre.transform(train))


def test_statistics_are_the_training_folds_not_train_plus_test():
    train = pd.DataFrame({"x": [1.0, 2.0, 3.0, np.nan], "t": pd.Series(["a", "b", "a", "b"], dtype="str")})
    test = pd.DataFrame({"x": [100.0, 200.0], "t": pd.Series(["a", "a"], dtype="str")})
    pre = TabularPreprocessor().fit(train)
    out = pre.transform(test)
    mean, std = 2.0, np.std([1.0, 2.0, 3.0, 2.0])  # the gap filled with the training mean
    np.testing.assert_allclose(out[:, 0], (test["x"] - mean) / std)
    both = TabularPreprocessor().fit(pd.concat([train, test]))
    assert not np.allclose(both.transform(test)[:, 0], out[:, 0])


def test_a_number_past_the_float32_range_stays_finite():
    # A training column of almost one value: a far-out test value scales past float32's largest.
    pre = TabularPreprocessor().fit(pd.DataFrame({"x": [1e-35, -1e-35, 1e-35, -1e-35]}))
    out = pre.transform(pd.DataFrame({"x": [1e9, -1e9, 0.0]}))
    assert out.dtype == np.float32
    assert out[:, 0].tolist() == [np.finfo(np.float32).max, np.finfo(np.float32).min, 0.0]


@SETTINGS
@given(train=frames(min_rows=2))
def test_unseen_categories_encode_as_zeros(train):
    pre = fitted(train)
    names = list(pre.get_feature_names_out())
    unseen = pd.DataFrame({"area": [1.0], "rooms": [2.0], "colour": pd.Series(["ultraviolet"], dtype="str"),
                           "zone": [999.0]})
    out = pre.transform(unseen)[0]
    for column in ("colour", "zone"):
        block = [i for i, name in enumerate(names) if name.startswith(column + "_")]
        assert block, names
        assert (out[block] == 0).all()


@SETTINGS
@given(train=frames())
def test_feature_names_pandas_output_and_pickling(train):
    pre = fitted(train)
    names = pre.get_feature_names_out()
    width = pre.transform(train).shape[1]
    assert len(names) == width and len(set(names)) == width
    frame = clone(pre).set_output(transform="pandas").fit(train).transform(train.set_axis(range(7, 7 + len(train))))
    assert isinstance(frame, pd.DataFrame)
    assert list(frame.columns) == list(names)
    assert list(frame.index) == list(range(7, 7 + len(train)))
    np.testing.assert_array_equal(frame.to_numpy(), pre.transform(train))
    restored = pickle.loads(pickle.dumps(pre))
    np.testing.assert_array_equal(restored.transform(train), pre.transform(train))


def test_column_types_are_inferred_and_overrides_honoured():
    frame = pd.DataFrame({
        "price": [1.0, 2.0, 3.0],
        "count": [1, 2, 3],
        "flag": [True, False, True],
        "street": pd.Series(["Pave", "Grvl", None], dtype="str"),
        "legacy": pd.Series(["x", "y", "x"], dtype=object),
        "kind": pd.Series(["a", "b", "a"], dtype="category"),
        "MSSubClass": [20, 60, 20],
        "year_text": pd.Series(["2001", "2002", "2003"], dtype="str"),
    })
    assert frame["street"].dtype == "str"
    numeric, categorical = infer_column_types(frame)
    assert numeric == ["price", "count", "flag", "MSSubClass"]
    assert categorical == ["street", "legacy", "kind", "year_text"]
    numeric, categorical = infer_column_types(frame, categorical=["MSSubClass"], numeric=["year_text"])
    assert "MSSubClass" in categorical and "year_text" in numeric
    pre = TabularPreprocessor(categorical=["MSSubClass"], drop=["legacy"]).fit(frame)
    names = list(pre.get_feature_names_out())
    assert {"MSSubClass_20", "MSSubClass_60", f"street_{MISSING_CATEGORY}", "street_Pave"} <= set(names)
    assert "MSSubClass" not in names and not any(n.startswith("legacy") for n in names)


def test_a_number_coded_category_survives_a_gap_elsewhere_in_the_column():
    # read_csv turns a column of codes with one gap into floats: 20 must still be category 20.
    train = pd.DataFrame({"MSSubClass": [20, 60, 20, 120]})
    test = pd.DataFrame({"MSSubClass": [20.0, np.nan, 60.0]})
    pre = TabularPreprocessor(categorical=["MSSubClass"]).fit(train)
    out = pd.DataFrame(pre.transform(test), columns=pre.get_feature_names_out())
    assert out["MSSubClass_20"].tolist() == [1.0, 0.0, 0.0]
    assert out["MSSubClass_60"].tolist() == [0.0, 0.0, 1.0]
    assert out.sum(axis=1).tolist() == [1.0, 0.0, 1.0]


def test_rare_categories_share_a_column():
    train = pd.DataFrame({"c": pd.Series(["a"] * 5 + ["b"] * 5 + ["r1", "r2"], dtype="str")})
    pre = TabularPreprocessor(min_frequency=3).fit(train)
    names = list(pre.get_feature_names_out())
    assert names == ["c_a", "c_b", "c_infrequent_sklearn"]
    out = pre.transform(pd.DataFrame({"c": pd.Series(["r1", "never-seen", "a"], dtype="str")}))
    assert out.tolist() == [[0, 0, 1], [0, 0, 1], [1, 0, 0]]


def test_contract_errors():
    frame = pd.DataFrame({"x": [1.0, 2.0], "y": ["a", "b"]})
    with pytest.raises(TypeError, match="DataFrame"):
        TabularPreprocessor().fit(frame.to_numpy())
    pre = TabularPreprocessor().fit(frame)
    with pytest.raises(ValueError, match="columns missing at transform time: y"):
        pre.transform(frame[["x"]])
    # columns come by name: another order, or extra columns, change nothing
    shuffled = frame[["y", "x"]].assign(extra=1)
    np.testing.assert_array_equal(pre.transform(shuffled), pre.transform(frame))
    assert clone(pre).get_params() == pre.get_params()
