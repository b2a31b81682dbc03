"""Features a tree cannot make one column at a time, each fit on the training fold only.

The kinds TabArena's "TabPrep" puts in front of LightGBM, on the frame :class:`features.roles.
ColumnRoles` gives (numbers, and categories as text):

==============  ===============================================================================
step            adds
==============  ===============================================================================
``target``      each category's target encoding (cross-fitted), and that of the pairwise crosses
                of the ``max_cross_columns`` categories whose encoding tells most of the target
``integers``    integer columns of many repeated values (store ids, codes stored as numbers) as
                categories too: their target encoding and frequency, the number kept as it is
``arithmetic``  ratio, difference and product of each pair of the ``max_numbers`` numbers most
                associated with the target (rank correlation)
``groups``      for the ``max_group_columns`` most telling categories and those numbers: the
                number's mean within its category, and its distance from that mean
==============  ===============================================================================

Every choice (which columns, crosses and pairs) and every statistic (encodings, frequencies,
group means) comes from the rows given to ``fit``; ``fit_transform`` encodes those rows' targets
cross-fitted (scikit-learn's ``TargetEncoder``), so no training row's encoding has seen its own
target, and ``transform`` (the held-out part, the test set) uses the encoder fit on every
training row. DataFrame in, the same DataFrame with the new columns (float32) appended out.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from features.roles import target_encoder
from features.tabular import category_text, infer_column_types

STEPS = ("target", "integers", "arithmetic", "groups")
ASSOCIATION_ROWS = 100_000  # rows sampled to rank columns by association: the ranking, not a fit


def _codes(column: pd.Series, levels: pd.Index | None = None) -> tuple[np.ndarray, pd.Index]:
    """A column's category labels as integer codes (-1: a label not among ``levels``), and its levels."""
    labels = category_text(column)
    if levels is None:
        levels = pd.Index(pd.unique(labels))
    return levels.get_indexer(labels), levels


def _indicators(y) -> np.ndarray:
    """The target as columns to correlate with: itself (numbers), or one 0/1 column per class."""
    values = pd.Series(np.asarray(y))
    if pd.api.types.is_float_dtype(values) or values.nunique() > 20:
        return values.to_numpy(dtype=float)[:, None]
    codes, classes = pd.factorize(values)
    return (codes[:, None] == np.arange(len(classes))[None, :]).astype(float)


