"""Domain feature engineering for tabular competitions, as scikit-learn transformers.

Every transformer takes a pandas DataFrame and returns one: untouched columns keep their
dtype and position, new columns are appended at the end. Column names always come from
parameters, and a listed column that is absent from the fit frame is ignored, so one
competition spec also runs on frames that carry only some of its columns. Whatever a
transformer learns (which columns exist, skew lambdas, frequent categories) comes from the
frame passed to ``fit`` only, so the transformers can be fit inside each CV fold.

``make_feature_steps`` turns a declarative spec (as read from a TOML competition config)
into pipeline steps (``pipeline/competitions/house-prices.toml`` holds one for House Prices).
"""

import copy
from collections.abc import Mapping
from numbers import Integral, Real

import numpy as np
import pandas as pd
from scipy import special, stats
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from features.tabular import category_label

__all__ = [
    "QUALITY_SCALE",
    "DifferenceColumns",
    "FillMissingAsNone",
    "GroupRareCategories",
    "OrdinalEncodeScale",
    "ProductColumns",
    "SkewCorrector",
    "SlopesByCategory",
    "SumColumns",
    "make_feature_steps",
]

QUALITY_SCALE = ("Po", "Fa", "TA", "Gd", "Ex")

SKEW_METHODS = ("box-cox", "log1p", "yeo-johnson")

# Left-skewed columns can drive the optimal lambda far above 1, where values just beyond
# the fit range overflow; below this cap they stay finite for any plausible input.
MAX_LAMBDA = 3.0


def _string_list(value, what):
    """``value`` as a list of strings (column names, levels), rejecting a bare string."""
    if not isinstance(value, list | tuple) or not all(isinstance(name, str) for name in value):
        raise ValueError(f"{what} must be a list of strings, got {value!r}")
    return list(value)


def _levels(value, what):
    levels = _string_list(value, what)
    if not levels or len(set(levels)) != len(levels):
        raise ValueError(f"{what} must list distinct levels, got {value!r}")
    return levels


def _mapping(value, what):
    if not isinstance(value, Mapping):
        raise ValueError(f"{what} must be a dict, got {value!r}")
    return value


def _present(X, columns):
    return [column for column in columns if column in X.columns]


class _FrameTransformer(TransformerMixin, BaseEstimator):
    """DataFrame in, DataFrame out; the transform frame must have the fit frame's columns.

    Subclasses implement ``_check_params`` (sklearn validates parameters at fit, not in
    ``__init__``; it returns them normalised) and list appended columns in ``_new_columns``.
    """

    def _check_frame(self, X, *, reset):
        if not isinstance(X, pd.DataFrame):
            raise TypeError(
                f"{type(self).__name__} expects a pandas DataFrame, got {type(X).__name__}"
            )
        validate_data(self, X, reset=reset, skip_check_array=True)
        return X

    def _new_columns(self):
        return []

    def get_feature_names_out(self, input_features=None):
        check_is_fitted(self)
        if input_features is not None and list(input_features) != list(self.feature_names_in_):
            raise ValueError("input_features differ from the columns seen at fit")
        return np.asarray([*self.feature_names_in_, *self._new_columns()], dtype=object)


class FillMissingAsNone(_FrameTransformer):
    """Fill NaN that means "the house has none": ``"None"`` in text columns, 0 in numeric ones.

    Listed columns absent from the fit frame are ignored. A ``categorical`` column comes out
    with the ``str`` dtype even when it was read as all-NaN floats.
    """

    def __init__(self, categorical=(), numeric=()):
        self.categorical = categorical
        self.numeric = numeric

    def _check_params(self):
        return _string_list(self.categorical, "categorical"), _string_list(self.numeric, "numeric")

    def fit(self, X, y=None):
        categorical, numeric = self._check_params()
        X = self._check_frame(X, reset=True)
        self.categorical_ = _present(X, categorical)
        self.numeric_ = _present(X, numeric)
        not_numeric = [c for c in self.numeric_ if not pd.api.types.is_numeric_dtype(X[c])]
        if not_numeric:
            raise ValueError(f"numeric columns hold text: {not_numeric}")
        return self

    def transform(self, X):
        check_is_fitted(self)
        out = self._check_frame(X, reset=False).copy()
        for column in self.categorical_:
            out[column] = out[column].astype("str").fillna("None")
        for column in self.numeric_:
            out[column] = out[column].fillna(0)
        return out


