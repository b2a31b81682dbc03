"""Models found by name, timm-style.

Each entry is a factory that returns a fresh scikit-learn-compatible estimator (tabular) or an
``nn.Module`` (vision), plus the Optuna search space declared next to it. The space is a function
of a duck-typed ``trial`` (anything with ``suggest_float``/``suggest_int``/``suggest_categorical``),
so this module never imports Optuna.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

SearchSpace = Callable[[Any], dict[str, Any]]


@dataclass(frozen=True)
class ModelEntry:
    name: str
    factory: Callable[..., Any]
    kind: str  # "tabular" or "vision"
    tasks: frozenset[str]  # subset of {"regression", "binary", "multiclass"}
    space: SearchSpace | None = None
    description: str = ""
    defaults: dict[str, Any] = field(default_factory=dict)

    def build(self, **params: Any) -> Any:
        return self.factory(**{**self.defaults, **params})


# Keyed by (kind, name): "mlp" is both d2l's house-price MLP and its Fashion-MNIST MLP.
_REGISTRY: dict[tuple[str, str], ModelEntry] = {}


def register(
    name: str,
    *,
    kind: str = "tabular",
    tasks: tuple[str, ...] = ("regression",),
    space: SearchSpace | None = None,
    description: str = "",
    **defaults: Any,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: ``@register("ridge", space=...)`` above a factory function."""

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
        )
        return factory

    return decorate


def _load_builtin_models() -> None:
    # Importing the modules runs their @register decorators.
    from models import tabular, trees, vision  # noqa: F401


def get(name: str, kind: str | None = None) -> ModelEntry:
    """The entry called ``name``; ``kind`` ("tabular" or "vision") settles names used by both."""
    _load_builtin_models()
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
