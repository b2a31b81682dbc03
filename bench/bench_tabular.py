"""Our pipeline against AutoGluon, side by side, on the public tabular suite (bench/tabular_suite.py).

For each task (bench/.data/<task>/, built on first use from the bundled R datasets) it runs, one
process at a time and never in parallel:

- ours: ``.venv/bin/python -m pipeline submit --data-dir bench/.data/<task> --target T --id I
  --metric M --time-limit TIME -o ours.csv``, in a fresh temp folder (MLflow on a temp sqlite
  file, no shared Optuna storage, no checkpoints to resume);
- AutoGluon: ``bench/.venv-autogluon/bin/python bench/autogluon_fit.py ...`` with the same TIME
  (``TabularPredictor(...).fit(time_limit=TIME, presets="medium_quality")``; the venv is built
  here when missing, see ``ensure_autogluon_venv``).

and measures for each:

- wall time of the whole command (start-up, reading the CSVs and writing the submission included);
- peak memory: the largest sum of resident set sizes over the process and all its descendants,
  polled every 0.2 s with psutil (pages shared between forked workers count once per process, so
  this errs high); and, as a cross-check, the kernel's own peak of the largest single process in
  the tree (``ru_maxrss`` of the rusage that wait4 returns, what getrusage(RUSAGE_CHILDREN) would
  give for that run alone; it never sees short peaks between polls, nor the sum);
- the score on the held-back test_labels.csv, computed here with scikit-learn by the same code for
  both sides (rmse, rmsle, mae, r2, roc_auc, log_loss, accuracy, f1, macro_f1).

It prints one table: task, rows, metric, ours score/time/peak GB, AutoGluon score/time/peak GB, the
relative gap (signed: positive = we are better; (ag - ours)/|ag| for a loss, (ours - ag)/|ag| for
a score) and whether we are within 1% (gap >= -1%). A failed run shows as failed with its one-line
error, and the bench goes on. The table, the runs' logs and submissions go to bench/.results/.

    make bench-tabular TIME=600 TASKS=caravan,titanic     # default: every task, TIME=600 s a fit
    .venv/bin/python bench/bench_tabular.py --time 60 --tasks titanic --sides ours,autogluon
    .venv/bin/python bench/bench_tabular.py --ensure-venv  # only build bench/.venv-autogluon

TIME is each side's budget for one fit; the whole suite at TIME=600 takes a few hours (16 fits).
A run that outlives ``--kill-after`` (default 2*TIME + 600 s) is killed and shows as failed.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import fcntl
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
AG_VENV = ROOT / "bench" / ".venv-autogluon"
AG_PY = AG_VENV / "bin" / "python"
AG_SPEC = "autogluon.tabular[lightgbm,catboost,xgboost]"
AG_EXTRA = ["scikit-learn", "pandas", "psutil"]  # also for the boosting-libraries comparison
AG_CHECK = "import autogluon.tabular, lightgbm, xgboost, catboost, sklearn, pandas"
OUR_PY = ROOT / ".venv" / "bin" / "python"
RESULTS = ROOT / "bench" / ".results"
SIDES = ("ours", "autogluon")
LOWER_IS_BETTER = {"rmse", "rmsle", "mae", "log_loss"}
GB = 1024**3


def ensure_autogluon_venv(quiet: bool = False) -> Path:
    """Build bench/.venv-autogluon once: AutoGluon tabular with LightGBM, CatBoost and XGBoost (no
    torch), scikit-learn, pandas, psutil. Safe to call twice, or from two processes at once (a
    file lock; the second waits). Returns its python."""
    marker = AG_VENV / ".installed"
    if marker.exists():
        return AG_PY
    AG_VENV.parent.mkdir(parents=True, exist_ok=True)
    with open(AG_VENV.parent / ".venv-autogluon.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.exists():
            return AG_PY
        if not quiet:
            print(f"building {AG_VENV.relative_to(ROOT)} ({AG_SPEC}): a few minutes", flush=True)
        if not AG_PY.exists():
            base = os.environ.get("BENCH_PYTHON", "python3")
            subprocess.run([base, "-m", "venv", str(AG_VENV)], check=True)
        pip = [str(AG_PY), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        subprocess.run([*pip, "--upgrade", "pip"], check=True)
        subprocess.run([*pip, AG_SPEC, *AG_EXTRA], check=True)
        subprocess.run([str(AG_PY), "-c", AG_CHECK], check=True)
        marker.write_text(AG_SPEC + "\n")
    return AG_PY


# ---------------------------------------------------------------------------------------------
# Measuring one command


def _tree_rss(proc) -> int:
    import psutil

    total = 0
    try:
        members = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return 0
    for member in members:
        try:
            total += member.memory_info().rss
        except psutil.Error:
            pass
    return total


def measure(cmd: list[str], cwd: Path, env: dict, log: Path, kill_after: float) -> dict:
    """Run cmd to the end (its own session, output to log): rc, wall s, peak tree RSS, ru_maxrss."""
    import psutil

    started = time.perf_counter()
    with open(log, "wb") as out:
        child = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                 start_new_session=True)
    proc = psutil.Process(child.pid)
    peak, status, usage, timed_out = 0, None, None, False
    while True:
        pid, status, usage = os.wait4(child.pid, os.WNOHANG)
        if pid:
            break
        peak = max(peak, _tree_rss(proc))
        if time.perf_counter() - started > kill_after and not timed_out:
            timed_out = True
            os.killpg(child.pid, signal.SIGKILL)  # the session this command started, nothing else
        time.sleep(0.2)
    wall = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    return {
        "rc": child.returncode,
        "wall_s": round(wall, 1),
        "peak_gb": round(peak / GB, 3),
        "ru_maxrss_gb": round(usage.ru_maxrss * 1024 / GB, 3),  # Linux: KiB
        "timed_out": timed_out,
    }


def _one_line_error(log: Path) -> str:
    lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    for line in reversed(lines):  # the exception's own line beats the traceback's last frame
        if "Error" in line or "error:" in line or "Exception" in line:
            return line[:300]
    return lines[-1][:300] if lines else "no output"


# ---------------------------------------------------------------------------------------------
# Scoring, the same code for both sides


def _key(value) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return str(int(number)) if number.is_integer() else str(number)


def score(info: dict, submission: Path, labels: Path) -> float:
    import numpy as np
    import pandas as pd
    from sklearn import metrics as skm

    id_col, target, metric = info["id"], info["target"], info["metric"]
    truth = pd.read_csv(labels).set_index(id_col)[target]
    sub = pd.read_csv(submission)
    if id_col not in sub.columns:
        raise ValueError(f"submission has no {id_col} column")
    sub = sub.set_index(id_col)
    missing = truth.index.difference(sub.index)
    if len(missing) or len(sub) != len(truth):
        raise ValueError(f"submission has {len(sub)} rows, {len(missing)} test ids missing")
    sub = sub.loc[truth.index]
    if metric == "log_loss":
        classes = info["classes"]
        columns = {_key(c): c for c in sub.columns}
        proba = np.column_stack([sub[columns[_key(c)]].to_numpy(float) for c in classes])
        proba = np.clip(proba, 1e-15, 1)
        proba /= proba.sum(axis=1, keepdims=True)
        index = {_key(c): i for i, c in enumerate(classes)}
        y = np.array([index[_key(v)] for v in truth])
        return float(skm.log_loss(y, proba, labels=list(range(len(classes)))))
    column = sub[target] if target in sub.columns else sub.iloc[:, 0]
    if metric == "roc_auc":
        positive = _key(info["classes"][-1])
        y = np.array([_key(v) == positive for v in truth])
        return float(skm.roc_auc_score(y, column.to_numpy(float)))
    if metric in {"accuracy", "f1", "macro_f1"}:
        y_true = [_key(v) for v in truth]
        y_pred = [_key(v) for v in column]
        if metric == "accuracy":
            return float(skm.accuracy_score(y_true, y_pred))
        if metric == "f1":
            return float(skm.f1_score(y_true, y_pred, pos_label=_key(info["classes"][-1])))
        labels_ = [_key(c) for c in info["classes"]]
        return float(skm.f1_score(y_true, y_pred, average="macro", labels=labels_))
    y, pred = truth.to_numpy(float), column.to_numpy(float)
    if not np.isfinite(pred).all():
        raise ValueError("submission has missing or infinite predictions")
    if metric == "rmse":
        return float(math.sqrt(skm.mean_squared_error(y, pred)))
    if metric == "rmsle":  # negative predictions count as 0, for both sides
        return float(math.sqrt(skm.mean_squared_log_error(y, np.clip(pred, 0, None))))
    if metric == "mae":
        return float(skm.mean_absolute_error(y, pred))
    if metric == "r2":
        return float(skm.r2_score(y, pred))
    raise ValueError(f"no scorer for metric {metric!r}")


def gap(metric: str, ours: float | None, theirs: float | None) -> float | None:
    """Relative gap, positive = ours is better."""
    if ours is None or theirs is None or theirs == 0:
        return None
    diff = (theirs - ours) if metric in LOWER_IS_BETTER else (ours - theirs)
    return diff / abs(theirs)


# ---------------------------------------------------------------------------------------------
# The two sides


def _supports_time_limit() -> bool:
    help_text = subprocess.run([str(OUR_PY), "-m", "pipeline", "submit", "--help"], cwd=ROOT,
                               capture_output=True, text=True).stdout
    return "--time-limit" in help_text


def command(side: str, info: dict, data_dir: Path, time_limit: float, output: Path,
            time_flag: bool = True) -> list[str]:
    common = ["--data-dir", str(data_dir), "--target", info["target"], "--id", info["id"],
              "--metric", info["metric"]]
    if side == "ours":
        cmd = [str(OUR_PY), "-m", "pipeline", "submit", *common, "--no-progress", "--no-resume",
               "--study", "ignore"]
        if time_flag:
            cmd += ["--time-limit", f"{time_limit:g}"]
        return [*cmd, "-o", str(output)]
    cmd = [str(AG_PY), str(ROOT / "bench" / "autogluon_fit.py"), *common,
           "--problem-type", info["kind"], "--time-limit", f"{time_limit:g}", "-o", str(output)]
    if info["kind"] == "binary":
        cmd += ["--positive", str(info["classes"][-1])]
    return cmd


def run_side(side: str, info: dict, data_dir: Path, args, out_dir: Path, time_flag: bool) -> dict:
    result = {"side": side, "task": info["name"], "status": "failed", "score": None, "error": ""}
    submission = out_dir / f"{info['name']}-{side}.csv"
    log = out_dir / f"{info['name']}-{side}.log"
    with tempfile.TemporaryDirectory(prefix=f"bench-{side}-") as tmp:
        env = {k: v for k, v in os.environ.items() if k not in {"OPTUNA_STORAGE", "VIRTUAL_ENV"}}
        env["MLFLOW_TRACKING_URI"] = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        env["PYTHONUNBUFFERED"] = "1"
        cmd = command(side, info, data_dir, args.time, submission, time_flag)
        result["command"] = " ".join(cmd)
        print(f"  {side}: running (log {log.relative_to(ROOT)})", flush=True)
        result |= measure(cmd, Path(tmp), env, log, args.kill_after or 2 * args.time + 600)
    if result["timed_out"]:
        result["error"] = f"killed after {result['wall_s']:.0f}s (--kill-after)"
    elif result["rc"] != 0:
        result["error"] = f"exit {result['rc']}: {_one_line_error(log)}"
    elif not submission.exists():
        result["error"] = "no submission written"
    else:
        try:
            result["score"] = score(info, submission, data_dir / "test_labels.csv")
            result["status"] = "ok"
        except Exception as exc:  # a malformed submission is a failed run, not a failed bench
            result["error"] = f"scoring: {type(exc).__name__}: {exc}"[:300]
    shown = f"{result['score']:.5f}" if result["score"] is not None else f"FAILED {result['error']}"
    print(f"  {side}: {shown}  {result['wall_s']:.0f}s  peak {result['peak_gb']:.2f} GB "
          f"(largest process {result['ru_maxrss_gb']:.2f} GB)", flush=True)
    return result


# ---------------------------------------------------------------------------------------------
# The table


def _fmt(value, spec: str, missing: str = "-") -> str:
    return missing if value is None else format(value, spec)


def table(rows: list[dict]) -> str:
    head = (f"{'task':14s} {'rows':>7s} {'metric':9s} | {'ours':>9s} {'time s':>7s} {'peak GB':>7s} | "
            f"{'autogluon':>9s} {'time s':>7s} {'peak GB':>7s} | {'gap %':>7s} {'within 1%':9s}")
    lines = [head, "-" * len(head)]
    failures = []
    for row in rows:
        cells = []
        for side in SIDES:
            r = row.get(side)
            if r is None:
                cells.append(f"{'skipped':>9s} {'-':>7s} {'-':>7s}")
                continue
            shown = _fmt(r["score"], ".5f", "FAILED")
            cells.append(f"{shown:>9s} {r['wall_s']:>7.0f} {r['peak_gb']:>7.2f}")
            if r["status"] != "ok":
                failures.append(f"  {row['task']} {side}: {r['error']}")
        g = row.get("gap")
        within = "-" if g is None else ("yes" if g >= -0.01 else "no")
        lines.append(f"{row['task']:14s} {row['rows']:>7d} {row['metric']:9s} | {cells[0]} | {cells[1]} | "
                     f"{_fmt(None if g is None else 100 * g, '+7.2f'):>7s} {within:9s}")
    if failures:
        lines += ["failed:", *failures]
    return "\n".join(lines)


def write_results(rows: list[dict], stamp: str, args) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    meta = {"time_limit_s": args.time, "stamp": stamp, "host_cpus": os.cpu_count()}
    payload = {"meta": meta, "rows": rows}
    for name in (f"tabular-{stamp}", "tabular-latest"):
        (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2) + "\n")
        with open(RESULTS / f"{name}.csv", "w", newline="") as f:
            fields = ["task", "rows", "metric", "time_limit_s"]
            for side in SIDES:
                fields += [f"{side}_{k}" for k in ("status", "score", "wall_s", "peak_gb", "ru_maxrss_gb", "error")]
            fields += ["gap", "within_1pct"]
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            for row in rows:
                flat = {"task": row["task"], "rows": row["rows"], "metric": row["metric"],
                        "time_limit_s": args.time, "gap": row.get("gap"),
                        "within_1pct": None if row.get("gap") is None else row["gap"] >= -0.01}
                for side in SIDES:
                    for k in ("status", "score", "wall_s", "peak_gb", "ru_maxrss_gb", "error"):
                        flat[f"{side}_{k}"] = (row.get(side) or {}).get(k)
                writer.writerow(flat)
    return RESULTS / f"tabular-{stamp}.json"


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(ROOT / "bench"))
    import tabular_suite as suite

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--time", type=float, default=600, help="each fit's time limit, seconds (TIME=)")
    parser.add_argument("--tasks", default="", help=f"comma-separated (TASKS=); default all: {','.join(suite.TASKS)}")
    parser.add_argument("--sides", default=",".join(SIDES), help="ours,autogluon (default both)")
    parser.add_argument("--kill-after", type=float, help="kill a run after this many seconds (default 2*TIME+600)")
    parser.add_argument("--ensure-venv", action="store_true", help="only build bench/.venv-autogluon")
    args = parser.parse_args(argv)

    if args.ensure_venv:
        print(ensure_autogluon_venv())
        return 0
    sides = [s for s in args.sides.replace(",", " ").split() if s]
    if unknown := set(sides) - set(SIDES):
        parser.error(f"unknown side(s) {', '.join(sorted(unknown))} (known: {', '.join(SIDES)})")
    tasks = suite.select(args.tasks)
    if "autogluon" in sides:
        ensure_autogluon_venv()
    time_flag = "ours" in sides and _supports_time_limit()
    if "ours" in sides and not time_flag:
        print("note: this pipeline's `submit` has no --time-limit yet: ours runs without a budget")

    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out_dir = RESULTS / f"tabular-{stamp}"
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for task in tasks:
        data_dir = suite.build(task)
        info = suite.load_info(task.name)
        print(f"{task.name}: {info['rows']} rows, {info['features']} features, {info['metric']} "
              f"({info['source']}), TIME={args.time:g}s", flush=True)
        row = {"task": task.name, "rows": info["rows"], "metric": info["metric"]}
        for side in sides:
            row[side] = run_side(side, info, data_dir, args, out_dir, time_flag)
        row["gap"] = gap(info["metric"], (row.get("ours") or {}).get("score"),
                         (row.get("autogluon") or {}).get("score"))
        rows.append(row)
        write_results(rows, stamp, args)  # after every task: a killed bench keeps what it has
    print()
    print(f"TIME={args.time:g}s per fit; gap: positive = ours better; peak GB: summed RSS of the process tree")
    print(table(rows))
    path = write_results(rows, stamp, args)
    print(f"results: {path.relative_to(ROOT)} (+ .csv; logs and submissions in {out_dir.relative_to(ROOT)}/)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
