"""features.crafted: the features in front of the trees, each fit on the training fold only."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone

from features.crafted import STEPS, CraftedFeatures
from pipeline.config import Competition, CVConfig
from pipeline.tasks import configuration, fold_features


def _table(n: int = 600, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Numbers, two categories whose cross carries the target, and an integer store id of 40 levels."""
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({"x": rng.normal(size=n), "z": rng.uniform(1, 3, size=n),
                      "store": rng.integers(0, 40, n), "flag": rng.integers(0, 2, n),
                      "colour": pd.Series(rng.choice(["red", "green", "blue"], n), dtype="str"),
                      "size": pd.Series(rng.choice(["s", "m", "l"], n), dtype="str")})
    store_effect = rng.normal(size=40)[X["store"]]
    y = X["x"] / X["z"] + ((X["colour"] == "red") & (X["size"] == "s")) * 2 + store_effect + rng.normal(size=n) * 0.1
    return X, y.to_numpy()


def test_each_step_adds_its_columns_and_names_them():
    X, y = _table()
    out = CraftedFeatures().fit_transform(X, y)
    crafted = CraftedFeatures().fit(X, y)
    assert list(out.columns[: X.shape[1]]) == list(X.columns)  # the input kept, in place
    added = set(out.columns) - set(X.columns)
    assert {"colour_target", "size_target", "store_target", "store_frequency"} <= added  # store: integers
    assert "flag_target" not in added  # two levels: a number, not a category
    assert "colour&size_target" in added  # the cross that carries the target
    assert {"x/z", "x-z", "x*z"} <= added  # x and z are the numbers most associated with y
    assert any(name.endswith("_mean") for name in added) and any(name.endswith("_gap") for name in added)
    assert list(crafted.get_feature_names_out()) == list(out.columns)
    def added_by(step):
        return set(CraftedFeatures(steps=(step,)).fit_transform(X, y).columns) - set(X.columns)

    assert added_by("target") == {"colour_target", "size_target", "colour&size_target", "colour&size_frequency"}
    assert added_by("integers") == {"store_target", "store_frequency"}
    assert added_by("arithmetic") >= {"x/z", "x-z", "x*z"} and all(set(n) & set("/-*") for n in added_by("arithmetic"))
    assert added_by("groups") and all(n.endswith(("_mean", "_gap")) for n in added_by("groups"))


def test_training_rows_are_target_encoded_cross_fitted():
    """A training row's encoding never saw its own target: changing it leaves the row's value alone."""
    X, y = _table()
    out = CraftedFeatures(steps=("target",)).fit_transform(X, y)
    changed = y.copy()
    changed[7] += 0.5
    again = CraftedFeatures(steps=("target",)).fit_transform(X, changed)
    assert again.loc[7, "colour_target"] == out.loc[7, "colour_target"]
    assert not np.allclose(again["colour_target"], out["colour_target"])  # other rows did see it


@pytest.mark.parametrize("step", STEPS)
def test_a_fold_s_features_are_fit_on_its_training_rows_only(step):
    """The held-out rows' values and targets may be anything: the fold's training matrix, and what
    its fitted steps make of any rows, stay the same. Fitting a step on every row is caught here."""
    X, y = _table()
    comp = Competition(name="crafted", target="target", id="id", cv=CVConfig(folds=3))
    fit_idx, valid_idx = np.arange(400), np.arange(400, 600)
    rng = np.random.default_rng(5)
    other_X, other_y = X.copy(), y.copy()
    other_X.loc[valid_idx, ["x", "z"]] = rng.uniform(-50, 50, size=(200, 2))
    other_X.loc[valid_idx, "store"] = rng.integers(0, 40, 200)
    other_y[valid_idx] = rng.normal(scale=100, size=200)
    built = []
    for table, target in ((X, y), (other_X, other_y)):
        features = fold_features.FoldFeatures(comp, table, target, {(0, 0): fit_idx})
        steps, train, _ = features.get(("native", (step,)), (0, 0), valid_idx)
        built.append((train, steps.transform(X.iloc[valid_idx])))
    pd.testing.assert_frame_equal(built[0][0], built[1][0])
    pd.testing.assert_frame_equal(built[0][1], built[1][1])


def test_unseen_levels_and_gaps_at_transform_give_numbers_not_errors():
    X, y = _table()
    crafted = CraftedFeatures().fit(X, y)
    new = X.head(5).copy()
    new["colour"] = pd.Series(["purple", None, "red", "red", "blue"], dtype="str")
    new.loc[0, "store"] = 999
    new.loc[1, "x"] = np.nan
    out = crafted.transform(new)
    assert out.shape == (5, len(crafted.get_feature_names_out()))
    encoded = out[[c for c in out.columns if c.endswith("_target")]]
    assert np.isfinite(encoded.to_numpy(dtype=float)).all()  # unseen: the training mean


def test_multiclass_targets_get_a_column_per_class():
    X, y = _table()
    labels = np.where(y > 1, "high", np.where(y < -1, "low", "mid"))
    out = CraftedFeatures(steps=("target",)).fit_transform(X, labels)
    assert {"colour_high_target", "colour_low_target", "colour_mid_target"} <= set(out.columns)


def test_it_clones_pickles_and_refuses_bad_settings():
    X, y = _table()
    crafted = CraftedFeatures(steps=("target", "groups"), max_numbers=2).fit(X, y)
    assert clone(crafted).get_params() == crafted.get_params()
    restored = pickle.loads(pickle.dumps(crafted))
    pd.testing.assert_frame_equal(restored.transform(X.head(20)), crafted.transform(X.head(20)))
    with pytest.raises(ValueError, match="steps"):
        CraftedFeatures(steps=("target", "magic")).fit(X, y)
    with pytest.raises(ValueError, match="max_numbers"):
        CraftedFeatures(max_numbers=-1).fit(X, y)


def test_a_portfolio_entry_names_its_crafted_steps(tmp_path):
    path = tmp_path / "portfolio.toml"
    path.write_text('[[regression]]\nname = "lgb_crafted"\nmodel = "lightgbm"\ncrafted = ["target", "groups"]\n'
                    '[[classification]]\nname = "lgb"\nmodel = "lightgbm_classifier"\n')
    (config,) = configuration.load("regression", path=path)
    assert config.crafted == ("target", "groups") and config.features == ("native", ("target", "groups"))
    path.write_text('[[regression]]\nname = "bad"\nmodel = "lightgbm"\ncrafted = ["magic"]\n')
    with pytest.raises(ValueError, match="magic"):
        configuration.load("regression", path=path)
