"""Turning per-update metric arrays into numbers people read, and writing them out."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

# Metrics of one update that are sums over the episodes that ended during its rollout.
EPISODE_SUMS = ("episode_return_sum", "episode_length_sum", "episode_count")


def episode_means(metrics: dict[str, np.ndarray]) -> np.ndarray:
    """Mean return of the episodes that ended in each update (NaN where none ended).

    ``metrics[...]``: ``[..., U]``; returns ``[..., U]``.
    """
    count = np.asarray(metrics["episode_count"], np.float64)
    total = np.asarray(metrics["episode_return_sum"], np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def final_window(num_updates: int, frac: float = 0.05) -> int:
    return max(1, math.ceil(frac * num_updates))


def final_return(metrics: dict[str, np.ndarray], min_episodes: int = 1,
                 frac: float = 0.05) -> np.ndarray:
    """Mean episodic return of the last episodes of training, per run.

    The window is the last 5% of the updates (at least one), widened backwards until it
    holds at least ``min_episodes`` finished episodes (pass ``num_envs``). Episodes are
    weighted equally. ``metrics[...]``: ``[R, U]`` (or ``[U]``); returns ``[R]`` (or ``[]``),
    NaN for a run in which no episode ever ended.
    """
    count = np.atleast_2d(np.asarray(metrics["episode_count"], np.float64))
    total = np.atleast_2d(np.asarray(metrics["episode_return_sum"], np.float64))
    num_updates = count.shape[-1]
    out = np.full(count.shape[0], np.nan)
    for r in range(count.shape[0]):
        w = final_window(num_updates, frac)
        while w < num_updates and count[r, -w:].sum() < min_episodes:
            w += 1
        n = count[r, -w:].sum()
        if n > 0:
            out[r] = total[r, -w:].sum() / n
    return out if np.ndim(metrics["episode_count"]) > 1 else out[0]


def learning_curve_auc(metrics: dict[str, np.ndarray]) -> np.ndarray:
    """Area under the learning curve: the mean over updates of the per-update mean episode
    return, carrying the last value forward over updates where no episode ended (0 before
    the first). Per run: ``[R, U] -> [R]``."""
    means = np.atleast_2d(episode_means(metrics))
    filled = np.empty_like(means)
    for r in range(means.shape[0]):
        last = 0.0
        for u in range(means.shape[1]):
            if not np.isnan(means[r, u]):
                last = means[r, u]
            filled[r, u] = last
    return filled.mean(axis=-1)


def to_jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: to_jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [to_jsonable(v) for v in x]
    if isinstance(x, np.ndarray | np.generic):
        x = x.tolist()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


class MetricsWriter:
    """Appends one JSON line per (run, update) to ``metrics.jsonl``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = self.path.open("a")

    def write(self, first_update: int, metrics: dict[str, np.ndarray], batch_size: int,
              run_names: list[str]) -> None:
        """``metrics[k]``: ``[R, n]`` for updates ``first_update .. first_update + n - 1``."""
        means = episode_means(metrics)
        n = means.shape[-1]
        for r, name in enumerate(run_names):
            for i in range(n):
                u = first_update + i
                row = {"run": name, "update": u + 1, "env_steps": (u + 1) * batch_size,
                       "episode_return": means[r, i]}
                row.update({k: v[r, i] for k, v in metrics.items()})
                self._f.write(json.dumps(to_jsonable(row)) + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()


def truncate_metrics(path: str | Path, max_update: int) -> None:
    """Drops rows past ``max_update`` (after resuming from an earlier checkpoint)."""
    from ppox.host.configfile import atomic_write_text

    path = Path(path)
    if not path.exists():
        return
    keep = [line for line in path.read_text().splitlines()
            if line.strip() and json.loads(line)["update"] <= max_update]
    atomic_write_text(path, "".join(line + "\n" for line in keep))
