import copy
import pickle
import tomllib

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import special, stats
from sklearn.base import clone
from sklearn.pipeline import Pipeline

from features.engineering import (
    DifferenceColumns,
    FillMissingAsNone,
    GroupRareCategories,
    OrdinalEncodeScale,
    SkewCorrector,
    SlopesByCategory,
    SumColumns,
    make_feature_steps,
)
from pipeline import config


def text(*values):
    """A text column as pandas 3's read_csv makes it: ``str`` dtype, NaN for missing."""
    return pd.Series(values, dtype="str")


def assert_untouched(before, after, columns):
    pd.testing.assert_frame_equal(after[columns], before[columns])


# FillMissingAsNone


def test_fill_missing_as_none_fills_listed_columns_only():
    frame = pd.DataFrame(
        {
            "PoolQC": text("Ex", None),
            "Alley": text(None, "Pave"),
            "GarageArea": [np.nan, 480.0],
            "LotFrontage": [np.nan, 60.0],
            "YearBuilt": [1990, 2000],
        }
    )
    original = frame.copy()
    filler = FillMissingAsNone(categorical=["PoolQC", "Fence"], numeric=["GarageArea", "BsmtFinSF1"])
    out = filler.fit_transform(frame)

    assert list(out.columns) == list(frame.columns)
    assert out["PoolQC"].tolist() == ["Ex", "None"]
    assert out["PoolQC"].dtype == "str"
    assert out["GarageArea"].tolist() == [0.0, 480.0]
    assert_untouched(frame, out, ["Alley", "LotFrontage", "YearBuilt"])
    assert (filler.categorical_, filler.numeric_) == (["PoolQC"], ["GarageArea"])
    pd.testing.assert_frame_equal(frame, original)


def test_fill_missing_as_none_turns_an_all_nan_float_column_into_text():
    frame = pd.DataFrame({"PoolQC": [np.nan, np.nan]})
    out = FillMissingAsNone(categorical=["PoolQC"]).fit_transform(frame)
    assert out["PoolQC"].tolist() == ["None", "None"]
    assert out["PoolQC"].dtype == "str"


def test_fill_missing_as_none_rejects_a_text_column_listed_as_numeric():
    frame = pd.DataFrame({"GarageType": text("Attchd", None)})
    with pytest.raises(ValueError, match="GarageType"):
        FillMissingAsNone(numeric=["GarageType"]).fit(frame)


# OrdinalEncodeScale


def test_ordinal_encode_scale_ranks_levels_and_zeroes_unknown_and_missing():
    frame = pd.DataFrame(
        {
            "KitchenQual": text("Po", "Fa", "TA", "Gd", "Ex", None),
            "BsmtExposure": text("No", "Mn", "Av", "Gd", "None", None),
            "Street": text("Pave", "Grvl", "Pave", "Pave", "Pave", "Pave"),
        }
    )
    encoder = OrdinalEncodeScale(
        columns=["KitchenQual", "BsmtExposure", "PoolQC"], maps={"BsmtExposure": ["No", "Mn", "Av", "Gd"]}
    )
    out = encoder.fit_transform(frame)

    assert out["KitchenQual"].tolist() == [1, 2, 3, 4, 5, 0]
    assert out["BsmtExposure"].tolist() == [1, 2, 3, 4, 0, 0]
    assert out["KitchenQual"].dtype == np.int64
    assert_untouched(frame, out, ["Street"])
    assert list(encoder.levels_) == ["KitchenQual", "BsmtExposure"]

    unseen = frame.assign(KitchenQual=text("Excellent", "Ex", "TA", "TA", "TA", "TA"))
    assert encoder.transform(unseen)["KitchenQual"].tolist() == [0, 5, 3, 3, 3, 3]


def test_ordinal_encode_scale_with_nan_for_missing_gives_floats():
    frame = pd.DataFrame({"ExterQual": text("Gd", None)})
    out = OrdinalEncodeScale(columns=["ExterQual"], missing=np.nan).fit_transform(frame)
    assert out["ExterQual"].dtype == np.float64
    assert out["ExterQual"].iloc[0] == 4
    assert np.isnan(out["ExterQual"].iloc[1])


