"""The package's shape, checked from its source: ``python bench/check_shape.py`` (exit 1 on a breach).

For every module of ``pipeline/``, ``models/`` and ``features/``:

- imports run one way: ``pipeline`` -> ``models`` -> ``features``, and no import cycle among the
  modules (an import inside a function, or a relative one, counts the same as one at the top);
- no import of a package module inside a function (the way to hide a cycle), except where
  ``LAZY_ALLOWED`` says why;
- no module over 400 lines, except those ``LONG_ALLOWED`` names with a cap and a reason (a listed
  module may shrink, never grow past its cap);
- ``pipeline.tracking`` is the only module that imports ``mlflow``.

And under ``pipeline/`` outside ``pipeline/tasks/`` (the Task is the only place that knows the
competition's kind): no comparison of a ``kind`` in any form (``kind ==``, ``!=``, ``in``, ``not in``,
either operand, ``x.kind`` as well as ``kind``) and no ``match`` on one, except where
``KIND_ALLOWED`` says why.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "models", "features")
LAYER = {"features": 0, "models": 1, "pipeline": 2}
MAX_LINES = 400
# (module, imported module): imports inside a function that are allowed, and left out of the
# cycle search. The registry loads the built-in models on its first lookup, and they import it to
# register themselves (timm's pattern): registration, not a dependency of one's logic on the other.
LAZY_ALLOWED: set[tuple[str, str]] = {("models.registry", "models.tabular"), ("models.registry", "models.trees"),
                                       ("models.registry", "models.vision")}
# module: (most lines, why it may pass MAX_LINES). Reviewed: each holds one family of parts that
# read better side by side than split across files; the cap stops it growing (split it then).
LONG_ALLOWED: dict[str, tuple[int, str]] = {
    "models.tabular": (501, "the tabular estimators: d2l's torch nets and the sklearn-based models"),
    "features.engineering": (520, "the feature-engineering transformers and the spec that builds them"),
    "features.rules": (593, "the row-rule language: its grammar, whitelist, evaluator and messages"),
    "pipeline.tracking": (445, "the only module that imports mlflow: every MLflow call of the package is here"),
}
# module: why it may compare a kind outside pipeline/tasks/.
KIND_ALLOWED: dict[str, str] = {
    "pipeline.config": "checks the config's `kind` value is one that exists; no behaviour follows",
}
_KIND_OPS = (ast.Eq, ast.NotEq, ast.In, ast.NotIn)  # `kind is 'x'` is a bug ruff finds (F632)


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def sources() -> dict[str, Path]:
    return {module_name(p): p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))}


def _absolute(node: ast.ImportFrom, name: str, path: Path) -> str | None:
    """The absolute module an ``import from`` names (``from .x import y`` inside ``name``)."""
    if node.level == 0:
        return node.module
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    if node.level - 1 > len(package):
        return None
    base = package[:len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports(path: Path, modules: dict[str, Path]) -> list[tuple[str, int, bool]]:
    """(imported package module, line, inside a function) for every import of ours in ``path``."""
    tree = ast.parse(path.read_text())
    name = module_name(path)
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            names = []
            if isinstance(child, ast.Import):
                names = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom) and (module := _absolute(child, name, path)):
                names = [f"{module}.{alias.name}" for alias in child.names] + [module]
            for imported in names:
                while imported and imported not in modules:
                    imported = imported.rpartition(".")[0]
                if imported:
                    found.append((imported, child.lineno, in_function))
            visit(child, nested)

    visit(tree, False)
    return list(dict.fromkeys(found))  # `from a.b import c` names a.b twice when c is not a module


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, result = {}, {}, [], set(), []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in graph.get(node, ()):
            if other not in index:
                connect(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                result.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for node in graph:
        if node not in index:
            connect(node)
    return result


def _is_kind(node: ast.AST) -> bool:
    return (isinstance(node, ast.Name) and node.id == "kind") or (isinstance(node, ast.Attribute) and node.attr == "kind")


def kind_comparisons(tree: ast.AST) -> list[int]:
    """Lines that compare a ``kind`` (either side, any equality or membership test) or match on one."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            for i, op in enumerate(node.ops):  # a < b == c: each op between its two operands
                if isinstance(op, _KIND_OPS) and (_is_kind(operands[i]) or _is_kind(operands[i + 1])):
                    lines.append(node.lineno)
                    break
        elif isinstance(node, ast.Match) and _is_kind(node.subject):
            lines.append(node.lineno)
    return lines


def size_problem(name: str, where: Path, lines: int) -> str | None:
    if name in LONG_ALLOWED:
        cap = LONG_ALLOWED[name][0]
        if lines <= MAX_LINES:
            return f"{where}: {lines} lines, no longer over {MAX_LINES}: drop it from LONG_ALLOWED"
        return f"{where}: {lines} lines (its allowed {cap})" if lines > cap else None
    return f"{where}: {lines} lines (at most {MAX_LINES})" if lines > MAX_LINES else None


def stale_entries(modules: dict[str, Path]) -> list[str]:
    """Allow-list entries that name no module: each entry is a reviewed exception, kept exact."""
    named = {name for pair in LAZY_ALLOWED for name in pair} | set(LONG_ALLOWED) | set(KIND_ALLOWED)
    return [f"allow-list names {name}, which is not a module" for name in sorted(named - set(modules))]


def problems() -> list[str]:
    modules = sources()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    found = []
    for name, path in modules.items():
        where = path.relative_to(ROOT)
        for target, line, lazy in imports(path, modules):
            if target == name or name.startswith(target + "."):
                continue  # a package importing its own parent: the parent's __init__ runs first anyway
            if lazy and (name, target) in LAZY_ALLOWED:
                continue
            graph[name].add(target)
            if LAYER[target.split(".")[0]] > LAYER[name.split(".")[0]]:
                found.append(f"{where}:{line}: {name} imports {target}, an upper layer")
            if lazy:
                found.append(f"{where}:{line}: {name} imports {target} inside a function")
        text = path.read_text()
        tree = ast.parse(text)
        if name != "pipeline.tracking":
            for node in ast.walk(tree):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
                if any(n.split(".")[0] == "mlflow" for n in names):
                    found.append(f"{where}:{node.lineno}: imports mlflow (only pipeline.tracking may)")
        if name.startswith("pipeline") and not name.startswith("pipeline.tasks"):
            lines = kind_comparisons(tree)
            if name not in KIND_ALLOWED:
                found += [f"{where}:{line}: branches on kind outside pipeline/tasks" for line in lines]
            elif not lines:
                found.append(f"{where}: compares no kind any more: drop it from KIND_ALLOWED")
        if problem := size_problem(name, where, len(text.splitlines())):
            found.append(problem)
    found += [f"import cycle: {' <-> '.join(component)}" for component in cycles(graph)]
    return found + stale_entries(modules)


def main() -> int:
    found = problems()
    for line in found:
        print(line)
    print(f"check_shape: {len(sources())} modules, {len(found)} problems")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
