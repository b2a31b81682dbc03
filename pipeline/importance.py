"""Feature importance of a run: ``feature_importance.csv`` and ``feature_importance.png``.

- ``gain``: the boosters' own total gain per feature (LightGBM, XGBoost; CatBoost's own
  importance), read from the fold models the run fit anyway, at no extra cost. Each fold model's
  shares sum to 1; they are averaged over the folds of each booster, and over the boosters by
  their ensemble weights. The features are those the models saw (after the fold's feature steps).
- ``permutation``: added to a finished run by ``pipeline.permutation`` (``python -m pipeline
  importance RUN``).
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from pipeline import plots, tracking

ARTIFACT = "feature_importance.csv"
FIGURE = "feature_importance.png"


def booster_gain(model) -> dict[str, float] | None:
    """``model``'s gain per feature as shares of its total, or None for a model without one. The
    features are named as the model saw them (``feature_names_in_``, by position: XGBoost calls
    them f0, f1, ...)."""
    booster = getattr(model, "booster_", None)
    if hasattr(booster, "feature_importance"):  # LightGBM
        values = list(zip(booster.feature_name(), booster.feature_importance("gain"), strict=True))
    elif hasattr(booster, "get_score"):  # XGBoost: features never split on are absent
        scores = booster.get_score(importance_type="total_gain")
        values = [(name, scores.get(name, 0.0)) for name in (booster.feature_names or scores)]
    elif hasattr(booster, "get_feature_importance"):  # CatBoost: its default importance
        values = list(zip(booster.feature_names_, booster.get_feature_importance(), strict=True))
    else:
        return None
    names = getattr(model, "feature_names_in_", None)
    if names is not None and len(names) == len(values):
        values = [(str(name), value) for name, (_, value) in zip(names, values, strict=True)]
    total = float(sum(value for _, value in values))
    return {str(name): float(value) / total for name, value in values} if total > 0 else None


def gain(members: Sequence[tuple[str, Sequence[object], float]]) -> pd.DataFrame | None:
    """``members``: (name, fold pipelines, ensemble weight). The weighted mean of the boosters'
    gain shares (a member of weight 0 counts only when no booster has weight); None without one."""
    per_member: list[tuple[pd.Series, float]] = []
    for _, estimators, weight in members:
        shares = [booster_gain(estimator.steps[-1][1] if hasattr(estimator, "steps") else estimator)
                  for estimator in estimators]
        shares = [s for s in shares if s]
        if shares:
            per_member.append((pd.DataFrame(shares).fillna(0.0).mean(), weight))
    if not per_member:
        return None
    total = sum(w for _, w in per_member)
    weights = [w / total for _, w in per_member] if total > 0 else [1 / len(per_member)] * len(per_member)
    combined = sum(series * w for (series, _), w in zip(per_member, weights, strict=True))
    combined = combined.fillna(0.0).sort_values(ascending=False)
    return pd.DataFrame({"feature": combined.index.astype(str), "gain": combined.to_numpy()})


def log(frame: pd.DataFrame, title: str) -> None:
    """``frame`` as the active run's importance CSV and its figure (by permutation where there is one)."""
    tracking.log_frame(frame, ARTIFACT)
    column = "permutation" if "permutation" in frame and frame["permutation"].notna().any() else "gain"
    tracking.log_figure(plots.importance(frame, column, title=title), FIGURE)