# SumColumns and DifferenceColumns


def test_sum_columns_adds_weighted_sums_with_nan_as_zero():
    frame = pd.DataFrame(
        {
            "TotalBsmtSF": [800.0, np.nan],
            "1stFlrSF": [900, 1000],
            "2ndFlrSF": [0, 500],
            "FullBath": [2, 1],
            "HalfBath": [1, 0],
        }
    )
    summer = SumColumns(
        {
            "TotalSF": ["TotalBsmtSF", "1stFlrSF", "2ndFlrSF"],
            "Baths": {"columns": ["FullBath", "HalfBath"], "weights": [1, 0.5]},
            "PorchSF": ["OpenPorchSF", "1stFlrSF"],
        }
    )
    out = summer.fit_transform(frame)

    assert list(out.columns) == [*frame.columns, "TotalSF", "Baths"]
    assert out["TotalSF"].tolist() == [1700.0, 1500.0]
    assert out["Baths"].tolist() == [2.5, 1.0]
    assert_untouched(frame, out, list(frame.columns))


def test_sum_columns_refuses_to_overwrite_a_column():
    frame = pd.DataFrame({"a": [1], "b": [2]})
    with pytest.raises(ValueError, match="overwrite"):
        SumColumns({"a": ["a", "b"]}).fit(frame)


def test_difference_columns_subtract_and_keep_nan():
    frame = pd.DataFrame({"YrSold": [2010, 2008], "YearBuilt": [2000.0, np.nan], "MoSold": [1, 2]})
    differ = DifferenceColumns(
        {"HouseAge": ["YrSold", "YearBuilt"], "YearsSinceRemodel": ("YrSold", "YearRemodAdd")}
    )
    out = differ.fit_transform(frame)

    assert list(out.columns) == [*frame.columns, "HouseAge"]
    assert out["HouseAge"].iloc[0] == 10
    assert np.isnan(out["HouseAge"].iloc[1])


# SkewCorrector

RIGHT_SKEWED = np.array([1, 1, 1, 2, 2, 3, 5, 10, 50, 200])


def skewed_frame():
    return pd.DataFrame(
        {
            "right": RIGHT_SKEWED,
            "negative": RIGHT_SKEWED - 100.0,
            "symmetric": np.arange(10),
            "binary": [0] * 9 + [1],
            "excluded": RIGHT_SKEWED,
            "label": text(*"abcdefghij"),
        }
    )


def test_skew_corrector_box_cox_picks_skewed_numeric_columns():
    frame = skewed_frame()
    corrector = SkewCorrector(exclude=["excluded"]).fit(frame)
    out = corrector.transform(frame)

    assert corrector.columns_ == ["right", "negative"]
    right_lambda = stats.boxcox_normmax(RIGHT_SKEWED + 1.0, method="mle")
    assert corrector.lambdas_["right"] == pytest.approx(right_lambda, abs=1e-5)
    np.testing.assert_allclose(out["right"], special.boxcox1p(RIGHT_SKEWED, corrector.lambdas_["right"]))
    assert_untouched(frame, out, ["symmetric", "binary", "excluded", "label"])
    assert list(out.columns) == list(frame.columns)


def test_skew_corrector_box_cox_shifts_negative_columns_by_the_fit_minimum():
    frame = skewed_frame()
    corrector = SkewCorrector().fit(frame)
    shifted = frame["negative"] + 99

    assert corrector.lower_bounds_["negative"] == -99
    assert corrector.lambdas_["negative"] == pytest.approx(
        stats.boxcox_normmax(shifted + 1, method="mle"), abs=1e-5
    )
    out = corrector.transform(frame)
    np.testing.assert_allclose(out["negative"], special.boxcox1p(shifted, corrector.lambdas_["negative"]))

    below_fit_range = frame.assign(negative=frame["negative"] - 1000)
    clipped = corrector.transform(below_fit_range)["negative"]
    assert np.isfinite(clipped).all()
    assert (clipped == 0).all()


