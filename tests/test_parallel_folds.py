"""Folds fit in parallel (issue 30): a local pool of processes and a Dask cluster give the run in
process's predictions and submission, the loop hands each batch of folds its share of the time,
and a cluster that cannot be used is a one-line error before any work."""

from __future__ import annotations

import socket

import numpy as np
import pandas as pd
import pytest
from conftest import CLOCK, TimedRidge, registered_model, run_cli
from test_bad_input import house, submit  # noqa: F401 (house: a fixture)
from test_bad_input_runs import assert_refused, snapshot
from test_one_loop import Recording

from models import registry
from models.time_limit import TimeLimit
from pipeline.config import Competition, CVConfig
from pipeline.metrics import get as get_metric
from pipeline.tasks import configuration, executor, portfolio

CONFIGS = (configuration.Configuration("lightgbm", "lightgbm", {"max_iter": 20}),
           configuration.Configuration("ridge", "ridge"))


def _run(cv: CVConfig, configs=CONFIGS, *, seeds: int = 1, limit: TimeLimit | None = None) -> portfolio.Portfolio:
    rng = np.random.default_rng(3)
    n = 120
    X = pd.DataFrame({"x1": rng.normal(size=n), "x2": rng.normal(size=n), "c": rng.choice(list("abc"), size=n)})
    y = pd.Series(2 * X.x1 - X.x2 + (X.c == "a") + rng.normal(scale=0.1, size=n), name="target")
    comp = Competition(name="parallel", target="target", id="id", cv=cv)
    return portfolio.Portfolio(comp, X, y, 10, task="regression", metric=get_metric("rmse"), configs=configs,
                               methods={}, time_limit=limit or TimeLimit(None), proba=False, seeds=seeds)


def test_a_local_pool_gives_the_out_of_fold_and_test_predictions_of_the_run_in_process():
    alone, pooled = _run(CVConfig(folds=3), seeds=2), _run(CVConfig(folds=3, fold_workers=2), seeds=2)
    assert isinstance(pooled.executor, executor.Pool) and pooled.executor.threads == 1
    for config in CONFIGS:
        here, there = alone.fit(config), pooled.fit(config)
        np.testing.assert_array_equal(there.oof, here.oof)  # one thread or two: LightGBM is deterministic
        assert there.fold_scores == here.fold_scores and there.seeds == here.seeds
        # 3 folds x 2 seeds (ridge takes no seed: 1), in the same order
        assert len(there.bag.estimators) == len(here.bag.estimators) == 3 * (2 if config.model == "lightgbm" else 1)
        np.testing.assert_array_equal(there.bag.predict(pooled.X), here.bag.predict(alone.X))
        # the features the workers fit joined the run's cache, as those fit in process did
        assert {key for key in pooled.features.cached if key[0] == config.features} == {
            (config.features, 0, k) for k in range(3)}


class Batches(executor.InProcess):
    """In process, as if two workers fit each batch of folds at once: the loop's arithmetic alone."""

    workers = 2

    def __init__(self):
        self.sizes: list[int] = []

    def map(self, jobs):
        self.sizes.append(len(jobs))
        return super().map(jobs)


@pytest.fixture
def stopping():
    """A ridge that declares it stops itself: it records the ``time_limit`` each fit is given."""
    Recording.fits = []
    with registered_model("stopping_test", lambda **p: Recording(**p),
                          capabilities=registry.Capabilities(stops_itself=True)) as name:
        yield name


def test_each_fit_of_a_batch_gets_the_share_of_the_batches_left(stopping):
    run = _run(CVConfig(folds=5), (configuration.Configuration("s", stopping),), limit=TimeLimit(1000))
    run.executor = Batches()
    fitted = run.fit(run.configs[0], share=1.0)
    assert run.executor.sizes == [2, 2, 1]  # five folds, two at a time
    assert fitted.complete and len(fitted.fold_scores) == 5
    limits = [fit["time_limit"] for fit in Recording.fits]
    # The time left split among the batches left: three (of 2, 2 and 1 folds), then two, then one.
    assert limits[0] == pytest.approx(limits[1], rel=0.01) and limits[2] == pytest.approx(limits[3], rel=0.01)
    assert limits[2] == pytest.approx(limits[0] * 3 / 2, rel=0.02)
    assert limits[4] == pytest.approx(limits[0] * 3, rel=0.02)


class SideBySide(Batches):
    """As :class:`Batches`, on the fake clock of fits that run side by side: a batch of
    ``TimedRidge`` fits takes one fit's seconds, not their sum."""

    def map(self, jobs):
        fits = super().map(jobs)
        CLOCK.now -= SLOW_FIT * (len(jobs) - 1)
        return fits


SLOW_FIT = 25.0


@pytest.mark.parametrize("seconds, complete", [(70, False), (80, True)])
def test_a_model_that_cannot_stop_is_dropped_when_the_batches_left_would_not_end_in_time(seconds, complete):
    """Five folds of 25 s, two at a time: after the first batch (25 s) two batches are left, 50 s.
    At 70 s that would end at 75 s: the configuration is dropped then, not after overrunning (the
    folds left, 3 x 12.5 s, would have said it fits); at 80 s it finishes at 75 s."""
    with registered_model("side_by_side_test", lambda **p: TimedRidge(**{"seconds": SLOW_FIT, **p})) as name:
        CLOCK.now = 1000.0
        limit = TimeLimit(seconds, started=CLOCK.now, reserve=0.0, clock=CLOCK)
        run = _run(CVConfig(folds=5), (configuration.Configuration("slow", name),), limit=limit)
        run.executor = SideBySide()
        fitted = run.fit(run.configs[0])
    assert (fitted is not None) == complete
    assert run.executor.sizes == ([2, 2, 1] if complete else [2])
    assert CLOCK.now == 1075.0 if complete else CLOCK.now == 1025.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("address, fragment", [
    ("localhost:8786", "[cv] cluster must be a Dask scheduler's address"),
    ("tcp://127.0.0.1:{port}", "no Dask scheduler answered"),
])
def test_a_cluster_that_cannot_be_used_is_one_line_before_any_work(house, monkeypatch, address, fragment):  # noqa: F811
    workdir, data, _, config_file, trained = house
    monkeypatch.setattr(executor, "CONNECT_SECONDS", 1)
    before = snapshot(workdir)
    result, _ = submit(data, config_file, "--cluster", address.format(port=_free_port()))
    assert_refused(result, [fragment], workdir, before, trained)


@pytest.mark.slow
def test_a_run_on_a_local_dask_cluster_writes_the_submission_of_the_run_in_process(house):  # noqa: F811
    from distributed import LocalCluster

    workdir, data, _, config_file, _ = house
    model = ("--model", "lightgbm", "--param", "max_iter=20")
    alone = run_cli("submit", "--config", config_file, "--data-dir", data, *model, "-o", "alone.csv")
    assert alone.code == 0, alone.err
    with LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1", processes=True,
                      dashboard_address=":0") as cluster:
        address = cluster.scheduler_address
        try:
            there = run_cli("submit", "--config", config_file, "--data-dir", data, *model, "-o", "cluster.csv",
                            "--cluster", address)
            assert there.code == 0, there.err
            client = executor.cluster(address)
            # fit_fold ran on the workers: each one it reached holds its fits to one thread
            chosen = client.run(lambda: __import__("models.threads", fromlist=["_chosen"])._chosen)
            assert set(chosen.values()) <= {1, None} and 1 in chosen.values()
        finally:
            executor.cluster(address).close()
            executor.cluster.cache_clear()
    assert (workdir / "cluster.csv").read_bytes() == (workdir / "alone.csv").read_bytes()
