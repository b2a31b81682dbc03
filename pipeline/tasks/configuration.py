"""A portfolio's configurations and what fitting one gives: data, not code.

A :class:`Configuration` is a display name, a registered model, its parameters (on top of the
registry's defaults) and its relative price; the default ones are read from
``pipeline/portfolios/tabular.toml``. A :class:`Fitted` is one configuration's k-fold result from
the one loop (``pipeline.tasks.portfolio.Portfolio.fit``).
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from features.crafted import STEPS as CRAFTED_STEPS
from models import ensemble as ensembles
from models import registry
from pipeline.console import say
from pipeline.tasks import kfold
from pipeline.tasks.base import Frozen

PORTFOLIO_FILE = Path(__file__).resolve().parent.parent / "portfolios" / "tabular.toml"


@dataclass(frozen=True)
class Configuration:
    """One entry of the portfolio: a display name, a registered model and its parameters (a
    read-only mapping), its relative ``cost`` (a price before any configuration has been timed),
    the ``metrics`` it is fit for (none: every metric), and the ``crafted`` feature steps in front
    of it (:data:`features.crafted.STEPS`; none: the encoding's features alone)."""

    name: str
    model: str
    params: Mapping[str, Any] = field(default_factory=dict)
    cost: float = 1.0
    metrics: tuple[str, ...] = ()
    crafted: tuple[str, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "params", Frozen(self.params))
        unknown = [s for s in self.crafted if s not in CRAFTED_STEPS]
        if unknown:
            raise ValueError(f"configuration {self.name!r}: crafted {unknown}: some of {', '.join(CRAFTED_STEPS)}")

    @property
    def entry(self) -> registry.ModelEntry:
        return registry.get(self.model, "tabular")

    @property
    def capabilities(self) -> registry.Capabilities:
        return self.entry.capabilities

    @property
    def encoding(self) -> str:
        return self.entry.feature_encoding(dict(self.params))

    @property
    def features(self) -> tuple[str, tuple[str, ...]]:
        """What its fold features are built from: configurations alike share them."""
        return self.encoding, self.crafted

    def build(self, **extra):
        """A fresh estimator: the registry's defaults, the configuration's params, then ``extra``."""
        return kfold.create_model(self.model, {**self.params, **extra})


def _section(task: str) -> str:
    return "regression" if task == "regression" else "classification"


def load(task: str, metric: str | None = None, path: Path | None = None) -> tuple[Configuration, ...]:
    """The ordered configurations for ``task`` (regression, binary, multiclass) and a competition
    scored by ``metric``: data, not code. An entry naming ``metrics`` is kept only for those."""
    with open(path or PORTFOLIO_FILE, "rb") as handle:
        raw = tomllib.load(handle)
    configs = (Configuration(entry["name"], entry["model"], dict(entry.get("params", {})),
                             float(entry.get("cost", 1.0)), tuple(entry.get("metrics", ())),
                             tuple(entry.get("crafted", ())))
               for entry in raw[_section(task)])
    return tuple(c for c in configs if not c.metrics or metric in c.metrics)


def tuned_by_default(task: str, path: Path | None = None) -> tuple[str, ...]:
    """The configurations ``make tune`` without a model tunes for ``task``, in turn."""
    with open(path or PORTFOLIO_FILE, "rb") as handle:
        return tuple(tomllib.load(handle).get("tune", {}).get(_section(task), ()))


# The last phase as priced from the fold fits (the test set through every fold model, the pickles)
# against what it took, hotel_price at 300 s after the patience of models.boosting made its
# boosters bigger: the test predictions 38.6 s (40.6 s priced) and MLflow's log of the 349 MB model
# 12.4 s, 50 s of the 300; a run the same hour ended 8 s past its limit (308 s). A quarter more
# than measured is kept back for the spread between runs.
LAST_PHASE_MARGIN = 1.25

@dataclass
class Fitted:
    """One configuration's k-fold result. ``oof`` and ``test`` are in the space the model was
    trained in (log prices, probabilities). ``covered``: the rows its folds held out (all of them
    unless the time limit cut it after some folds); ``score`` and ``fold_scores`` are on the
    covered rows the plan scores."""

    config: Configuration
    oof: np.ndarray
    predict_seconds: float  # what its fold models will take to predict the test set
    save_seconds: float  # what pickling its fold models into the run's model will take
    fold_scores: list[float]
    score: float
    seconds: float
    bag: ensembles.FoldBag
    repeat_oofs: list[np.ndarray]
    histories: list[list[dict]]
    covered: np.ndarray
    seed_scores: list[float] = field(default_factory=list)  # each seed's score (first repeat), with --seeds
    seeds: list[int] = field(default_factory=list)  # the seeds used, with --seeds
    bags: int = 1  # fold sets averaged into ``oof`` and ``bag``: 1, and one per extra bag
    bag_seconds: float = 0.0  # what the extra bags took (``seconds`` is the first pass's)

    @property
    def complete(self) -> bool:
        return bool(self.covered.all())

    @property
    def last_phase_seconds(self) -> float:
        return LAST_PHASE_MARGIN * (self.predict_seconds + self.save_seconds)

    def merged(self, extra: Fitted, score: Callable[[np.ndarray], float]) -> Fitted:
        """This member with ``extra`` (another bag: the same configuration on another shuffle's
        folds): out-of-fold predictions averaged by bag, fold models pooled."""
        bags = self.bags + 1
        oof = (self.oof * self.bags + extra.oof) / bags
        return dataclasses.replace(self, oof=oof, predict_seconds=self.predict_seconds + extra.predict_seconds,
                                   save_seconds=self.save_seconds + extra.save_seconds,
                                   score=score(oof), bag=ensembles.FoldBag([*self.bag.estimators, *extra.bag.estimators]),
                                   histories=[*self.histories, *extra.histories], bags=bags,
                                   bag_seconds=self.bag_seconds + extra.seconds)


SEEDS_SHARE = 0.8  # of a configuration's time, what its seeds are planned to fill: later fits vary


def affordable_seeds(config: Configuration, seeds: list[dict], left: float, fit_seconds: float,
                     rounds: int) -> list[dict]:
    """The seeds whose fits ``left`` seconds pay for, priced by the first fit (``fit_seconds``;
    ``rounds``: a seed's batches of folds): the work shrinks, not the deadline (--seeds 50 on a
    20 s limit)."""
    count = max(1, min(len(seeds), int(SEEDS_SHARE * left / (fit_seconds * rounds))))
    if count < len(seeds):
        say(f"  {config.name}: {count} of {len(seeds)} seeds fit in the time left (a fit takes "
            f"{fit_seconds:.1f} s, {rounds} batches of folds)")
    return seeds[:count]


def seeds_of(config: Configuration, count: int) -> list[dict]:
    """The parameters of each of ``count`` seeds (the model's own seed, then the next ones); one
    fit for a model without a seed, which every seed would fit alike."""
    knob = config.capabilities.seed_param
    if knob is None or count == 1:
        return [{}]
    base = {**config.entry.defaults, **config.params}.get(knob)
    base = 0 if base is None else int(base)
    return [{knob: base + s} for s in range(count)]
