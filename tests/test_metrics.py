"""Every metric against scikit-learn's own value, names and aliases, and metric inference."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from pipeline import metrics
from pipeline.errors import UserError

rng = np.random.default_rng(0)
Y_REG = rng.uniform(1, 100, size=50)
P_REG = Y_REG * rng.uniform(0.7, 1.3, size=50)
Y_BIN = rng.integers(0, 2, size=60)
P_BIN = np.clip(0.6 * Y_BIN + rng.uniform(0, 0.5, size=60), 0.01, 0.99)
CLASSES = np.array(["a", "b", "c"])
Y_MC = rng.choice(CLASSES, size=90)
P_MC = rng.dirichlet([1, 1, 1], size=90) + 0.5 * (Y_MC[:, None] == CLASSES)
P_MC = P_MC / P_MC.sum(axis=1, keepdims=True)
L_MC = CLASSES[P_MC.argmax(axis=1)]


@pytest.mark.parametrize(("name", "y", "p", "expected"), [
    ("rmse", Y_REG, P_REG, np.sqrt(skm.mean_squared_error(Y_REG, P_REG))),
    ("rmsle", Y_REG, P_REG, skm.root_mean_squared_log_error(Y_REG, P_REG)),
    ("mae", Y_REG, P_REG, skm.mean_absolute_error(Y_REG, P_REG)),
    ("r2", Y_REG, P_REG, skm.r2_score(Y_REG, P_REG)),
    ("log_rmse", Y_REG, P_REG, np.sqrt(skm.mean_squared_error(np.log(Y_REG), np.log(P_REG)))),
    ("roc_auc", Y_BIN, P_BIN, skm.roc_auc_score(Y_BIN, P_BIN)),
    ("log_loss", Y_BIN, P_BIN, skm.log_loss(Y_BIN, P_BIN)),
    ("accuracy", Y_BIN, (P_BIN > 0.5).astype(int), skm.accuracy_score(Y_BIN, P_BIN > 0.5)),
    ("f1", Y_BIN, (P_BIN > 0.5).astype(int), skm.f1_score(Y_BIN, (P_BIN > 0.5).astype(int))),
    ("log_loss", Y_MC, P_MC, skm.log_loss(Y_MC, P_MC)),
    ("roc_auc", Y_MC, P_MC, skm.roc_auc_score(Y_MC, P_MC, multi_class="ovr")),
    ("accuracy", Y_MC, L_MC, skm.accuracy_score(Y_MC, L_MC)),
    ("macro_f1", Y_MC, L_MC, skm.f1_score(Y_MC, L_MC, average="macro")),
    ("f1_macro", Y_MC, L_MC, skm.f1_score(Y_MC, L_MC, average="macro")),
])
def test_each_metric_matches_scikit_learn(name, y, p, expected):
    metric = metrics.get(name)
    classes = np.unique(y)
    assert metric.score(y, p) == pytest.approx(expected, rel=1e-12)
    assert metric.with_classes(classes).score(y, p) == pytest.approx(expected, rel=1e-12)


def test_bound_classes_score_a_fold_that_lacks_one():
    metric = metrics.get("log_loss").with_classes(CLASSES)
    rows = Y_MC != "c"
    expected = skm.log_loss(Y_MC[rows], P_MC[rows], labels=CLASSES)
    assert metric.score(Y_MC[rows], P_MC[rows]) == pytest.approx(expected)


def test_f1_takes_the_greater_label_as_positive_and_refuses_several_classes():
    y, p = np.array(["no", "yes", "yes", "no"]), np.array(["no", "yes", "no", "no"])
    assert metrics.get("f1").score(y, p) == pytest.approx(skm.f1_score(y, p, pos_label="yes"))
    with pytest.raises(UserError, match="macro_f1"):
        metrics.get("f1").score(Y_MC, L_MC)


def map_at_k(truth, ranked, k):
    return np.mean([1 / (list(r[:k]).index(t) + 1) if t in list(r[:k]) else 0.0 for t, r in zip(truth, ranked, strict=True)])


@pytest.mark.parametrize("name", ["map@3", "MAP@3", "map_at_3", "map3"])
def test_map_at_k_names(name):
    metric = metrics.get(name)
    assert (metric.name, metric.top_k, metric.needs_proba, metric.greater_is_better) == ("map_at_3", 3, True, True)


def test_map_at_k_against_scikit_learn():
    classes = np.array([f"k{i}" for i in range(5)])
    y = rng.choice(classes, size=80)
    p = rng.dirichlet(np.ones(5), size=80)
    # With one true label, average precision over all k ranks is scikit-learn's LRAP ...
    onehot = (y[:, None] == classes).astype(int)
    lrap = skm.label_ranking_average_precision_score(onehot, p)
    assert metrics.get("map@5").with_classes(classes).score(y, p) == pytest.approx(lrap)
    # ... at k=1 it is the accuracy of the most probable label, and top-k accuracy bounds it.
    assert metrics.get("map@1").with_classes(classes).score(y, p) == pytest.approx(
        skm.accuracy_score(y, classes[p.argmax(axis=1)]))
    map3 = metrics.get("map@3").with_classes(classes).score(y, p)
    ranked = classes[np.argsort(-p, axis=1)]
    assert map3 == pytest.approx(map_at_k(y, ranked, 3))
    assert map3 <= skm.top_k_accuracy_score(y, p, k=3, labels=classes)
    # A submission's "a b c" text scores the same as the probabilities it came from.
    text = np.array([" ".join(r[:3]) for r in ranked])
    assert metrics.get("map@3").score(y, text) == pytest.approx(map3)


def test_unknown_metric_lists_the_known_ones():
    with pytest.raises(UserError, match="unknown metric 'nope'.*rmsle"):
        metrics.get("nope")


def test_rmsle_scores_negative_predictions_as_zero():
    y, p = np.array([1.0, 3.0]), np.array([-2.0, 3.0])
    assert metrics.get("rmsle").score(y, p) == pytest.approx(skm.root_mean_squared_log_error(y, [0.0, 3.0]))


@pytest.mark.parametrize(("task", "sample", "expected"), [
    ("regression", pd.Series([0.0]), "rmse"),
    ("binary", pd.Series([0.5]), "roc_auc"),
    ("binary", pd.Series([0]), "accuracy"),
    ("multiclass", pd.DataFrame({"a": [0.3], "b": [0.7]}), "log_loss"),
    ("binary", pd.DataFrame({"no": [0.5], "yes": [0.5]}), "log_loss"),
    ("multiclass", pd.DataFrame({"y": ["a b c"]}), "map@3"),
    ("multiclass", pd.DataFrame({"y": ["a"]}), "accuracy"),
    ("multiclass", pd.DataFrame({"y": ["New York"]}), "accuracy"),  # one label with a space, not a list
])
def test_infer_metric_from_the_sample(task, sample, expected):
    labels = ["a", "b", "c", "New York"]
    assert metrics.infer_metric(task, sample, labels) == expected
