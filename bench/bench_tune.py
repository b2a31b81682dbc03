"""Tuning benchmark on the House Prices files: what `make tune` buys, and how fast it runs.

For each model (default: the members of the config's ensemble, else ridge and gbm), within an
equal share of ``--budget-minutes``:

1. the CV log-RMSE of the config's params (what `make submit STUDY=ignore` fits);
2. `tune` with one worker for two thirds of the model's share: the best CV and trials/minute;
3. `tune` with two workers (JOBS=2) replaying the very same trials (the params of step 2's
   trials, enqueued in order) in a fresh study: trials/minute, and the speed-up over one worker
   for the same work. Wall times are whole `tune` invocations, start-up included.

Finally ``stages.run(comp, data_dir, tuned=True)`` cross-validates the config's default model (the
ensemble, when the config has one) with every member's tuned params, and once with the defaults.

The studies go to a fresh folder ``.optuna/bench-<time>/`` (never your own studies); MLflow runs
go where `make ui` looks. Prints "skipped" and exits 0 when the data folder is absent.

    python bench/bench_tune.py [--budget-minutes 15] [--models ridge gbm] [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models.time_limit import TimeLimit  # noqa: E402
from pipeline import config, stages, studies, tasks, tune  # noqa: E402
from pipeline.params import ENSEMBLE  # noqa: E402

FALLBACK_MODELS = ("ridge", "gbm")


def _limit(seconds: float) -> TimeLimit:
    """A tuning time limit of ``seconds`` from now, on the wall clock its workers share."""
    return TimeLimit(seconds, time.time(), reserve=0.0, clock=time.time)


def default_models(comp: config.Competition) -> list[str]:
    if comp.model.name == ENSEMBLE and comp.ensemble.models:
        return list(comp.ensemble.models)
    return list(FALLBACK_MODELS)


def default_cv(comp, data_dir: Path, model: str) -> tuple[float, float]:
    """CV score of the config's params for ``model``, and the seconds it took."""
    started = time.perf_counter()
    task = tasks.for_competition(comp)
    data = task.load(data_dir)
    plan = task.plan(data, model=model, tuned=False)  # the config's params for the model
    result = task.cross_validate(data, plan)  # the rows the studies score: the loop submit runs
    return result.score, time.perf_counter() - started


def replay(storage: str, source: str, comp, model: str, direction: str) -> int:
    """A fresh study in ``storage`` with the finished trials of ``source`` enqueued, in order."""
    name = studies.study_name(comp, model)
    done = studies.load_study(source, name)
    target = studies.load_study(storage, name, create=True, direction=direction)
    trials = [t for t in done.trials if t.state.name in ("COMPLETE", "PRUNED")]
    for trial in trials:
        target.enqueue_trial(trial.params)
    return len(trials)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data" / "house-prices")
    parser.add_argument("--competition", default="house-prices")
    parser.add_argument("--models", nargs="+", help="models to tune (default: the config's ensemble members, else ridge gbm)")
    parser.add_argument("--budget-minutes", type=float, default=15.0, help="tuning time for all models together")
    parser.add_argument("--work", type=Path, help="folder for the bench's Optuna storages")
    args = parser.parse_args(argv)

    if not (args.data_dir / "train.csv").is_file():
        print(f"skipped: no train.csv in {args.data_dir}")
        return 0
    comp = config.load(args.competition)
    models = args.models or default_models(comp)
    work = (args.work or Path(".optuna") / time.strftime("bench-%Y%m%d-%H%M%S")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    task = tasks.for_competition(comp)
    data = task.load(args.data_dir)
    plan = task.plan(data, tuned=False)  # the config's model (its ensemble, when it has one)
    metric = plan.metric
    direction = "maximize" if metric.greater_is_better else "minimize"
    share = 60.0 * args.budget_minutes / len(models)
    print(f"bench-tune: {comp.name} ({args.data_dir}, {len(data.train)} rows, {comp.cv.folds} folds), "
          f"models {' '.join(models)}, {args.budget_minutes:g} min of tuning, {os.cpu_count()} cores; studies in {work}",
          flush=True)

    rows = []
    one, two = str(work / "jobs1.log"), str(work / "jobs2.log")
    for model in models:
        print(f"\n== {model}: default params", flush=True)
        before, seconds = default_cv(comp, args.data_dir, model)
        print(f"{model}: cv {metric.name} {before:.5f} with the config's params ({seconds:.1f} s)", flush=True)
        print(f"\n== {model}: tune, 1 worker, {share * 2 / 3:.0f} s", flush=True)
        single = tune.tune(comp, args.data_dir, model=model, n_trials=100_000, time_limit=_limit(share * 2 / 3), jobs=1, storage=one)
        replayed = replay(two, one, comp, model, direction)
        print(f"\n== {model}: the same {replayed} trials, 2 workers", flush=True)
        double = tune.tune(comp, args.data_dir, model=model, n_trials=replayed, jobs=2, storage=two,
                           time_limit=_limit(max(single.wall_seconds, 30.0)))
        speedup = double.trials_per_minute / single.trials_per_minute if single.trials_per_minute else float("nan")
        rows.append((model, before, single.best_value, single.ran, single.wall_seconds, single.trials_per_minute,
                     double.ran, double.wall_seconds, double.trials_per_minute, speedup))

    print(f"\n{'model':<14} {'default':>9} {'tuned':>9} {'trials':>7} {'1 job s':>8} {'/min':>6} "
          f"{'trials':>7} {'2 jobs s':>8} {'/min':>6} {'speed-up':>8}")
    for model, before, after, n1, s1, r1, n2, s2, r2, speedup in rows:
        tuned = f"{after:.5f}" if after is not None else "-"
        print(f"{model:<14} {before:>9.5f} {tuned:>9} {n1:>7d} {s1:>8.0f} {r1:>6.1f} {n2:>7d} {s2:>8.0f} {r2:>6.1f} "
              f"{speedup:>7.2f}x")
    print(f"(CV {metric.name}, without the config's outlier rows as the studies score it; speed-up = trials per minute with JOBS=2 / with JOBS=1, same trials, "
          f"whole invocations including start-up)")

    os.environ["OPTUNA_STORAGE"] = one
    default_model = plan.model
    print(f"\n== {default_model} (the config's model) with the tuned params", flush=True)
    tuned_run = stages.run(comp, args.data_dir, tuned=True)
    print(f"\n== {default_model} with the config's params", flush=True)
    default_run = stages.run(comp, args.data_dir, tuned=False)
    print(f"\n{default_model}: cv {metric.name} {default_run.cv_score:.5f} default -> {tuned_run.cv_score:.5f} tuned")
    print(f"(OPTUNA_STORAGE={one} make submit uses these tuned params)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
