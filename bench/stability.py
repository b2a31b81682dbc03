"""Stability: the same `submit` run N times, identical, on one task of the tabular suite, and the
spread of its test score and its wall time (issue 19: "the score's spread over five identical
runs at TIME=150 on a 40k-row regression, on a quiet machine and with two CPU-bound jobs").

    .venv/bin/python bench/stability.py --task diamonds_price --time 150 --runs 5            # quiet
    .venv/bin/python bench/stability.py --task diamonds_price --time 150 --runs 5 --load 2   # loaded

Each run is `bench/bench_tabular.py`'s "ours" side (its own process, temporary folder and MLflow
store, scored on the held-back labels by the same code). The spread is (max - min) / mean of the
scores, with their standard deviation; wall / limit is shown for each run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import bench_tabular as bench  # noqa: E402
import tabular_suite as suite  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="diamonds_price", help=f"one of {', '.join(suite.TASKS)}")
    parser.add_argument("--time", type=float, default=150, help="each run's time limit, seconds")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--load", type=int, default=0, help="CPU-bound busy processes beside every run")
    parser.add_argument("--kill-after", type=float, help="kill a run after this many seconds (default 2*TIME+600)")
    args = parser.parse_args(argv)

    task = suite.select(args.task)[0]
    data_dir = suite.build(task)
    info = suite.load_info(task.name)
    hogs = [multiprocessing.Process(target=bench._busy_loop, daemon=True) for _ in range(args.load)]
    for hog in hogs:
        hog.start()
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out_dir = bench.RESULTS / f"stability-{task.name}-{stamp}"
    out_dir.mkdir(parents=True, exist_ok=True)
    print(f"{task.name}: {info['rows']} rows, {info['metric']}, TIME={args.time:g}s, {args.runs} runs, "
          f"{args.load} busy processes beside", flush=True)
    runs = []
    for n in range(args.runs):
        run_dir = out_dir / f"run{n}"
        run_dir.mkdir()
        runs.append(bench.run_side("ours", info, data_dir, args, run_dir, time_flag=True))
    for hog in hogs:
        hog.terminate()
    scores = np.array([r["score"] for r in runs if r["score"] is not None], dtype=float)
    walls = [r["wall_s"] / args.time for r in runs]
    summary = {"task": task.name, "metric": info["metric"], "time_limit_s": args.time, "load": args.load,
               "scores": scores.tolist(), "wall_over_limit": walls, "failed": args.runs - len(scores)}
    if len(scores):
        summary |= {"mean": float(scores.mean()), "std": float(scores.std()),
                    "spread": float((scores.max() - scores.min()) / abs(scores.mean()))}
        print(f"{info['metric']}: mean {summary['mean']:.5f}, std {summary['std']:.5f}, "
              f"(max - min) / mean {100 * summary['spread']:.2f}%; wall / limit "
              f"{min(walls):.2f}-{max(walls):.2f}; failed {summary['failed']}")
    (out_dir / "stability.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"results: {(out_dir / 'stability.json').relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
