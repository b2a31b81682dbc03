"""Logged models over HTTP (issue 13): ``make serve`` answers as ``predict`` does and turns a bad
request away with a 4xx; and the whole train -> register -> predict loop against a real
``mlflow server`` (an ``http://`` tracking URI, SQLite behind it), started as ``make ui`` does.

Each server is started in its own process group, on a free loopback port, and killed with its
group at teardown.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from conftest import REPO, run_cli, stop_process_group
from mlflow.tracking import MlflowClient
from test_model_registry import HOUSES_TOML, write_houses

from pipeline import serving

STARTUP_SECONDS = 180  # an MLflow server takes 10-30 s to answer on a busy 2-core machine

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.slow, pytest.mark.server]  # make serve, a tracking server


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _make(target: str, **variables) -> list[str]:
    """``make TARGET VAR=...`` with the Makefile's own recipe (nothing installed), else the CLI."""
    if shutil.which("make") is None:
        pytest.skip("no make")
    return ["make", "--no-print-directory", "-f", str(REPO / "Makefile"), "-o", ".venv/.installed",
            f"PY={sys.executable}", target, *(f"{k}={v}" for k, v in variables.items())]


def _get(url: str) -> int:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.status


def _post(url: str, body: bytes, content_type: str = "application/json") -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def _started(command: list[str], cwd: Path, log: Path, ready: str, env: dict) -> subprocess.Popen:
    """``command`` running, once ``ready`` (a URL) answers 200."""
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True, env=env)
    deadline = time.monotonic() + STARTUP_SECONDS
    while True:
        if process.poll() is not None:
            pytest.fail(f"{command} exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if _get(ready) == 200:
                return process
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if time.monotonic() > deadline:
            stop_process_group(process)
            pytest.fail(f"{command} did not answer in {STARTUP_SECONDS} s:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)


def _submit(folder: Path, houses: Path, output: Path) -> str:
    config = folder / "houses.toml"
    config.write_text(HOUSES_TOML.format(name="house-prices", folds=2))
    result = run_cli("submit", "--config", config, "--data-dir", houses, "--model", "ridge", "--study", "ignore",
                     "--output", output)
    assert result.code == 0, result.err
    return re.search(r"mlflow run (\w+) in", result.out).group(1)


def _split(frame: pd.DataFrame) -> bytes:
    """Rows as MLflow's ``dataframe_split`` JSON (gaps as null), as a client would post them."""
    return json.dumps({"dataframe_split": json.loads(frame.to_json(orient="split", index=False))}).encode()


# --- make serve ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(module_workdir):
    """A registered ridge run, its ``predict`` output, and ``make serve`` of its @champion."""
    folder, _ = module_workdir
    houses = write_houses(folder / "houses")
    _submit(folder, houses, folder / "submission.csv")
    predicted = folder / "predicted.csv"
    result = run_cli("predict", "--model", "models:/house-prices@champion", "--data-dir", houses,
                     "--output", predicted)
    assert result.code == 0, result.err
    port = _free_port()
    command = _make("serve", MODEL_URI="models:/house-prices@champion", SERVE_PORT=port)
    process = _started(command, folder, folder / "serve.log", f"http://127.0.0.1:{port}/ping", dict(os.environ))
    try:
        yield f"http://127.0.0.1:{port}", houses, predicted
    finally:
        stop_process_group(process)


def test_served_predictions_equal_those_of_predict(served):
    base, houses, predicted = served
    rows = pd.read_csv(houses / "test.csv")
    status, body = _post(f"{base}/invocations", _split(rows))
    assert status == 200, body[:500]
    answer = np.asarray(json.loads(body)["predictions"], dtype=float)
    expected = pd.read_csv(predicted).set_index("Id").loc[rows["Id"], "SalePrice"].to_numpy()
    np.testing.assert_allclose(answer, expected, rtol=1e-9)


@pytest.mark.parametrize("body, content_type", [
    (b"{not json", "application/json"),
    (json.dumps({"dataframe_split": {"columns": ["Id"], "data": [[1461]]}}).encode(), "application/json"),
    (json.dumps({"rows": [1, 2]}).encode(), "application/json"),
    (b"Id\n1", "text/plain"),
])
def test_a_malformed_request_gets_a_4xx_and_the_server_goes_on(served, body, content_type):
    base, houses, _ = served
    status, answer = _post(f"{base}/invocations", body, content_type)
    assert 400 <= status < 500, answer[:500]
    status, _ = _post(f"{base}/invocations", _split(pd.read_csv(houses / "test.csv").head(2)))
    assert status == 200


def test_a_request_lacking_columns_gets_one_line_naming_them(served):
    base, houses, _ = served
    rows = pd.read_csv(houses / "test.csv").head(2).drop(columns=["GrLivArea", "LotArea"])
    status, answer = _post(f"{base}/invocations", _split(rows))
    assert status == 400
    message = json.loads(answer)["message"]
    assert message.startswith("missing columns: LotArea, GrLivArea (2 of the ") and "\n" not in message
    assert len(message) < 120  # no schema, no data


def test_the_columns_of_a_request_body_are_read_in_every_json_form():
    assert serving.columns_sent(json.dumps({"dataframe_split": {"columns": ["a", "b"], "data": []}}).encode()) == ["a", "b"]
    assert serving.columns_sent(json.dumps({"dataframe_records": [{"b": 1}, {"a": 2}]}).encode()) == ["a", "b"]
    assert serving.columns_sent(json.dumps({"inputs": [{"a": 1}]}).encode()) == ["a"]
    assert serving.columns_sent(b"{not json") is None and serving.columns_sent(b"[1, 2]") is None
    assert serving.missing_columns(["a", "b", "c"], json.dumps({"dataframe_records": [{"a": 1}]}).encode()) == (
        "missing columns: b, c (2 of the 3 the model takes)")
    assert serving.missing_columns(["a"], json.dumps({"dataframe_records": [{"a": 1, "z": 2}]}).encode()) is None


def test_text_in_a_numeric_column_gets_a_4xx(served):
    base, houses, _ = served
    rows = pd.read_csv(houses / "test.csv").head(3).astype({"GrLivArea": object})
    rows.loc[1, "GrLivArea"] = "big"
    status, answer = _post(f"{base}/invocations", _split(rows))
    assert 400 <= status < 500, answer[:500]


@pytest.mark.skipif(not Path("/proc/net/tcp").is_file(), reason="needs Linux /proc/net/tcp")
def test_serve_listens_on_loopback_only(served):
    port = int(served[0].rsplit(":", 1)[1])
    listening = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, port_hex = local.split(":")
        if state == "0A" and int(port_hex, 16) == port:
            listening.append(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
    assert listening == ["127.0.0.1"]


# --- an http:// tracking server --------------------------------------------------------------


def test_train_register_and_predict_through_a_tracking_server(workdir, monkeypatch):
    """``make ui``'s server (SQLite behind it): runs, the model's files and the registry go through HTTP."""
    server_folder = workdir / "server"
    server_folder.mkdir()
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}  # the server's store: its folder
    process = _started(_make("ui", PORT=port), server_folder, workdir / "ui.log", f"http://127.0.0.1:{port}/health", env)
    try:
        uri = f"http://127.0.0.1:{port}"
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        mlflow.set_tracking_uri(uri)
        houses = write_houses(workdir / "houses")
        run_id = _submit(workdir, houses, workdir / "submission.csv")
        result = run_cli("predict", "--model", "models:/house-prices@champion", "--data-dir", houses,
                         "--output", workdir / "predicted.csv")
        assert result.code == 0, result.err
        assert (workdir / "predicted.csv").read_bytes() == (workdir / "submission.csv").read_bytes()
        version = MlflowClient(uri).get_model_version_by_alias("house-prices", "champion")
        assert version.run_id == run_id
        stored = list((server_folder / "mlartifacts").rglob("MLmodel"))
        assert stored, "the model's files went to the server's artifact store"
        assert not (workdir / "mlartifacts").exists()  # nothing beside the local store
    finally:
        stop_process_group(process)
