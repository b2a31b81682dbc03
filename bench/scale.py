"""Scale check: a generated 300k-row tabular competition through `python -m pipeline submit`,
timed, with the peak resident memory of its process tree.

Run from the repository root::

    .venv/bin/python bench/scale.py                        # both tasks, 300k train rows, default model
    .venv/bin/python bench/scale.py --rows 20000           # smaller
    .venv/bin/python bench/scale.py --task regression --model hist_gbm
    .venv/bin/python bench/scale.py --task binary --model hist_gbm_classifier --time-limit 600
    .venv/bin/python bench/scale.py --stages               # in-process memory by data-path stage
    .venv/bin/python bench/scale.py --wide                 # 8 of the numbers as 45-level categories
    .venv/bin/python bench/scale.py --rows 1000000 --numbers 32 --levels 10000 --task regression \
        --time-limit 900                                   # issue 19: 1M rows x 40 columns in TIME=900
    .venv/bin/python bench/scale.py --code /tmp/old        # the pipeline of another checkout (before/after)

Each task (``regression``: RMSE, ``binary``: AUC from a sample of probabilities) is a Kaggle-style
folder (train.csv, test.csv of a third as many rows, sample_submission.csv) of 20 feature
columns: twelve numbers with gaps, three low-cardinality categories, a 4,000-level string, a
timestamp, an integer code column, a count and a 0/1 flag. The submit runs in a subprocess in a
temporary folder with its own MLflow store (``MLFLOW_TRACKING_URI=sqlite:///<tmp>/m.db``); its
process tree's resident memory is polled every 0.2 s (psutil), and ``ru_maxrss`` of the children
is reported beside it. Each line the run prints is a stage boundary: the report gives each
stage's end time and its peak memory. ``--stages`` instead runs the data path in this process
(read, checks, role summary, one fold's features, a hist_gbm fit, the test prediction) and
prints the resident memory after each step and its peak during it.

``--wide`` makes eight of the number columns categories of 45 levels, 415 one-hot columns in all:
the case of the one-hot width budget (features/roles.py). ``--code DIR`` runs the pipeline from
another copy of the repository (``git archive <commit> | tar -x -C DIR``) for a figure before a
change.

The issue's budget: 300k rows x 20 columns at <= 4 GB resident.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil

REPO = Path(__file__).resolve().parents[1]
TASKS = ("regression", "binary")
GB = 1024**3


# --- the data ---------------------------------------------------------------------------------

def features(rows: int, rng: np.random.Generator, wide: bool = False, numbers: int = 12,
             levels: int = 4000) -> pd.DataFrame:
    """``numbers`` + 8 feature columns: numbers with gaps, low-cardinality categories, a
    ``levels``-level string, a timestamp, an integer code, a count and a flag; ``wide``: eight of
    the numbers as 45-level categories."""
    frame = {}
    for i in range(numbers):
        if wide and i >= 4:
            frame[f"cat_{i}"] = np.char.add(f"k{i}_", rng.integers(0, 45, size=rows).astype(str))
            continue
        values = rng.normal(loc=i, scale=1 + i % 3, size=rows).round(4)
        values[rng.random(rows) < 0.02 * (1 + i % 4)] = np.nan  # 2-8 % gaps
        frame[f"num_{i}"] = values
    frame["colour"] = rng.choice(["red", "green", "blue", "amber", "violet"], size=rows)
    frame["grade"] = rng.choice([f"G{i}" for i in range(12)], size=rows)
    region = rng.choice([f"region_{i:02d}" for i in range(30)], size=rows).astype(object)
    region[rng.random(rows) < 0.03] = None
    frame["region"] = region
    # A many-level string with a long tail: a few cities hold many rows, most a handful.
    weights = 1.0 / np.arange(1, levels + 1) ** 0.8
    frame["city"] = np.char.add("city_", rng.choice(levels, size=rows, p=weights / weights.sum()).astype(str))
    seconds = rng.integers(0, 2 * 365 * 86400, size=rows)
    frame["stamp"] = (pd.Timestamp("2022-01-01") + pd.to_timedelta(seconds, unit="s")).strftime("%Y-%m-%d %H:%M:%S")
    frame["code"] = rng.integers(1, 8, size=rows)  # an integer code: 7 levels
    frame["count"] = rng.poisson(40, size=rows)
    frame["flag"] = rng.integers(0, 2, size=rows)
    return pd.DataFrame(frame)


def signal(frame: pd.DataFrame, seed: int) -> np.ndarray:
    """A score the targets are made from: numbers, categories, the city, the hour and the code."""
    rng = np.random.default_rng(seed + 99)
    city_effect = rng.normal(scale=0.7, size=int(frame["city"].str.removeprefix("city_").astype(int).max()) + 1)
    city = frame["city"].str.removeprefix("city_").astype(int).to_numpy()
    hour = pd.to_datetime(frame["stamp"]).dt.hour.to_numpy()
    return (0.8 * np.nan_to_num(frame["num_0"].to_numpy()) - 0.5 * np.nan_to_num(frame["num_1"].to_numpy() - 1)
            + 0.3 * np.sin(frame["num_2"].fillna(2).to_numpy()) + city_effect[city]
            + 0.6 * (frame["colour"] == "red").to_numpy() + 0.4 * np.cos(hour / 24 * 2 * np.pi)
            + 0.2 * frame["code"].to_numpy() % 3 + 0.3 * frame["flag"].to_numpy())


def write_competition(folder: Path, task: str, rows: int, test_rows: int, seed: int = 0, wide: bool = False,
                      numbers: int = 12, levels: int = 4000) -> Path:
    """train.csv, test.csv and sample_submission.csv of one task in ``folder``; returns it."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    X = features(rows + test_rows, rng, wide, numbers, levels)
    score = signal(X, seed)
    if task == "regression":
        target = (10 + score + rng.normal(scale=0.8, size=len(X))).round(4)
    else:
        target = (rng.random(len(X)) < 1 / (1 + np.exp(-(score - np.median(score))))).astype(int)
    X.insert(0, "id", np.arange(1, len(X) + 1))
    train = X.iloc[:rows].assign(target=target[:rows])
    test = X.iloc[rows:]
    train.to_csv(folder / "train.csv", index=False)
    test.to_csv(folder / "test.csv", index=False)
    sample = pd.DataFrame({"id": test["id"], "target": 0.5 if task == "binary" else 10.0})
    sample.to_csv(folder / "sample_submission.csv", index=False)
    return folder