def _association(features: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Each feature column's largest absolute correlation with a target column (NaN rows as the mean)."""
    x = np.where(np.isfinite(features), features, np.nan)
    x = x - np.nanmean(x, axis=0)
    x = np.nan_to_num(x)
    t = targets - targets.mean(axis=0)
    norms = np.sqrt((x ** 2).sum(axis=0))[:, None] * np.sqrt((t ** 2).sum(axis=0))[None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        correlation = np.abs(x.T @ t) / norms
    return np.nan_to_num(correlation).max(axis=1)


def _integral(column: pd.Series) -> bool:
    values = column.dropna().to_numpy(dtype=float)
    return bool(len(values) and np.all(values == np.round(values)))


class CraftedFeatures(TransformerMixin, BaseEstimator):
    """Append the ``steps`` of the module's table to a frame of numbers and categories.

    ``min_integer_levels``: an integer column of fewer levels is left as a number (``ColumnRoles``
    already made codes of 3 to 10 levels categories); one of more than half the rows is an id,
    not a category. ``random_state``: the target encoder's cross-fitting folds.
    """

    def __init__(self, steps: Sequence[str] = STEPS, max_cross_columns: int = 4, max_numbers: int = 4,
                 max_group_columns: int = 2, min_integer_levels: int = 11, random_state: int = 0):
        self.steps = steps
        self.max_cross_columns = max_cross_columns
        self.max_numbers = max_numbers
        self.max_group_columns = max_group_columns
        self.min_integer_levels = min_integer_levels
        self.random_state = random_state

    def _check_params(self) -> None:
        unknown = [s for s in self.steps if s not in STEPS]
        if unknown or isinstance(self.steps, str):
            raise ValueError(f"steps={self.steps!r}: some of {', '.join(STEPS)}")
        for name in ("max_cross_columns", "max_numbers", "max_group_columns", "min_integer_levels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name}={value!r}: a whole number, 0 or more")

    # --- fit: every choice from the training rows ------------------------------------------
    def fit(self, X: pd.DataFrame, y):
        self.fit_transform(X, y)
        return self

    def fit_transform(self, X: pd.DataFrame, y=None, **fit_params) -> pd.DataFrame:
        if not isinstance(X, pd.DataFrame):
            raise TypeError("CraftedFeatures expects a pandas DataFrame")
        if y is None:
            raise ValueError("CraftedFeatures needs the target: its encodings and choices are fit on it")
        self._check_params()
        self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        self.n_features_in_ = X.shape[1]
        numbers, categories = infer_column_types(X)
        rows = len(X)
        integers = [c for c in numbers if "integers" in self.steps and not pd.api.types.is_bool_dtype(X[c])
                    and self.min_integer_levels <= X[c].nunique() <= rows // 2 and _integral(X[c])]
        targets = _indicators(y)
        sample = np.random.default_rng(self.random_state).permutation(rows)[:ASSOCIATION_ROWS]

        # Every category and integer column gets codes; their cross-fitted encodings rank them.
        coded = [*categories, *integers]
        self.levels_ = {c: _codes(X[c])[1] for c in coded}
        codes = {c: _codes(X[c], self.levels_[c])[0] for c in coded}
        ranked: list[str] = []
        if coded and {"target", "groups"} & set(self.steps):
            single = target_encoder(y, self.random_state).fit_transform(pd.DataFrame(codes)[coded], y)
            width = single.shape[1] // len(coded)  # a column per class for a multiclass target
            telling = _association(single[sample], targets[sample]).reshape(len(coded), width).max(axis=1)
            ranked = [coded[i] for i in np.argsort(-telling, kind="stable")]
        self.crosses_: list[tuple[str, str]] = []
        if "target" in self.steps:
            self.crosses_ = list(combinations(sorted(ranked[: self.max_cross_columns], key=coded.index), 2))
        self.groups_ = ranked[: self.max_group_columns] if "groups" in self.steps else []
        self.encoded_ = [*(categories if "target" in self.steps else ()), *integers,
                         *(self._cross_name(a, b) for a, b in self.crosses_)]
        self.frequencies_ = {name: pd.Series(self._cross_codes(name, codes)).value_counts(normalize=True).to_dict()
                             for name in self.encoded_ if name not in categories}
        self.encoder_ = None
        block: dict[str, np.ndarray] = {}
        if self.encoded_:
            self.encoder_ = target_encoder(y, self.random_state)
            self._add_encoded(self.encoder_.fit_transform(self._encoder_input(codes), y), block)
            self._add_frequencies(codes, block)

        plain = [c for c in numbers if c not in integers and X[c].nunique() > 2]
        self.numbers_: list[str] = []
        if plain and ("arithmetic" in self.steps or "groups" in self.steps):
            ranks = X[plain].iloc[sample].rank().to_numpy(dtype=float)
            telling = _association(ranks, targets[sample])
            self.numbers_ = [plain[i] for i in np.argsort(-telling, kind="stable")[: self.max_numbers]]
        self.group_means_ = {(n, g): pd.Series(X[n].to_numpy(dtype=float)).groupby(codes[g]).mean().to_dict()
                             for g in self.groups_ for n in self.numbers_}
        self._add_numbers(X, codes, block)
        out = self._joined(X, block)
        self.feature_names_out_ = np.asarray(out.columns, dtype=object)
        return out

    # --- names ------------------------------------------------------------------------------
    @staticmethod
    def _cross_name(first: str, second: str) -> str:
        return f"{first}&{second}"

    def _encoder_input(self, codes: dict[str, np.ndarray]) -> pd.DataFrame:
        return pd.DataFrame({name: self._cross_codes(name, codes) for name in self.encoded_})

    def _cross_codes(self, name: str, codes: dict[str, np.ndarray]) -> np.ndarray:
        if name in codes:
            return codes[name]
        first, second = next((a, b) for a, b in self.crosses_ if self._cross_name(a, b) == name)
        # Unique per pair of codes; a label unseen at fit (-1) makes a pair unseen too.
        return np.where((codes[first] < 0) | (codes[second] < 0), -1,
                        codes[first] * (len(self.levels_[second]) + 1) + codes[second])

    # --- the new columns ----------------------------------------------------------------------
    def _add_encoded(self, encoded: np.ndarray, block: dict) -> None:
        for i, name in enumerate(self.encoder_.get_feature_names_out()):
            block[f"{name}_target"] = np.asarray(encoded[:, i], dtype=np.float32)

    def _add_frequencies(self, codes: dict[str, np.ndarray], block: dict) -> None:
        for name, shares in self.frequencies_.items():
            values = pd.Series(self._cross_codes(name, codes)).map(shares).fillna(0.0)
            block[f"{name}_frequency"] = values.to_numpy(dtype=np.float32)

    def _add_numbers(self, X: pd.DataFrame, codes: dict[str, np.ndarray], block: dict) -> None:
        values = {n: X[n].to_numpy(dtype=float) for n in self.numbers_}
        if "arithmetic" in self.steps:
            for a, b in combinations(self.numbers_, 2):
                with np.errstate(divide="ignore", invalid="ignore"):
                    ratio = np.where(values[b] != 0, values[a] / values[b], np.nan)
                block[f"{a}/{b}"] = ratio.astype(np.float32)
                block[f"{a}-{b}"] = (values[a] - values[b]).astype(np.float32)
                block[f"{a}*{b}"] = (values[a] * values[b]).astype(np.float32)
        for (number, group), means in self.group_means_.items():
            mean = pd.Series(codes[group]).map(means).to_numpy(dtype=float)
            block[f"{number}|{group}_mean"] = mean.astype(np.float32)
            block[f"{number}|{group}_gap"] = (values[number] - mean).astype(np.float32)

    def _joined(self, X: pd.DataFrame, block: dict) -> pd.DataFrame:
        clash = [name for name in block if name in X.columns]
        if clash:
            raise ValueError(f"CraftedFeatures would overwrite column(s) {', '.join(clash[:3])}")
        return pd.concat([X, pd.DataFrame(block, index=X.index)], axis=1) if block else X

    # --- transform: the held-out part and the test set ------------------------------------------
    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        check_is_fitted(self, "levels_")
        missing = [c for c in self.feature_names_in_ if c not in X.columns]
        if missing:
            raise ValueError(f"columns missing at transform time: {', '.join(map(str, missing[:5]))}")
        codes = {c: _codes(X[c], levels)[0] for c, levels in self.levels_.items()}
        block: dict[str, np.ndarray] = {}
        if self.encoder_ is not None:
            self._add_encoded(self.encoder_.transform(self._encoder_input(codes)), block)
            self._add_frequencies(codes, block)
        self._add_numbers(X, codes, block)
        return self._joined(X, block)

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        check_is_fitted(self, "feature_names_out_")
        return self.feature_names_out_
