"""Fast structural checks of the course notebooks (executing them is `pytest --nbmake notebooks/`, in
`make test-slow`).

Each chapter must be valid nbformat, saved without outputs, have code cells that parse and import only the
public regcore API, end with a "Try this" exercise whose solution sits in a collapsed (hidden) code cell, never
define a function that regcore already has (plotting helpers live in `regcore.viz` / `regcore.notebook_views`),
and never read the shared data folder. The 3D-view helper itself is tested in `tests/test_notebook_views.py`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
EXPECTED = {
    "00_quickstart.ipynb",
    "01_images_space_conventions.ipynb",
    "02_transformations.ipynb",
    "03_similarity_regularisation.ipynb",
    "04_classical_optimisation.ipynb",
    "05_learning_based.ipynb",
    "06_network_families.ipynb",
    "07_beyond_one_pass.ipynb",
    "08_applications.ipynb",
    "09_evaluation.ipynb",
}
PUBLIC_ROOTS = (
    "regcore",
    "regcore.data",
    "regcore.io",
    "regcore.preprocess",
    "regcore.spatial",
    "regcore.losses",
    "regcore.metrics",
    "regcore.methods",
    "regcore.register",
    "regcore.viz",
    "regcore.image",
    "regcore.train",
    "regcore.notebook_views",
    "regcore.labs",
    "regcore.report",
    "regcore.run_record",
    "regcore.run_folder",
)


def _cells(path: Path, kind: str) -> list:
    nb = nbformat.read(path, as_version=4)
    return [c for c in nb.cells if c.cell_type == kind]


def _regcore_imports(source: str) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("regcore"):
            modules.add(node.module)
        elif isinstance(node, ast.Import):
            modules.update(a.name for a in node.names if a.name.startswith("regcore"))
    return modules


def _defined_functions(source: str) -> set[str]:
    """Names of the module-level functions (methods of classes are a class's own business)."""
    return {n.name for n in ast.parse(source).body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}


def test_expected_notebooks_present():
    names = {p.name for p in NOTEBOOKS}
    assert names >= EXPECTED, f"missing notebooks: {sorted(EXPECTED - names)}"
    assert not names - EXPECTED, (
        f"unlisted notebooks {sorted(names - EXPECTED)}: add them to EXPECTED and the README"
    )


def test_readme_lists_every_chapter():
    readme = (NOTEBOOK_DIR / "README.md").read_text(encoding="utf-8")
    assert all(name in readme for name in EXPECTED), "notebooks/README.md must list every chapter"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_valid_and_output_free(path: Path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    dirty = [
        i
        for i, c in enumerate(nb.cells)
        if c.cell_type == "code" and (c.get("outputs") or c.get("execution_count") is not None)
    ]
    assert not dirty, f"{path.name}: cells {dirty} have outputs; clear outputs before saving"
    assert any(c.cell_type == "markdown" for c in nb.cells), f"{path.name}: no explanatory markdown"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_code_cells_parse_and_use_public_modules(path: Path):
    for cell in _cells(path, "code"):
        for module in _regcore_imports(cell.source):
            assert module in PUBLIC_ROOTS or module.startswith(tuple(r + "." for r in PUBLIC_ROOTS)), module
            assert not any(part.startswith("_") for part in module.split(".")), (
                f"{path.name} imports private {module}"
            )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_try_this_exercise_with_hidden_solution(path: Path):
    nb = nbformat.read(path, as_version=4)
    prompts = [i for i, c in enumerate(nb.cells) if c.cell_type == "markdown" and "## Try this" in c.source]
    assert prompts, f"{path.name}: no '## Try this' exercise"
    solutions = [
        i
        for i, c in enumerate(nb.cells)
        if c.cell_type == "code" and "solution" in c.metadata.get("tags", [])
    ]
    assert solutions and solutions[0] > prompts[0], f"{path.name}: the solution cell must follow the exercise"
    for i in solutions:
        assert nb.cells[i].metadata.get("jupyter", {}).get("source_hidden") is True, (
            f"{path.name}: solution cell {i} must be collapsed (metadata.jupyter.source_hidden = true)"
        )


def test_no_notebook_redefines_a_regcore_function():
    """Plotting and helper functions live in regcore; a notebook may define new teaching code, not copies."""
    regcore_functions = set()
    for py in (ROOT / "regcore").rglob("*.py"):
        regcore_functions |= _defined_functions(py.read_text(encoding="utf-8"))
    clashes = {
        path.name: sorted(
            _defined_functions("\n".join(c.source for c in _cells(path, "code"))) & regcore_functions
        )
        for path in NOTEBOOKS
    }
    assert not any(clashes.values()), f"notebooks define functions regcore already has: {clashes}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_do_not_read_shared_data(path: Path):
    sources = "\n".join(c.source for c in _cells(path, "code"))
    assert (
        "../shared" not in sources and "shared/data" not in sources and "REGLAB_SHARED_DATA" not in sources
    ), f"{path.name} reads the shared data folder; notebooks run on the built-in sample data"


def test_scanners_are_not_no_ops():
    """The import and function scanners above must see what they look for."""
    assert _regcore_imports("from regcore.methods.learned._common import load_model") == {
        "regcore.methods.learned._common"
    }
    assert _defined_functions("def show(ax):\n    pass\nclass A:\n    def f(self): ...") == {"show"}
    with pytest.raises(SyntaxError):
        _regcore_imports("def broken(:")
