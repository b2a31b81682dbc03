"""Screenshot of the MLflow UI showing a real run's plots, for the README (docs/mlflow-ui.png).

    .venv/bin/python scripts/screenshot_ui.py                 # the default `make submit` (minutes)
    .venv/bin/python scripts/screenshot_ui.py --quick         # a 5-fold ridge run (seconds)
    .venv/bin/python scripts/screenshot_ui.py --quick --model-page --out docs/mlflow-model.png
    .venv/bin/python scripts/screenshot_ui.py --data-dir bench/.data/caravan --time-limit 90 \
        --shot docs/mlflow-run.png=run --shot docs/mlflow-leaderboard.png=leaderboard.csv \
        --shot docs/mlflow-roc.png=roc_curve.png      # a binary table from its folder alone

Makes a run in a temporary folder with its own MLflow store (the bundled data), starts
``python -m pipeline ui`` on a free port, opens the run's artifact view on ``--artifact`` with
headless Chromium (Debian: ``apt-get install chromium``), saves the PNG (without the assistant
side panel) and stops the server. With ``--model-page`` it opens the page of the registered
model version the run made (``house-prices`` at ``@champion``: its schema, source run and tags).
Not part of ``make test``: it needs Chromium.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MAX_BYTES = 500_000


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_up(base: str, process: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the UI exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=5) as response:
                if response.read() == b"OK":
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    raise SystemExit(f"the UI did not answer in {seconds:.0f} s")


def newest_run(base: str, experiment: str) -> tuple[str, str]:
    """The newest top-level submit run of ``experiment``: (experiment id, run id)."""
    def post(endpoint: str, body: dict) -> dict:
        request = urllib.request.Request(f"{base}{endpoint}", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    found = post("/api/2.0/mlflow/experiments/search", {"max_results": 100})
    (experiment_id,) = [e["experiment_id"] for e in found["experiments"] if e["name"] == experiment]
    runs = post("/api/2.0/mlflow/runs/search", {
        "experiment_ids": [experiment_id], "max_results": 100, "order_by": ["attributes.start_time DESC"],
        "filter": "tags.stage = 'submit'",
    })["runs"]
    # The submit run itself, not one of an ensemble's child runs (they carry the stage tag too).
    (run_id, *_) = [r["info"]["run_id"] for r in runs
                    if "mlflow.parentRunId" not in {t["key"] for t in r["data"].get("tags", [])}]
    return experiment_id, run_id


def champion_version(base: str, name: str) -> str:
    query = f"{base}/api/2.0/mlflow/registered-models/alias?name={name}&alias=champion"
    with urllib.request.urlopen(query, timeout=30) as response:
        return json.loads(response.read())["model_version"]["version"]


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    raise SystemExit("no Chromium found: apt-get install chromium (Debian) or put it on PATH")


def screenshot(url: str, out: Path, profile: Path, size: str, budget_ms: int) -> None:
    command = [
        chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--hide-scrollbars", f"--user-data-dir={profile}", f"--window-size={size}",
        f"--virtual-time-budget={budget_ms}", f"--screenshot={out}", url,
    ]
    subprocess.run(command, check=True, timeout=180, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def crop_side_panel(path: Path) -> None:
    """Cut off MLflow 3's assistant panel, which opens on the right at a first visit from localhost.

    The panel is a card of its own: the crop ends at the grey gutter left of it, the first run of
    columns in the right half that are light grey from top to bottom.
    """
    from PIL import Image

    image = Image.open(path).convert("RGB")
    width, height = image.size
    pixels = image.load()
    rows = range(height // 10, height * 9 // 10, 4)

    def gutter(x: int) -> bool:
        return all(230 <= min(pixels[x, y]) and max(pixels[x, y]) <= 250 for y in rows)

    for x in range(width // 2, width - 4):
        if all(gutter(x + k) for k in range(4)):
            image.crop((0, 0, x + 4, height)).save(path)
            return


def shrink(path: Path) -> None:
    """Re-encode as a 256-colour PNG when the screenshot is over MAX_BYTES."""
    if path.stat().st_size <= MAX_BYTES:
        return
    from PIL import Image

    image = Image.open(path).convert("RGB")
    image.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)


def page_url(base: str, experiment_id: str, run_id: str, page: str, experiment: str) -> str:
    """``run``: the run's overview; ``model``: the registered model version; else an artifact."""
    if page == "model":
        return f"{base}/#/models/{experiment}/versions/{champion_version(base, experiment)}"
    # MLflow 3 opens in its GenAI view; workflowType picks the "Model training" one.
    where = "" if page == "run" else f"/artifacts/{page}"
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}{where}?workflowType=machine_learning"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "mlflow-ui.png")
    parser.add_argument("--quick", action="store_true", help="a ridge run instead of the default ensemble")
    parser.add_argument("--artifact", default="predicted_vs_actual.png", help="artifact opened in the view")
    parser.add_argument("--size", default="1720,900", help="window size, WIDTH,HEIGHT (before the crop)")
    parser.add_argument("--budget-ms", type=int, default=20000, help="Chromium's virtual-time budget")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--model-page", action="store_true", help="the registered model version's page instead")
    parser.add_argument("--data-dir", type=Path, help="a competition folder to submit from (its files alone: no "
                                                      "TARGET or ID); default the bundled house prices")
    parser.add_argument("--time-limit", type=float, help="the submit's --time-limit")
    parser.add_argument("--shot", action="append", default=[], metavar="PNG=PAGE",
                        help="several pictures of one run: PAGE is `run` (its overview) or an artifact's path")
    args = parser.parse_args()
    chromium()  # fail before the run when there is no browser

    work = Path(tempfile.mkdtemp(prefix="kp-screenshot-"))
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}", "MPLBACKEND": "Agg"}
    env.pop("DATA_DIR", None)
    server = None
    try:
        submit = [sys.executable, "-m", "pipeline", "submit", "--study", "ignore", "--no-progress"]
        if args.quick:
            submit += ["--model", "ridge"]
        if args.data_dir:
            submit += ["--data-dir", str(args.data_dir.resolve())]
        if args.time_limit:
            submit += ["--time-limit", f"{args.time_limit:g}"]
        subprocess.run(submit, cwd=work, env=env, check=True)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        server = subprocess.Popen([sys.executable, "-m", "pipeline", "ui", "--port", str(port)], cwd=work, env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        wait_until_up(base, server)
        experiment = args.data_dir.resolve().name if args.data_dir else "house-prices"
        experiment_id, run_id = newest_run(base, experiment)
        shots = [(Path(out), page) for out, _, page in (shot.partition("=") for shot in args.shot)] or [
            (args.out, "model" if args.model_page else args.artifact)]
        for out, page in shots:
            url = page_url(base, experiment_id, run_id, page, experiment)
            print(f"screenshot of {url}")
            out.parent.mkdir(parents=True, exist_ok=True)
            screenshot(url, out, work / "chromium-profile", args.size, args.budget_ms)
            crop_side_panel(out)
            shrink(out)
            print(f"wrote {out} ({out.stat().st_size // 1024} KiB)")
    finally:
        if server is not None:
            try:
                os.killpg(server.pid, signal.SIGTERM)
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
