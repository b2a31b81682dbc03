"""Which model runs, and with which parameters: the one place for their precedence.

registry < defaults < metric < portfolio < config < study < command line (< the seed and time
limit, which the k-fold loop sets per fit: each seed of ``--seeds``, and each fold's share of the
time left, ``pipeline.tasks.portfolio``):

- the registry entry's defaults (``models.registry``);
- a task's own defaults, each layer under its own source name (an image task's: the recipe of
  its kind of image, the mirror probe's ``augment`` and the run's ``--weights``:
  ``pipeline.tasks.image``);
- the competition's metric, for a model that can stop early on it (``eval_metric``,
  :data:`models.boosting.EVAL_METRICS`: boosters stop on MAE where MAE is the metric);
- the portfolio configuration's params (``pipeline/portfolios/tabular.toml``);
- the config: ``[model] params`` for the config's model, ``[ensemble.params.<member>]`` for a
  member of the config's ensemble (also when that member runs alone or is tuned);
- the study: the best trial of the configuration's Optuna study (``tuned``; :func:`study_key`
  names it), or a trial's suggestion;
- the command line's ``--param KEY=VALUE``.

Every value keeps the name of its source (:class:`Resolved`), which the run logs; the registry's
defaults are applied when the model is built, so ``values`` holds what the run chose. ``check``
builds the estimator with the values and validates them without fitting, so that an unknown
or out-of-range parameter is one line before any work.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from models import registry
from models.boosting import EVAL_METRICS
from pipeline import studies
from pipeline.config import Competition
from pipeline.console import say
from pipeline.errors import UserError

ENSEMBLE = "ensemble"
_KINDS = {"tabular": "a tabular", "vision": "an image"}


def choose_model(comp: Competition, kind: str, task: str, default: str, model: str | None, *,
                 ensembles: bool = False) -> str:
    """The command line's model, else the config's, else ``default``; checked against the registry,
    as the entry that does ``task`` (``mlp`` on a binary task: ``mlp_classifier``).
    ``ensembles``: whether the task combines several models (the tabular one does)."""
    name = model or comp.model.name or default
    if name == ENSEMBLE:
        if not ensembles:
            raise UserError(f"{comp.name}: ensembles are built of tabular models")
        if not comp.ensemble.models:
            raise UserError(f"{comp.name}: model 'ensemble' needs [ensemble] models in the config")
        if task != "regression" and comp.ensemble.method == "stack":
            raise UserError(f"{comp.name}: [ensemble] method 'stack' is for regression; classifiers combine "
                            "probabilities (best, select, blend)")
        for member in comp.ensemble.models:
            check_model(member, kind, task)
        return name
    return check_model(name, kind, task).name


def check_model(name: str, kind: str, task: str) -> registry.ModelEntry:
    try:
        entry = registry.get(name, kind, task)
    except KeyError:
        known = ", ".join(e.name for e in registry.list_models(kind=kind))
        raise UserError(f"unknown model {name!r}: not {_KINDS.get(kind, kind)} model "
                        f"(python -m pipeline models --kind {kind}): {known}") from None
    if task not in entry.tasks:
        raise UserError(f"model {name!r} does not do {task} (it does {', '.join(sorted(entry.tasks))})")
    return entry


def config_params(comp: Competition, model: str) -> dict:
    """What the config gives ``model``: ``[model] params``, or its ``[ensemble.params.<model>]``."""
    if model == comp.model.name:
        return dict(comp.model.params)
    if comp.model.name in (ENSEMBLE, None) and model in comp.ensemble.models:  # None: the default ensemble
        return dict(comp.ensemble.params.get(model, {}))
    return {}


@dataclass(frozen=True)
class Resolved:
    """A model's parameters and, for each, the source that set it."""

    values: dict = field(default_factory=dict)
    sources: dict = field(default_factory=dict)


def study_key(model: str, config_name: str | None = None, portfolio: dict | None = None) -> str:
    """The name of the study that tunes a configuration: its registered model's where the
    configuration adds no params to it (``lightgbm`` on a binary task is ``lightgbm_classifier``
    either way), else the configuration's own (``lightgbm_large``)."""
    return config_name if portfolio and config_name else model


def resolve(comp: Competition, model: str, *, tuned: bool, study: dict | None = None, cli: dict | None = None,
            kind: str = "tabular", portfolio: dict | None = None, config_name: str | None = None,
            metric: str | None = None, defaults: dict[str, dict] | None = None) -> Resolved:
    """``model``'s parameters from every source, later ones winning; ``config_name``: the name the
    config's ``[ensemble.params.<name>]`` uses (a portfolio configuration's name); ``metric``: the
    competition's, which a model that stops early on it is given; ``defaults``: {source name:
    values}, a task's own layers, below every other source, in order."""
    key = study_key(model, config_name, portfolio)
    if tuned and study is None:
        study = studies.best_params(comp, key)
        if study:
            say(f"params: {config_name or model} uses the best trial of its Optuna study {key} (STUDY=ignore ignores it)")
    stops_on = {"eval_metric": metric} if metric in EVAL_METRICS and _takes(model, kind, "eval_metric") else None
    layers = (*(defaults or {}).items(), ("metric", stops_on), ("portfolio", portfolio),
              ("config", config_params(comp, config_name or model)),
              ("study", study), ("command line", cli))
    values, sources = {}, {}
    for source, given in layers:
        for key, value in (given or {}).items():
            values[key], sources[key] = value, source
    return Resolved(values, sources)


def _takes(model: str, kind: str, param: str) -> bool:
    entry = registry.get(model, kind)
    return param in entry.defaults or param in entry.build().get_params()


def check(model: str, kind: str, resolved: Resolved) -> None:
    """Build ``model`` with the values and validate them (scikit-learn's parameter constraints
    where the estimator has them): an unknown name or a bad value is one line, before any work."""
    entry = registry.get(model, kind)
    try:
        built = entry.build(**resolved.values)
        if hasattr(built, "_parameter_constraints"):  # scikit-learn's own estimators declare theirs
            built._validate_params()
        elif hasattr(built, "get_params"):  # others (LightGBM) take anything until they fit
            _check_numbers(model, entry.build().get_params(deep=False), resolved)
    except (TypeError, ValueError) as exc:
        culprits = [f"{k}={v!r} ({resolved.sources[k]})" for k, v in resolved.values.items() if k in str(exc)]
        where = f" [{', '.join(culprits)}]" if culprits else ""
        raise UserError(f"model {model!r}: {str(exc).splitlines()[0]}{where}") from None


def _check_numbers(model: str, defaults: dict, resolved: Resolved) -> None:
    """A value given as text for a parameter whose default is a number is refused (``-p
    learning_rate=abc``), before the MLflow run rather than at the first fit."""
    for key, value in resolved.values.items():
        default = defaults.get(key)
        if isinstance(value, str) and isinstance(default, int | float) and not isinstance(default, bool):
            raise UserError(f"model {model!r}: {key}={value!r} ({resolved.sources[key]}) is not a number "
                            f"(its default is {default!r})")


def members(comp: Competition, model: str, *, tuned: bool, study: dict | None = None,
            cli: dict | None = None, metric: str | None = None) -> dict[str, Resolved]:
    """Each model's parameters: the model alone, or every member of the config's ensemble."""
    if model != ENSEMBLE:
        return {model: resolve(comp, model, tuned=tuned, study=study, cli=cli, metric=metric)}
    if cli:
        raise UserError("--param applies to a single model; set ensemble members' params in [ensemble.params.<model>]")
    return {name: resolve(comp, name, tuned=tuned, metric=metric) for name in comp.ensemble.models}
