"""LightGBM, XGBoost and CatBoost as scikit-learn estimators (the shared fit: ``models/boosting.py``).

Defaults are the field's for any target, as AutoGluon and TabArena run the libraries: a learning
rate of 0.05 (XGBoost 0.1), the libraries' own tree shapes (31 leaves; depth 6), a ceiling of
10,000 rounds that early stopping on a tenth of the rows ends long before.
"""

from __future__ import annotations

import lightgbm
import numpy as np
import pandas as pd
import xgboost
from catboost import CatBoostClassifier as _CatBoostClassifier
from catboost import CatBoostRegressor as _CatBoostRegressor

from models.boosting import (
    PATIENCE_SHARE,
    BoostedClassifier,
    BoostedRegressor,
    Booster,
    Patience,
    categorical_columns,
)
from models.time_limit import TimeLimit

MAX_ITER = 10_000
PATIENCE = 50
HOLDOUT = 0.1
_LIGHTGBM_LOSS = {"squared_error": "regression", "absolute_error": "regression_l1"}
_XGBOOST_LOSS = {"squared_error": "reg:squarederror", "absolute_error": "reg:absoluteerror"}
_CATBOOST_LOSS = {"squared_error": "RMSE", "absolute_error": "MAE"}


class _LightGBMStop:
    """LightGBM's per-round callback: patience on the first held-out metric (``patience`` None: no
    held-out rows), and the time limit.
    Both stop through ``EarlyStopException`` with the best round, which ``lightgbm.train`` keeps."""

    order = 30

    def __init__(self, patience: Patience | None, limit: TimeLimit):
        self.patience, self.limit = patience, limit
        self.best_results, self.rounds, self.timed_out = [], 0, False

    def __call__(self, env) -> None:
        self.rounds = env.iteration + 1
        if self.patience is not None:
            result = env.evaluation_result_list[0]
            ends = self.patience.ends(env.iteration, -result[2] if result[3] else result[2])  # lower is better
            if self.patience.best_round == env.iteration:
                self.best_results = env.evaluation_result_list
            if ends:
                raise lightgbm.callback.EarlyStopException(self.patience.best_round, self.best_results)
        if self.limit.expired():
            self.timed_out = True
            best = self.patience.best_round if self.patience and self.patience.best_round >= 0 else env.iteration
            raise lightgbm.callback.EarlyStopException(best, self.best_results or env.evaluation_result_list)


class LightGBMModel(Booster):
    def __init__(self, *, learning_rate: float = 0.05, max_iter: int = MAX_ITER, num_leaves: int = 31,
                 min_child_samples: int = 20, subsample: float = 1.0, colsample_bytree: float = 1.0,
                 reg_lambda: float = 0.0, reg_alpha: float = 0.0, max_bin: int = 255, early_stopping: bool = True,
                 validation_fraction: float | int = HOLDOUT, n_iter_no_change: int = PATIENCE,
                 patience_share: float = PATIENCE_SHARE,
                 eval_metric: str | None = None, loss: str = "squared_error", native_categories: bool = False,
                 time_limit: float | None = None, random_state: int = 0):
        self.learning_rate = learning_rate
        self.max_iter = max_iter
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.subsample = subsample
        self.colsample_bytree = colsample_bytree
        self.reg_lambda = reg_lambda
        self.reg_alpha = reg_alpha
        self.max_bin = max_bin
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.patience_share = patience_share
        self.eval_metric = eval_metric
        self.loss = loss
        self.native_categories = native_categories
        self.time_limit = time_limit
        self.random_state = random_state

    def _train(self, X, y, X_val, y_val, n_classes, limit, rounds):
        objective = {0: _LIGHTGBM_LOSS[self.loss], 2: "binary"}.get(n_classes, "multiclass")
        params = {"objective": objective, "learning_rate": self.learning_rate, "num_leaves": self.num_leaves,
                  "min_child_samples": self.min_child_samples, "bagging_fraction": self.subsample,
                  "bagging_freq": 1 if self.subsample < 1 else 0, "feature_fraction": self.colsample_bytree,
                  "lambda_l2": self.reg_lambda, "lambda_l1": self.reg_alpha, "max_bin": self.max_bin,
                  "seed": self.random_state, "deterministic": True, "force_col_wise": True,
                  "num_threads": self.threads_, "verbosity": -1}
        if self.eval_metric:
            params["metric"] = {"mae": "l1"}[self.eval_metric]
        if n_classes > 2:
            params["num_class"] = n_classes
        train = lightgbm.Dataset(X, y, categorical_feature=categorical_columns(X) or "auto")
        valid = [] if X_val is None else [lightgbm.Dataset(X_val, y_val, reference=train)]
        stop = _LightGBMStop(self._patience(y_val), limit)
        self.booster_ = lightgbm.train(params, train, num_boost_round=rounds, valid_sets=valid,
                                       callbacks=[stop])
        self.n_iter_ = stop.rounds
        self.stopped_for_time_ = stop.timed_out
        self.best_iteration_ = self.booster_.best_iteration or stop.rounds
        return self

    def _predict(self, X):
        return self.booster_.predict(X, num_iteration=self.best_iteration_)


