"""The native-categories preprocessor, and kfold choosing it for the models that take it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.native import INFREQUENT_CATEGORY, NativePreprocessor
from models import registry
from pipeline import config
from pipeline.tasks import kfold


def table(n=200, seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "size": np.where(rng.random(n) < 0.2, np.nan, rng.normal(size=n)),
        "rooms": rng.integers(1, 6, n),
        "zone": pd.Series(rng.choice(["north", "south", "east", None], n), dtype="str"),
        "flag": rng.random(n) < 0.5,
    })


def test_numbers_keep_their_gaps_and_categories_are_learned_at_fit():
    train = table()
    out = NativePreprocessor().fit_transform(train)
    assert list(out.columns) == list(train.columns)
    assert out["size"].dtype == np.float64 and out["flag"].dtype == np.float64
    np.testing.assert_array_equal(out["size"].isna(), train["size"].isna())  # no imputation
    np.testing.assert_array_equal(out["size"].dropna(), train["size"].dropna())  # no scaling
    assert isinstance(out["zone"].dtype, pd.CategoricalDtype)
    assert list(out["zone"].cat.categories) == ["east", "north", "south"]
    np.testing.assert_array_equal(out["zone"].isna(), train["zone"].isna())  # missing stays missing


def test_an_unseen_category_is_missing_and_the_categories_do_not_move():
    pre = NativePreprocessor().fit(table())
    test = table(n=4, seed=1).assign(zone=pd.Series(["west", "north", None, "south"], dtype="str"))
    out = pre.transform(test)
    assert out["zone"].isna().tolist() == [True, False, True, False]
    assert list(out["zone"].cat.categories) == ["east", "north", "south"]


def test_rare_levels_are_lumped_within_max_levels():
    frame = pd.DataFrame({"city": [f"c{i}" for i in range(50)] + ["big"] * 30 + ["mid"] * 20})
    out = NativePreprocessor(max_levels=3).fit_transform(frame)
    assert list(out["city"].cat.categories) == [INFREQUENT_CATEGORY, "big", "mid"]
    assert (out["city"] == INFREQUENT_CATEGORY).sum() == 50
    assert NativePreprocessor(min_frequency=2).fit_transform(frame)["city"].cat.categories.size == 3


def test_forced_categories_and_the_number_type_of_a_label():
    frame = pd.DataFrame({"code": [20.0, 60.0, np.nan, 20.0], "x": [1.0, 2.0, 3.0, 4.0]})
    out = NativePreprocessor(categorical=["code"]).fit_transform(frame)
    assert list(out["code"].cat.categories) == ["20", "60"]  # 20.0 and 20 are one category
    with pytest.raises(TypeError, match="DataFrame"):
        NativePreprocessor().fit(frame.to_numpy())


def test_kfold_builds_the_native_features_for_the_models_that_declare_them():
    comp = config.load("native-test", target="y", id_column="key")
    lightgbm = registry.create("lightgbm", "tabular")
    assert registry.get("lightgbm", "tabular").feature_encoding({}) == "native"
    assert registry.get("lightgbm", "tabular").feature_encoding({"native_categories": True}) == "native_levels"
    assert registry.get("catboost_classifier", "tabular").feature_encoding({}) == "native"
    assert registry.get("ridge", "tabular").feature_encoding({}) == "onehot"
    pipe = kfold.build_estimator(comp, lightgbm, "native")
    assert type(pipe.steps[-2][1]).__name__ == "NativePreprocessor"
    assert pipe.steps[-3][1].max_onehot_width is None  # no one-hot width budget to keep within
    assert type(kfold.build_estimator(comp, lightgbm, "onehot").steps[-2][1]).__name__ == "TabularPreprocessor"
    with pytest.raises(ValueError, match="feature encoding"):
        kfold.build_features(comp, "ordinal")


@pytest.mark.parametrize("name", ["hist_gbm", "hist_gbm_classifier"])
def test_histogram_boosting_splits_on_the_native_categories(name):
    comp = config.load("native-test", target="y", id_column="key")
    X = table(n=300)
    y = X["size"].fillna(0) + (X["zone"] == "north")
    if name.endswith("classifier"):
        y = y > y.median()
    pipe = kfold.build_estimator(comp, registry.create(name, "tabular", max_iter=20), "native").fit(X, y)
    model = pipe.steps[-1][1]
    # rooms (number codes, 1 to 5) and zone, from their dtype
    assert model.is_categorical_.tolist() == [False, True, True, False]
    assert pipe.predict(table(n=20, seed=1)).shape == (20,)
