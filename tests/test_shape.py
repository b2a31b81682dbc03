"""The package's shape (bench/check_shape.py): one-way imports, no cycles, one MLflow module."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _checker():
    spec = importlib.util.spec_from_file_location("check_shape", ROOT / "bench" / "check_shape.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_package_has_its_shape():
    assert _checker().problems() == []


def test_the_checker_finds_a_cycle_and_an_upward_import(tmp_path, monkeypatch):
    checker = _checker()
    for package in checker.PACKAGES:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "pipeline" / "a.py").write_text("from pipeline import b\n")
    (tmp_path / "pipeline" / "b.py").write_text("def f():\n    from pipeline import a\n")
    (tmp_path / "features" / "c.py").write_text("import pipeline.a\n")
    (tmp_path / "pipeline" / "d.py").write_text("import mlflow\nif kind == 'image':\n    pass\n")
    monkeypatch.setattr(checker, "ROOT", tmp_path)
    found = "\n".join(checker.problems())
    assert "import cycle: pipeline.a <-> pipeline.b" in found
    assert "pipeline.b imports pipeline.a inside a function" in found
    assert "features.c imports pipeline.a, an upper layer" in found
    assert "pipeline/d.py:1: imports mlflow" in found and "pipeline/d.py:2: branches on kind" in found
