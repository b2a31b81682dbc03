"""``SelectColumns``: the first step of a model that takes rows as they come in a raw file.

A fitted pipeline learns on the feature columns only (no id, no target). Put this step in
front of it and it also takes raw rows: the id and any other extra column are dropped, the
feature columns put in their training order, and a missing one is named.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin


class SelectColumns(TransformerMixin, BaseEstimator):
    """Keep ``columns``, in that order; stateless (``fit`` only checks that they are there)."""

    def __init__(self, columns: Sequence[str] = ()):
        self.columns = columns

    def fit(self, X: pd.DataFrame, y=None):
        self.transform(X)
        self.n_features_out_ = len(self.columns)
        return self

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        if not isinstance(X, pd.DataFrame):
            raise TypeError(f"SelectColumns expects a pandas DataFrame, got {type(X).__name__}")
        missing = [c for c in self.columns if c not in X.columns]
        if missing:
            raise ValueError(f"missing column{'s' if len(missing) > 1 else ''} {', '.join(missing[:5])}")
        return X[list(self.columns)]

    def get_feature_names_out(self, input_features=None):
        return list(self.columns)

    def __sklearn_is_fitted__(self) -> bool:
        return True  # nothing to learn
