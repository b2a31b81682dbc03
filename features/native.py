"""The native-categories preprocessor: numbers as they are, categories as pandas ``category``.

For tree models that split on categories themselves (LightGBM, XGBoost, CatBoost,
HistGradientBoosting with ``categorical_features="from_dtype"``): no imputation, no scaling, no
one-hot. The sibling of :class:`features.tabular.TabularPreprocessor`, fit on the training fold
only like it, and ``kfold.build_features(comp, "native")`` puts it after the column roles.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from features.tabular import MISSING_CATEGORY, category_text, infer_column_types

INFREQUENT_CATEGORY = "__infrequent__"
# HistGradientBoosting takes at most 255 categories a column (its max_bins), the lumped level
# included; LightGBM and XGBoost gain nothing from thousands of one-row levels either.
MAX_LEVELS = 255


class NativePreprocessor(TransformerMixin, BaseEstimator):
    """Numbers as float64 with NaN kept; categories as pandas ``Categorical``; a DataFrame out.

    The categories of a column are learned at ``fit``: its ``max_levels - 1`` most frequent
    labels (:func:`features.tabular.category_label`; ties by label), with the rest, and any level
    seen fewer than ``min_frequency`` times, lumped into one ``INFREQUENT_CATEGORY`` level. A level
    unseen at fit, and a missing value, is missing (NaN) at transform. Column types as
    :class:`TabularPreprocessor` infers them; the columns keep their names and order.
    """

    def __init__(
        self,
        categorical: Sequence[str] = (),
        numeric: Sequence[str] = (),
        drop: Sequence[str] = (),
        max_levels: int = MAX_LEVELS,
        min_frequency: int = 1,
    ):
        self.categorical = categorical
        self.numeric = numeric
        self.drop = drop
        self.max_levels = max_levels
        self.min_frequency = min_frequency

    def fit(self, X: pd.DataFrame, y=None):
        if not isinstance(X, pd.DataFrame):
            raise TypeError("NativePreprocessor expects a pandas DataFrame")
        if not (isinstance(self.max_levels, int) and self.max_levels >= 2):
            raise ValueError(f"max_levels={self.max_levels!r}: a whole number, 2 or more")
        X = X.drop(columns=[c for c in self.drop if c in X.columns])
        self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        self.n_features_in_ = X.shape[1]
        self.numeric_columns_, self.categorical_columns_ = infer_column_types(X, self.categorical, self.numeric)
        self.levels_ = {c: self._levels(X[c]) for c in self.categorical_columns_}
        return self

    def _levels(self, column: pd.Series) -> dict[str, str]:
        """``{label seen at fit: its category}``, the category a label's own or the lumped one."""
        counts = pd.Series(category_text(column)).value_counts()
        counts = counts.drop(MISSING_CATEGORY, errors="ignore")
        ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
        kept = {label for label, n in ranked[: self.max_levels - 1] if n >= self.min_frequency}
        if len(kept) == len(ranked) - 1:  # one level left over: no need to lump it
            kept = {label for label, n in ranked if n >= self.min_frequency}
        return {label: label if label in kept else INFREQUENT_CATEGORY for label, _ in ranked}

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        check_is_fitted(self, "levels_")
        missing = [c for c in self.feature_names_in_ if c not in X.columns]
        if missing:
            raise ValueError(f"columns missing at transform time: {', '.join(map(str, missing[:5]))}")
        out = {}
        for column in self.feature_names_in_:
            if column in self.levels_:
                mapping = self.levels_[column]
                labels = pd.Series(category_text(X[column]), index=X.index, dtype=object).map(mapping)
                out[column] = pd.Categorical(labels, categories=sorted(set(mapping.values())))
            else:
                out[column] = np.asarray(pd.to_numeric(X[column]).to_numpy(dtype=float, na_value=np.nan))
        return pd.DataFrame(out, index=X.index, columns=list(self.feature_names_in_))

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        check_is_fitted(self, "levels_")
        return self.feature_names_in_
