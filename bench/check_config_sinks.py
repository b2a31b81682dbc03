"""List every call in the library code that can run code or unpickle data; exit 1 if any.

A config must stay data: no value read from a TOML file (or any file) may reach a call that runs
text as code or rebuilds arbitrary objects. This scans the syntax trees (nothing is imported or
run) of ``pipeline/``, ``models/`` and ``features/`` (tests excluded) and flags:

- the builtins ``eval``, ``exec``, ``compile`` (``re.compile`` and ``torch.compile`` are attribute
  calls on modules, not these);
- ``.eval(...)`` / ``.query(...)`` with arguments on any object: ``DataFrame.eval``/``query`` and
  ``pandas.eval`` run expressions (pandas resolves ``@`` names, attributes, calls). A bare
  ``model.eval()`` is torch's switch to inference mode and is fine;
- unpickling: ``pickle.load``/``loads``/``Unpickler`` (and ``cloudpickle``, ``dill``, ``_pickle``),
  ``joblib.load``, ``pandas.read_pickle``, ``shelve.open``, ``marshal.load``/``loads``, MLflow's
  ``*.load_model`` (cloudpickle underneath), ``numpy.load(allow_pickle=True)``, and
  ``torch.load`` without ``weights_only=True``;
- ``yaml.load`` without a safe loader, ``yaml.unsafe_load``.

Imports are followed (``from pickle import loads as L``; ``import joblib as jl``). A reviewed call
may stay with a ``# sink-ok: <reason>`` comment on its first line: it is listed, not counted.

Usage: ``python bench/check_config_sinks.py [PATH ...]`` (default: pipeline models features).
Prints ``file:line: what: code`` per call; exits 1 if any unreviewed call is found, 2 if a file
does not parse, else 0.
"""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_PATHS = ("pipeline", "models", "features")
SKIP_PARTS = {"tests", "test", ".venv", "venv", "__pycache__", "build", "dist", ".git"}
REVIEWED = re.compile(r"#\s*sink-ok:\s*\S")

BUILTINS = {"eval", "exec", "compile"}
UNPICKLERS = {
    "pickle.load", "pickle.loads", "pickle.Unpickler",
    "_pickle.load", "_pickle.loads", "_pickle.Unpickler",
    "cPickle.load", "cPickle.loads",
    "cloudpickle.load", "cloudpickle.loads",
    "dill.load", "dill.loads",
    "joblib.load", "sklearn.externals.joblib.load",
    "pandas.read_pickle",
    "shelve.open",
    "marshal.load", "marshal.loads",
}
CODE_RUNNERS = {"pandas.eval", "builtins.eval", "builtins.exec", "builtins.compile"}
SAFE_YAML_LOADERS = {"SafeLoader", "CSafeLoader", "BaseLoader", "CBaseLoader"}


@dataclass(frozen=True)
class Finding:
    path: Path
    line: int
    what: str
    code: str
    reviewed: bool

    def __str__(self) -> str:
        try:
            shown = self.path.relative_to(REPO)
        except ValueError:
            shown = self.path
        return f"{shown}:{self.line}: {self.what}: {self.code}"


def _aliases(tree: ast.AST) -> dict[str, str]:
    """Local name -> the dotted name it was imported as, over the whole file (any scope)."""
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    names[alias.asname] = alias.name
                else:
                    root = alias.name.split(".")[0]
                    names[root] = root
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                names[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    names.setdefault("pd", "pandas")  # the usual spellings, even where imported indirectly
    names.setdefault("np", "numpy")
    return names


def _dotted(node: ast.AST, aliases: dict[str, str]) -> str | None:
    """``a.b.c`` with ``a`` resolved through the imports; None for anything but a name chain."""
    if isinstance(node, ast.Name):
        return aliases.get(node.id, node.id)
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value, aliases)
        return f"{base}.{node.attr}" if base else None
    return None


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    for keyword in call.keywords:
        if keyword.arg == name:
            return keyword.value
    return None


def _has_star_kwargs(call: ast.Call) -> bool:
    return any(keyword.arg is None for keyword in call.keywords)


