"""The package's shape, checked from its source: ``python bench/check_shape.py`` (exit 1 on a breach).

- imports run one way: ``pipeline`` -> ``models`` -> ``features``, and no import cycle among the
  modules (an import inside a function counts the same as one at the top);
- no import of a package module inside a function (the way to hide a cycle), except where the
  allow-list below says why;
- ``pipeline.tracking`` is the only ``pipeline`` module that imports ``mlflow``;
- no ``kind ==`` branch under ``pipeline/`` outside ``pipeline/tasks/``;
- no module under ``pipeline/`` over 400 lines.
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


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def sources() -> dict[str, Path]:
    return {module_name(p): p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))}


def imports(path: Path, modules: dict[str, Path]) -> list[tuple[str, int, bool]]:
    """(imported package module, line, inside a function) for every import of ours in ``path``."""
    tree = ast.parse(path.read_text())
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            names = []
            if isinstance(child, ast.Import):
                names = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                names = [f"{child.module}.{alias.name}" for alias in child.names] + [child.module]
            for name in names:
                while name and name not in modules:
                    name = name.rpartition(".")[0]
                if name:
                    found.append((name, child.lineno, in_function))
            visit(child, nested)

    visit(tree, False)
    return found


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
            if lazy and (name, target) not in LAZY_ALLOWED:
                found.append(f"{where}:{line}: {name} imports {target} inside a function")
        text = path.read_text()
        if name.startswith("pipeline"):
            tree = ast.parse(text)
            for node in ast.walk(tree):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module or ""] if isinstance(node, ast.ImportFrom) else []
                if name != "pipeline.tracking" and any(n.split(".")[0] == "mlflow" for n in names):
                    found.append(f"{where}:{node.lineno}: imports mlflow (only pipeline.tracking may)")
            if not name.startswith("pipeline.tasks"):
                for number, line in enumerate(text.splitlines(), 1):
                    if "kind ==" in line:
                        found.append(f"{where}:{number}: branches on kind outside pipeline/tasks")
            if len(text.splitlines()) > MAX_LINES:
                found.append(f"{where}: {len(text.splitlines())} lines (at most {MAX_LINES})")
    found += [f"import cycle: {' <-> '.join(component)}" for component in cycles(graph)]
    return found


def main() -> int:
    found = problems()
    for line in found:
        print(line)
    print(f"check_shape: {len(sources())} modules, {len(found)} problems")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