# --- measuring a process tree -----------------------------------------------------------------

class TreeMemory:
    """Polls the resident memory of a process and its descendants every ``interval`` seconds."""

    def __init__(self, pid: int, interval: float = 0.2):
        self.process = psutil.Process(pid)
        self.interval = interval
        self.peak = 0
        self.stage_peak = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _rss(self) -> int:
        total = 0
        try:
            processes = [self.process, *self.process.children(recursive=True)]
        except psutil.Error:
            return 0
        for proc in processes:
            try:
                total += proc.memory_info().rss
            except psutil.Error:
                pass
        return total

    def _poll(self) -> None:
        while not self._stop.is_set():
            rss = self._rss()
            with self._lock:
                self.peak = max(self.peak, rss)
                self.stage_peak = max(self.stage_peak, rss)
            self._stop.wait(self.interval)

    def start(self) -> TreeMemory:
        self._thread.start()
        return self

    def next_stage(self) -> int:
        """The peak since the last call, and a new stage begins (from a fresh sample)."""
        now = self._rss()
        with self._lock:
            peak, self.stage_peak = max(self.stage_peak, now), now
        return peak

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def submit(data_dir: Path, task: str, workdir: Path, *, model: str | None, time_limit: str | None,
           quiet: bool, code: Path = REPO) -> dict:
    """``python -m pipeline submit`` on ``data_dir`` in ``workdir``: wall time, peak memory, stages."""
    command = [sys.executable, "-m", "pipeline", "submit", "--data-dir", str(data_dir), "--target", "target",
               "--id", "id", "--study", "ignore", "-o", str(workdir / "submission.csv")]
    if task == "regression":
        command += ["--metric", "rmse"]
    if model:
        command += ["--model", model]
    if time_limit:
        command += ["--time-limit", time_limit]
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{workdir / 'm.db'}", "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(code), os.environ.get("PYTHONPATH")]))}
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    proc = subprocess.Popen(command, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, bufsize=1)
    memory = TreeMemory(proc.pid).start()
    stages, tail = [], []
    for line in proc.stdout:
        line = line.rstrip("\n")
        tail = [*tail[-40:], line]
        if not line.strip() or line.lstrip().startswith(("warn", "Warn")) or "Warning" in line:
            continue
        stages.append((time.perf_counter() - started, memory.next_stage(), line))
        if not quiet:
            print(f"    {stages[-1][0]:7.1f} s {stages[-1][1] / GB:6.2f} GB | {line[:110]}", flush=True)
    code = proc.wait()
    wall = time.perf_counter() - started
    memory.stop()
    after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux: the largest child so far
    return {"task": task, "code": code, "wall": wall, "peak": memory.peak, "maxrss": after * 1024,
            "maxrss_new": after > before, "stages": stages, "tail": tail, "command": command}


