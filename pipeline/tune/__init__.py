"""``make tune``: one persistent Optuna study per (competition, model), named ``<competition>/<model>``.

- :mod:`pipeline.studies`: where studies live (journal file or RDB URL) and their best params;
- :mod:`pipeline.tune.stage`: the stage: checks, the first trial, workers, summary;
- :mod:`pipeline.tune.objective`: a trial's score, from the competition's task;
- :mod:`pipeline.tune.pruners`: when a trial stops early;
- :mod:`pipeline.tune.workers`: the trial loop, the trial budget, worker processes, dead workers;
- :mod:`pipeline.tune.runs`: the MLflow parent run's summary and one child run per trial.
"""

from pipeline.studies import describe_storage
from pipeline.tune.stage import TuneOutcome, dashboard_command, tune, tune_default

__all__ = ["TuneOutcome", "dashboard_command", "describe_storage", "tune", "tune_default"]
