"""Column roles: what each column of a table is, inferred from the training rows, and the
transformer that encodes each role (:class:`ColumnRoles`, fit on the training fold only).

=================  ==========================================  ==========================================
role               found by                                    becomes
=================  ==========================================  ==========================================
``id``             integers, each row its own, a dense range  dropped
``constant``       one value (or none) in every row            dropped
``row_unique``     text, a different value in every row        dropped (case ids, hashes)
``category_code``  integers with 3 to ``max_code_levels``      text, so the preprocessor one-hot encodes it
``category``       text with few levels                        one-hot (the preprocessor, as before)
``high_card``      text with many levels (> ``max_onehot``,    frequency, and target encoding
                   or more than half the rows)                 (scikit-learn's ``TargetEncoder``, cross-fitted)
``over_budget``    the categories (and number codes) with the  as ``high_card``
                   most levels, while all of them together
                   would one-hot to more than
                   ``max_onehot_width`` columns
``date``           text that parses as dates or timestamps     year, month, day, day of year, day of week,
                                                               hour, elapsed days
``text``           many levels of three words or more          length and word count, and a linear model's
                                                               prediction from its TF-IDF (cross-fitted:
                                                               :class:`features.text.TextPrediction`)
``numeric``        numbers                                     left to the preprocessor
``dropped``        ``drop`` given                              dropped
=================  ==========================================  ==========================================

``id``, ``constant`` and ``category_code`` are guesses about ordinary columns and run only with
``infer=True``; the others fire only on columns that one-hot encoding cannot handle (thousands of
levels, every row unique, dates, sentences). ``categorical``, ``numeric``, ``drop``, ``text``,
``date`` and ``high_cardinality`` name a column's role outright.

The one-hot width budget (``max_onehot_width``, default :data:`MAX_ONEHOT_WIDTH`) bounds the
dense matrix the preprocessor makes: 300,000 rows of 4,000 one-hot columns are 9.6 GB of
float64. With more rows it shrinks, so that the one-hot block stays within
``max_onehot_cells`` (:data:`MAX_ONEHOT_CELLS`, rows x columns) whatever the row count. When
the one-hot columns of every category together (a level per distinct value, missing included)
would be more, the column with the most levels moves to ``over_budget``, then the next, until
the rest fit; named categories too. The role summary lists them apart.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.preprocessing import TargetEncoder
from sklearn.utils.multiclass import type_of_target
from sklearn.utils.validation import check_is_fitted

from features.tabular import category_label, category_text
from features.text import TextPrediction

ROLES = ("id", "constant", "row_unique", "dropped", "category_code", "category", "high_card", "over_budget", "date",
         "text", "numeric")
DROPPED = ("id", "constant", "row_unique", "dropped")
LABELS = {"id": "id", "constant": "constant (dropped)", "row_unique": "unique per row (dropped)",
          "dropped": "dropped", "category_code": "number codes (one-hot)", "category": "categories (one-hot)",
          "high_card": "many levels (frequency + target encoding)",
          "over_budget": "categories past the one-hot width budget (frequency + target encoding)",
          "date": "dates", "text": "text (length, words, TF-IDF model)", "numeric": "numbers"}
_DATE = re.compile(r"\d{4}[-/.]\d{1,2}[-/.]\d{1,2}([ T]\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?)?(Z|[+-]\d{2}:?\d{2})?"
                   r"|\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4}( \d{1,2}:\d{2}(:\d{2})?)?")
_SAMPLE = 500  # values looked at to call a column dates or text
ONE_HOT = ("category_code", "category")
HIGH = ("high_card", "over_budget")  # frequency and target encoding
# One-hot columns of all categories together, at most: 300,000 rows of them are 0.77 GB of float64.
# The 45 text and number-coded columns of Kaggle's house prices have 297 levels: such a table fits.
MAX_ONEHOT_WIDTH = 320
# The same 0.77 GB at any row count: a million rows get 96 one-hot columns (bench/scale.py: a
# 1M-row table's linear model and MLP peaked at 5-7.5 GB on 320).
MAX_ONEHOT_CELLS = 320 * 300_000


def _integral(values: pd.Series) -> bool:
    numbers = values.to_numpy(dtype=float)
    return bool(np.all(np.isfinite(numbers)) and np.all(numbers == np.round(numbers)))


def _parse_dates(values: pd.Series) -> pd.Series:
    return pd.to_datetime(values, errors="coerce", format="mixed")


def _looks_like_dates(values: pd.Series) -> bool:
    sample = values.head(_SAMPLE).astype(str)
    if not sample.str.fullmatch(_DATE).mean() >= 0.9:
        return False
    return bool(_parse_dates(sample).notna().mean() >= 0.9)


def _many_levels(levels: int, rows: int, max_onehot: int) -> bool:
    return levels > max_onehot or (levels > 10 and levels > 0.5 * rows)


def column_role(column: pd.Series, *, infer: bool, max_onehot: int = 50, max_code_levels: int = 10) -> str:
    """The role of one column, from its values alone (see the module's table)."""
    values = column.dropna()
    levels = int(values.nunique())
    if infer and column.nunique(dropna=False) <= 1:
        return "constant"
    if pd.api.types.is_bool_dtype(column) or pd.api.types.is_numeric_dtype(column):
        if not infer or levels == 0 or not _integral(values):
            return "numeric"
        if levels == len(column) and values.max() - values.min() < 2 * len(column):
            return "id"
        return "category_code" if 3 <= levels <= max_code_levels else "numeric"
    if levels == 0:
        return "category"
    if _looks_like_dates(values):
        return "date"
    many = _many_levels(levels, len(values), max_onehot)
    if many and values.head(_SAMPLE).astype(str).str.split().str.len().mean() >= 3:
        return "text"
    if levels == len(column) and len(column) > 1:
        return "row_unique"
    return "high_card" if many else "category"


def infer_roles(
    frame: pd.DataFrame,
    *,
    categorical: Sequence[str] = (),
    numeric: Sequence[str] = (),
    drop: Sequence[str] = (),
    text: Sequence[str] = (),
    date: Sequence[str] = (),
    high_cardinality: Sequence[str] = (),
    infer: bool = True,
    max_onehot: int = 50,
    max_code_levels: int = 10,
    max_onehot_width: int | None = MAX_ONEHOT_WIDTH,
    max_onehot_cells: int = MAX_ONEHOT_CELLS,
) -> dict[str, str]:
    """``{column: role}`` for every column of ``frame``, the given roles first, then the one-hot
    width budget (:func:`onehot_budget`)."""
    given = {**{c: "category" for c in categorical}, **{c: "numeric" for c in numeric},
             **{c: "text" for c in text}, **{c: "date" for c in date},
             **{c: "high_card" for c in high_cardinality}, **{c: "dropped" for c in drop}}
    roles = {c: given.get(c) or column_role(frame[c], infer=infer, max_onehot=max_onehot,
                                            max_code_levels=max_code_levels)
             for c in frame.columns}
    return onehot_budget(frame, roles, max_onehot_width, max_onehot_cells)


def onehot_budget(frame: pd.DataFrame, roles: dict[str, str], width: int | None,
                  cells: int = MAX_ONEHOT_CELLS) -> dict[str, str]:
    """``roles`` with the one-hot columns of most levels made ``over_budget`` until the levels of
    the rest (missing counted as a level, as the preprocessor encodes it) add up to at most
    ``width``, and to at most ``cells`` over the rows of ``frame``; ties go in column order.
    ``width=None``: no budget."""
    levels = {c: int(frame[c].nunique(dropna=False)) for c, r in roles.items() if r in ONE_HOT}
    total = sum(levels.values())
    if width is not None:
        width = min(width, cells // max(len(frame), 1))
    if width is None or total <= width:
        return roles
    roles = dict(roles)
    for column in sorted(levels, key=lambda c: -levels[c]):  # stable: ties in column order
        if total <= width:
            break
        roles[column] = "over_budget"
        total -= levels[column]
    return roles


def summary(roles: dict[str, str], id_column: str | None = None, shown: int = 4) -> str:
    """One line: each role present with its columns (the first ``shown`` of them)."""
    parts = [f"id {id_column}"] if id_column else []
    for role in ROLES:
        names = [c for c, r in roles.items() if r == role]
        if names:
            more = f" +{len(names) - shown}" if len(names) > shown else ""
            parts.append(f"{LABELS[role]} {len(names)}: {', '.join(map(str, names[:shown]))}{more}")
    return "; ".join(parts)


def _as_text(frame: pd.DataFrame) -> pd.DataFrame:
    """Each column as category labels (object dtype), column by column: no object copy of the frame."""
    return pd.DataFrame({c: category_text(frame[c]) for c in frame.columns}, index=frame.index, dtype=object)


def _labels(column: pd.Series) -> pd.Series:
    return pd.Series(category_text(column), index=column.index, dtype=object)


def _target_type(y) -> str:
    values = pd.Series(np.asarray(y))
    if pd.api.types.is_numeric_dtype(values) and (not _integral(values.dropna()) or values.nunique() > 20):
        return "continuous"
    return "auto"


def target_encoder(y, random_state: int) -> TargetEncoder:
    """scikit-learn's ``TargetEncoder``, cross-fitting on 5 shuffled folds seeded by ``random_state``:
    through ``cv`` where ``shuffle`` and ``random_state`` are deprecated (1.9), the same folds."""
    target_type = _target_type(y)
    if inspect.signature(TargetEncoder).parameters["shuffle"].default != "deprecated":
        return TargetEncoder(target_type=target_type, shuffle=True, random_state=random_state)
    classes = target_type != "continuous" and type_of_target(y) in ("binary", "multiclass")
    folds = (StratifiedKFold if classes else KFold)(5, shuffle=True, random_state=random_state)
    return TargetEncoder(target_type=target_type, cv=folds)


class ColumnRoles(TransformerMixin, BaseEstimator):
    """Encode each column by its role (see the module's table); DataFrame in, DataFrame out.

    Kept columns keep their place, new ones are appended. When no column needs anything, the
    frame passes through untouched. ``fit_transform`` target-encodes the training rows cross-fitted
    (``TargetEncoder.fit_transform``), ``transform`` with the encoder fit on every training row;
    the text models (``text_model``) the same way.
    """

    def __init__(self, categorical: Sequence[str] = (), numeric: Sequence[str] = (), drop: Sequence[str] = (),
                 text: Sequence[str] = (), date: Sequence[str] = (), high_cardinality: Sequence[str] = (),
                 infer: bool = True, max_onehot: int = 50, max_code_levels: int = 10,
                 max_onehot_width: int | None = MAX_ONEHOT_WIDTH, max_onehot_cells: int = MAX_ONEHOT_CELLS,
                 target_encoding: bool = True, text_model: bool = True, random_state: int = 0):
        self.categorical = categorical
        self.numeric = numeric
        self.drop = drop
        self.text = text
        self.date = date
        self.high_cardinality = high_cardinality
        self.infer = infer
        self.max_onehot = max_onehot
        self.max_code_levels = max_code_levels
        self.max_onehot_width = max_onehot_width
        self.max_onehot_cells = max_onehot_cells
        self.target_encoding = target_encoding
        self.text_model = text_model
        self.random_state = random_state

    def _columns(self, *roles: str) -> list[str]:
        return [c for c, r in self.roles_.items() if r in roles]

    def _fit(self, X: pd.DataFrame, y) -> pd.DataFrame | None:
        if not isinstance(X, pd.DataFrame):
            raise TypeError("ColumnRoles expects a pandas DataFrame")
        self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        self.n_features_in_ = X.shape[1]
        self.roles_ = infer_roles(X, categorical=self.categorical, numeric=self.numeric, drop=self.drop,
                                  text=self.text, date=self.date, high_cardinality=self.high_cardinality,
                                  infer=self.infer, max_onehot=self.max_onehot, max_code_levels=self.max_code_levels,
                                  max_onehot_width=self.max_onehot_width,
                                  max_onehot_cells=self.max_onehot_cells)
        self.dates_ = {}
        for column in self._columns("date"):
            parsed = _parse_dates(X[column])
            self.dates_[column] = (parsed.min(), bool((parsed.dropna().dt.floor("D") != parsed.dropna()).any()))
        high = self._columns(*HIGH)
        self.frequencies_ = {c: _labels(X[c]).value_counts(normalize=True).to_dict() for c in high}
        texts = self._columns("text")
        self.text_model_ = None
        if texts and self.text_model and y is not None:
            self.text_model_ = TextPrediction(classification=_target_type(y) != "continuous",
                                              random_state=self.random_state)
        self.encoder_ = None
        if high and self.target_encoding and y is not None:
            self.encoder_ = target_encoder(y, self.random_state)
            return _as_text(X[high])
        return None

    def fit(self, X: pd.DataFrame, y=None):
        high = self._fit(X, y)
        if high is not None:
            self.encoder_.fit(high, y)
        if self.text_model_ is not None:
            self.text_model_.fit(X[self._columns("text")], y)
        self.feature_names_out_ = np.asarray(self.transform(X.head(1)).columns, dtype=object)
        return self

    def fit_transform(self, X: pd.DataFrame, y=None, **fit_params) -> pd.DataFrame:
        high = self._fit(X, y)
        encoded = self.encoder_.fit_transform(high, y) if high is not None else None
        predicted = (self.text_model_.fit_transform(X[self._columns("text")], y)
                     if self.text_model_ is not None else None)
        out = self._transform(X, encoded, predicted)
        self.feature_names_out_ = np.asarray(out.columns, dtype=object)
        return out

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        check_is_fitted(self, "roles_")
        high = self._columns(*HIGH)
        encoded = self.encoder_.transform(_as_text(X[high])) if self.encoder_ is not None else None
        predicted = self.text_model_.transform(X[self._columns("text")]) if self.text_model_ is not None else None
        return self._transform(X, encoded, predicted)

    def _transform(self, X: pd.DataFrame, encoded: np.ndarray | None,
                   predicted: pd.DataFrame | None = None) -> pd.DataFrame:
        changed = {r for r in self.roles_.values()} - {"numeric", "category"}
        if not changed:
            return X
        missing = [c for c in self.feature_names_in_ if c not in X.columns]
        if missing:
            raise ValueError(f"columns missing at transform time: {', '.join(missing[:5])}")
        keep = [c for c in self.feature_names_in_ if self.roles_[c] in ("numeric", "category", "category_code")]
        out = X[keep]  # copy-on-write: no copy of the kept columns, and the codes below leave X as it is
        for column in self._columns("category_code"):
            out[column] = X[column].map(category_label, na_action="ignore").astype(object)
        new: dict[str, pd.Series | np.ndarray] = {}
        for column, (start, has_time) in self.dates_.items():
            parsed = _parse_dates(X[column])
            new[f"{column}_year"] = parsed.dt.year.astype(float)
            new[f"{column}_month"] = parsed.dt.month.astype(float)
            new[f"{column}_day"] = parsed.dt.day.astype(float)
            new[f"{column}_dayofyear"] = parsed.dt.dayofyear.astype(float)
            new[f"{column}_dayofweek"] = parsed.dt.dayofweek.astype(float)
            if has_time:
                new[f"{column}_hour"] = parsed.dt.hour.astype(float)
            new[f"{column}_days"] = (parsed - start).dt.total_seconds() / 86400.0
        for column in self._columns("text"):
            words = X[column].fillna("").astype(str)
            new[f"{column}_length"] = words.str.len().astype(float)
            new[f"{column}_words"] = words.str.split().str.len().astype(float)
        if predicted is not None:
            new.update({name: predicted[name].to_numpy() for name in predicted.columns})
        for column, shares in self.frequencies_.items():
            new[f"{column}_frequency"] = _labels(X[column]).map(shares).fillna(0.0).astype(float)
        if encoded is not None:
            for i, name in enumerate(self.encoder_.get_feature_names_out()):
                new[f"{name}_target"] = np.asarray(encoded)[:, i]
        added = pd.DataFrame({k: np.asarray(v, dtype=float) for k, v in new.items()}, index=X.index)
        return pd.concat([out, added], axis=1)

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        check_is_fitted(self, "feature_names_out_")
        return self.feature_names_out_