# --- the data path, in this process -----------------------------------------------------------

def _rss() -> int:
    return psutil.Process().memory_info().rss


def stages_in_process(data_dir: Path, task: str, model: str | None = None, params: dict | None = None) -> None:
    """Resident memory after each step of the data path, and its peak during the step (one fold
    of ``model``, default hist_gbm, with ``params``; then the refit and the test prediction)."""
    from pipeline import config
    from pipeline.tasks import configuration, for_competition, kfold

    comp = config.load(data_dir.name, target="target", id_column="id",
                       metric="rmse" if task == "regression" else None)
    memory = TreeMemory(os.getpid(), interval=0.05).start()
    t0 = time.perf_counter()

    def step(name: str, fn):
        memory.next_stage()
        started = time.perf_counter()
        out = fn()
        took = time.perf_counter() - started
        print(f"  {name:<34} {took:6.1f} s  now {_rss() / GB:5.2f} GB  peak {memory.next_stage() / GB:5.2f} GB",
              flush=True)
        return out

    print(f"  {'start':<34} {'':8}  now {_rss() / GB:5.2f} GB")
    tab = for_competition(comp)
    data = step("load (read, checks, align)", lambda: tab.load(data_dir))
    default = "hist_gbm" if task == "regression" else "hist_gbm_classifier"
    plan = step("plan", lambda: tab.plan(data, model=model or default, cli_params=params or {}, tuned=False))
    step("role summary (all rows)", lambda: tab.roles_summary(data))
    X, y = tab._xy(data)
    train_idx, valid_idx = next(iter(kfold.splitter(comp, plan.task).split(X, y)))
    configuration = configuration.Configuration(plan.model, plan.models.get(plan.model, plan.model), plan.params)
    features = kfold.build_features(comp, configuration.encoding)
    matrix = step("fold features fit_transform", lambda: features.fit_transform(X.iloc[train_idx], y.iloc[train_idx]))
    print(f"    train matrix {matrix.shape} {matrix.dtype} {matrix.nbytes / GB:.2f} GB")
    valid = step("fold features transform", lambda: features.transform(X.iloc[valid_idx]))
    estimator = configuration.build()
    step("model fit", lambda: estimator.fit(matrix, y.iloc[train_idx].to_numpy()))
    step("predict the held-out part", lambda: kfold.predict(estimator, valid, plan.metric))
    matrix = valid = None  # freed before the refit
    fitted = step("refit (every row)", lambda: kfold.fit_all(comp, X, y, configuration.build(), configuration.encoding))
    step("predict the test set", lambda: tab.predict(fitted, data, plan))
    memory.stop()
    print(f"  total {time.perf_counter() - t0:.1f} s, peak {memory.peak / GB:.2f} GB, "
          f"ru_maxrss {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2:.2f} GB")


