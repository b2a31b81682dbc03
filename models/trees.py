"""The tree ensembles in the registry: LightGBM, XGBoost, CatBoost (``models/boosters.py``, native
categories) and scikit-learn's ExtraTrees and random forest (one-hot features).

Each name has a classifier twin, ``<name>_classifier``, as ``hist_gbm`` has. The defaults are
the estimators' own (see ``models/boosters.py``); the search spaces leave ``max_iter`` to early
stopping.
"""

from __future__ import annotations

from sklearn.ensemble import (
    ExtraTreesClassifier,
    ExtraTreesRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)

from models import threads
from models.boosters import (
    CatBoostClassifier,
    CatBoostRegressor,
    LightGBMClassifier,
    LightGBMRegressor,
    XGBoostClassifier,
    XGBoostRegressor,
)
from models.registry import Capabilities, register

CLASSES = ("binary", "multiclass")
# What the k-fold loop needs to know (models.registry.Capabilities). A forest is an average of
# randomised trees already, and its fold models are the largest (10 ExtraTrees fold models held
# 1 GB on 22k rows): more bags of it buy little.
BOOSTER = Capabilities(stops_itself=True, seed_param="random_state", encoding="native", levels_param="native_categories")
FOREST = Capabilities(seed_param="random_state", rebaggable=False)


def _lightgbm_space(trial) -> dict:
    return {
        "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.2, log=True),
        "num_leaves": trial.suggest_int("num_leaves", 8, 256, log=True),
        "min_child_samples": trial.suggest_int("min_child_samples", 2, 100, log=True),
        "subsample": trial.suggest_float("subsample", 0.5, 1.0),
        "colsample_bytree": trial.suggest_float("colsample_bytree", 0.4, 1.0),
        "reg_lambda": trial.suggest_float("reg_lambda", 0.0, 10.0),
    }


def _xgboost_space(trial) -> dict:
    return {
        "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.3, log=True),
        "max_depth": trial.suggest_int("max_depth", 3, 10),
        "min_child_weight": trial.suggest_float("min_child_weight", 0.5, 20.0, log=True),
        "subsample": trial.suggest_float("subsample", 0.5, 1.0),
        "colsample_bytree": trial.suggest_float("colsample_bytree", 0.4, 1.0),
        "reg_lambda": trial.suggest_float("reg_lambda", 1e-3, 10.0, log=True),
    }


def _catboost_space(trial) -> dict:
    return {
        "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.2, log=True),
        "depth": trial.suggest_int("depth", 4, 8),
        "l2_leaf_reg": trial.suggest_float("l2_leaf_reg", 1.0, 10.0, log=True),
        "random_strength": trial.suggest_float("random_strength", 0.1, 10.0, log=True),
    }


class _Names:
    """A trial that answers each suggestion with its low end: what a search space names."""

    def suggest_float(self, name, low, high, **options):
        return low

    suggest_int = suggest_float

    def suggest_categorical(self, name, choices):
        return choices[0]


def _defaults(estimator, space) -> dict:
    """``estimator``'s defaults for what ``space`` tunes: the registry's defaults, so that a study's
    first trial is the untuned model (``pipeline/tune``)."""
    params = estimator.get_params()
    return {name: params[name] for name in space(_Names())}


@register("lightgbm", space=_lightgbm_space, capabilities=BOOSTER, **_defaults(LightGBMRegressor(), _lightgbm_space))
def lightgbm(**params):
    """LightGBM, native categories, early stopping inside the training fold."""
    return LightGBMRegressor(**params)


@register("lightgbm_classifier", tasks=CLASSES, space=_lightgbm_space, capabilities=BOOSTER,
          same_as="lightgbm", **_defaults(LightGBMClassifier(), _lightgbm_space))
def lightgbm_classifier(**params):
    """LightGBM classifier, native categories, early stopping inside the training fold."""
    return LightGBMClassifier(**params)


@register("xgboost", space=_xgboost_space, capabilities=BOOSTER, **_defaults(XGBoostRegressor(), _xgboost_space))
def xgboost(**params):
    """XGBoost (hist trees), native categories, early stopping inside the training fold."""
    return XGBoostRegressor(**params)


@register("xgboost_classifier", tasks=CLASSES, space=_xgboost_space, capabilities=BOOSTER,
          same_as="xgboost", **_defaults(XGBoostClassifier(), _xgboost_space))
def xgboost_classifier(**params):
    """XGBoost classifier (hist trees), native categories, early stopping inside the training fold."""
    return XGBoostClassifier(**params)


@register("catboost", space=_catboost_space, capabilities=BOOSTER, **_defaults(CatBoostRegressor(), _catboost_space))
def catboost(**params):
    """CatBoost, native categories, early stopping inside the training fold."""
    return CatBoostRegressor(**params)


@register("catboost_classifier", tasks=CLASSES, space=_catboost_space, capabilities=BOOSTER,
          same_as="catboost", **_defaults(CatBoostClassifier(), _catboost_space))
def catboost_classifier(**params):
    """CatBoost classifier, native categories, early stopping inside the training fold."""
    return CatBoostClassifier(**params)


def _forest_space(trial) -> dict:
    return {
        "max_features": trial.suggest_categorical("max_features", ["sqrt", 0.3, 0.5, 0.75, 1.0]),
        "min_samples_leaf": trial.suggest_int("min_samples_leaf", 1, 20, log=True),
        "n_estimators": trial.suggest_int("n_estimators", 100, 500, step=50),
    }


# AutoGluon's forests are 300 trees of up to 15,000 leaves; 200 of up to 4,096 are 5-8x smaller,
# which matters where every fold's model is kept for bagging (118 MB a forest at most).
_FOREST = {"n_estimators": 200, "max_leaf_nodes": 4096, "min_samples_leaf": 1, "random_state": 0}


def _forest(cls, params: dict):
    return cls(**{"n_jobs": threads.budget(), **params})


@register("extra_trees", space=_forest_space, capabilities=FOREST, max_features=1.0, **_FOREST)
def extra_trees(**params):
    """Extremely randomised trees (scikit-learn), one-hot features."""
    return _forest(ExtraTreesRegressor, params)


@register("extra_trees_classifier", tasks=CLASSES, space=_forest_space, capabilities=FOREST,
          same_as="extra_trees", max_features="sqrt", **_FOREST)
def extra_trees_classifier(**params):
    """Extremely randomised trees classifier (scikit-learn), one-hot features."""
    return _forest(ExtraTreesClassifier, params)


@register("random_forest", space=_forest_space, capabilities=FOREST, max_features=1.0, **_FOREST)
def random_forest(**params):
    """Random forest (scikit-learn), one-hot features."""
    return _forest(RandomForestRegressor, params)


@register("random_forest_classifier", tasks=CLASSES, space=_forest_space, capabilities=FOREST,
          same_as="random_forest", max_features="sqrt", **_FOREST)
def random_forest_classifier(**params):
    """Random forest classifier (scikit-learn), one-hot features."""
    return _forest(RandomForestClassifier, params)
