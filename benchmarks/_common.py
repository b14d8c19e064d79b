"""Helpers shared by the benchmark scripts: machine identity, result paths, JSON, timing.

Every script under ``benchmarks/`` writes ``benchmarks/results/<machine>/<name>.json`` (and
a PNG) where ``<machine>`` is :func:`machine_name`, so results from different machines sit
side by side. The helpers live in :mod:`ppox.bench` (so that ``ppox bench`` works from an
installed package without this folder); this module re-exports them and pins the results
folder to ``benchmarks/results``.

    from benchmarks._common import interleaved, machine_info, median, ratio, results_dir, save_json
"""

from __future__ import annotations

import dataclasses
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


@dataclasses.dataclass(frozen=True)
class PointArgs:
    """The options of the per-point benchmarks (scaling, roofline)."""

    quick: bool = False
    """the quick plan: a few points only (see the script's docstring)"""
    envs: tuple[str, ...] | None = None
    """env ids (default: CartPole-v1 Breakout-MinAtar brax/inverted_pendulum)"""
    num_envs: tuple[int, ...] | None = None
    """num_envs values for every env (default: see the module docstring)"""
    target_s: float | None = None
    """seconds each timed run aims at (default 2; quick 1)"""
    repeats: int | None = None
    """timed runs per program and point (default 3; quick 1)"""
    machine: str | None = None
    """results folder name (default: this machine's name)"""

    def timing(self) -> tuple[float, int]:
        """(target seconds per timed run, repeats), with the quick/full defaults."""
        return (self.target_s or (1.0 if self.quick else 2.0),
                self.repeats or (1 if self.quick else 3))


__all__ = [
    "REPO_ROOT",
    "RESULTS_ROOT",
    "PointArgs",
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
