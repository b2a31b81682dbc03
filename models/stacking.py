"""A second layer: a model fit on the level-one members' out-of-fold predictions, beside the
original features, as AutoGluon's stack level two is.

The level-one members are ``FoldBag``s (each fold's model, averaged). A level-two model sees, for
each training row, every member's out-of-fold prediction (a value in the space the members were
trained in, P(classes[1]), or one column per class) and the row's features as the members'
feature steps encode them; it is fit k-fold on the run's folds, so that its own out-of-fold
predictions, and its score, are cross-fitted. The test set reaches it the same way: each member's
test predictions (the average of its fold models) beside the features, through each of its fold
models, averaged. The regularisation is strong (few leaves, many rows per leaf, an L2 penalty,
row and column sampling, early stopping inside each fold): a second layer overfits easily.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.utils.metaestimators import available_if

from models.ensemble import PrefitEnsemble, _inverse_of

LEVEL_TWO_PARAMS = {"learning_rate": 0.05, "num_leaves": 8, "min_child_samples": 40, "reg_lambda": 5.0,
                    "subsample": 0.8, "colsample_bytree": 0.8}
COLUMN_PREFIX = "level_one:"  # the level-one columns' names, beside the features'


def level_one_columns(outputs: Sequence[np.ndarray], names: Sequence[str]) -> pd.DataFrame:
    """Each member's predictions as columns: values and P(classes[1]) as one (a binary member's two
    class columns as their second), several classes one column each."""
    columns = {}
    for name, output in zip(names, outputs, strict=True):
        output = np.asarray(output, dtype=float)
        if output.ndim == 2 and output.shape[1] == 2:
            output = output[:, 1]
        if output.ndim == 1:
            columns[f"{COLUMN_PREFIX}{name}"] = output
        else:
            columns.update({f"{COLUMN_PREFIX}{name}:{k}": output[:, k] for k in range(output.shape[1])})
    return pd.DataFrame(columns)


def joined(features, level_one: pd.DataFrame):
    """The level-two model's input: the encoded ``features`` (a frame or a matrix; None: none) with
    the ``level_one`` columns after them."""
    level_one = level_one.reset_index(drop=True)
    if features is None:
        return level_one
    if not isinstance(features, pd.DataFrame):
        features = pd.DataFrame(np.asarray(features.todense() if hasattr(features, "todense") else features))
        features.columns = [f"feature_{i}" for i in range(features.shape[1])]
    return pd.concat([features.reset_index(drop=True), level_one], axis=1)


class StackedEnsemble(PrefitEnsemble):
    """The level-one ``members`` (their ensemble weights kept for what the run reports) and the
    level-two fold models, ``level_two``: each a pair (its fold's fitted feature steps, or None
    where it sees the level-one columns only; its model). The prediction is the fold models'
    average: values through ``target_transform``'s inverse, or probabilities in ``classes_``
    order."""

    def __init__(self, members: Sequence[tuple[str, object]], weights: Sequence[float], intercept: float = 0.0,
                 target_transform: str | None = None, threshold: float = 0.5,
                 level_two: Sequence[tuple[object, object]] = ()):
        super().__init__(members, weights, intercept, target_transform, threshold)
        self.level_two = level_two

    def _input(self, outputs: Sequence[np.ndarray], X, features):
        return joined(None if features is None else features.transform(X), level_one_columns(outputs, self.used_names()))

    def combine(self, outputs: Sequence[np.ndarray], X=None) -> np.ndarray:
        """``member_outputs(X)`` through the level-two fold models (``X``: the rows themselves,
        for the features beside them)."""
        classifier = self._is_classifier()
        classes = self.classes_ if classifier else None
        total = None
        for features, model in self.level_two:
            rows = self._input(outputs, X, features)
            if classifier:
                each = np.zeros((len(rows), len(classes)))
                each[:, np.searchsorted(classes, model.classes_)] = model.predict_proba(rows)
            else:
                each = np.asarray(model.predict(rows), dtype=float)
            total = each if total is None else total + each
        average = total / len(self.level_two)
        if classifier:
            return average / average.sum(axis=1, keepdims=True)
        return _inverse_of(self.target_transform)(average)

    @available_if(PrefitEnsemble._is_classifier)
    def predict_proba(self, X) -> np.ndarray:
        return self.combine(self.member_outputs(X), X)

    def predict(self, X) -> np.ndarray:
        if self._is_classifier():
            return self.classes_[np.argmax(self.predict_proba(X), axis=1)]
        return self.combine(self.member_outputs(X), X)
