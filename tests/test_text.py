"""Free text as a cross-fitted linear model's prediction (features/text.py) and its place in the
column roles."""

import numpy as np
import pandas as pd
import pytest

from features import text
from features.roles import ColumnRoles
from features.text import TextPrediction

WORDS = [f"w{i:03d}" for i in range(300)]


def _noise_texts(rows: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"note": [" ".join(rng.choice(WORDS, 6)) for _ in range(rows)]})


def _telling_texts(rows: int, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Each row says ``good`` or ``bad`` among noise words; the target follows the word."""
    rng = np.random.default_rng(seed)
    good = rng.random(rows) < 0.5
    notes = [" ".join([*rng.choice(WORDS, 4), "good" if g else "bad"]) for g in good]
    return pd.DataFrame({"note": notes}), np.where(good, 10.0, 0.0) + rng.normal(0, 1, rows)


@pytest.fixture(autouse=True)
def _forget_fits():
    text._FITS.clear()
    yield
    text._FITS.clear()


def test_the_words_that_tell_the_target_become_one_number():
    X, y = _telling_texts(600)
    out = TextPrediction().fit_transform(X, y)
    assert list(out.columns) == ["note_text"]
    assert np.corrcoef(out["note_text"], y)[0, 1] > 0.9
    X_new, y_new = _telling_texts(200, seed=1)
    assert np.corrcoef(TextPrediction().fit(X, y).transform(X_new)["note_text"], y_new)[0, 1] > 0.9


def test_fit_alone_fits_the_models_on_every_row_and_skips_the_cross_fitting(monkeypatch):
    fits = []
    model = TextPrediction._model
    monkeypatch.setattr(TextPrediction, "_model", lambda self: fits.append(1) or model(self))
    X, y = _telling_texts(300)
    alone = TextPrediction().fit(X, y)
    assert len(fits) == 1  # the full-row model, no fold models
    crossed = TextPrediction()
    crossed.fit_transform(X, y)
    assert len(fits) == 1 + 1 + 5
    X_new, _ = _telling_texts(50, seed=2)
    pd.testing.assert_frame_equal(alone.transform(X_new), crossed.transform(X_new))
    assert list(alone.get_feature_names_out()) == ["note_text"]


def test_a_training_rows_feature_never_saw_its_own_target():
    """On words unrelated to the target, a model fit on every row would repeat the target (600 rows,
    thousands of n-grams); the cross-fitted feature cannot."""
    X = _noise_texts(600)
    y = np.random.default_rng(3).normal(size=600)
    fitted = TextPrediction()
    crossfit = fitted.fit_transform(X, y)["note_text"]
    in_sample = fitted.transform(X)["note_text"]  # the mutation: every row's feature from the model that saw it
    assert abs(np.corrcoef(crossfit, y)[0, 1]) < 0.2
    assert np.corrcoef(in_sample, y)[0, 1] > 0.5


def test_classes_give_a_probability_for_two_and_one_column_each_for_more():
    X, y = _telling_texts(400)
    binary = TextPrediction(classification=True).fit_transform(X, np.where(y > 5, "yes", "no"))
    assert list(binary.columns) == ["note_text"]
    assert binary["note_text"].between(0, 1).all()
    assert binary["note_text"][y > 5].mean() > 0.8
    three = np.where(y > 10, "high", np.where(y > 5, "mid", "low"))
    multi = TextPrediction(classification=True).fit_transform(X, three)
    assert list(multi.columns) == ["note_text_high", "note_text_low", "note_text_mid"]
    assert np.allclose(multi.sum(axis=1), 1.0, atol=1e-4)


def test_rows_outside_the_sample_get_the_sample_models_prediction():
    X, y = _telling_texts(300)
    fitted = TextPrediction(max_rows=100)
    out = fitted.fit_transform(X, y)
    assert np.isfinite(out["note_text"]).all()
    rows = np.sort(np.random.default_rng(0).permutation(300)[:100])
    outside = np.setdiff1d(np.arange(300), rows)
    assert np.allclose(out["note_text"].to_numpy()[outside], fitted.transform(X.iloc[outside])["note_text"])


def test_a_remembered_fit_is_the_same_and_a_new_target_is_fit_anew():
    X, y = _telling_texts(300)
    first = TextPrediction().fit_transform(X, y)
    again = TextPrediction().fit_transform(X, y)
    pd.testing.assert_frame_equal(first, again)
    assert len(text._FITS) == 1
    other = TextPrediction().fit_transform(X, -y)
    assert np.corrcoef(other["note_text"], first["note_text"])[0, 1] < -0.9
    assert len(text._FITS) == 2


def test_no_text_model_without_terms_or_rows():
    empty = pd.DataFrame({"note": ["", "", "x"] * 10})
    assert TextPrediction().fit_transform(empty, np.arange(30.0)).shape == (30, 0)
    X, y = _telling_texts(10)
    assert TextPrediction().fit_transform(X, y).shape == (10, 0)


def test_column_roles_append_the_text_prediction_fit_on_the_training_rows():
    X, y = _telling_texts(400)
    X["size"] = np.random.default_rng(5).normal(size=400)
    roles = ColumnRoles(text=["note"])
    out = roles.fit_transform(X, y)
    assert {"note_length", "note_words", "note_text", "size"} <= set(out.columns)
    assert "note" not in out.columns
    assert np.corrcoef(out["note_text"], y)[0, 1] > 0.9
    new, _ = _telling_texts(50, seed=2)
    new["size"] = 1.0
    assert list(roles.transform(new).columns) == list(out.columns)
    assert "note_text" not in ColumnRoles(text=["note"], text_model=False).fit_transform(X, y).columns
    assert "note_text" not in ColumnRoles(text=["note"]).fit_transform(X).columns  # no target: nothing to learn
