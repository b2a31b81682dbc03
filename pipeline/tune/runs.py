"""What a study leaves in MLflow: one child run per trial, and the parent run's summary and plots.

One MLflow parent run per ``tune`` invocation (experiment = competition); each trial it finished
becomes a child run (tag ``mlflow.parentRunId``) with its params, CV score, state and duration.
The children are written by the parent process alone, from the trials in the Optuna storage as
they finish: worker processes never touch MLflow, so MLflow's SQLite store has a single writer and
never reports "database is locked". All of it goes through :mod:`pipeline.tracking`.
"""

from __future__ import annotations

import socket
import warnings
from datetime import datetime
from typing import Any

import matplotlib.pyplot as plt
import optuna
import optuna.visualization.matplotlib as vis
from optuna.trial import FrozenTrial

from pipeline import (
    plots,  # noqa: F401  (selects Agg, except in a notebook)
    studies,
    tracking,
)


class ChildRuns:
    """Writes one MLflow child run per trial this invocation finished, from the parent process only.

    "This invocation's" trials: those run by its own worker processes (``pids``), and those it
    failed at start because their worker was gone (``adopted``); not those of workers on other
    machines sharing the study. Surplus trials (see :mod:`pipeline.tune.workers`) get none.
    """

    def __init__(self, experiment_id: str, parent_run_id: str, study: str, metric: str, adopted: list[int]):
        self.experiment_id, self.parent_run_id = experiment_id, parent_run_id
        self.study, self.metric = study, metric
        self.adopted = set(adopted)
        self.pids: set[int] = set()
        self.logged: set[int] = set()
        self.finished = 0  # COMPLETE or PRUNED trials logged

    def _ours(self, trial: FrozenTrial) -> bool:
        if trial.number in self.adopted:
            return True
        host, _, rest = str(trial.user_attrs.get("worker", "")).partition(":")
        return host == socket.gethostname() and rest.split(":")[0] in {str(pid) for pid in self.pids}

    def sweep(self, study: optuna.Study) -> None:
        """Log every finished trial of ours not logged yet."""
        for trial in study.get_trials(deepcopy=False):
            if trial.state.is_finished() and self._ours(trial):
                self.log(trial)

    def log(self, trial: FrozenTrial) -> None:
        if trial.number in self.logged or trial.user_attrs.get("surplus"):
            return
        self.logged.add(trial.number)
        if trial.state.name in ("COMPLETE", "PRUNED"):
            self.finished += 1
        tags = {
            "mlflow.parentRunId": self.parent_run_id,
            "optuna.study": self.study,
            "optuna.trial": str(trial.number),
            "optuna.state": trial.state.name,
            "worker": str(trial.user_attrs.get("worker", "?")),
        }
        for key in ("error", "fail_reason", "diverged"):
            if key in trial.user_attrs:
                tags[f"optuna.{key}"] = str(trial.user_attrs[key])[:5000]
        tracking.record_run(
            self.experiment_id,
            run_name=f"trial-{trial.number}",
            tags=tags,
            params={**trial.params, **studies.model_params(trial)},
            metrics=self._metrics(trial),
            start_ms=_ms(trial.datetime_start),
            end_ms=_ms(trial.datetime_complete),
            status="FAILED" if trial.state.name == "FAIL" else "FINISHED",
        )

    def _metrics(self, trial: FrozenTrial) -> list[tuple[str, float, int]]:
        metrics = [("duration_seconds", trial.duration.total_seconds() if trial.duration else 0.0, 0)]
        if trial.value is not None:
            metrics.append((f"cv_{self.metric}", float(trial.value), 0))
        per_epoch = trial.user_attrs.get("steps") == "schedule"  # see pruners.schedule_step
        curve = f"val_{self.metric}" if per_epoch else f"cv_{self.metric}_running"
        for step, value in sorted(trial.intermediate_values.items()):
            metrics.append((curve, float(value), int(step)))
        if trial.state.name == "PRUNED" and trial.intermediate_values:
            name = "pruned_at_step" if per_epoch else "pruned_at_fold"
            metrics.append((name, float(max(trial.intermediate_values)), 0))
        return metrics


def _ms(moment: datetime | None) -> int:
    return int((moment or datetime.now()).timestamp() * 1000)


def log_summary(study: optuna.Study, outcome: Any) -> None:
    """The parent run's trial counts, best params (also as ``best_params.json``) and Optuna's plots."""
    tracking.log_metrics({
        "trials_complete": outcome.counts["COMPLETE"],
        "trials_pruned": outcome.counts["PRUNED"],
        "trials_failed": outcome.counts["FAIL"],
        "trials_run": outcome.ran,
        "trials_per_minute": outcome.trials_per_minute,
        "wall_seconds": outcome.wall_seconds,
    })
    if outcome.best_params is None:
        return
    tracking.log_metrics({f"best_cv_{outcome.metric}": outcome.best_value})
    tracking.log_params({f"best.{k}": v for k, v in outcome.best_params.items()} | {"best.trial": outcome.best_trial})
    tracking.log_json({"study": outcome.study, "trial": outcome.best_trial, f"cv_{outcome.metric}": outcome.best_value,
                       "params": outcome.best_params}, "best_params.json")
    for name, figure in study_plots(study):
        tracking.log_figure(figure, name)


def study_plots(study: optuna.Study) -> list[tuple[str, Any]]:
    """Optuna's matplotlib plots (no plotly or browser needed); a plot the study can't make yet is skipped."""
    figures = []
    for name, plot in (
        ("optimization_history.png", vis.plot_optimization_history),
        ("param_importances.png", vis.plot_param_importances),
        ("parallel_coordinate.png", vis.plot_parallel_coordinate),
        ("intermediate_values.png", vis.plot_intermediate_values),
    ):
        with warnings.catch_warnings(), plt.rc_context():  # Optuna's plots set the ggplot style globally
            warnings.simplefilter("ignore")
            try:
                axes = plot(study)
            except Exception:  # e.g. importances need two complete trials
                continue
        first = axes.flat[0] if hasattr(axes, "flat") else axes
        figure = first.figure
        figure.set_size_inches(9, 5.5)
        figure.tight_layout()
        plt.close(figure)
        figures.append((name, figure))
    return figures
