"""The colab/ notebooks: stored clean with their "Open in Colab" link, and each runs top to bottom.

Each notebook runs in a fresh "python3" kernel, in its reduced setting (``ERSDE_NOTEBOOK_QUICK=1``
in the kernel's environment), with a temporary working directory; an exception in any cell fails
the test with the cell and its traceback.
"""

import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

COLAB_DIR = Path(__file__).resolve().parents[1] / "colab"
NOTEBOOKS = (
    "01_quickstart.ipynb",
    "02_digits.ipynb",
    "03_mr_restoration.ipynb",
    "04_differentiable.ipynb",
    "05_multi_device.ipynb",
)
COLAB_BADGE = ("[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
               "(https://colab.research.google.com/github/ersde-jax/ersde_jax/blob/main/colab/{})")
QUICK_SWITCH = 'QUICK = os.environ.get("ERSDE_NOTEBOOK_QUICK") == "1"'
CELL_TIMEOUT_S = 600


def _code_cells(notebook):
    return [cell for cell in notebook.cells if cell.cell_type == "code"]


def test_every_notebook_in_colab_is_tested():
    assert sorted(path.name for path in COLAB_DIR.glob("*.ipynb")) == sorted(NOTEBOOKS)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_clean_and_opens_in_colab(name):
    notebook = nbformat.read(COLAB_DIR / name, as_version=4)
    nbformat.validate(notebook)
    assert notebook.metadata.kernelspec.name == "python3"
    assert notebook.cells[0].cell_type == "markdown"
    assert COLAB_BADGE.format(name) in notebook.cells[0].source
    code = _code_cells(notebook)
    assert [cell.outputs for cell in code] == [[]] * len(code), "stored outputs"
    assert {cell.execution_count for cell in code} == {None}, "stored execution counts"
    sources = [cell.source for cell in code]
    assert any(QUICK_SWITCH in source for source in sources)
    installs = [source for source in sources if "pip" in source]
    assert len(installs) == 1 and 'if importlib.util.find_spec("ersde_jax") is None:' in installs[0]


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_top_to_bottom(name, tmp_path):
    notebook = nbformat.read(COLAB_DIR / name, as_version=4)
    client = nbclient.NotebookClient(
        notebook, timeout=CELL_TIMEOUT_S, startup_timeout=180, kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute(env={**os.environ, "ERSDE_NOTEBOOK_QUICK": "1"})  # raises on a failing cell
    assert all(cell.execution_count is not None for cell in _code_cells(notebook))
