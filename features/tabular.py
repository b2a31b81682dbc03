"""The tabular preprocessor: mean imputation and standardisation for numbers, one-hot for text.

Unlike d2l's recipe, which standardises over train and test together, this is an ordinary
scikit-learn transformer: fit it on the training fold and nothing else.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler
from sklearn.utils.validation import check_is_fitted

MISSING_CATEGORY = "__missing__"
# Rows transformed at a time: each step's float64 copies of a chunk are a few tens of megabytes.
CHUNK_ROWS = 32_768
FLOAT32 = np.finfo(np.float32)


def infer_column_types(
    frame: pd.DataFrame, categorical: Iterable[str] = (), numeric: Iterable[str] = ()
) -> tuple[list[str], list[str]]:
    """Split columns into (numeric, categorical), honouring explicit overrides.

    Numbers are whatever ``select_dtypes("number")`` finds (bool included); everything else —
    pandas 3 ``str``, ``object``, ``category`` — is categorical. ``categorical`` forces
    number-coded categories such as ``MSSubClass``; ``numeric`` forces the opposite.
    """
    forced_categorical, forced_numeric = set(categorical), set(numeric)
    detected = set(frame.select_dtypes(["number", "bool"]).columns)
    numeric_cols = [
        c
        for c in frame.columns
        if (c in detected or c in forced_numeric) and c not in forced_categorical
    ]
    categorical_cols = [c for c in frame.columns if c not in set(numeric_cols)]
    return numeric_cols, categorical_cols


def category_label(value: object) -> str:
    # 20 and 20.0 are one category: a single NaN turns a column of integer codes into floats.
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def category_text(column: pd.Series) -> np.ndarray:
    """A column as category labels (:func:`category_label`, NaN as ``MISSING_CATEGORY``): an object
    array. A ``str`` column is taken as it is (its values are their own labels), without a Python
    call per value; other dtypes are labelled value by value."""
    if isinstance(column.dtype, pd.StringDtype):
        return column.to_numpy(dtype=object, na_value=MISSING_CATEGORY)
    labels = column.map(category_label, na_action="ignore").to_numpy(dtype=object, copy=True)
    labels[column.isna().to_numpy()] = MISSING_CATEGORY
    return labels


def _as_category_text(frame: pd.DataFrame) -> np.ndarray:
    # One representation for every categorical dtype (str, object, numbers forced to categories),
    # with NaN as its own category rather than an imputed guess. Column by column into one object
    # array: no object copy of the whole frame.
    out = np.empty(frame.shape, dtype=object)
    for i in range(frame.shape[1]):
        out[:, i] = category_text(frame.iloc[:, i])
    return out


class TabularPreprocessor(TransformerMixin, BaseEstimator):
    """Mean-impute and standardise numeric columns, one-hot encode categorical ones: a float32 matrix.

    Column types are inferred at ``fit`` (see :func:`infer_column_types`) unless overridden.
    Categories unseen at fit time encode as all zeros; categories rarer than ``min_frequency``
    share one "infrequent" column. Output width never depends on the rows transformed.

    The numbers come first, then the one-hot columns. The matrix is float32 (what the tree
    models split on anyway; ridge and the nets keep it), written ``CHUNK_ROWS`` rows at a time
    into one array allocated up front: a million-row fold's matrix costs its own bytes, not the
    float64 copies of every step and their stack (bench/scale.py).
    """

    def __init__(
        self,
        categorical: Sequence[str] = (),
        numeric: Sequence[str] = (),
        drop: Sequence[str] = (),
        min_frequency: int | float | None = None,
    ):
        self.categorical = categorical
        self.numeric = numeric
        self.drop = drop
        self.min_frequency = min_frequency

    def fit(self, X: pd.DataFrame, y=None):
        if not isinstance(X, pd.DataFrame):
            raise TypeError("TabularPreprocessor expects a pandas DataFrame")
        X = X.drop(columns=[c for c in self.drop if c in X.columns])
        self.numeric_columns_, self.categorical_columns_ = infer_column_types(
            X, self.categorical, self.numeric
        )
        # Two pipelines, not a ColumnTransformer: its fit builds (and drops) the whole float64 output.
        self.numeric_steps_ = make_pipeline(
            SimpleImputer(strategy="mean", keep_empty_features=True), StandardScaler()
        )
        self.categorical_steps_ = make_pipeline(
            FunctionTransformer(_as_category_text, feature_names_out="one-to-one"),
            OneHotEncoder(
                handle_unknown="infrequent_if_exist" if self.min_frequency else "ignore",
                min_frequency=self.min_frequency,
                sparse_output=False,
                dtype=np.float32,
            ),
        )
        for steps, columns in self._parts():
            steps.fit(X[columns])
        self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        self.n_features_in_ = X.shape[1]
        return self

    def _parts(self) -> list[tuple[Pipeline, list[str]]]:
        return [(steps, columns) for steps, columns in ((self.numeric_steps_, self.numeric_columns_),
                                                       (self.categorical_steps_, self.categorical_columns_))
                if columns]

    def transform(self, X: pd.DataFrame) -> np.ndarray:
        check_is_fitted(self, "numeric_steps_")
        missing = [c for c in self.feature_names_in_ if c not in X.columns]
        if missing:
            raise ValueError(f"columns missing at transform time: {', '.join(missing[:5])}")
        parts = self._parts()
        widths = [len(steps.get_feature_names_out()) for steps, _ in parts]
        out = np.empty((len(X), sum(widths)), dtype=np.float32)
        for start in range(0, len(X), CHUNK_ROWS):
            rows = X.iloc[start:start + CHUNK_ROWS]
            left = 0
            for (steps, columns), width in zip(parts, widths, strict=True):
                # Clipped: a number past float32's range (a test value far out on a training
                # column of almost one value) stays a finite number, as it was in float64.
                values = np.clip(steps.transform(rows[columns]), FLOAT32.min, FLOAT32.max)
                out[start:start + len(rows), left:left + width] = values
                left += width
        return out

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        check_is_fitted(self, "numeric_steps_")
        names = [name for steps, _ in self._parts() for name in steps.get_feature_names_out()]
        return np.asarray(names, dtype=object)
