"""The anytime portfolio (issue 19): Caruana's ensemble selection, its cross-fitted score, and the
loop that fits configurations until the time limit, driven by a fake clock."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import CLOCK, TimedRidge, registered_model

from models import ensemble as ensembles
from models import registry
from models.time_limit import TimeLimit
from pipeline.config import Competition, CVConfig
from pipeline.metrics import get as get_metric
from pipeline.tasks import configuration, portfolio


def test_greedy_selection_matches_the_hand_computed_rounds():
    y = np.zeros(4)
    a, b, c = np.ones(4), -np.ones(4), np.full(4, 2.0)
    # Round 1: a and b tie at MSE 1 (a, the earlier, wins); round 2: (a+b)/2 = 0 beats (a+a)/2 = 1
    # and (a+c)/2 = 1.5; round 3: (a+b+a)/3 = 1/3 ties (a+b+b)/3 = -1/3 (a wins), c gives 2/3.
    weights, intercept = ensembles.greedy_weights(np.column_stack([a, b, c]), y, rounds=3)
    np.testing.assert_allclose(weights, [2 / 3, 1 / 3, 0.0])
    assert intercept == 0.0


def test_greedy_selection_takes_the_loss_it_is_given():
    """``calibrated`` has the lower squared error, ``ranked`` the higher AUC (every mix with
    ``calibrated`` misorders one pair): by AUC the selection is ``ranked`` alone."""
    y = np.array([0, 1, 1, 0])
    calibrated, ranked = np.array([0.4, 0.6, 0.45, 0.55]), np.array([0.0, 0.99, 0.98, 0.97])
    members = np.column_stack([calibrated, ranked])
    auc_loss = lambda t, p: -get_metric("roc_auc").score(t, p)  # noqa: E731
    np.testing.assert_allclose(ensembles.greedy_weights(members, y, loss=auc_loss, rounds=5)[0], [0.0, 1.0])
    assert ensembles.greedy_weights(members, y, rounds=5)[0][0] > 0  # squared error takes calibrated in


def test_the_selection_score_is_cross_fitted():
    """Member ``a`` is right on fold 0 and wrong on fold 1, ``b`` the reverse. Weights learned on
    the other fold put every fold's rows on the member that is wrong there: a selection that
    learned on every row (or on the held fold) would mix them, or pick the right one, and score
    far better than it honestly can."""
    folds = np.repeat([0, 1], 50)
    y = np.linspace(-1, 1, 100)
    noise = np.where(np.arange(100) % 2, 1.0, -1.0)
    a = np.where(folds == 0, y, y + noise)
    b = np.where(folds == 1, y, y + noise)
    metric = get_metric("rmse")
    chosen = ensembles.select(np.column_stack([a, b]), y, folds, {"select": ensembles.greedy_weights},
                              metric.score, metric.greater_is_better)
    np.testing.assert_allclose(chosen.oof, y + noise)  # each fold from the member that is wrong on it
    assert chosen.score == pytest.approx(1.0)
    in_sample, _ = ensembles.greedy_weights(np.column_stack([a, b]), y)
    assert metric.score(y, np.column_stack([a, b]) @ in_sample) < 0.8  # what an in-sample score would claim


def test_select_keeps_the_method_that_cross_fits_better():
    rng = np.random.default_rng(0)
    y = rng.normal(size=300)
    folds = np.arange(300) % 3
    members = np.column_stack([2 * y + 1 + rng.normal(scale=0.1, size=300), y + rng.normal(scale=1.0, size=300)])
    metric = get_metric("rmse")
    chosen = ensembles.select(members, y, folds, dict(ensembles.METHODS), metric.score, False)
    assert chosen.method == "stack"  # only a meta-learner with a slope and intercept undoes 2y + 1
    assert chosen.scores["stack"] < min(chosen.scores["blend"], chosen.scores["select"])


# --- the loop, on a fake clock ----------------------------------------------------------------

@pytest.fixture
def timed_model():
    with registered_model("timed_ridge_test", lambda **params: TimedRidge(**params)) as name:
        yield name


def _table(n=90, seed=0):
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({"x1": rng.normal(size=n), "x2": rng.normal(size=n)})
    y = pd.Series(2 * X.x1 - X.x2 + rng.normal(scale=0.1, size=n), name="target")
    return X, y


def _portfolio(configs, limit: TimeLimit):
    X, y = _table()
    comp = Competition(name="fake-clock", target="target", id="id", cv=CVConfig(folds=3))
    metric = get_metric("rmse")
    return portfolio.Portfolio(comp, X, y, 10, task="regression", metric=metric, configs=configs,
                               methods={"select": ensembles.greedy_weights}, time_limit=limit, proba=False)


def test_the_portfolio_stops_before_the_deadline(timed_model):
    """100 s with 8 kept back: two 30 s configurations (3 folds of 10 s) run; one priced at five
    times theirs is skipped; a cheap one still fits after it; then too little is left to start."""
    configs = tuple(configuration.Configuration(name, timed_model, {"seconds": seconds}, cost) for name, seconds, cost in
                    [("first", 10.0, 1.0), ("second", 10.0, 1.0), ("dear", 10.0, 5.0), ("cheap", 10.0, 0.5),
                     ("last", 10.0, 0.5)])
    CLOCK.now = 1000.0
    limit = TimeLimit(100, started=CLOCK.now, clock=CLOCK)
    outcome = _portfolio(configs, limit).run()
    assert [f.config.name for f in outcome.fitted] == ["first", "second", "cheap"]
    assert outcome.skipped == ["dear", "last"]
    assert not outcome.finished
    assert CLOCK.now <= limit.work_deadline
    np.testing.assert_allclose(outcome.selection.weights.sum(), 1.0)


def test_a_configuration_that_cannot_finish_its_folds_is_dropped(timed_model):
    """The price says 30 s, the folds take 25 s each: after the first fold the two left cannot end
    in the 25 s left, so it is dropped then, not after a second fold, and what finished before it
    is kept."""
    configs = (configuration.Configuration("quick", timed_model, {"seconds": 10.0}, 1.0),
               configuration.Configuration("misjudged", timed_model, {"seconds": 25.0}, 1.0))
    CLOCK.now = 1000.0
    limit = TimeLimit(80, started=CLOCK.now, reserve=0.0, clock=CLOCK)
    outcome = _portfolio(configs, limit).run()
    assert [f.config.name for f in outcome.fitted] == ["quick"]
    assert outcome.skipped == ["misjudged"]
    assert CLOCK.now == 1000.0 + 3 * 10.0 + 25.0  # quick's three folds and misjudged's first


def test_without_a_limit_every_configuration_runs(timed_model):
    configs = tuple(configuration.Configuration(f"c{i}", timed_model, {"seconds": 50.0, "alpha": a}, 1.0)
                    for i, a in enumerate([0.1, 10.0, 1000.0]))
    outcome = _portfolio(configs, TimeLimit(None, clock=CLOCK)).run()
    assert [f.config.name for f in outcome.fitted] == ["c0", "c1", "c2"] and outcome.finished
    best = min(outcome.fitted, key=lambda f: f.score)
    assert outcome.selection.weights[outcome.fitted.index(best)] > 0  # the best member is in the ensemble
    assert all(f.bags == 1 for f in outcome.fitted)  # no limit: no time left to spend on more bags


def test_time_left_goes_to_more_bags_of_the_ensemble_members(timed_model):
    """80 s, nothing kept back: two configurations take 30 s; ``flat`` (a ridge that predicts
    the mean) gets no weight, so the 50 s left buy ``good`` three more bags of 15 s, each on
    another shuffle's folds; a fourth would end past the limit."""
    configs = (configuration.Configuration("good", timed_model, {"seconds": 5.0, "alpha": 0.1}, 1.0),
               configuration.Configuration("flat", timed_model, {"seconds": 5.0, "alpha": 1e9}, 1.0))
    CLOCK.now = 1000.0
    limit = TimeLimit(80, started=CLOCK.now, reserve=0.0, clock=CLOCK)
    run = _portfolio(configs, limit)
    seen = []
    outcome = run.run(lambda one, selection: seen.append((one.config.name, one.bags)))
    good, flat = outcome.fitted
    assert list(outcome.selection.weights) == [1.0, 0.0]
    assert (good.bags, flat.bags) == (4, 1) and len(good.bag.estimators) == 3 * 4
    assert seen == [("good", 1), ("flat", 1), ("good", 2), ("good", 3), ("good", 4)]
    assert CLOCK.now == 1075.0 and not outcome.finished  # the time ran out before the bags did


