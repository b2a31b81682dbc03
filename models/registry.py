"""Models found by name, timm-style.

Each entry is a factory that returns a fresh scikit-learn-compatible estimator (tabular) or an
``nn.Module`` (vision), plus the Optuna search space declared next to it. The space is a function
of a duck-typed ``trial`` (anything with ``suggest_float``/``suggest_int``/``suggest_categorical``),
so this module never imports Optuna.

An entry also declares what the k-fold loop needs to know of it (:class:`Capabilities`, as
AutoGluon's model tags): whether it stops itself at a time limit, which parameter seeds it, whether
more bags of it buy anything, and the features it takes. The loop reads them and never inspects an
estimator's parameter names. ``same_as`` lets one name serve several task kinds: ``mlp`` on a
binary task is ``mlp_classifier``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

SearchSpace = Callable[[Any], dict[str, Any]]


ENCODINGS = ("onehot", "native", "native_levels")


@dataclass(frozen=True)
class Capabilities:
    """What an entry's estimators can do, declared next to the factory.

    ``stops_itself``: it takes ``time_limit`` (seconds for one fit) and stops at it.
    ``seed_param``: the parameter that seeds it (``None``: deterministic, one seed is all seeds).
    ``rebaggable``: another bag of it (the same model on another shuffle's folds) adds accuracy; a
    forest is an average of randomised trees already, and its fold models are the largest.
    ``encoding``: the features it takes (``onehot``: ``TabularPreprocessor``; ``native``: numbers
    with their gaps and pandas categories); ``levels_param``: the boolean parameter that makes
    ``native`` into ``native_levels`` (categories of more levels split on natively too)."""

    stops_itself: bool = False
    seed_param: str | None = None
    rebaggable: bool = True
    encoding: str = "onehot"
    levels_param: str | None = None

    def __post_init__(self):
        if self.encoding not in ENCODINGS:
            raise ValueError(f"encoding {self.encoding!r}: one of {', '.join(ENCODINGS)}")

    def feature_encoding(self, params: dict[str, Any]) -> str:
        """The features an estimator built with ``params`` (over the entry's defaults) takes."""
        if self.levels_param is not None and params.get(self.levels_param):
            return "native_levels"
        return self.encoding


@dataclass(frozen=True)
class ModelEntry:
    name: str
    factory: Callable[..., Any]
    kind: str  # "tabular" or "vision"
    tasks: frozenset[str]  # subset of {"regression", "binary", "multiclass"}
    space: SearchSpace | None = None
    description: str = ""
    defaults: dict[str, Any] = field(default_factory=dict)
    capabilities: Capabilities = field(default_factory=Capabilities)
    same_as: str | None = None  # the name this entry answers to for its tasks (lightgbm_classifier: lightgbm)

    def build(self, **params: Any) -> Any:
        return self.factory(**{**self.defaults, **params})

    def feature_encoding(self, params: dict[str, Any]) -> str:
        return self.capabilities.feature_encoding({**self.defaults, **params})


# Keyed by (kind, name): "mlp" is both d2l's house-price MLP and its Fashion-MNIST MLP.
_REGISTRY: dict[tuple[str, str], ModelEntry] = {}


def register(
    name: str,
    *,
    kind: str = "tabular",
    tasks: tuple[str, ...] = ("regression",),
    space: SearchSpace | None = None,
    description: str = "",
    capabilities: Capabilities | None = None,
    same_as: str | None = None,
    **defaults: Any,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: ``@register("ridge", space=..., capabilities=Capabilities(...))`` above a factory
    function; the keyword arguments left are the estimator's default parameters."""

    def decorate(factory: Callable[..., Any]) -> Callable[..., Any]:
        if (kind, name) in _REGISTRY:
            raise ValueError(f"{kind} model {name!r} is registered twice")
        doc = description or (factory.__doc__ or "").strip().splitlines()[0:1]
        _REGISTRY[(kind, name)] = ModelEntry(
            name=name,
            factory=factory,
            kind=kind,
            tasks=frozenset(tasks),
            space=space,
            description=doc if isinstance(doc, str) else "".join(doc),
            defaults=defaults,
            capabilities=capabilities or Capabilities(),
            same_as=same_as,
        )
        return factory

    return decorate


def _load_builtin_models() -> None:
    # Importing the modules runs their @register decorators.
    from models import tabular, trees, vision  # noqa: F401


def get(name: str, kind: str | None = None, task: str | None = None) -> ModelEntry:
    """The entry called ``name``; ``kind`` ("tabular" or "vision") settles names used by both.
    With ``task``, a name whose entry does not do that task is the entry that is ``same_as`` it
    and does (``mlp`` on a binary task: ``mlp_classifier``)."""
    _load_builtin_models()
    if task is not None:
        named = [e for (k, n), e in _REGISTRY.items() if n == name and kind in (None, k)]
        if not any(task in e.tasks for e in named):
            alias = [e for (k, _), e in _REGISTRY.items() if e.same_as == name and kind in (None, k) and task in e.tasks]
            if len(alias) == 1:
                return alias[0]
    found = [e for (k, n), e in _REGISTRY.items() if n == name and kind in (None, k)]
    if len(found) == 1:
        return found[0]
    if found:
        raise KeyError(f"model {name!r} exists as {' and '.join(e.kind for e in found)}; say which kind")
    known = ", ".join(sorted({n for (k, n) in _REGISTRY if kind in (None, k)}))
    raise KeyError(f"unknown model {name!r}; known models: {known}")


def create(name: str, kind: str | None = None, **params: Any) -> Any:
    return get(name, kind).build(**params)


def list_models(kind: str | None = None, task: str | None = None) -> list[ModelEntry]:
    _load_builtin_models()
    return [
        entry
        for entry in sorted(_REGISTRY.values(), key=lambda e: (e.kind, e.name))
        if (kind is None or entry.kind == kind) and (task is None or task in entry.tasks)
    ]