def test_skew_corrector_log1p_and_yeo_johnson():
    frame = skewed_frame()[["right", "negative"]]
    log = SkewCorrector(method="log1p").fit(frame)
    assert log.lambdas_ == {"right": 0.0, "negative": 0.0}
    np.testing.assert_allclose(log.transform(frame)["right"], np.log1p(RIGHT_SKEWED))

    yeo_johnson = SkewCorrector(method="yeo-johnson").fit(frame)
    negative_lambda = stats.yeojohnson_normmax(frame["negative"])
    assert yeo_johnson.lambdas_["negative"] == pytest.approx(negative_lambda, abs=1e-5)
    np.testing.assert_allclose(
        yeo_johnson.transform(frame)["negative"], stats.yeojohnson(frame["negative"], negative_lambda)
    )


def test_skew_corrector_learns_from_the_fit_frame_only():
    train = skewed_frame()
    other = train.assign(right=RIGHT_SKEWED[::-1] * 7, symmetric=RIGHT_SKEWED)
    corrector = SkewCorrector().fit(train)
    learned = copy.deepcopy((corrector.columns_, corrector.lambdas_, corrector.lower_bounds_))

    out = corrector.transform(other)

    assert (corrector.columns_, corrector.lambdas_, corrector.lower_bounds_) == learned
    assert "symmetric" not in corrector.columns_
    assert SkewCorrector().fit(other).lambdas_["right"] != pytest.approx(corrector.lambdas_["right"])
    np.testing.assert_allclose(out["right"], special.boxcox1p(other["right"], corrector.lambdas_["right"]))


positive_values = st.lists(st.floats(0, 1e6), min_size=5, max_size=40)


@pytest.mark.parametrize("method", ["box-cox", "log1p", "yeo-johnson"])
@settings(max_examples=25, deadline=None)
@given(fit_values=positive_values, unseen_values=positive_values)
def test_skew_corrector_output_is_finite_on_unseen_positive_data(method, fit_values, unseen_values):
    fit_frame = pd.DataFrame({"x": fit_values})
    unseen = pd.DataFrame({"x": unseen_values})
    corrector = SkewCorrector(method=method, threshold=0).fit(fit_frame)
    assert np.isfinite(corrector.transform(unseen)["x"]).all()


# GroupRareCategories


def rare_frame():
    return pd.DataFrame(
        {
            "Neighborhood": text("a", "a", "a", "b", "b", "c", None),
            "Street": text("x", "x", "x", "x", "x", "x", "y"),
            "LotArea": [1, 2, 3, 4, 5, 6, 7],
        }
    )


def test_group_rare_categories_by_count_keeps_nan_and_groups_unseen():
    frame = rare_frame()
    grouper = GroupRareCategories(min_frequency=2).fit(frame)

    assert grouper.frequent_categories_ == {"Neighborhood": ["a", "b"], "Street": ["x"]}
    out = grouper.transform(frame)
    assert out["Neighborhood"].tolist()[:6] == ["a", "a", "a", "b", "b", "Rare"]
    assert pd.isna(out["Neighborhood"].iloc[6])
    assert out["Street"].tolist() == ["x"] * 6 + ["Rare"]
    assert out["Neighborhood"].dtype == "str"
    assert_untouched(frame, out, ["LotArea"])

    unseen = frame.assign(Neighborhood=text("z", "a", "b", "c", None, "a", "a"))
    assert grouper.transform(unseen)["Neighborhood"].tolist()[:4] == ["Rare", "a", "b", "Rare"]
    assert grouper.frequent_categories_ == {"Neighborhood": ["a", "b"], "Street": ["x"]}


def test_group_rare_categories_by_fraction_and_listed_columns():
    frame = rare_frame()
    grouper = GroupRareCategories(min_frequency=0.3, columns=["Neighborhood", "Alley"], other="Other")
    out = grouper.fit_transform(frame)

    assert grouper.frequent_categories_ == {"Neighborhood": ["a"]}
    assert out["Neighborhood"].tolist()[:6] == ["a", "a", "a", "Other", "Other", "Other"]
    assert_untouched(frame, out, ["Street", "LotArea"])


