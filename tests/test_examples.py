"""Every notebook in examples/ runs top to bottom in smoke mode (PGM_LAB_SMOKE=1) and shows
its figures inline (at least one ``image/png`` display output per notebook)."""

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.ipynb"))


def test_notebooks_exist():
    assert EXAMPLES, "examples/ has no notebooks"


def inline_images(nb: nbformat.NotebookNode) -> int:
    """Number of PNG images among the code cells' outputs."""
    return sum("image/png" in out.get("data", {})
               for cell in nb.cells if cell.cell_type == "code"
               for out in cell.get("outputs", ())
               if out.output_type in ("display_data", "execute_result"))


def test_inline_images_counts_png_outputs_only():
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell(outputs=[
            nbformat.v4.new_output("display_data", {"image/png": "iVBOR", "text/plain": "F"}),
            nbformat.v4.new_output("execute_result", {"text/plain": "<Figure size 600x400>"}),
            nbformat.v4.new_output("stream", text="/tmp/fig.png\n")]),
        nbformat.v4.new_markdown_cell("![x](fig.png)")])
    assert inline_images(nb) == 1


@pytest.mark.slow
@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_notebook_runs_in_smoke_mode_and_shows_figures(path, tmp_path, monkeypatch):
    monkeypatch.setenv("PGM_LAB_SMOKE", "1")
    # The kernel must use Jupyter's inline backend, as a reader's does (the suite sets Agg).
    monkeypatch.delenv("MPLBACKEND", raising=False)
    nb = nbformat.read(path, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), (
        f"{path.name} is committed with outputs; clear them")
    client = NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    assert os.environ["PGM_LAB_SMOKE"] == "1"
    assert inline_images(nb) >= 1, f"{path.name} displays no figure inline"
    assert list(tmp_path.iterdir()) == [], f"{path.name} wrote files into its working folder"
