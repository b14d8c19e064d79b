"""Every notebook runs top to bottom in a Jupyter kernel with ``QUICK=1`` (small budgets), is
committed stripped, and prints what it computed: each test asserts on that."""

import os
import re
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


# What each notebook must print (regexes on its cells' stdout), and a check of the values.
EXPECTED = {
    "quickstart.ipynb": [r"final return: [\d.]+", r"eval return: [\d.]+",
                         r"CartPole-v1 policy return: (?P<policy_return>[\d.]+)"],
    "sweep.ipynb": [r"one compile: True", r"best beats worst: True",
                    r"the sweep: [\d.]+ s \((?P<speedup>[\d.]+)x\)"],
    "robotics.ipynb": [r"final return: -?[\d.]+", r"eval return: (?P<eval_return>-?[\d.]+)"],
    # timings are printed, not asserted (speed is shown by benchmarks/, not by timed tests):
    # every env count got a positive figure for each part
    "throughput.ipynb": [r"matmul peak: (?P<peak>[\d.]+) GFLOP/s",
                         r"\s4 envs: trainer +(?P<sps_4>[\d,]+) +rollout +(?P<roll_4>[\d,]+) +env",
                         r"\s64 envs: trainer +(?P<sps_64>[\d,]+) +rollout"
                         r" +(?P<roll_64>[\d,]+) +env",
                         r"trainer steps/s at 64 envs against 4: [\d.]+x"],
    "algorithms.ipynb": [r"ppo +final return", r"ppo_kl +final return", r"trpo +final return",
                         r"every algorithm beats a random policy: True"],
}
CHECKS = {
    # a policy trained for 60k steps keeps the pole up far longer than a random one (~20)
    "policy_return": lambda v: v > 100,
    # vmapped configurations beat running them one by one
    "speedup": lambda v: v > 1.0,
    # the inverted pendulum with 300k steps balances well past a random policy's ~5
    "eval_return": lambda v: v > 50,
    **{name: (lambda v: v > 0) for name in ("peak", "sps_4", "roll_4", "sps_64", "roll_64")},
}


def test_there_are_notebooks():
    assert NOTEBOOKS
    assert {p.name for p in NOTEBOOKS} == set(EXPECTED)


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
                          timeout=900, env=dict(os.environ, QUICK="1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    executed = nbformat.read(out, as_version=4)
    text = "\n".join(o.get("text", "") for c in executed.cells if c.cell_type == "code"
                     for o in c.outputs)
    for pattern in EXPECTED[path.name]:
        match = re.search(pattern, text)
        assert match, (pattern, text[-2000:])
        for name, value in match.groupdict().items():
            assert CHECKS[name](float(value.replace(",", ""))), (name, value)
