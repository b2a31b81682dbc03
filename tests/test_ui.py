"""``make ui`` for real: a tracked ``submit`` run, then the MLflow server that ``make ui`` starts,
queried through its REST API like the browser app does. One server for the whole module.

The server is started through the Makefile's own ``ui`` recipe (``make -o .venv/.installed``, so
nothing is installed) and killed with its whole process group at teardown.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from conftest import REPO, fast_house_prices_config, run_cli, stop_process_group

pytestmark = [pytest.mark.slow, pytest.mark.server]  # `make ui`: MLflow's server, started by the tests

STARTUP_SECONDS = 120  # MLflow's server takes 10-30 s to answer on a busy 2-core machine
PLOTS = ("predicted_vs_actual.png", "residuals.png")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _ui_command(port: int) -> list[str]:
    """``make ui PORT=port`` where make exists (the real recipe), else the command it wraps."""
    make = shutil.which("make")
    if make is None:
        return [sys.executable, "-m", "pipeline", "ui", "--port", str(port)]
    return [make, "--no-print-directory", "-f", str(REPO / "Makefile"), "-o", ".venv/.installed",
            f"PY={sys.executable}", "ui", f"PORT={port}"]


class Server:
    def __init__(self, port: int, log: Path):
        self.port, self.log = port, log
        self.base = f"http://127.0.0.1:{port}"

    def get(self, endpoint: str, **query) -> bytes:
        url = f"{self.base}{endpoint}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.read()

    def get_json(self, endpoint: str, **query) -> dict:
        return json.loads(self.get(endpoint, **query))

    def post_json(self, endpoint: str, body: dict) -> dict:
        request = urllib.request.Request(f"{self.base}{endpoint}", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())


@pytest.fixture(scope="module")
def tracked(module_workdir):
    """A 2-fold ``submit --model ridge`` on the bundled data, in the module's own MLflow store."""
    folder, _ = module_workdir
    config_file = fast_house_prices_config(folder)
    result = run_cli("submit", "--model", "ridge", "--study", "ignore", "--config", config_file,
                     "--output", "submission.csv")
    assert result.code == 0, result.err
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=os.environ["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("house-prices")
    (run,) = client.search_runs([experiment.experiment_id])
    return folder, run


@pytest.fixture(scope="module")
def server(tracked):
    folder, _ = tracked
    port = _free_port()
    log = folder / "ui.log"
    with log.open("wb") as out:
        process = subprocess.Popen(_ui_command(port), cwd=folder, stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True, env=dict(os.environ))
    try:
        running = Server(port, log)
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            if process.poll() is not None:
                pytest.fail(f"make ui exited with {process.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if running.get("/health") == b"OK":
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"make ui did not answer in {STARTUP_SECONDS} s:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield running
    finally:
        stop_process_group(process)


def test_ui_lists_the_competition_experiment(server):
    found = server.post_json("/api/2.0/mlflow/experiments/search", {"max_results": 100})
    assert "house-prices" in {e["name"] for e in found["experiments"]}


def test_ui_serves_the_run_with_params_metrics_and_tags(server, tracked):
    _, run = tracked
    found = server.post_json("/api/2.0/mlflow/runs/search",
                             {"experiment_ids": [run.info.experiment_id], "max_results": 10})
    (served,) = found["runs"]
    assert served["info"]["run_id"] == run.info.run_id
    assert served["info"]["status"] == "FINISHED"
    metrics = {m["key"]: m["value"] for m in served["data"]["metrics"]}
    params = {p["key"]: p["value"] for p in served["data"]["params"]}
    tags = {t["key"]: t["value"] for t in served["data"]["tags"]}
    assert metrics["cv_log_rmse"] == pytest.approx(run.data.metrics["cv_log_rmse"])
    assert {"fold0_log_rmse", "fold1_log_rmse", "local_test_log_rmse"} <= set(metrics)
    assert 0.05 < metrics["cv_log_rmse"] < 0.3
    assert params["model.name"] == "ridge" and params["cv.folds"] == "2"
    assert tags["stage"] == "submit" and tags["data_source"] == "bundled:ames"


def test_ui_serves_metric_history(server, tracked):
    _, run = tracked
    history = server.get_json("/api/2.0/mlflow/metrics/get-history", run_id=run.info.run_id,
                              metric_key="fold1_log_rmse")["metrics"]
    assert [m["value"] for m in history] == [pytest.approx(run.data.metrics["fold1_log_rmse"])]


def test_ui_serves_the_plots_and_the_submission(server, tracked):
    folder, run = tracked
    listed = server.get_json("/api/2.0/mlflow/artifacts/list", run_id=run.info.run_id)
    files = {f["path"]: f for f in listed["files"]}
    assert {*PLOTS, "oof_predictions.csv", "submission.csv", "leaderboard.csv"} <= set(files)
    for name in PLOTS:
        body = server.get("/get-artifact", path=name, run_uuid=run.info.run_id)
        assert body.startswith(b"\x89PNG\r\n\x1a\n") and len(body) == files[name]["file_size"]
    served = server.get("/get-artifact", path="submission.csv", run_uuid=run.info.run_id)
    assert served == (folder / "submission.csv").read_bytes()
    assert served.startswith(b"Id,SalePrice\n")


def test_ui_serves_the_browser_app(server):
    page = server.get("/").decode()
    assert "<html" in page.lower() and "static-files" in page


def test_make_ui_prints_the_model_training_view(server):
    """MLflow 3 opens in its GenAI view (traces): the URL it prints picks the model-training one."""
    assert f"{server.base}/#/experiments?workflowType=machine_learning" in server.log.read_text()


def _chromium() -> str | None:
    return next((shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome") if shutil.which(name)),
                None)


@pytest.mark.skipif(_chromium() is None, reason="needs Chromium (apt-get install chromium), as scripts/screenshot_ui.py")
def test_the_run_page_in_a_headless_browser_lists_the_leaderboard(server, tracked, tmp_path):
    """The browser app itself (not the REST API) renders the run's artifacts, leaderboard.csv among them."""
    _, run = tracked
    url = (f"{server.base}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}/artifacts"
           "?workflowType=machine_learning")
    dom = subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                          "--disable-background-networking", f"--user-data-dir={tmp_path}",
                          "--virtual-time-budget=30000", "--dump-dom", url],
                         capture_output=True, text=True, timeout=240).stdout
    assert run.info.run_id in dom or "submit-ridge" in dom  # the run's own page
    assert "leaderboard.csv" in dom


# --- the interface it listens on -------------------------------------------------------------

def _listeners(port: int) -> list[str]:
    """Local addresses of the LISTEN sockets on ``port``, from /proc/net/tcp and tcp6."""
    found = []
    for table, size in (("/proc/net/tcp", 4), ("/proc/net/tcp6", 16)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            address, port_hex = local.split(":")
            if state != "0A" or int(port_hex, 16) != port:  # 0A: TCP_LISTEN
                continue
            raw = bytes.fromhex(address)
            # The kernel prints each 32-bit word in host order (little-endian here).
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            family = socket.AF_INET if size == 4 else socket.AF_INET6
            found.append(socket.inet_ntop(family, raw))
    return found


def _own_addresses() -> set[str]:
    """This machine's non-loopback IPv4 addresses that can be found without a network request."""
    found = set()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: UDP connect only picks a route, sends nothing
            found.add(probe.getsockname()[0])
        except OSError:
            pass
    try:
        found.update(socket.gethostbyname_ex(socket.gethostname())[2])
    except OSError:
        pass
    return {a for a in found if not a.startswith("127.") and a != "0.0.0.0"}


@pytest.mark.skipif(not Path("/proc/net/tcp").is_file(), reason="needs Linux /proc/net/tcp")
def test_ui_listens_on_loopback_only(server):
    assert _listeners(server.port) == ["127.0.0.1"]


def test_ui_refuses_connections_on_other_interfaces(server):
    addresses = _own_addresses()
    if not addresses:
        pytest.skip("this machine has no non-loopback IPv4 address")
    for address in addresses:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as client:
            client.settimeout(5)
            with pytest.raises(OSError):
                client.connect((address, server.port))


def test_ui_with_a_tracking_server_uri_says_so(monkeypatch):
    def no_exec(*args):
        raise AssertionError(f"exec {args}")

    monkeypatch.setattr(os, "execv", no_exec)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    result = run_cli("ui", "--port", "5999")
    assert result.code == 2
    assert result.err_lines == ["error: MLFLOW_TRACKING_URI is a tracking server already: browse http://mlflow.example:5000"]
