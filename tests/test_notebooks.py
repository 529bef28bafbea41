"""Fast structural checks of the teaching notebooks (executing them is `pytest --nbmake notebooks/`).

Each notebook must be valid nbformat, saved without outputs (keeps the repo lean and diffs readable),
have code cells that parse, and import only the public regcore API listed in docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
EXPECTED = {"01_quickstart.ipynb", "02_compare_methods.ipynb", "03_concepts.ipynb"}


def _code_cells(path: Path) -> list[str]:
    nb = nbformat.read(path, as_version=4)
    return [c.source for c in nb.cells if c.cell_type == "code"]


def _regcore_imports(source: str) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("regcore"):
            modules.add(node.module)
        elif isinstance(node, ast.Import):
            modules.update(a.name for a in node.names if a.name.startswith("regcore"))
    return modules


def test_expected_notebooks_present():
    assert EXPECTED <= {p.name for p in NOTEBOOKS}, f"missing notebooks: {EXPECTED - {p.name for p in NOTEBOOKS}}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_valid_and_output_free(path: Path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    dirty = [i for i, c in enumerate(nb.cells)
             if c.cell_type == "code" and (c.get("outputs") or c.get("execution_count") is not None)]
    assert not dirty, f"{path.name}: cells {dirty} have outputs; clear outputs before saving"
    assert any(c.cell_type == "markdown" for c in nb.cells), f"{path.name}: no explanatory markdown"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_code_cells_parse_and_use_public_modules(path: Path):
    public_roots = ("regcore", "regcore.data", "regcore.io", "regcore.preprocess", "regcore.spatial",
                    "regcore.losses", "regcore.metrics", "regcore.methods", "regcore.register",
                    "regcore.viz", "regcore.image", "regcore.train")
    for source in _code_cells(path):
        for module in _regcore_imports(source):
            assert module in public_roots or module.startswith(tuple(r + "." for r in public_roots)), module
            assert not any(part.startswith("_") for part in module.split(".")), f"{path.name} imports private {module}"


def test_private_import_is_detected():
    """The import scanner above must see `from regcore.x._y import z` (guards against a no-op check)."""
    assert _regcore_imports("from regcore.methods.learned._common import load_model") == \
        {"regcore.methods.learned._common"}
    with pytest.raises(SyntaxError):
        _regcore_imports("def broken(:")
