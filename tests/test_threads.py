"""The thread policy (models/threads.py): a booster fit after torch ran in the same process is as
fast as in a fresh process; pools are held to the budget inside ``limit`` and restored after."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import REPO

SCRIPT = """
import json, sys, time
import numpy as np
import pipeline  # the policy, before torch or scikit-learn loads
from models import threads
from models.tabular import TorchRegressor
from sklearn.ensemble import HistGradientBoostingRegressor

rng = np.random.default_rng(0)
X = rng.normal(size=(2000, 10))
y = X[:, 0] + X[:, 1] ** 2
if sys.argv[1] == "torch":  # an MLP trained first, in this process
    TorchRegressor(hidden=(64,), epochs=5, device="cpu").fit(X, y)
times = []
for _ in range(3):
    started = time.perf_counter()
    with threads.limit():
        HistGradientBoostingRegressor(max_iter=40, early_stopping=False).fit(X, y)
    times.append(time.perf_counter() - started)
print(json.dumps({"seconds": min(times), "wait_policy": __import__("os").environ["OMP_WAIT_POLICY"]}))
"""


def fit_seconds(mode: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "KP_THREADS")}
    done = subprocess.run([sys.executable, "-c", SCRIPT, mode], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120, check=True)
    return json.loads(done.stdout.splitlines()[-1])


def test_a_booster_after_torch_is_as_fast_as_in_a_fresh_process():
    fresh, after_torch = fit_seconds("fresh"), fit_seconds("torch")
    assert fresh["wait_policy"] == after_torch["wait_policy"] == "PASSIVE"
    assert after_torch["seconds"] < 3 * fresh["seconds"] + 0.05, (fresh, after_torch)


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