@pytest.mark.parametrize("min_frequency", [0, 1.5, True, "10"])
def test_group_rare_categories_rejects_a_bad_min_frequency(min_frequency):
    with pytest.raises(ValueError, match="min_frequency"):
        GroupRareCategories(min_frequency=min_frequency).fit(rare_frame())


def test_slopes_by_category_gives_one_column_per_level_seen_at_fit():
    fit_frame = pd.DataFrame({"Area": [1.0, 2.0, 3.0, 4.0], "Town": text("A", "B", "A", None)})
    step = SlopesByCategory({"AreaIn": ["Area", "Town"]}).fit(fit_frame)
    assert list(step.get_feature_names_out()) == ["Area", "Town", "AreaIn_A", "AreaIn_B"]
    # a row of a level unseen at fit, and one with no level, get 0 everywhere; NaN stays NaN
    out = step.transform(pd.DataFrame({"Area": [5.0, 6.0, 7.0, np.nan], "Town": text("A", "C", None, "B")}))
    np.testing.assert_array_equal(out["AreaIn_A"], [5.0, 0.0, 0.0, 0.0])
    np.testing.assert_array_equal(out["AreaIn_B"], [0.0, 0.0, 0.0, np.nan])
    assert_untouched(fit_frame, step.transform(fit_frame), ["Area", "Town"])


def test_slopes_by_category_takes_number_codes_as_one_level_whatever_their_dtype():
    # MSSubClass reads as int in one file and as float in another where a NaN turns up
    step = SlopesByCategory({"AreaIn": ["Area", "Class"]}).fit(pd.DataFrame({"Area": [1.0, 2.0], "Class": [20, 60]}))
    out = step.transform(pd.DataFrame({"Area": [3.0, 4.0], "Class": [20.0, np.nan]}))
    np.testing.assert_array_equal(out["AreaIn_20"], [3.0, 0.0])
    np.testing.assert_array_equal(out["AreaIn_60"], [0.0, 0.0])


def test_slopes_by_category_refuses_to_overwrite_and_needs_pairs():
    frame = pd.DataFrame({"Area": [1.0, 2.0], "Town": text("A", "B"), "AreaIn_A": [0.0, 0.0]})
    with pytest.raises(ValueError, match="overwrite"):
        SlopesByCategory({"AreaIn": ["Area", "Town"]}).fit(frame)
    with pytest.raises(ValueError, match="two columns"):
        SlopesByCategory({"AreaIn": ["Area"]}).fit(frame)


# Shared estimator behaviour


def house_frame(n_rows=40, seed=0):
    rng = np.random.default_rng(seed)
    quality = np.array(["Po", "Fa", "TA", "Gd", "Ex"])
    garage_area = rng.integers(200, 900, n_rows).astype(float)
    garage_area[:3] = np.nan
    garage_year = rng.integers(1950, 2010, n_rows).astype(float)
    garage_year[:3] = np.nan
    return pd.DataFrame(
        {
            "LotArea": rng.lognormal(9, 1.0, n_rows).round(),
            "Neighborhood": pd.Series(rng.choice(["NAmes", "CollgCr", "Blueste"], n_rows, p=[0.6, 0.38, 0.02]), dtype="str"),
            "KitchenQual": pd.Series(rng.choice(quality, n_rows), dtype="str"),
            "PoolQC": pd.Series([None] * (n_rows - 1) + ["Gd"], dtype="str"),
            "BsmtExposure": pd.Series(rng.choice(["No", "Mn", "Av", "Gd", None], n_rows), dtype="str"),
            "TotalBsmtSF": rng.integers(0, 1500, n_rows),
            "1stFlrSF": rng.integers(600, 2000, n_rows),
            "2ndFlrSF": rng.integers(0, 1200, n_rows),
            "FullBath": rng.integers(1, 4, n_rows),
            "HalfBath": rng.integers(0, 2, n_rows),
            "GarageArea": garage_area,
            "GarageYrBlt": garage_year,
            "YearBuilt": rng.integers(1900, 2008, n_rows),
            "YrSold": rng.integers(2008, 2011, n_rows),
        }
    )


