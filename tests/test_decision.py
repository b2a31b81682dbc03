"""models.decision: the decision threshold of a binary classifier scored on labels, chosen out of fold."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score

from models import decision
from pipeline.metrics import get as get_metric
from pipeline.tasks import kfold


def _scores(n: int = 2000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities of a quarter of positives, informative but shrunk towards the negatives."""
    rng = np.random.default_rng(seed)
    positive = rng.random(n) < 0.25
    probability = np.clip(0.15 + 0.3 * positive + rng.normal(scale=0.15, size=n), 0, 1)
    return probability, positive


@pytest.mark.parametrize("metric", sorted(decision.SCORES))
def test_the_scores_from_counts_are_the_metric_of_the_labels(metric):
    probability, positive = _scores()
    average = "binary" if metric == "f1" else "macro"
    expected = [f1_score(positive, probability > t, average=average) for t in decision.GRID]
    np.testing.assert_allclose(decision.scores(probability, positive, metric), expected, atol=1e-12)


def test_the_best_threshold_beats_one_half_where_positives_score_low():
    probability, positive = _scores()
    threshold = decision.best_threshold(probability, positive, "f1")
    assert 0.2 < threshold < 0.45
    assert f1_score(positive, probability > threshold) > f1_score(positive, probability > 0.5) + 0.05


def test_a_fold_is_called_with_the_threshold_of_the_others_not_its_own():
    """Fold 1's rows are all positives at 0.3: its own best cut would call them all; the threshold
    chosen on fold 0 (positives at 0.7, negatives at 0.4: 0.5, the tie nearest it) does not. Fold 0
    gets fold 1's (0.29, the highest that calls every one of its rows), which calls its negatives."""
    probability = np.array([0.7, 0.7, 0.4, 0.4, 0.3, 0.3])
    positive = np.array([True, True, False, False, True, True])
    folds = np.array([0, 0, 0, 0, 1, 1])
    called = decision.cross_fitted(probability, positive, folds, "f1")
    assert called.tolist() == [True, True, True, True, False, False]
    assert decision.best_threshold(probability[4:], positive[4:], "f1") < 0.3  # its own would call them


def test_ties_and_no_rows_give_one_half():
    assert decision.best_threshold(np.array([]), np.array([], dtype=bool), "f1") == 0.5
    assert decision.best_threshold(np.array([0.1, 0.9]), np.array([False, True]), "f1") == 0.5


def test_only_label_metrics_of_two_classes_decide():
    assert kfold.decides(get_metric("f1").with_classes(["no", "yes"]))
    assert kfold.decides(get_metric("macro_f1").with_classes([0, 1]))
    assert not kfold.decides(get_metric("macro_f1").with_classes(["a", "b", "c"]))
    assert not kfold.decides(get_metric("accuracy").with_classes([0, 1]))  # 0.5 is its own best cut
    assert not kfold.decides(get_metric("roc_auc").with_classes([0, 1]))


def test_submit_calls_labels_with_the_threshold_and_predict_agrees(workdir):
    """F1 on a fifth of positives that a linear model scores low: the run chooses a threshold
    under 0.5, says so, scores with it cross-fitted, and the registered model calls the same."""
    import re

    import pandas as pd
    from conftest import run_cli, write_competition

    rng = np.random.default_rng(3)
    n = 700
    x = rng.normal(size=(n, 3))
    y = (x[:, 0] + 0.8 * rng.normal(size=n) > 1.2).astype(int)
    frame = pd.DataFrame({"id": np.arange(n), "a": x[:, 0], "b": x[:, 1], "c": x[:, 2], "target": y})
    data = write_competition(workdir / "data", frame.iloc[:500], frame.iloc[500:].drop(columns="target"))
    args = ["--data-dir", data, "--target", "target", "--id", "id", "--metric", "f1", "--model", "logistic"]
    result = run_cli("submit", *args, "-o", workdir / "first.csv")
    assert result.code == 0, result.err
    found = re.search(r"decision threshold: P\(1\) > (0\.\d+) is 1", result.out)
    assert found and float(found.group(1)) < 0.5
    again = run_cli("predict", *args[:6], "-o", workdir / "again.csv")
    assert again.code == 0, again.err
    assert (workdir / "again.csv").read_bytes() == (workdir / "first.csv").read_bytes()
