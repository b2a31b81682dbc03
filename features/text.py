"""Free text as what a linear model reads in it: :class:`TextPrediction`.

A tree splits on one number at a time; the words of a sentence are thousands of sparse columns.
Each text column becomes a TF-IDF matrix (word unigrams and bigrams, and character 2- to
4-grams within words, which catch titles, stems and misspellings), a regularized linear model
(ridge for a number, logistic regression for classes) learns the target from it, and its
prediction is the feature the trees get: one column per text column (per class for more than
two classes).

``fit_transform`` gives the training rows' predictions cross-fitted (``folds`` shuffled folds
seeded by ``random_state``): no row's feature has seen its own target, as for the target
encoding. ``transform`` (the held-out part, the test set) uses the model fit on every training
row. The vocabulary and its IDF weights use no target. At most ``max_rows`` rows fit the models
(a seeded sample; each row outside it gets the prediction of the model fit on the sample, which
never saw it): a million rows of text would otherwise cost minutes a fold.

A fit is remembered by its content (the text, the target and the parameters; the last
``REMEMBERED`` fits): each portfolio configuration that encodes the other columns its own way
builds its own column roles on the same training fold, and would otherwise pay for the same
text models again (tweets_likes: 5 s a fold, four encodings).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.utils.validation import check_is_fitted

MAX_VOCABULARY = 50_000  # terms kept per analyzer, the most frequent: a bound on the matrix's width
MIN_ROWS = 20  # fewer training rows (or a class with fewer than 2): no model, no feature
REMEMBERED = 8
_FITS: OrderedDict[str, tuple] = OrderedDict()  # content key -> (models_, classes_, the cross-fitted frame)


def _vectorizers() -> list[TfidfVectorizer]:
    common = {"min_df": 2, "sublinear_tf": True, "max_features": MAX_VOCABULARY, "dtype": np.float32}
    return [TfidfVectorizer(analyzer="word", ngram_range=(1, 2), **common),
            TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), **common)]


def _strings(column: pd.Series) -> list[str]:
    return column.fillna("").astype(str).tolist()


class TextPrediction(TransformerMixin, BaseEstimator):
    """Each column of a frame of text as a linear model's prediction of the target from its TF-IDF.

    ``classification``: the target is classes (logistic regression, P(class) columns: one for two
    classes), else a number (ridge). ``alpha``: the ridge's penalty; ``1 / alpha`` the logistic
    regression's C.
    """

    def __init__(self, classification: bool = False, alpha: float = 1.0, folds: int = 5,
                 max_rows: int = 200_000, random_state: int = 0):
        self.classification = classification
        self.alpha = alpha
        self.folds = folds
        self.max_rows = max_rows
        self.random_state = random_state

    def _model(self):
        if self.classification:
            return LogisticRegression(C=1.0 / self.alpha, max_iter=1000)
        return Ridge(alpha=self.alpha)

    def _matrix(self, vectorizers: list[TfidfVectorizer], texts: list[str]) -> sp.csr_matrix:
        return sp.hstack([v.transform(texts) for v in vectorizers], format="csr")

    def _outputs(self, model, matrix) -> np.ndarray:
        if not self.classification:
            return model.predict(matrix)[:, None]
        probabilities = model.predict_proba(matrix)
        return probabilities[:, 1:] if probabilities.shape[1] == 2 else probabilities

    def _folds(self, y: np.ndarray):
        if not self.classification:
            return KFold(self.folds, shuffle=True, random_state=self.random_state)
        smallest = int(np.unique(y, return_counts=True)[1].min())
        return StratifiedKFold(min(self.folds, smallest), shuffle=True, random_state=self.random_state)

    def fit(self, X: pd.DataFrame, y):
        """The models on every training row; no cross-fitting (``fit_transform`` does that)."""
        self._fit(X, y, cross_fitted=False)
        return self

    def fit_transform(self, X: pd.DataFrame, y=None, **fit_params) -> pd.DataFrame:
        return self._fit(X, y, cross_fitted=True)

    def _fit(self, X: pd.DataFrame, y, cross_fitted: bool) -> pd.DataFrame | None:
        if not isinstance(X, pd.DataFrame):
            raise TypeError("TextPrediction expects a pandas DataFrame")
        if y is None:
            raise ValueError("TextPrediction needs the target: its models learn it")
        self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        self.n_features_in_ = X.shape[1]
        y = np.asarray(y)
        key = self._content_key(X, y)
        if key in _FITS:
            _FITS.move_to_end(key)
            self.models_, self.classes_, out = _FITS[key]
            self.feature_names_out_ = np.asarray(out.columns, dtype=object)
            return out.set_axis(X.index).copy()
        self.classes_ = np.unique(y) if self.classification else None
        rows = np.random.default_rng(self.random_state).permutation(len(X))[: self.max_rows]
        rows.sort()
        usable = len(rows) >= MIN_ROWS and (
            not self.classification or (len(self.classes_) > 1
                                        and np.unique(y[rows], return_counts=True)[1].min() >= 2))
        self.models_: dict[str, tuple[list[TfidfVectorizer], object]] = {}
        block: dict[str, np.ndarray] = {}
        others = np.setdiff1d(np.arange(len(X)), rows)
        width = 1 if not self.classification or len(self.classes_) == 2 else len(self.classes_)
        for column in X.columns if usable else ():
            texts = _strings(X[column])
            vectorizers = _vectorizers()
            try:
                matrix = sp.hstack([v.fit_transform([texts[i] for i in rows]) for v in vectorizers], format="csr")
            except ValueError:  # no term in two rows or more: nothing to learn from
                continue
            model = self._model().fit(matrix, y[rows])
            self.models_[column] = (vectorizers, model)
            values = np.zeros((len(X) if cross_fitted else 0, width))
            if cross_fitted:
                if len(others):  # outside the sample: the model that never saw them
                    values[others] = self._outputs(model, self._matrix(vectorizers, [texts[i] for i in others]))
                for fit_part, held_part in self._folds(y[rows]).split(rows, y[rows]):
                    fold_model = self._model().fit(matrix[fit_part], y[rows[fit_part]])
                    values[rows[held_part]] = self._outputs(fold_model, matrix[held_part])
            self._add(column, values, block)
        out = pd.DataFrame(block, index=X.index if cross_fitted else None)
        self.feature_names_out_ = np.asarray(out.columns, dtype=object)
        if not cross_fitted:
            return None
        _FITS[key] = (self.models_, self.classes_, out.copy())
        while len(_FITS) > REMEMBERED:
            _FITS.popitem(last=False)
        return out

    def _content_key(self, X: pd.DataFrame, y: np.ndarray) -> str:
        digest = hashlib.sha256(repr(sorted(self.get_params().items())).encode())
        digest.update(repr(list(X.columns)).encode())
        digest.update(pd.util.hash_pandas_object(X, index=False).to_numpy().tobytes())
        digest.update(pd.util.hash_array(y).tobytes() if y.dtype == object else np.ascontiguousarray(y).tobytes())
        digest.update(str(y.dtype).encode())
        return digest.hexdigest()

    def _add(self, column: str, values: np.ndarray, block: dict) -> None:
        if values.shape[1] == 1:
            block[f"{column}_text"] = values[:, 0].astype(np.float32)
            return
        for i, label in enumerate(self.classes_):
            block[f"{column}_text_{label}"] = values[:, i].astype(np.float32)

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        check_is_fitted(self, "models_")
        block: dict[str, np.ndarray] = {}
        for column, (vectorizers, model) in self.models_.items():
            self._add(column, self._outputs(model, self._matrix(vectorizers, _strings(X[column]))), block)
        return pd.DataFrame(block, index=X.index, columns=self.feature_names_out_)

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        check_is_fitted(self, "feature_names_out_")
        return self.feature_names_out_
