"""Execute every tutorial notebook top to bottom in its small settings (KERASCNN_SMALL=1).

A notebook fails the test if any cell raises (the notebooks assert their own key results, e.g.
LeNet-5's test accuracy). They run in a temporary folder so their PNG outputs do not land in
the checkout.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path: Path, shared_dir: Path, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("KERASCNN_SMALL", "1")
    monkeypatch.setenv("KERASCNN_SHARED", str(shared_dir))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    repo = str(Path(__file__).resolve().parents[1])  # importable even without `pip install -e`
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [repo, os.environ.get("PYTHONPATH")])))
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    errors = [
        output for cell in notebook.cells if cell.cell_type == "code"
        for output in cell.get("outputs", []) if output.get("output_type") == "error"
    ]
    assert not errors
    assert NOTEBOOKS, "no notebook found"