def test_extra_bags_stop_at_their_cap(timed_model):
    configs = (configuration.Configuration("good", timed_model, {"seconds": 5.0, "alpha": 0.1}, 1.0),)
    CLOCK.now = 1000.0
    outcome = _portfolio(configs, TimeLimit(1000, started=CLOCK.now, clock=CLOCK)).run()
    assert outcome.fitted[0].bags == 1 + portfolio.MAX_EXTRA_BAGS and outcome.finished
    assert CLOCK.now == 1000.0 + 15 * (1 + portfolio.MAX_EXTRA_BAGS)


def test_a_forest_is_not_bagged_again():
    """ExtraTrees has all the weight (the ridge beside it predicts the mean), and time to spare:
    still one bag, as a forest averages randomised trees already."""
    configs = (configuration.Configuration("trees", "extra_trees", {"n_estimators": 10}, 1.0),
               configuration.Configuration("flat", "ridge", {"alpha": 1e9}, 1.0))
    outcome = _portfolio(configs, TimeLimit(1000, started=CLOCK.now, clock=CLOCK)).run()
    assert list(outcome.selection.weights) == [1.0, 0.0]
    assert [f.bags for f in outcome.fitted] == [1, 1] and outcome.finished


@pytest.fixture
def memorizing_model():
    """One nearest neighbour: on a row it was fit on, it returns that row's target exactly."""
    from sklearn.neighbors import KNeighborsRegressor

    with registered_model("memorizing_test", lambda **params: KNeighborsRegressor(n_neighbors=1, **params)) as name:
        yield name