class LightGBMRegressor(BoostedRegressor, LightGBMModel):
    """LightGBM regression (L2), early stopping inside the training fold."""


class LightGBMClassifier(BoostedClassifier, LightGBMModel):
    """LightGBM binary or multiclass (log loss), early stopping inside the training fold."""


class _XGBoostStop(xgboost.callback.TrainingCallback):
    """XGBoost's per-round callback: patience on the last held-out metric (``patience`` None: no
    held-out rows), and the time limit."""

    def __init__(self, patience: Patience | None, limit: TimeLimit):
        super().__init__()
        self.patience, self.limit, self.rounds, self.timed_out = patience, limit, 0, False

    def after_iteration(self, model, epoch: int, evals_log) -> bool:
        self.rounds = epoch + 1
        ends = False
        if self.patience is not None:
            *_, losses = evals_log["valid"].values()  # the last metric, as XGBoost's own EarlyStopping
            ends = self.patience.ends(epoch, float(losses[-1]))
        self.timed_out = self.limit.expired()
        return ends or self.timed_out  # True stops training


class XGBoostModel(Booster):
    def __init__(self, *, learning_rate: float = 0.1, max_iter: int = MAX_ITER, max_depth: int = 6,
                 min_child_weight: float = 1.0, subsample: float = 1.0, colsample_bytree: float = 1.0,
                 reg_lambda: float = 1.0, reg_alpha: float = 0.0, max_bin: int = 256, early_stopping: bool = True,
                 validation_fraction: float | int = HOLDOUT, n_iter_no_change: int = PATIENCE,
                 patience_share: float = PATIENCE_SHARE,
                 eval_metric: str | None = None, loss: str = "squared_error", native_categories: bool = False,
                 time_limit: float | None = None, random_state: int = 0):
        self.learning_rate = learning_rate
        self.max_iter = max_iter
        self.max_depth = max_depth
        self.min_child_weight = min_child_weight
        self.subsample = subsample
        self.colsample_bytree = colsample_bytree
        self.reg_lambda = reg_lambda
        self.reg_alpha = reg_alpha
        self.max_bin = max_bin
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.patience_share = patience_share
        self.eval_metric = eval_metric
        self.loss = loss
        self.native_categories = native_categories
        self.time_limit = time_limit
        self.random_state = random_state

    def _train(self, X, y, X_val, y_val, n_classes, limit, rounds):
        objective = {0: _XGBOOST_LOSS[self.loss], 2: "binary:logistic"}.get(n_classes, "multi:softprob")
        params = {"objective": objective, "eta": self.learning_rate, "max_depth": self.max_depth,
                  "min_child_weight": self.min_child_weight, "subsample": self.subsample,
                  "colsample_bytree": self.colsample_bytree, "lambda": self.reg_lambda, "alpha": self.reg_alpha,
                  "max_bin": self.max_bin, "tree_method": "hist", "seed": self.random_state,
                  "nthread": self.threads_, "verbosity": 0}
        if self.eval_metric:
            params["eval_metric"] = {"mae": "mae"}[self.eval_metric]
        if n_classes > 2:
            params["num_class"] = n_classes
        train = xgboost.DMatrix(X, y, enable_categorical=True, nthread=self.threads_)
        evals = [] if X_val is None else [(xgboost.DMatrix(X_val, y_val, enable_categorical=True), "valid")]
        stop = _XGBoostStop(self._patience(y_val), limit)
        self.booster_ = xgboost.train(params, train, num_boost_round=rounds, evals=evals,
                                      callbacks=[stop], verbose_eval=False)
        self.n_iter_ = stop.rounds
        self.stopped_for_time_ = stop.timed_out
        self.best_iteration_ = stop.rounds if stop.patience is None else stop.patience.best_round + 1
        return self

    def _predict(self, X):
        matrix = xgboost.DMatrix(X, enable_categorical=True, nthread=self._threads)
        return self.booster_.predict(matrix, iteration_range=(0, self.best_iteration_))


class XGBoostRegressor(BoostedRegressor, XGBoostModel):
    """XGBoost regression (squared error, ``hist`` trees), early stopping inside the training fold."""


