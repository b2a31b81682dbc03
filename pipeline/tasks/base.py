"""What every kind of task gives the stages: the :class:`Task` protocol, a :class:`Plan` and a :class:`CVResult`.

The stages (``pipeline.stages``, ``pipeline.tune``) ask a task and never branch on its kind.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from models.time_limit import TimeLimit
from pipeline.config import Competition
from pipeline.metrics import Metric

FoldCallback = Callable[[int, float], None]  # (fold, its score)
EpochCallback = Callable[[int, dict, int], None]  # (fold, that epoch's log, the fit's planned epochs)


class Frozen(dict):
    """A read-only dict (nested dicts frozen too): it still serialises, logs and pickles as a dict."""

    def __init__(self, items: Mapping | None = None):
        super().__init__({k: Frozen(v) if isinstance(v, Mapping) and not isinstance(v, Frozen) else v
                          for k, v in (items or {}).items()})

    def _refuse(self, *args, **kwargs):
        raise TypeError("a plan is read-only: make a new one")

    __setitem__ = __delitem__ = __ior__ = clear = pop = popitem = setdefault = update = _refuse

    def __reduce__(self):
        return (Frozen, (dict(self),))

    def __hash__(self):
        raise TypeError("unhashable type: 'Frozen'")


@dataclass(frozen=True)
class Plan:
    """Everything a run fits, decided before any work and never changed after: the task and
    metric, the model, each member's resolved parameters (and their sources), the competition as
    this run fits it (``comp``: the target transform chosen, say), folds and repeats, and the
    time limit. Tasks keep no state between stages: what ``validate`` learns comes back in its
    :class:`CVResult` and goes forward as an argument."""

    task: str  # regression, binary or multiclass
    metric: Metric
    model: str  # a registered name, "ensemble" (the config's members) or "portfolio" (the default)
    members: Mapping[str, Mapping]  # {name: params}: the model alone, or each member / configuration
    comp: Competition | None = None  # the competition as this run fits it (the target transform chosen, say)
    time_limit: TimeLimit = field(default_factory=TimeLimit)
    sources: Mapping[str, Mapping[str, str]] = field(default_factory=dict)  # {name: {param: source}}
    models: Mapping[str, str] = field(default_factory=dict)  # {member name: registered model}, where they differ
    costs: Mapping[str, float] = field(default_factory=dict)  # a portfolio's relative price of each member
    study_keys: Mapping[str, str] = field(default_factory=dict)  # {member: the Optuna study that tunes it}, where not its name
    method: str = "best"  # how members combine: select (greedy), blend, stack, best
    resume: bool = True  # continue from the checkpoints a killed run left, where the task has any
    drop_shifted: int = 0  # --drop-shifted K: the K columns that most tell test from train leave both

    def __post_init__(self):
        for name in ("members", "sources", "models", "costs", "study_keys"):
            object.__setattr__(self, name, Frozen(getattr(self, name)))

    @property
    def params(self) -> Mapping:
        return self.members.get(self.model, Frozen())

    @property
    def folds(self) -> int:
        return self.comp.cv.folds

    @property
    def repeats(self) -> int:
        return self.comp.cv.repeats


@dataclass
class CVResult:
    oof: np.ndarray  # out-of-fold predictions (probabilities where the metric needs them)
    fold_scores: list[float]
    score: float
    folds: np.ndarray  # the fold that held each row out; -1: never held out
    histories: list[list[dict]] = field(default_factory=list)
    seconds: float = 0.0
    final: Any = None  # the unfitted model the refit trains (an ensemble with its weights)
    scores: dict[str, float] = field(default_factory=dict)  # every model's score, an ensemble's members too
    scores_with_outliers: dict[str, float] = field(default_factory=dict)  # where a rule drops rows: them back in
    weights: dict[str, float] | None = None
    repeats: list[CVResult] = field(default_factory=list)  # repeated k-fold: each repeat's own result
    fitted: Any = None  # the final model, already fit (bagged fold models): no refit needed
    members: list = field(default_factory=list)  # each member's own result (a portfolio's configurations)
    rows: int = 0  # training rows the scores came from
    finished: bool = True  # the whole plan ran (not cut short by the time limit)
    checkpoints: Any = None  # the folder the fits checkpoint to, where the task has one (images)
    leaderboard: Any = None  # the model leaderboard (a DataFrame, pipeline.model_board), printed last


class CompetitionFiles(Protocol):
    def has_files(self, comp: Any, data_dir: Path) -> bool: ...

    def load(self, comp: Any, data_dir: Path) -> Any: ...


class FileTask:
    """A task whose files are read by one ``pipeline.data`` module (``files``)."""

    files: CompetitionFiles
    distributed: bool = False  # runs under torchrun, each rank taking its share
    takes_weights: bool = False  # its models can start from a state dict (``--weights``)

    def __init__(self, comp: Any):
        self.comp = comp

    def has_files(self, data_dir: Path) -> bool:
        return self.files.has_files(self.comp, data_dir)

    def load(self, data_dir: Path) -> Any:
        return self.files.load(self.comp, data_dir)

    def check_shift(self, data: Any, plan: Plan) -> Any:
        """Train-vs-test shift, measured and logged (tabular); ``data``, less the columns it drops."""
        return data

    def tuned_by_default(self, data: Any) -> tuple[str, ...]:
        """What ``make tune`` without a model tunes in turn; empty: the task's one default model."""
        return ()


