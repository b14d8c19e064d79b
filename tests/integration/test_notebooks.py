"""Every notebook runs top to bottom in a Jupyter kernel, and is committed stripped."""

import subprocess
import sys
import textwrap
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = sorted((Path(__file__).parents[2] / "notebooks").glob("*.ipynb"))

# nbclient runs in a child process so that its kernel never inherits a pytest-xdist worker's
# stdio pipes.
RUNNER = textwrap.dedent("""
    import sys, nbformat
    from nbclient import NotebookClient
    nb = nbformat.read(sys.argv[1], as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": sys.argv[2]}}).execute()
    nbformat.write(nb, sys.argv[3])
""")


def test_there_are_notebooks():
    assert NOTEBOOKS


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path):
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, "strip outputs"
    out = tmp_path / "executed.ipynb"
    proc = subprocess.run([sys.executable, "-c", RUNNER, str(path), str(tmp_path), str(out)],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    executed = nbformat.read(out, as_version=4)
    text = "\n".join(o.get("text", "") for c in executed.cells if c.cell_type == "code"
                     for o in c.outputs)
    assert "final return:" in text and "eval return:" in text
