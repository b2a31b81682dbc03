"""The thread policy (models/threads.py): a booster fit after torch ran in the same process runs
under the same pools and wait policy as in a fresh process; pools are held to the budget inside
``limit`` and restored after."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO

# What a booster fit meets inside threads.limit(): the OpenMP wait policy, the pools and their
# sizes. A spinning wait policy or a pool left at another size after torch is what made the same
# fit 10x slower on a busy machine (models/threads.py): compared as a configuration here, not by
# the seconds a shared CPU happens to give.
SCRIPT = """
import json, sys
import numpy as np
import pipeline  # the policy, before torch or scikit-learn loads
from models import threads
from models.tabular import TorchRegressor
from sklearn.ensemble import HistGradientBoostingRegressor
from threadpoolctl import threadpool_info

rng = np.random.default_rng(0)
X = rng.normal(size=(500, 10))
y = X[:, 0] + X[:, 1] ** 2
if sys.argv[1] == "torch":  # an MLP trained first, in this process
    TorchRegressor(hidden=(16,), epochs=2, device="cpu").fit(X, y)
with threads.limit():
    HistGradientBoostingRegressor(max_iter=5, early_stopping=False).fit(X, y)
    pools = sorted((p["user_api"], p["internal_api"], p["prefix"], p["num_threads"]) for p in threadpool_info())
print(json.dumps({"wait_policy": __import__("os").environ["OMP_WAIT_POLICY"], "pools": pools,
                  "budget": threads.budget()}))
"""


def fit_conditions(mode: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "KP_THREADS")}
    done = subprocess.run([sys.executable, "-c", SCRIPT, mode], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120, check=True)
    return json.loads(done.stdout.splitlines()[-1])


@pytest.mark.slow
def test_a_booster_after_torch_meets_the_pools_of_a_fresh_process():
    fresh, after_torch = fit_conditions("fresh"), fit_conditions("torch")
    assert fresh["wait_policy"] == after_torch["wait_policy"] == "PASSIVE"
    openmp = [pool for pool in after_torch["pools"] if pool[0] == "openmp"]
    assert openmp and all(pool[3] == after_torch["budget"] for pool in after_torch["pools"])
    # torch brings its own OpenMP runtime: every pool the fresh process has is there, at the same size
    assert set(map(tuple, fresh["pools"])) <= set(map(tuple, after_torch["pools"]))


def test_limit_holds_every_pool_and_restores_torch():
    import torch
    from threadpoolctl import threadpool_info

    from models import threads

    before = torch.get_num_threads()
    with threads.limit(1) as n:
        assert n == 1 and torch.get_num_threads() == 1
        assert all(pool["num_threads"] == 1 for pool in threadpool_info())
    assert torch.get_num_threads() == before


def test_budget_reads_kp_threads(monkeypatch):
    from models import threads

    monkeypatch.setenv("KP_THREADS", "3")
    assert threads.budget() == 3
    monkeypatch.delenv("KP_THREADS")
    assert threads.budget() == threads.cores() >= 1