def _is_true(node: ast.expr | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def _classify(call: ast.Call, aliases: dict[str, str]) -> str | None:
    """What makes this call a sink, or None."""
    func = call.func
    dotted = _dotted(func, aliases)
    if isinstance(func, ast.Name) and func.id in BUILTINS and func.id not in aliases:
        return f"builtin {func.id}"
    if dotted in CODE_RUNNERS:
        return f"{dotted} (runs text as code)"
    if dotted in UNPICKLERS:
        return f"{dotted} (unpickles)"
    if dotted and dotted.startswith("mlflow.") and dotted.endswith(".load_model"):
        return f"{dotted} (unpickles)"
    if dotted == "torch.load":
        if _is_true(_keyword(call, "weights_only")):
            return None
        return "torch.load without weights_only=True (unpickles)"
    if dotted == "numpy.load":
        allow = _keyword(call, "allow_pickle")
        if allow is None and not _has_star_kwargs(call) or (isinstance(allow, ast.Constant) and allow.value is False):
            return None
        return "numpy.load with allow_pickle (unpickles)"
    if dotted in ("yaml.unsafe_load", "yaml.unsafe_load_all"):
        return f"{dotted} (builds arbitrary objects)"
    if dotted in ("yaml.load", "yaml.load_all"):
        loader = _keyword(call, "Loader") or (call.args[1] if len(call.args) > 1 else None)
        name = loader.attr if isinstance(loader, ast.Attribute) else loader.id if isinstance(loader, ast.Name) else None
        return None if name in SAFE_YAML_LOADERS else f"{dotted} without a safe loader (builds arbitrary objects)"
    if isinstance(func, ast.Attribute) and func.attr in ("eval", "query"):
        if not call.args and not call.keywords:
            return None  # torch's module.eval(): the switch to inference mode
        return f".{func.attr}(...) with an expression (DataFrame.{func.attr} runs code)"
    return None


def scan_file(path: Path) -> Iterator[Finding]:
    source = path.read_text(encoding="utf-8")
    tree = ast.parse(source, filename=str(path))
    aliases = _aliases(tree)
    lines = source.splitlines()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        what = _classify(node, aliases)
        if what is None:
            continue
        code = " ".join((ast.get_source_segment(source, node) or "").split())
        code = code if len(code) <= 90 else code[:87] + "..."
        line = lines[node.lineno - 1] if node.lineno <= len(lines) else ""
        yield Finding(path, node.lineno, what, code, bool(REVIEWED.search(line)))


def python_files(paths: list[Path]) -> Iterator[Path]:
    for root in paths:
        files = [root] if root.is_file() else sorted(root.rglob("*.py"))
        for path in files:
            relative = path.relative_to(root) if root.is_dir() else Path(path.name)
            if SKIP_PARTS & set(relative.parts[:-1]) or path.name.startswith("test_") or path.name == "conftest.py":
                continue
            yield path


def main(argv: list[str]) -> int:
    roots = [Path(arg) if Path(arg).is_absolute() else Path.cwd() / arg for arg in argv] or [
        REPO / name for name in DEFAULT_PATHS
    ]
    missing = [str(root) for root in roots if not root.exists()]
    if missing:
        print(f"no such path: {', '.join(missing)}", file=sys.stderr)
        return 2
    findings: list[Finding] = []
    files = 0
    for path in python_files(roots):
        files += 1
        try:
            findings.extend(scan_file(path))
        except SyntaxError as exc:
            print(f"{path}:{exc.lineno}: does not parse: {exc.msg}", file=sys.stderr)
            return 2
    findings.sort(key=lambda f: (str(f.path), f.line))
    open_findings = [f for f in findings if not f.reviewed]
    for finding in open_findings:
        print(finding)
    for finding in findings:
        if finding.reviewed:
            print(f"{finding}  [reviewed: sink-ok]")
    where = ", ".join(root.name for root in roots)
    if open_findings:
        print(f"{len(open_findings)} call(s) in {where} can run code or unpickle data "
              f"({files} files scanned); make configs data, or mark a reviewed call '# sink-ok: <reason>'")
        return 1
    print(f"no code-running or unpickling calls in {where} ({files} files scanned)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