class XGBoostClassifier(BoostedClassifier, XGBoostModel):
    """XGBoost binary or multiclass (log loss, ``hist`` trees), early stopping inside the training fold."""


class _CatBoostStop:
    """CatBoost's per-round callback: patience on the first held-out metric (``patience`` None: no
    held-out rows), and the time limit; ``use_best_model`` keeps the best round."""

    def __init__(self, patience: Patience | None, limit: TimeLimit):
        self.patience, self.limit, self.rounds, self.timed_out = patience, limit, 0, False

    def after_iteration(self, info) -> bool:
        self.rounds = info.iteration
        ends = False
        if self.patience is not None:
            losses = next(iter(info.metrics["validation"].values()))
            ends = self.patience.ends(info.iteration - 1, float(losses[-1]))
        self.timed_out = self.limit.expired()
        return not (ends or self.timed_out)  # False stops training


def catboost_frame(X: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """``X`` with its ``category`` columns as their whole-number codes, missing as -1 (CatBoost takes
    strings or whole numbers in ``cat_features``, never NaN; the codes are the categories learned
    at fit, the same at predict time); and those columns. Codes, not text: at a million rows the
    text copy of a many-level column took gigabytes (bench/scale.py: 6.0 GB at its peak)."""
    columns = categorical_columns(X)
    if not columns:
        return X, []
    codes = {column: X[column].cat.codes.to_numpy().astype(np.int32) for column in columns}  # -1: missing
    return X.assign(**codes), columns  # under copy-on-write the other columns are not copied


class CatBoostModel(Booster):
    def __init__(self, *, learning_rate: float = 0.05, max_iter: int = MAX_ITER, depth: int = 6,
                 l2_leaf_reg: float = 3.0, random_strength: float = 1.0, border_count: int = 254,
                 one_hot_max_size: int | None = None, early_stopping: bool = True,
                 validation_fraction: float | int = HOLDOUT, n_iter_no_change: int = PATIENCE,
                 patience_share: float = PATIENCE_SHARE,
                 eval_metric: str | None = None, loss: str = "squared_error", native_categories: bool = False,
                 time_limit: float | None = None, random_state: int = 0):
        self.learning_rate = learning_rate
        self.max_iter = max_iter
        self.depth = depth
        self.l2_leaf_reg = l2_leaf_reg
        self.random_strength = random_strength
        self.border_count = border_count
        self.one_hot_max_size = one_hot_max_size
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.patience_share = patience_share
        self.eval_metric = eval_metric
        self.loss = loss
        self.native_categories = native_categories
        self.time_limit = time_limit
        self.random_state = random_state

    def _train(self, X, y, X_val, y_val, n_classes, limit, rounds):
        X, cat_features = catboost_frame(X)
        params = {"learning_rate": self.learning_rate, "iterations": rounds, "depth": self.depth,
                  "l2_leaf_reg": self.l2_leaf_reg, "random_strength": self.random_strength,
                  "border_count": self.border_count, "one_hot_max_size": self.one_hot_max_size,
                  "random_seed": self.random_state, "thread_count": self.threads_, "verbose": False,
                  "allow_writing_files": False}
        if self.eval_metric:
            params["eval_metric"] = {"mae": "MAE"}[self.eval_metric]
        params["loss_function"] = {0: _CATBOOST_LOSS[self.loss], 2: "Logloss"}.get(n_classes, "MultiClass")
        model = (_CatBoostClassifier if n_classes else _CatBoostRegressor)(
            **{k: v for k, v in params.items() if v is not None})
        stop = _CatBoostStop(self._patience(y_val), limit)
        evaluation = {} if X_val is None else {"eval_set": (catboost_frame(X_val)[0], y_val), "use_best_model": True}
        model.fit(X, y, cat_features=cat_features, callbacks=[stop], **evaluation)
        self.booster_ = model
        self.n_iter_ = stop.rounds
        self.stopped_for_time_ = stop.timed_out
        self.best_iteration_ = model.tree_count_
        return self

    def _predict(self, X):
        X = catboost_frame(X)[0]
        if isinstance(self.booster_, _CatBoostClassifier):
            probabilities = self.booster_.predict_proba(X)
            return probabilities[:, 1] if probabilities.shape[1] == 2 else probabilities
        return self.booster_.predict(X)


class CatBoostRegressor(BoostedRegressor, CatBoostModel):
    """CatBoost regression (RMSE, symmetric trees), early stopping inside the training fold."""


class CatBoostClassifier(BoostedClassifier, CatBoostModel):
    """CatBoost binary or multiclass (log loss), early stopping inside the training fold."""