class OrdinalEncodeScale(_FrameTransformer):
    """Replace ordered levels by their rank 1..len(levels); unknown levels and NaN become ``missing``.

    ``columns`` use the shared ``scale`` (lowest first, Kaggle's Po < Fa < TA < Gd < Ex by
    default); ``maps`` gives a column its own levels, e.g. ``{"GarageFinish": ["Unf", "RFn",
    "Fin"]}``, and overrides ``scale`` for that column. Output is int64, or float64 when
    ``missing`` is a float such as NaN.
    """

    def __init__(self, columns=(), scale=QUALITY_SCALE, maps=None, missing=0):
        self.columns = columns
        self.scale = scale
        self.maps = maps
        self.missing = missing

    def _check_params(self):
        scale = _levels(self.scale, "scale")
        levels = {column: scale for column in _string_list(self.columns, "columns")}
        for column, column_levels in _mapping(self.maps or {}, "maps").items():
            levels[column] = _levels(column_levels, f"maps[{column!r}]")
        if not isinstance(self.missing, Real):
            raise ValueError(f"missing must be a number, got {self.missing!r}")
        return levels

    def fit(self, X, y=None):
        levels = self._check_params()
        X = self._check_frame(X, reset=True)
        self.levels_ = {column: levels[column] for column in _present(X, levels)}
        return self

    def transform(self, X):
        check_is_fitted(self)
        out = self._check_frame(X, reset=False).copy()
        for column, levels in self.levels_.items():
            ranks = pd.Index(levels).get_indexer(out[column]).astype(np.int64) + 1
            out[column] = np.where(ranks > 0, ranks, self.missing)
        return out


def _sum_terms(sums):
    """``{name: [columns]}`` or ``{name: {"columns": [...], "weights": [...]}}`` as ``{name: {column: weight}}``."""
    terms = {}
    for name, definition in _mapping(sums, "sums").items():
        if isinstance(definition, Mapping):
            if set(definition) - {"columns", "weights"}:
                raise ValueError(
                    f"sums[{name!r}] takes only 'columns' and 'weights', got {sorted(definition)}"
                )
            columns = _string_list(definition.get("columns"), f"sums[{name!r}]['columns']")
            weights = definition.get("weights", [1] * len(columns))
            if (
                not isinstance(weights, list | tuple)
                or len(weights) != len(columns)
                or not all(isinstance(w, Real) and not isinstance(w, bool) for w in weights)
            ):
                raise ValueError(
                    f"sums[{name!r}]['weights'] must be {len(columns)} numbers, got {weights!r}"
                )
        else:
            columns = _string_list(definition, f"sums[{name!r}]")
            weights = [1] * len(columns)
        if not columns:
            raise ValueError(f"sums[{name!r}] names no columns")
        terms[name] = dict(zip(columns, weights, strict=True))
    return terms


class _DerivedColumns(_FrameTransformer):
    """Appends columns computed from others; one is skipped when an input is absent at fit."""

    def _check_no_overwrite(self, X, definitions):
        clashes = [name for name in definitions if name in X.columns]
        if clashes:
            raise ValueError(f"new columns would overwrite existing ones: {clashes}")

    def _new_columns(self):
        return list(self.definitions_)


class SumColumns(_DerivedColumns):
    """Append weighted sums of columns, NaN counted as 0, e.g. ``{"TotalSF": [...]}``.

    Each value is a list of columns (weights 1) or ``{"columns": [...], "weights": [...]}``,
    e.g. bathrooms as FullBath + 0.5 * HalfBath. A sum with an input column absent from the
    fit frame is skipped rather than computed from the remaining columns.
    """

    def __init__(self, sums):
        self.sums = sums

    def _check_params(self):
        return _sum_terms(self.sums)

    def fit(self, X, y=None):
        terms = self._check_params()
        X = self._check_frame(X, reset=True)
        self._check_no_overwrite(X, terms)
        self.definitions_ = {
            name: weights
            for name, weights in terms.items()
            if len(_present(X, weights)) == len(weights)
        }
        return self

    def transform(self, X):
        check_is_fitted(self)
        out = self._check_frame(X, reset=False).copy()
        for name, weights in self.definitions_.items():
            out[name] = out[list(weights)].mul(pd.Series(weights)).sum(axis=1)
        return out


