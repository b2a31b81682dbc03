"""The feature code reused outside this pipeline: a made-up table, a plain scikit-learn pipeline."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import REPO
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline

from features.tabular import TabularPreprocessor


def rentals(n, seed):
    """Flats: a text city (pandas ``str``) with gaps, rooms, a floor area with gaps; rent is linear."""
    rng = np.random.default_rng(seed)
    city = rng.choice(["Lyon", "Oslo", "Lima"], size=n)
    rooms = rng.integers(1, 6, size=n)
    area = rooms * 20 + rng.normal(0, 5, size=n)
    rent = 300 + 12 * area + np.where(city == "Oslo", 400, 0) + rng.normal(0, 20, size=n)
    frame = pd.DataFrame({"city": pd.Series(city, dtype="str"), "rooms": rooms, "area": area})
    frame.loc[rng.random(n) < 0.05, "city"] = None
    frame.loc[rng.random(n) < 0.05, "area"] = np.nan
    return frame, rent


def test_five_lines_in_an_unrelated_task():
    frame, rent = rentals(200, seed=0)
    new, new_rent = rentals(50, seed=1)
    new.loc[0, "city"] = "Quito"  # never seen in training
    model = make_pipeline(TabularPreprocessor(), Ridge(alpha=1.0)).fit(frame, rent)
    predicted = model.predict(new)
    assert predicted.shape == (50,) and np.isfinite(predicted).all()
    complete = new.notna().all(axis=1).to_numpy() & (new["city"] != "Quito").to_numpy()
    error = np.sqrt(np.mean((predicted[complete] - new_rent[complete]) ** 2))
    assert error < 60 < 0.2 * np.std(new_rent)  # near the noise (20), far below the spread of rents


def test_it_plays_with_model_selection():
    frame, rent = rentals(120, seed=2)
    label = pd.Series(np.where(rent > np.median(rent), "high", "low"))
    scores = cross_val_score(make_pipeline(TabularPreprocessor(), LogisticRegression()), frame, label, cv=3)
    assert scores.mean() > 0.8
    search = GridSearchCV(make_pipeline(TabularPreprocessor(), Ridge()), {"ridge__alpha": [0.1, 100.0]}, cv=3)
    assert search.fit(frame, rent).best_params_ == {"ridge__alpha": 0.1}


@pytest.mark.slow  # a fresh interpreter, to see what importing features/ loads
def test_importing_features_pulls_in_no_pipeline_tracking_or_tuning():
    code = (
        "import json, sys\n"
        "import features, features.tabular, features.engineering, models.registry\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    loaded = set(json.loads(done.stdout))
    assert "features.tabular" in loaded and "sklearn" in loaded  # the check sees real imports
    for forbidden in ("mlflow", "optuna", "kaggle", "pipeline"):
        assert not {m for m in loaded if m == forbidden or m.startswith(forbidden + ".")}, forbidden