def test_every_bag_predicts_each_row_from_models_that_did_not_see_it(memorizing_model):
    """The target is noise. A bag whose out-of-fold prediction came from a model fit on that row
    would bring the averaged error towards 0; honest bags of 1-NN guesses stay near sqrt(1 + 1/5)."""
    X, _ = _table(n=300)
    y = pd.Series(np.random.default_rng(5).normal(size=300), name="target")
    comp = Competition(name="bags", target="target", id="id", cv=CVConfig(folds=3))
    metric = get_metric("rmse")
    configs = (configuration.Configuration("memory", memorizing_model, {}, 1.0),)
    outcome = portfolio.Portfolio(comp, X, y, 10, task="regression", metric=metric, configs=configs,
                                  methods={"select": ensembles.greedy_weights}, proba=False,
                                  time_limit=TimeLimit(1000, started=CLOCK.now, clock=CLOCK)).run()
    member = outcome.fitted[0]
    assert member.bags == 1 + portfolio.MAX_EXTRA_BAGS
    assert member.score > 0.95
    # what the same models claim on rows they were fit on (each on 2/3 of its models)
    assert metric.score(y.to_numpy(), member.bag.predict(X)) < 0.5 * member.score


def test_the_default_portfolio_is_data_with_every_family_the_issue_names():
    for task in ("regression", "binary"):
        configs = configuration.load(task)
        models = [c.model for c in configs]
        for family in ("lightgbm", "catboost", "xgboost", "hist_gbm", "extra_trees", "mlp"):
            assert any(m.startswith(family) for m in models), (task, family)
        assert {"ridge", "logistic"} & set(models)
        assert len({c.name for c in configs}) == len(configs)
        for c in configs:
            assert task in registry.get(c.model, "tabular").tasks


