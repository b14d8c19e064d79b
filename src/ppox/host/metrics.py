"""Turning per-update metric arrays into numbers people read, and writing them out."""

from __future__ import annotations

import csv
import json
import math
import time
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
    """Plain JSON values, every non-finite float as ``None`` (for summaries: "n/a")."""
    if isinstance(x, dict):
        return {k: to_jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [to_jsonable(v) for v in x]
    if isinstance(x, np.ndarray | np.generic):
        x = x.tolist()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


# The columns of metrics.jsonl / metrics.csv before the per-update metrics, in this order.
# ``wall_s``: seconds of training (compile excluded, resumed runs continue the count) when
# the chunk holding the update was read; ``episode_return``: mean return of the episodes
# that ended in the update, missing when none ended.
ROW_KEYS = ("run", "update", "env_steps", "wall_s", "episode_return")

# Metrics that exist only at some updates (NaN elsewhere in the arrays): written as missing
# there. ``eval_return``: mean return of the deterministic evaluation run after the update.
SPARSE_METRICS = ("eval_return",)

_NONFINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def encode_float(x: float) -> float | str:
    """A float for metrics.jsonl: finite as is, non-finite as the string ``"nan"``,
    ``"inf"`` or ``"-inf"`` (JSON has no such numbers; ``null`` means "no value")."""
    x = float(x)
    if math.isfinite(x):
        return x
    return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")


def decode_float(v: Any) -> float:
    """The inverse of ``encode_float``; ``None`` (missing) and ``""`` (an empty CSV cell)
    read as NaN, so arrays hold NaN for both."""
    if v is None or v == "":
        return math.nan
    if isinstance(v, str):
        return _NONFINITE[v] if v in _NONFINITE else float(v)
    return float(v)


def metric_rows(start_update: int, metrics: dict[str, np.ndarray], run_names: list[str],
                batch_size: int, wall_s: float) -> list[dict[str, Any]]:
    """One row per (run, update) for updates ``start_update .. start_update + n - 1``:
    ``ROW_KEYS`` then every metric. ``metrics[k]``: ``[R, n]``. Values are Python floats
    (NaN/inf kept); ``episode_return`` is ``None`` where no episode ended, and each of
    ``SPARSE_METRICS`` where it is NaN."""
    means = np.atleast_2d(episode_means(metrics))
    count = np.atleast_2d(np.asarray(metrics["episode_count"]))
    host = {k: np.atleast_2d(np.asarray(v)) for k, v in metrics.items()}
    rows = []
    for r, name in enumerate(run_names):
        for i in range(means.shape[-1]):
            u = start_update + i + 1
            row: dict[str, Any] = {
                "run": name, "update": u, "env_steps": u * batch_size, "wall_s": float(wall_s),
                "episode_return": float(means[r, i]) if count[r, i] > 0 else None}
            row.update({k: v[r, i].item() for k, v in host.items()})
            for k in SPARSE_METRICS:
                if k in row and math.isnan(row[k]):
                    row[k] = None
            rows.append(row)
    return rows


def jsonl_line(row: dict[str, Any]) -> str:
    """One metrics.jsonl line: floats through ``encode_float``, ``None`` as ``null``."""
    return json.dumps({k: encode_float(v) if isinstance(v, float) else v
                       for k, v in row.items()})


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a metrics.jsonl or metrics.csv file, values decoded: ``run`` a str,
    ``update``/``env_steps`` ints, every other value a float (NaN where missing)."""
    path = Path(path)
    if not path.exists():
        return []
    if path.suffix == ".csv":
        with path.open(newline="") as f:
            raw = list(csv.DictReader(f))
    else:
        raw = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    out = []
    for row in raw:
        dec: dict[str, Any] = {}
        for k, v in row.items():
            if k == "run":
                dec[k] = str(v)
            elif k in ("update", "env_steps"):
                dec[k] = int(v)
            else:
                dec[k] = decode_float(v)
        out.append(dec)
    return out


def load_metrics(path: str | Path, run_names: list[str] | None = None,
                 upto: int | None = None) -> tuple[list[str], dict[str, np.ndarray]]:
    """Per-run arrays from a metrics file: ``(run names, {column: [R, U]})``, every column
    but ``run`` (``update``, ``env_steps``, ``wall_s``, ``episode_return`` included),
    float64, NaN where a value is missing. ``run_names``: which runs, in this order
    (default: as they appear); ``upto``: ``U`` (default: the largest update)."""
    rows = read_rows(path)
    if run_names is None:
        run_names = list(dict.fromkeys(r["run"] for r in rows))
    if upto is None:
        upto = max((r["update"] for r in rows), default=0)
    keys = list(dict.fromkeys(k for r in rows for k in r if k != "run"))
    out = {k: np.full((len(run_names), upto), np.nan) for k in keys}
    index = {name: i for i, name in enumerate(run_names)}
    for row in rows:
        r, u = index.get(row["run"]), row["update"] - 1
        if r is None or not 0 <= u < upto:
            continue
        for k in keys:
            if k in row:
                out[k][r, u] = row[k]
    return run_names, out


def load_history(path: str | Path, run_names: list[str], upto: int,
                 ) -> list[dict[str, np.ndarray]]:
    """The per-update metrics ``[R, upto]`` (float32) of a metrics file, as the trainer
    produced them (``ROW_KEYS`` and ``SPARSE_METRICS`` left out), for a resumed run's
    history; ``[]`` when ``upto`` is 0 or there is no file."""
    if upto == 0 or not Path(path).exists():
        return []
    _, cols = load_metrics(path, run_names, upto)
    return [{k: v.astype(np.float32) for k, v in cols.items()
             if k not in ROW_KEYS and k not in SPARSE_METRICS}]


def last_wall_s(path: str | Path) -> float:
    """The largest finite ``wall_s`` in a metrics file (0 when none): where a resumed run's
    clock continues from."""
    walls = [r.get("wall_s", math.nan) for r in read_rows(path)]
    finite = [w for w in walls if math.isfinite(w)]
    return max(finite, default=0.0)


class MetricsWriter:
    """Appends one JSON line per (run, update) to ``metrics.jsonl`` (see ``ROW_KEYS``);
    ``wall_s`` counts from the writer's creation plus ``wall_offset``."""

    def __init__(self, path: str | Path, wall_offset: float = 0.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = self.path.open("a")
        self._t0 = time.perf_counter() - wall_offset

    def write(self, first_update: int, metrics: dict[str, np.ndarray], batch_size: int,
              run_names: list[str]) -> None:
        """``metrics[k]``: ``[R, n]`` for updates ``first_update .. first_update + n - 1``."""
        rows = metric_rows(first_update, metrics, run_names, batch_size,
                           time.perf_counter() - self._t0)
        self._f.write("".join(jsonl_line(row) + "\n" for row in rows))
        self._f.flush()

    def close(self) -> None:
        self._f.close()


def truncate_metrics(path: str | Path, max_update: int) -> None:
    """Drops rows past ``max_update`` (after resuming from an earlier checkpoint), from a
    metrics.jsonl or (by its suffix) a metrics.csv file."""
    from ppox.host.configfile import atomic_write_text

    path = Path(path)
    if not path.exists():
        return
    lines = path.read_text().splitlines()
    if path.suffix == ".csv":
        if not lines:
            return
        col = next(csv.reader(lines[:1])).index("update")
        keep = lines[:1] + [line for line in lines[1:]
                            if line.strip() and int(next(csv.reader([line]))[col]) <= max_update]
    else:
        keep = [line for line in lines
                if line.strip() and json.loads(line)["update"] <= max_update]
    atomic_write_text(path, "".join(line + "\n" for line in keep))