def _value(pair: str) -> tuple[str, object]:
    key, _, text = pair.partition("=")
    for kind in (int, float):
        try:
            return key, kind(text)
        except ValueError:
            pass
    return key, text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=300_000, help="train rows (default 300,000)")
    parser.add_argument("--test-rows", type=int, help="test rows (default a third of --rows)")
    parser.add_argument("--task", choices=(*TASKS, "both"), default="both")
    parser.add_argument("--model", help="pass --model to submit (e.g. hist_gbm, hist_gbm_classifier)")
    parser.add_argument("--time-limit", help="pass --time-limit to submit")
    parser.add_argument("--param", "-p", action="append", default=[], metavar="KEY=VALUE",
                        help="a model parameter (--stages only), e.g. epochs=2")
    parser.add_argument("--stages", action="store_true", help="the data path in this process, step by step")
    parser.add_argument("--keep", type=Path, help="write the data here and keep it (default: a temporary folder)")
    parser.add_argument("--quiet", action="store_true", help="no line per stage while it runs")
    parser.add_argument("--wide", action="store_true", help="eight of the numbers as 45-level categories")
    parser.add_argument("--numbers", type=int, default=12, help="number columns (default 12: 20 columns in all)")
    parser.add_argument("--levels", type=int, default=4000, help="levels of the many-level string (default 4,000)")
    parser.add_argument("--code", type=Path, default=REPO, help="run the pipeline of this copy of the repository")
    args = parser.parse_args()
    test_rows = args.test_rows or max(args.rows // 3, 10)
    tasks = TASKS if args.task == "both" else (args.task,)
    with tempfile.TemporaryDirectory(prefix="scale-") as tmp:
        root = args.keep or Path(tmp)
        results = []
        for task in tasks:
            data_dir = root / f"scale-{task}{'-wide' if args.wide else ''}-{args.rows}"
            started = time.perf_counter()
            if not (data_dir / "train.csv").is_file():
                write_competition(data_dir, task, args.rows, test_rows, wide=args.wide, numbers=args.numbers,
                                  levels=args.levels)
            size = sum(f.stat().st_size for f in data_dir.glob("*.csv")) / 1024**2
            print(f"{task}: {args.rows} train rows, {test_rows} test rows, {args.numbers + 8} features ({size:.0f} MB of CSV, "
                  f"{time.perf_counter() - started:.0f} s to write)", flush=True)
            if args.stages:
                sys.path.insert(0, str(args.code.resolve()))
                params = dict(_value(p) for p in args.param)
                stages_in_process(data_dir, task, args.model, params)
                continue
            workdir = Path(tempfile.mkdtemp(prefix=f"run-{task}-", dir=tmp))
            result = submit(data_dir, task, workdir, model=args.model, time_limit=args.time_limit, quiet=args.quiet,
                            code=args.code.resolve())
            results.append(result)
            if result["code"]:
                print("\n".join(result["tail"]))
            print(f"  {task}: exit {result['code']}, {result['wall']:.1f} s, peak {result['peak'] / GB:.2f} GB "
                  f"(process tree, polled), ru_maxrss of children {result['maxrss'] / GB:.2f} GB", flush=True)
        if results:
            print("\nsummary (" + (args.model or "default model") + f", {args.rows} rows"
                  + (", wide" if args.wide else "") + (f", code {args.code}" if args.code != REPO else "") + ")")
            for r in results:
                print(f"  {r['task']:<11} exit {r['code']}  wall {r['wall']:7.1f} s  peak {r['peak'] / GB:5.2f} GB  "
                      f"ru_maxrss {r['maxrss'] / GB:5.2f} GB")
            print("  command: " + " ".join(results[0]["command"][1:]))
            return max(r["code"] for r in results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