def test_a_configuration_for_some_metrics_is_in_their_portfolio_only(tmp_path):
    portfolio = tmp_path / "portfolio.toml"
    portfolio.write_text('''[[regression]]
name = "lightgbm"
model = "lightgbm"

[[regression]]
name = "lightgbm_median"
model = "lightgbm"
params = { loss = "absolute_error" }
metrics = ["mae"]
''')
    assert [c.name for c in configuration.load("regression", "mae", portfolio)] == ["lightgbm", "lightgbm_median"]
    assert [c.name for c in configuration.load("regression", "rmse", portfolio)] == ["lightgbm"]
    shipped = {c.name: c for c in configuration.load("regression", "mae")}
    assert shipped["lightgbm_mae"].params["loss"] == "absolute_error"
    assert "lightgbm_mae" not in {c.name for c in configuration.load("regression", "rmse")}


@pytest.mark.parametrize("levels", [80, 4])
def test_lightgbm_levels_runs_only_where_a_category_has_51_to_254_levels(levels):
    """Without such a column its features are lightgbm's own, and so would its predictions be."""
    rng = np.random.default_rng(1)
    n = 400
    shop = rng.integers(0, levels, n)
    X = pd.DataFrame({"x": rng.normal(size=n), "shop": pd.Series([f"s{i}" for i in shop], dtype="str")})
    y = pd.Series(X["x"] + (shop % 5) + rng.normal(scale=0.1, size=n), name="target")
    small = {"max_iter": 40, "n_iter_no_change": 5, "learning_rate": 0.3}
    configs = (configuration.Configuration("lightgbm", "lightgbm", small),
               configuration.Configuration("lightgbm_levels", "lightgbm", {**small, "native_categories": True}))
    comp = Competition(name="levels", target="target", id="id", cv=CVConfig(folds=3))
    outcome = portfolio.Portfolio(comp, X, y, 10, task="regression", metric=get_metric("rmse"), configs=configs,
                                  methods={"select": ensembles.greedy_weights}, time_limit=TimeLimit(None),
                                  proba=False).run()
    ran = [f.config.name for f in outcome.fitted]
    assert ran == (["lightgbm", "lightgbm_levels"] if levels > 50 else ["lightgbm"])
    assert outcome.finished  # left out is not skipped for time
    if levels > 50:  # the shop is a category of the levels' model, encoded in the other's
        first, second = (f.bag.estimators[0][:-1].transform(X.head(2)).columns for f in outcome.fitted)
        assert "shop_target" in first and "shop" in second and "shop_target" not in second


def test_a_training_matrix_built_again_is_target_encoded_cross_fitted_as_the_first(monkeypatch):
    """Past the cache's size a second configuration builds its fold's matrices again: its training
    rows' target encoding must be cross-fitted as the first's was, not each row's own target."""
    from pipeline.tasks import fold_features

    rng = np.random.default_rng(2)
    n = 300
    X = pd.DataFrame({"x": rng.normal(size=n), "shop": pd.Series([f"s{i}" for i in rng.integers(0, 120, n)],
                                                                  dtype="str")})
    target = rng.normal(size=n)
    comp = Competition(name="cache", target="target", id="id", cv=CVConfig(folds=3))
    fit_idx, valid_idx = np.arange(200), np.arange(200, 300)
    monkeypatch.setattr(fold_features, "CACHE_BYTES", 0)
    features = fold_features.FoldFeatures(comp, X, target, {(0, 0): fit_idx})
    _, first, _ = features.get(("native", ()), (0, 0), valid_idx)
    _, again, _ = features.get(("native", ()), (0, 0), valid_idx)
    pd.testing.assert_frame_equal(first, again)
    fitted, _, _ = features.get(("native", ()), (0, 0), valid_idx)
    own = fitted.transform(X.iloc[fit_idx])["shop_target"]  # each row's own target in its encoding
    assert not np.allclose(own, first["shop_target"])