HOUSE_SPEC = {
    "fill_none": {"categorical": ["PoolQC", "BsmtExposure"], "numeric": ["GarageArea"]},
    "ordinal": {"columns": ["KitchenQual", "PoolQC"], "maps": {"BsmtExposure": ["No", "Mn", "Av", "Gd"]}},
    "sums": {"TotalSF": ["TotalBsmtSF", "1stFlrSF", "2ndFlrSF"]},
    "differences": {"HouseAge": ["YrSold", "YearBuilt"]},
    "skew": {"method": "box-cox", "threshold": 0.75},
    "slopes": {"TotalSFIn": ["TotalSF", "Neighborhood"]},
    "rare": {"min_frequency": 3},
}

TRANSFORMERS = [step for _, step in make_feature_steps(HOUSE_SPEC)]


@pytest.fixture(params=TRANSFORMERS, ids=lambda step: type(step).__name__)
def transformer(request):
    return clone(request.param)


def test_clone_gives_an_unfitted_copy_with_equal_params(transformer):
    transformer.fit(house_frame())
    cloned = clone(transformer)
    assert cloned.get_params() == transformer.get_params()
    assert not hasattr(cloned, "feature_names_in_")


def test_pickle_round_trip_gives_identical_output(transformer):
    frame = house_frame()
    transformer.fit(frame)
    restored = pickle.loads(pickle.dumps(transformer))
    pd.testing.assert_frame_equal(restored.transform(house_frame(seed=1)), transformer.transform(house_frame(seed=1)))


def test_feature_names_out_match_the_output_and_set_output_pandas(transformer):
    frame = house_frame()
    out = transformer.set_output(transform="pandas").fit_transform(frame)
    assert list(out.columns) == list(transformer.get_feature_names_out())
    assert list(out.columns[: frame.shape[1]]) == list(frame.columns)
    pd.testing.assert_index_equal(out.index, frame.index)


def test_transform_requires_the_fit_columns(transformer):
    frame = house_frame()
    transformer.fit(frame)
    with pytest.raises(ValueError, match="feature names"):
        transformer.transform(frame.drop(columns="LotArea"))
    with pytest.raises(TypeError, match="DataFrame"):
        transformer.transform(frame.to_numpy())


def test_steps_compose_in_a_pipeline_fit_on_train_only():
    train, test = house_frame(seed=0), house_frame(n_rows=10, seed=1)
    pipeline = Pipeline(make_feature_steps(HOUSE_SPEC)).set_output(transform="pandas").fit(train)
    skew, rare = pipeline.named_steps["skew"], pipeline.named_steps["rare"]
    learned = copy.deepcopy((skew.lambdas_, rare.frequent_categories_))

    out = pipeline.transform(test)

    assert list(out.columns) == list(pipeline.get_feature_names_out())
    slopes = [f"TotalSFIn_{level}" for level in sorted(train["Neighborhood"].unique())]
    assert list(out.columns[-len(slopes) - 2:]) == ["TotalSF", "HouseAge", *slopes]
    assert (skew.lambdas_, rare.frequent_categories_) == learned
    assert set(rare.frequent_categories_["Neighborhood"]) == {"NAmes", "CollgCr"}
    assert clone(pipeline).fit(test).named_steps["skew"].lambdas_ != skew.lambdas_


# make_feature_steps


def test_make_feature_steps_uses_a_fixed_order():
    reversed_spec = dict(reversed(list(HOUSE_SPEC.items())))
    steps = make_feature_steps(reversed_spec)
    assert [name for name, _ in steps] == ["fill_none", "ordinal", "sums", "differences", "skew", "slopes", "rare"]
    assert [type(step) for _, step in steps] == [
        FillMissingAsNone,
        OrdinalEncodeScale,
        SumColumns,
        DifferenceColumns,
        SkewCorrector,
        SlopesByCategory,
        GroupRareCategories,
    ]