class _PairColumns(_DerivedColumns):
    """Append ``name = combine(a, b)`` for ``{name: [a, b]}``; NaN operands give NaN.

    A pair with an operand absent from the fit frame is skipped.
    """

    _spec_key = ""

    def _pairs(self):
        pairs = {}
        for name, operands in _mapping(getattr(self, self._spec_key), self._spec_key).items():
            operands = _string_list(operands, f"{self._spec_key}[{name!r}]")
            if len(operands) != 2:
                raise ValueError(f"{self._spec_key}[{name!r}] must be two columns [a, b], got {operands}")
            pairs[name] = tuple(operands)
        return pairs

    def _check_params(self):
        return self._pairs()

    def fit(self, X, y=None):
        pairs = self._check_params()
        X = self._check_frame(X, reset=True)
        self._check_no_overwrite(X, pairs)
        self.definitions_ = {name: pair for name, pair in pairs.items() if len(_present(X, pair)) == 2}
        return self

    def transform(self, X):
        check_is_fitted(self)
        out = self._check_frame(X, reset=False).copy()
        for name, (first, second) in self.definitions_.items():
            out[name] = self._combine(out[first], out[second])
        return out


class DifferenceColumns(_PairColumns):
    """Append ``name = a - b`` for ``{name: (a, b)}``, e.g. HouseAge = YrSold - YearBuilt.

    Unlike ``SumColumns`` a NaN operand gives NaN (0 is no stand-in for a missing year).
    """

    _spec_key = "differences"

    def __init__(self, differences):
        self.differences = differences

    @staticmethod
    def _combine(first, second):
        return first - second


class ProductColumns(_PairColumns):
    """Append ``name = a * b`` for ``{name: (a, b)}``: interactions a linear model cannot form,
    e.g. overall quality times living area."""

    _spec_key = "products"

    def __init__(self, products):
        self.products = products

    @staticmethod
    def _combine(first, second):
        return first * second


class SlopesByCategory(_PairColumns):
    """Append one column per level of a category: ``{name: (number, category)}`` gives
    ``name_<level> = number`` on that level's rows and 0 elsewhere, so a linear model fits a
    slope per level (price per square foot by neighbourhood). Levels are those seen at fit,
    named as the preprocessor names categories (20 and 20.0 are one level);
    rows of other levels, or with no level, get 0 in every column. Learned: ``levels_``.
    """

    _spec_key = "slopes"

    def __init__(self, slopes):
        self.slopes = slopes

    def fit(self, X, y=None):
        super().fit(X, y)
        self.levels_ = {
            name: sorted(X[category].dropna().map(category_label).unique())
            for name, (_, category) in self.definitions_.items()
        }
        self._check_no_overwrite(X, self._new_columns())
        return self

    def _new_columns(self):
        return [f"{name}_{level}" for name, levels in self.levels_.items() for level in levels]

    def transform(self, X):
        check_is_fitted(self)
        X = self._check_frame(X, reset=False)
        columns = {}
        for name, (number, category) in self.definitions_.items():
            labels = X[category].map(category_label, na_action="ignore")
            for level in self.levels_[name]:
                columns[f"{name}_{level}"] = X[number].where(labels == level, 0.0)
        return pd.concat([X, pd.DataFrame(columns, index=X.index)], axis=1)