def test_a_cheap_configuration_still_runs_in_the_last_seconds(timed_model):
    """2 s left, less than a second a fold: still, the cheap one's price (1.5 s) fits, so it runs."""
    configs = (configuration.Configuration("first", timed_model, {"seconds": 10.0}, 1.0),
               configuration.Configuration("dear", timed_model, {"seconds": 10.0}, 1.0),
               configuration.Configuration("cheap", timed_model, {"seconds": 0.5}, 0.05))
    CLOCK.now = 1000.0
    limit = TimeLimit(32, started=CLOCK.now, reserve=0.0, clock=CLOCK)
    outcome = _portfolio(configs, limit).run()
    assert [f.config.name for f in outcome.fitted] == ["first", "cheap"] and outcome.skipped == ["dear"]
    assert CLOCK.now == 1031.5


def test_time_a_skipped_configuration_leaves_goes_to_bags(timed_model):
    """dear's price (30 s) does not fit the 25 s left after good; two 15 s bags of good do not
    either, one does: the run spends it rather than ending early, and is not finished."""
    configs = (configuration.Configuration("good", timed_model, {"seconds": 5.0, "alpha": 0.1}, 1.0),
               configuration.Configuration("dear", timed_model, {"seconds": 10.0}, 2.0))
    CLOCK.now = 1000.0
    limit = TimeLimit(40, started=CLOCK.now, reserve=0.0, clock=CLOCK)
    outcome = _portfolio(configs, limit).run()
    assert outcome.skipped == ["dear"] and outcome.fitted[0].bags == 2 and not outcome.finished
    assert CLOCK.now == 1030.0


# --- folds cut short by the time limit learn faster ------------------------------------------------

class HurriedRidge(TimedRidge):
    """A model that stops itself: a fit wants ``seconds`` of the fake clock, takes at most its
    ``time_limit``, and says when that cut it short; each fit's learning rate is kept in ``RATES``."""

    RATES: list[float] = []

    def __init__(self, alpha=1.0, seconds=10.0, learning_rate=0.05, time_limit=None):
        super().__init__(alpha=alpha, seconds=seconds)
        self.learning_rate = learning_rate
        self.time_limit = time_limit

    def fit(self, X, y, sample_weight=None):
        self.RATES.append(self.learning_rate)
        self.stopped_for_time_ = self.time_limit is not None and self.time_limit < self.seconds
        CLOCK.now += self.seconds if self.time_limit is None else min(self.seconds, self.time_limit)
        return super(TimedRidge, self).fit(X, y, sample_weight)


@pytest.mark.parametrize(("seconds", "rates"), [(25.0, [0.05, 0.1, 0.2]), (5.0, [0.05, 0.05, 0.05])])
def test_folds_after_one_the_time_limit_cut_learn_at_twice_the_rate(seconds, rates):
    """36 s (0.6 of 60) for 3 folds: a fold that wants 25 s is cut at its 12 s share, and the next
    learns at twice the rate (up to models.boosting.HURRIED_MAX_RATE); 5 s folds end on their own."""
    HurriedRidge.RATES.clear()
    with registered_model("hurried_ridge_test", lambda **params: HurriedRidge(**params),
                          capabilities=registry.Capabilities(stops_itself=True)) as name:
        config = configuration.Configuration("hurried", name, {"seconds": seconds}, 1.0)
        CLOCK.now = 1000.0
        fitted = _portfolio((config,), TimeLimit(60, started=CLOCK.now, reserve=0.0, clock=CLOCK)).fit(config, share=0.6)
    assert fitted is not None
    assert HurriedRidge.RATES == rates


def test_hurried_rate_doubles_a_cut_models_rate_up_to_its_ceiling():
    from models.boosting import HURRIED_MAX_RATE, hurried_rate

    def model(rate, cut):
        fitted = HurriedRidge(learning_rate=rate)
        fitted.stopped_for_time_ = cut
        return fitted

    assert hurried_rate([model(0.05, False), model(0.05, True)]) == 0.1
    assert hurried_rate([model(0.05, False)]) is None  # none cut: the rate stays
    assert hurried_rate([model(0.15, True)]) == HURRIED_MAX_RATE
    assert hurried_rate([model(HURRIED_MAX_RATE, True)]) is None
