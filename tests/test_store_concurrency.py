"""Four processes start runs together on a new, empty MLflow SQLite store: all of them succeed.

Without the store lock in ``tracking`` they race MLflow's first schema migration ("duplicate
column name: step", "table experiments already exists") and the creation of the experiment.
Each child imports everything first and then waits for a go file, so that the four really start
together rather than one import time apart.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow  # processes started together

PROCESSES = 4
CHILD = """
import sys, time
from pathlib import Path
from pipeline import tracking

go, index = Path(sys.argv[1]), int(sys.argv[2])
print("ready", flush=True)
while not go.exists():
    time.sleep(0.005)
with tracking.run("shared", f"submit-{index}", tags={"competition": "c"}):
    tracking.log_metrics({"score": index})
print("done", flush=True)
"""


def start_together(folder: Path, n: int = PROCESSES, timeout: float = 300) -> list[tuple[int, str]]:
    """``n`` processes that each start a run on ``folder/store/mlflow.db`` (new) at the same moment;
    their exit codes and stderr."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'store' / 'mlflow.db'}",
           "PYTHONPATH": str(REPO)}
    go = folder / "go"
    children = [subprocess.Popen([sys.executable, "-c", CHILD, str(go), str(i)], cwd=folder, env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for i in range(n)]
    try:
        for child in children:
            child.stdout.readline()  # "ready", or "" if it died importing: its stderr tells
        go.touch()
        deadline = time.monotonic() + timeout
        results = []
        for child in children:
            _, err = child.communicate(timeout=max(1.0, deadline - time.monotonic()))
            results.append((child.returncode, err))
        return results
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()


def test_four_processes_start_runs_together_on_a_new_sqlite_store(tmp_path):
    results = start_together(tmp_path)

    failed = [err.strip().splitlines()[-1] if err.strip() else f"exit {code}" for code, err in results if code]
    assert failed == []
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}")
    shared = [e for e in client.search_experiments() if e.name == "shared"]
    assert len(shared) == 1
    runs = client.search_runs([shared[0].experiment_id])
    assert sorted((r.info.run_name, r.info.status, r.data.metrics["score"]) for r in runs) == [
        (f"submit-{i}", "FINISHED", float(i)) for i in range(PROCESSES)]
    assert [p.name for p in (tmp_path / "store").iterdir()] == ["mlflow.db"]  # the lock leaves no file