class SkewCorrector(_FrameTransformer):
    """Power-transform the numeric, non-binary columns whose |skewness| at fit exceeds ``threshold``.

    Methods, all learned per column on the fit frame only:

    - ``"box-cox"``: ``boxcox1p(x + shift, lambda)`` with lambda the Box-Cox maximum-likelihood
      estimate on ``x + shift + 1``. ``shift`` is 0, or minus the fit minimum when the column
      has negative values, so the fit data start at 0 rather than being skipped.
    - ``"log1p"``: ``log1p(x + shift)``, i.e. Box-Cox with lambda 0.
    - ``"yeo-johnson"``: ``scipy.stats.yeojohnson`` with its maximum-likelihood lambda, which
      handles negative values as they are (``shift`` stays 0).

    At transform, values below ``min(fit minimum, 0)`` are clipped to it, so unseen data
    outside the fit range cannot leave the transform's domain; lambdas are capped at
    ``MAX_LAMBDA`` so large values cannot overflow. NaN passes through for a later imputer.
    Learned: ``columns_``, ``lambdas_`` and ``lower_bounds_`` (the clip points, ``-shift``
    for Box-Cox and log1p), the last two dicts keyed by column.
    """

    def __init__(self, method="box-cox", threshold=0.75, exclude=()):
        self.method = method
        self.threshold = threshold
        self.exclude = exclude

    def _check_params(self):
        if self.method not in SKEW_METHODS:
            raise ValueError(f"method must be one of {SKEW_METHODS}, got {self.method!r}")
        if (
            not isinstance(self.threshold, Real)
            or isinstance(self.threshold, bool)
            or self.threshold < 0
        ):
            raise ValueError(f"threshold must be a non-negative number, got {self.threshold!r}")
        return _string_list(self.exclude, "exclude")

    def fit(self, X, y=None):
        exclude = self._check_params()
        X = self._check_frame(X, reset=True)
        numeric = X.select_dtypes("number").drop(columns=exclude, errors="ignore")
        candidates = numeric.loc[:, numeric.nunique() > 2]
        skewness = candidates.skew()
        self.columns_ = skewness.index[skewness.abs() > self.threshold].tolist()
        self.lower_bounds_, self.lambdas_ = {}, {}
        for column in self.columns_:
            values = candidates[column].dropna().to_numpy(dtype=float)
            lower_bound = min(values.min(), 0.0)
            self.lower_bounds_[column] = lower_bound
            self.lambdas_[column] = self._fit_lambda(values, lower_bound)
        return self

    def _fit_lambda(self, values, lower_bound):
        if self.method == "log1p":
            return 0.0
        if self.method == "box-cox":
            # On non-negative data the Yeo-Johnson likelihood is the Box-Cox likelihood of
            # values + 1, and scipy's Yeo-Johnson optimiser is bounded where boxcox_normmax's
            # bracket search fails on near-constant data.
            values = values - lower_bound
        return min(float(stats.yeojohnson_normmax(values)), MAX_LAMBDA)

    def transform(self, X):
        check_is_fitted(self)
        out = self._check_frame(X, reset=False).copy()
        for column in self.columns_:
            lower_bound, lmbda = self.lower_bounds_[column], self.lambdas_[column]
            values = np.maximum(out[column].to_numpy(dtype=float), lower_bound)
            if self.method == "yeo-johnson":
                out[column] = stats.yeojohnson(values, lmbda)
            else:
                out[column] = special.boxcox1p(values - lower_bound, lmbda)
        return out