class Task(Protocol):
    """One kind of competition (tabular, image): everything the stages need to know about it."""

    registry_kind: str  # the kind of its models in ``models.registry``
    progress_unit: str  # how tuning reports a trial: "fold" (running mean) or "epoch" (held-out score)
    distributed: bool  # whether it can run under torchrun (several processes)
    takes_weights: bool  # whether its models can start from a state dict (``--weights``)

    def has_files(self, data_dir: Path) -> bool: ...

    def load(self, data_dir: Path) -> Any:
        """The competition's files, read and checked; ``.source`` says where they came from."""

    def plan(self, data: Any, *, model: str | None = None, cli_params: dict | None = None,
             tuned: bool = True, study_params: dict | None = None, time_limit: TimeLimit | None = None,
             resume: bool = True, drop_shifted: int = 0) -> Plan:
        """The model and params, checked; ``time_limit``: the run's, which the plan carries, as it
        does the run's options (``resume``, ``drop_shifted``)."""

    def untuned_params(self, plan: Plan) -> dict:
        """What ``submit`` fits when nothing is tuned: the first trial of a study."""

    def describe(self, data: Any, plan: Plan) -> list[str]:
        """Lines printed before any work."""

    def tags(self, data: Any, plan: Plan) -> dict[str, str]: ...

    def run_params(self, data: Any, plan: Plan) -> dict[str, Any]: ...

    def cross_validate(self, data: Any, plan: Plan, *, on_fold: FoldCallback | None = None,
                       on_epoch: EpochCallback | None = None, progress: bool | None = False) -> CVResult:
        """Out-of-fold scores, nothing logged: what tuning optimises, computed as ``validate``
        computes them (the same loop, folds and scored rows)."""

    def check_shift(self, data: Any, plan: Plan) -> Any:
        """Inside the run, before ``validate``: train-vs-test shift (pipeline/shift.py); images: none."""

    def validate(self, data: Any, plan: Plan, *, progress: bool | None) -> CVResult:
        """``cross_validate``, printed and logged to the active run."""

    def refit(self, data: Any, plan: Plan, result: CVResult, *, progress: bool | None) -> Any:
        """The final model, fit on every training row and logged."""

    def predict(self, fitted: Any, data: Any, plan: Plan) -> Any: ...

    def submission(self, data: Any, plan: Plan, predictions: Any, path: Path) -> int:
        """Check and write the submission; returns its row count."""

    def local_score(self, data: Any, plan: Plan, predictions: Any) -> float | None:
        """The score on held-back test labels, where the data has them (bundled data)."""