def test_make_feature_steps_skips_absent_keys_and_uses_defaults_for_empty_tables():
    assert make_feature_steps({}) == []
    [(name, step)] = make_feature_steps({"skew": {}})
    assert name == "skew"
    assert step.get_params() == SkewCorrector().get_params()


def test_make_feature_steps_copies_the_spec():
    spec = {"sums": {"TotalSF": ["a", "b"]}}
    [(_, step)] = make_feature_steps(spec)
    spec["sums"]["TotalSF"].append("c")
    assert step.sums == {"TotalSF": ["a", "b"]}


def test_make_feature_steps_reads_a_toml_table():
    features = tomllib.loads(
        """
        [features.fill_none]
        categorical = ["PoolQC"]
        [features.sums]
        TotalSF = ["TotalBsmtSF", "1stFlrSF", "2ndFlrSF"]
        Baths = { columns = ["FullBath", "HalfBath"], weights = [1, 0.5] }
        [features.rare]
        min_frequency = 0.05
        """
    )["features"]
    out = Pipeline(make_feature_steps(features)).fit_transform(house_frame())
    assert {"TotalSF", "Baths"} <= set(out.columns)


@pytest.mark.parametrize(
    ("spec", "key"),
    [
        ({"bogus": {}}, "bogus"),
        ({"fill_none": ["PoolQC"]}, "fill_none"),
        ({"fill_none": {"categorical": "PoolQC"}}, "fill_none"),
        ({"ordinal": {"colums": ["ExterQual"]}}, "ordinal"),
        ({"ordinal": {"maps": {"GarageFinish": "Unf"}}}, "ordinal"),
        ({"ordinal": {"scale": ["Po", "Po"]}}, "ordinal"),
        ({"sums": {"TotalSF": "TotalBsmtSF"}}, "sums"),
        ({"sums": {"Baths": {"columns": ["FullBath", "HalfBath"], "weights": [1]}}}, "sums"),
        ({"sums": {"Baths": {"columns": ["FullBath"], "weight": [1]}}}, "sums"),
        ({"differences": {"HouseAge": ["YrSold", "YearBuilt", "YearRemodAdd"]}}, "differences"),
        ({"skew": {"method": "boxcox"}}, "skew"),
        ({"skew": {"threshold": -1}}, "skew"),
        ({"rare": {"min_frequency": 0}}, "rare"),
        ({"rare": {"columns": "Neighborhood"}}, "rare"),
    ],
)
def test_make_feature_steps_names_the_bad_key(spec, key):
    with pytest.raises(ValueError, match=f"'{key}'"):
        make_feature_steps(spec)


# The house-price spec of pipeline/competitions/house-prices.toml


def test_house_prices_features_run_on_a_frame_with_some_of_the_columns():
    train, test = house_frame(seed=0), house_frame(n_rows=10, seed=1)
    pipeline = Pipeline(make_feature_steps(config.load("house-prices").features)).set_output(transform="pandas")
    out = pipeline.fit(train).transform(test)

    # No GrLivArea or MSZoning here: of the slopes, only TotalSF by neighbourhood is made.
    slopes = [f"TotalSFIn_{level}" for level in sorted(train["Neighborhood"].unique())]
    assert list(out.columns) == [*train.columns, "TotalSF", "HouseAge", *slopes]
    assert list(out.columns) == list(pipeline.get_feature_names_out())
    for column in ["KitchenQual", "PoolQC", "BsmtExposure"]:
        assert pd.api.types.is_numeric_dtype(out[column])
        assert out[column].notna().all()
    assert out["GarageArea"].notna().all()
    assert out["GarageYrBlt"].isna().sum() == test["GarageYrBlt"].isna().sum()
    assert "LotArea" in pipeline.named_steps["skew"].columns_
    assert set(out["Neighborhood"]) <= {"NAmes", "CollgCr", "Rare"}
    numbers = out.select_dtypes("number").drop(columns="GarageYrBlt")
    assert np.isfinite(numbers.to_numpy(dtype=float)).all()