class GroupRareCategories(_FrameTransformer):
    """Replace categories seen fewer than ``min_frequency`` times at fit, and unseen ones, by ``other``.

    ``min_frequency`` is a count (int >= 1) or, as a float in (0, 1), a fraction of the fit
    rows, as in ``OneHotEncoder``. ``columns=None`` means every text column of the fit frame;
    listed columns absent from it are ignored. NaN stays NaN. Learned:
    ``frequent_categories_``, a dict from column to the categories kept.
    """

    def __init__(self, min_frequency=10, columns=None, other="Rare"):
        self.min_frequency = min_frequency
        self.columns = columns
        self.other = other

    def _check_params(self):
        is_count = isinstance(self.min_frequency, Integral) and self.min_frequency >= 1
        is_fraction = isinstance(self.min_frequency, float) and 0 < self.min_frequency < 1
        if isinstance(self.min_frequency, bool) or not (is_count or is_fraction):
            raise ValueError(
                f"min_frequency must be an int >= 1 or a float in (0, 1), got {self.min_frequency!r}"
            )
        if not isinstance(self.other, str):
            raise ValueError(f"other must be a string, got {self.other!r}")
        return None if self.columns is None else _string_list(self.columns, "columns")

    def fit(self, X, y=None):
        columns = self._check_params()
        X = self._check_frame(X, reset=True)
        if columns is None:
            columns = [c for c in X.columns if pd.api.types.is_string_dtype(X[c])]
        min_count = self.min_frequency
        if isinstance(min_count, float):
            min_count *= len(X)
        self.frequent_categories_ = {}
        for column in _present(X, columns):
            counts = X[column].value_counts()
            self.frequent_categories_[column] = counts.index[counts >= min_count].tolist()
        return self

    def transform(self, X):
        check_is_fitted(self)
        out = self._check_frame(X, reset=False).copy()
        for column, frequent in self.frequent_categories_.items():
            keep = out[column].isin(frequent) | out[column].isna()
            out[column] = out[column].where(keep, self.other)
        return out


_STEP_FACTORIES = {
    "fill_none": lambda section: FillMissingAsNone(**section),
    "ordinal": lambda section: OrdinalEncodeScale(**section),
    "sums": SumColumns,
    "differences": DifferenceColumns,
    "skew": lambda section: SkewCorrector(**section),
    "products": ProductColumns,  # after skew: products of the corrected columns fit better
    "slopes": SlopesByCategory,  # after skew, likewise (a slope on log area, not on area)
    "rare": lambda section: GroupRareCategories(**section),
}


def make_feature_steps(spec):
    """Build ``[(name, transformer), ...]`` for ``sklearn.pipeline.Pipeline`` from a spec dict.

    Steps always run in this order, whatever the order of the keys; absent keys are skipped,
    and a present key with an empty table (``"skew": {}``) uses that step's defaults::

        {"fill_none": {"categorical": [...], "numeric": [...]},         # FillMissingAsNone
         "ordinal": {"columns": [...], "scale": [...],                  # OrdinalEncodeScale;
                     "maps": {"BsmtExposure": ["No", "Mn", "Av", "Gd"]},  # levels lowest first
                     "missing": 0},
         "sums": {"TotalSF": ["TotalBsmtSF", "1stFlrSF", "2ndFlrSF"],    # SumColumns
                  "TotalBathrooms": {"columns": ["FullBath", "HalfBath"],
                                     "weights": [1, 0.5]}},
         "differences": {"HouseAge": ["YrSold", "YearBuilt"]},           # DifferenceColumns
         "skew": {"method": "box-cox", "threshold": 0.75, "exclude": []},  # SkewCorrector
         "products": {"QualityLivArea": ["OverallQual", "GrLivArea"]},   # ProductColumns
         "slopes": {"LivAreaBy": ["GrLivArea", "Neighborhood"]},         # SlopesByCategory
         "rare": {"min_frequency": 10, "columns": [...], "other": "Rare"}}  # GroupRareCategories

    In TOML that is a ``[features]`` table with one sub-table per key. Each step gets a deep
    copy of its section. Raises ``ValueError`` naming the key for an unknown key or a
    section of the wrong shape.
    """
    if not isinstance(spec, Mapping):
        raise ValueError(f"feature spec must be a dict, got {spec!r}")
    unknown = [key for key in spec if key not in _STEP_FACTORIES]
    if unknown:
        raise ValueError(
            f"unknown feature spec keys {unknown}; expected some of {list(_STEP_FACTORIES)}"
        )
    steps = []
    for key, factory in _STEP_FACTORIES.items():
        if key not in spec:
            continue
        section = copy.deepcopy(spec[key])
        if not isinstance(section, Mapping):
            raise ValueError(f"feature spec {key!r} must be a dict, got {section!r}")
        try:
            step = factory(section)
            step._check_params()
        except (TypeError, ValueError) as error:
            raise ValueError(f"feature spec {key!r}: {error}") from error
        steps.append((key, step))
    return steps
