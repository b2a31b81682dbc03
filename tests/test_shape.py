"""The package's shape (bench/check_shape.py): one-way imports, no cycles, module sizes, one MLflow
module, the kind known only to the tasks. Each check is shown to find a breach planted in a tree."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _checker():
    spec = importlib.util.spec_from_file_location("check_shape", ROOT / "bench" / "check_shape.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def planted(tmp_path, monkeypatch):
    """The checker on an empty tree of the three packages; ``plant(path, text)`` adds a module, and
    ``found()`` runs the checker (with no allow-lists) and returns its report."""
    checker = _checker()
    for package in (*checker.PACKAGES, "pipeline/tasks"):
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    monkeypatch.setattr(checker, "ROOT", tmp_path)
    for allow_list in ("LAZY_ALLOWED", "LONG_ALLOWED", "KIND_ALLOWED"):
        monkeypatch.setattr(checker, allow_list, type(getattr(checker, allow_list))())

    def plant(path: str, text: str) -> None:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)

    plant.checker = checker
    plant.found = lambda: "\n".join(checker.problems())
    return plant


def test_the_package_has_its_shape():
    assert _checker().problems() == []


def test_a_clean_tree_has_no_problems(planted):
    planted("pipeline/stage.py", "from models import fit\nfrom pipeline.tasks import base\n")
    planted("models/fit.py", "from features import scale\nimport numpy\n")
    planted("features/scale.py", "from . import helpers\n")
    planted("features/helpers.py", "x = 1\n")
    planted("pipeline/tasks/base.py", "if comp.kind == 'image':\n    pass\n")  # the tasks know the kind
    planted("pipeline/cli.py", "list_models(kind=args.kind)\nkinds = {'tabular': 1}[kind]\n")  # no comparison
    assert planted.found() == ""


def test_the_checker_finds_a_cycle_and_an_upward_import(planted):
    planted("pipeline/a.py", "from pipeline import b\n")
    planted("pipeline/b.py", "def f():\n    from pipeline import a\n")
    planted("features/c.py", "import pipeline.a\n")
    planted("pipeline/d.py", "import mlflow\nif kind == 'image':\n    pass\n")
    found = planted.found()
    assert "import cycle: pipeline.a <-> pipeline.b" in found
    assert "pipeline.b imports pipeline.a inside a function" in found
    assert "features.c imports pipeline.a, an upper layer" in found
    assert "pipeline/d.py:1: imports mlflow" in found and "pipeline/d.py:2: branches on kind" in found


def test_upward_imports_from_models_and_features(planted):
    planted("pipeline/stage.py", "x = 1\n")
    planted("models/fit.py", "from pipeline.stage import x\n")
    planted("features/scale.py", "from models import fit\n")
    found = planted.found()
    assert found.count("models/fit.py:1: models.fit imports pipeline.stage, an upper layer") == 1
    assert "features/scale.py:1: features.scale imports models.fit, an upper layer" in found


def test_cycles_inside_models_and_features_relative_imports_included(planted):
    planted("models/a.py", "import models.b\n")
    planted("models/b.py", "from models import a\n")
    planted("features/c.py", "from .d import f\n")
    planted("features/d.py", "from . import c\ndef f():\n    pass\n")
    found = planted.found()
    assert "import cycle: models.a <-> models.b" in found
    assert "import cycle: features.c <-> features.d" in found


def test_mlflow_only_in_tracking_in_every_package(planted):
    planted("models/log.py", "from mlflow import pyfunc\n")
    planted("pipeline/tracking.py", "import mlflow\n")
    found = planted.found()
    assert "models/log.py:1: imports mlflow" in found and "pipeline/tracking.py" not in found


def test_a_long_module_in_models_or_features_is_over_the_limit(planted):
    limit = planted.checker.MAX_LINES
    planted("models/big.py", "x = 1\n" * (limit + 1))
    planted("features/big.py", "x = 1\n" * (limit + 1))
    planted("features/fits.py", "x = 1\n" * limit)
    found = planted.found()
    assert f"models/big.py: {limit + 1} lines (at most {limit})" in found
    assert f"features/big.py: {limit + 1} lines (at most {limit})" in found
    assert "features/fits.py" not in found


def test_an_allowed_long_module_may_not_grow_past_its_cap_and_a_short_one_leaves_the_list(planted):
    limit = planted.checker.MAX_LINES
    planted.checker.LONG_ALLOWED.update({"models.kept": (limit + 10, "why"), "models.grown": (limit + 10, "why"),
                                         "models.shrunk": (limit + 10, "why"), "models.gone": (limit + 10, "why")})
    planted("models/kept.py", "x = 1\n" * (limit + 10))
    planted("models/grown.py", "x = 1\n" * (limit + 11))
    planted("models/shrunk.py", "x = 1\n" * limit)
    found = planted.found()
    assert "models/kept.py" not in found
    assert f"models/grown.py: {limit + 11} lines (its allowed {limit + 10})" in found
    assert "models/shrunk.py" in found and "drop it from LONG_ALLOWED" in found
    assert "allow-list names models.gone, which is not a module" in found


@pytest.mark.parametrize("comparison", [
    "kind == 'image'", "kind != 'tabular'", "'tabular' != kind", "kind in ('a', 'b')", "kind not in KINDS",
    "comp.kind == 'image'", "'image' == self.comp.kind", "n > 1 or kind in KINDS", "0 < n == kind",
])
def test_a_kind_comparison_of_any_form_outside_the_tasks(planted, comparison):
    planted("pipeline/params.py", f"import os\n\nif {comparison}:\n    pass\n")
    assert planted.found() == "pipeline/params.py:3: branches on kind outside pipeline/tasks"


def test_a_match_on_kind_and_the_allow_list_for_kinds(planted):
    planted("pipeline/a.py", "match comp.kind:\n    case 'image':\n        pass\n")
    planted("pipeline/d.py", "if kind is None:\n    pass\n")  # not a branch on which kind it is
    planted("pipeline/b.py", "if kind != 'tabular':\n    pass\n")
    planted("pipeline/c.py", "x = 1\n")
    planted.checker.KIND_ALLOWED.update({"pipeline.b": "why", "pipeline.c": "why"})
    found = planted.found()
    assert "pipeline/a.py:1: branches on kind" in found and "pipeline/d.py" not in found
    assert "pipeline/b.py" not in found
    assert "pipeline/c.py: compares no kind any more: drop it from KIND_ALLOWED" in found
