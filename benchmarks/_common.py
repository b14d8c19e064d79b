"""Helpers shared by the benchmark scripts: machine identity, result paths, JSON, timing.

Every script under ``benchmarks/`` writes ``benchmarks/results/<machine>/<name>.json`` (and
a PNG) where ``<machine>`` is :func:`machine_name`, so results from different machines sit
side by side. The helpers live in :mod:`ppox.bench` (so that ``ppox bench`` works from an
installed package without this folder); this module re-exports them and pins the results
folder to ``benchmarks/results``.

    from benchmarks._common import interleaved, machine_info, median, ratio, results_dir, save_json
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# Make `import ppox` work when a script is run as `python benchmarks/<name>.py` from a
# checkout that is not pip-installed (the venv normally has ppox installed in editable mode).
_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT / "src") not in sys.path and not os.environ.get("PPOX_NO_SRC_PATH"):
    sys.path.append(str(_ROOT / "src"))

from ppox.bench import (  # noqa: E402
    argv_string,
    interleaved,
    machine_info,
    machine_name,
    median,
    peak_rss_mb,
    ratio,
    save_json,
    time_compiled,
)

RESULTS_ROOT: Path = _ROOT / "benchmarks" / "results"
REPO_ROOT: Path = _ROOT


def results_dir(name: str | None = None) -> Path:
    """``benchmarks/results/<machine>/`` (created). ``name`` overrides the machine name."""
    path = RESULTS_ROOT / (name or machine_name())
    path.mkdir(parents=True, exist_ok=True)
    return path


__all__ = [
    "REPO_ROOT",
    "RESULTS_ROOT",
    "argv_string",
    "interleaved",
    "machine_info",
    "machine_name",
    "median",
    "peak_rss_mb",
    "ratio",
    "results_dir",
    "save_json",
    "time_compiled",
]
