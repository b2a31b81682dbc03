"""Which model runs, and with which parameters: the one place for their precedence.

registry < config < study < command line:

- the registry entry's defaults (``models.registry``, applied when the model is built);
- the config: ``[model] params`` for the config's model, ``[ensemble.params.<member>]`` for a
  member of the config's ensemble (also when that member runs alone or is tuned);
- the study: the best trial of the model's Optuna study (``tuned``), or a trial's suggestion;
- the command line's ``--param KEY=VALUE``.
"""

from __future__ import annotations

from models import registry
from pipeline import studies
from pipeline.config import Competition
from pipeline.console import say
from pipeline.errors import UserError

ENSEMBLE = "ensemble"
_KINDS = {"tabular": "a tabular", "vision": "an image"}


def choose_model(comp: Competition, kind: str, task: str, default: str, model: str | None) -> str:
    """The command line's model, else the config's, else ``default``; checked against the registry."""
    name = model or comp.model.name or default
    if name == ENSEMBLE:
        if kind != "tabular":
            raise UserError(f"{comp.name}: ensembles are built of tabular models")
        if not comp.ensemble.models:
            raise UserError(f"{comp.name}: model 'ensemble' needs [ensemble] models in the config")
        if task != "regression" and comp.ensemble.method == "stack":
            raise UserError(f"{comp.name}: [ensemble] method 'stack' is for regression; classifiers blend probabilities "
                            "(best, blend)")
        for member in comp.ensemble.models:
            check_model(member, kind, task)
        return name
    check_model(name, kind, task)
    return name


def check_model(name: str, kind: str, task: str) -> registry.ModelEntry:
    try:
        entry = registry.get(name, kind)
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


def resolve(comp: Competition, model: str, *, tuned: bool, study: dict | None = None,
            cli: dict | None = None) -> dict:
    """``model``'s parameters: config, then the study's (its best trial when ``tuned``), then the command line's."""
    if tuned and study is None:
        study = studies.best_params(comp, model)
        if study:
            say(f"params: {model} uses the best trial of its Optuna study (STUDY=ignore ignores it)")
    return {**config_params(comp, model), **(study or {}), **(cli or {})}


def members(comp: Competition, model: str, *, tuned: bool, study: dict | None = None,
            cli: dict | None = None) -> dict[str, dict]:
    """Each model's parameters: the model alone, or every member of the config's ensemble."""
    if model != ENSEMBLE:
        return {model: resolve(comp, model, tuned=tuned, study=study, cli=cli)}
    if cli:
        raise UserError("--param applies to a single model; set ensemble members' params in [ensemble.params.<model>]")
    return {name: resolve(comp, name, tuned=tuned) for name in comp.ensemble.models}
