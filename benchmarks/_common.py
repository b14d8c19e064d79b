"""What every benchmark script imports: the results folder, the per-point options, and the
harness's machine helpers (``benchmarks.harness.machine``).

Every script under ``benchmarks/`` writes ``benchmarks/results/<machine>/<name>.json`` (and
a PNG) where ``<machine>`` is :func:`machine_name`, so results from different machines sit
side by side.

    from benchmarks._common import interleaved, machine_info, median, ratio, results_dir, save_json
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from benchmarks.harness.machine import (
    argv_string,
    interleaved,
    machine_info,
    machine_name,
    ratio,
    save_json,
)
from ppox.diagnostics import median, peak_rss_mb

_ROOT = Path(__file__).resolve().parent.parent

RESULTS_ROOT: Path = _ROOT / "benchmarks" / "results"
REPO_ROOT: Path = _ROOT


def parse_point(point: str) -> tuple[str, int, int]:
    """``ENV_ID:NUM_ENVS[:RUNS]`` -> ``(env_id, num_envs, runs)`` (runs default 1); a
    malformed point raises ``ValueError`` naming it."""
    env_id, *counts = point.split(":")
    try:
        if not env_id or len(counts) not in (1, 2):
            raise ValueError
        num_envs, runs = int(counts[0]), int(counts[1]) if len(counts) == 2 else 1
        if num_envs < 1 or runs < 1:
            raise ValueError
    except ValueError:
        raise ValueError(f"point {point!r}: expected ENV_ID:NUM_ENVS[:RUNS] with positive "
                         "counts, e.g. CartPole-v1:4 or CartPole-v1:4:32") from None
    return env_id, num_envs, runs


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
    "parse_point",
    "peak_rss_mb",
    "ratio",
    "results_dir",
    "save_json",
]
