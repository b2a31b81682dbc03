"""The notebooks in ``notebooks/`` run top to bottom on the bundled data, and are stored clean.

Each runs in a fresh kernel with ``KP_NOTEBOOK_FAST=1`` (small budgets), its working folder
(``KP_NOTEBOOK_WORKDIR`` and the kernel's cwd) a temporary one, and ``MLFLOW_TRACKING_URI`` that
folder's own SQLite store (the ``workdir`` fixture). ``NOTEBOOK_BUDGET`` seconds bound a whole
notebook: each cell may use what the earlier ones left.

To strip outputs after working in a notebook: ``.venv/bin/python tests/test_notebooks.py``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
NOTEBOOK_BUDGET = 150  # seconds per notebook, kernel start included; they take 10-40 s here


def strip(path: Path) -> bool:
    """Remove outputs, execution counts and run metadata; True when the file changed."""
    import nbformat

    notebook = nbformat.read(path, as_version=4)
    before = nbformat.writes(notebook)
    for cell in notebook.cells:
        cell.metadata.pop("execution", None)
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    after = nbformat.writes(notebook)
    if after != before:
        path.write_text(after)
    return after != before


def test_there_are_notebooks():
    assert [p.name[:3] for p in NOTEBOOKS] == ["01_", "02_", "03_"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_stored_without_outputs(path):
    import nbformat

    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    dirty = [i for i, cell in enumerate(notebook.cells)
             if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None)
             or "execution" in cell.metadata]
    assert not dirty, (f"{path.name}: cells {dirty} hold outputs or execution counts; "
                       "strip them with `.venv/bin/python tests/test_notebooks.py`")
    assert notebook.metadata["kernelspec"]["name"] == "python3"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_uses_the_package_and_a_parameters_cell(path):
    import nbformat

    cells = nbformat.read(path, as_version=4).cells
    code = "\n".join(c.source for c in cells if c.cell_type == "code")
    assert "from pipeline import" in code  # the package's code, not a copy of it
    assert "KP_NOTEBOOK_FAST" in code
    tagged = [c for c in cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and tagged[0].cell_type == "code"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_top_to_bottom(path, workdir, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("KP_NOTEBOOK_FAST", "1")
    monkeypatch.setenv("KP_NOTEBOOK_WORKDIR", str(workdir))
    monkeypatch.setenv("PYDEVD_DISABLE_FILE_VALIDATION", "1")  # ipykernel's debugger warning
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend draws the plots
    notebook = nbformat.read(path, as_version=4)
    deadline = time.monotonic() + NOTEBOOK_BUDGET
    client = NotebookClient(
        notebook,
        kernel_name="python3",
        resources={"metadata": {"path": str(workdir)}},
        timeout_func=lambda cell: max(1, int(deadline - time.monotonic())),
        startup_timeout=60,
    )
    try:
        client.execute()  # raises CellExecutionError, or a timeout past NOTEBOOK_BUDGET in all
    finally:
        nbformat.write(notebook, workdir / path.name)  # the executed copy, to look at when it fails

    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = sum("image/png" in o.get("data", {}) for o in outputs)
    assert images >= 3, f"{path.name} drew {images} figures"


if __name__ == "__main__":
    for notebook_path in NOTEBOOKS:
        if strip(notebook_path):
            print(f"stripped {notebook_path.relative_to(REPO)}")
    sys.exit(0)
