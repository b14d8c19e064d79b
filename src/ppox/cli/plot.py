"""``ppox plot RUN_DIR...``: learning curves of one or more runs from their metrics files."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import tyro

from ppox.cli.command_flags import parse_command
from ppox.config import ConfigError

XAxis = Literal["env_steps", "wall"]
X_LABELS = {"env_steps": "env steps (per run)", "wall": "wall-clock seconds of training"}


@dataclasses.dataclass(frozen=True)
class PlotArgs:
    """Plot learning curves: one line per run directory (the mean over its seeds) with a
    band across its seeds."""

    run_dirs: Annotated[tuple[Path, ...], tyro.conf.Positional,
                        tyro.conf.arg(metavar="RUN_DIR...", help="ppox train run dirs")]
    metric: str = "episode_return"
    """a column of metrics.jsonl (episode_return, loss, approx_kl, entropy, ...)"""
    x: XAxis = "env_steps"
    """x axis: env steps per run, or wall-clock seconds of training"""
    out: Path | None = None
    """PNG to write (default: RUN_DIR/<metric>.png for one run, ./<metric>.png for several)"""
    band: Literal["std", "minmax", "none"] = "std"
    """band across seeds: mean ± std, min..max, or none"""
    title: str = ""
    """figure title (default: the env ids)"""


def spread_over_chunks(wall: np.ndarray) -> np.ndarray:
    """Per-update x values from ``wall_s``, which holds one time per chunk (its updates ran
    as one program): the updates of a chunk are spread evenly between the previous chunk's
    time and its own. ``[U] -> [U]``, e.g. ``[2, 2, 4, 4] -> [1, 2, 3, 4]``."""
    out = np.asarray(wall, np.float64).copy()
    prev, i = 0.0, 0
    while i < len(out):
        j = i
        while j + 1 < len(out) and out[j + 1] == out[i]:
            j += 1
        n = j - i + 1
        if np.isfinite(out[i]):
            out[i:j + 1] = prev + (out[i] - prev) * np.arange(1, n + 1) / n
            prev = out[j]
        i = j + 1
    return out


def run_curve(run_dir: Path, metric: str, x: XAxis) -> tuple[np.ndarray, np.ndarray, int]:
    """``(x [U], y [S, U], seeds)`` of one run dir; ``episode_return`` is carried forward
    over updates in which no episode ended."""
    from ppox.host.metrics import load_metrics
    from ppox.host.plots import forward_fill

    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        raise ConfigError(f"{str(run_dir)!r} has no metrics.jsonl: pass the --run-dir of a "
                          "`ppox train` run")
    names, cols = load_metrics(path)
    if not names:
        raise ConfigError(f"{path} holds no rows yet")
    if metric not in cols:
        known = ", ".join(k for k in cols if k not in ("update", "env_steps", "wall_s"))
        raise ConfigError(f"{path} has no metric {metric!r}; it has: {known}")
    y = cols[metric]
    if metric == "episode_return":
        y = forward_fill(y)
    if x == "wall":
        if not np.isfinite(cols.get("wall_s", np.array([np.nan]))).any():
            raise ConfigError(f"{path} records no wall-clock time (written by an older "
                              "ppox); use --x env_steps")
        xs = spread_over_chunks(np.nanmean(cols["wall_s"], axis=0))
    else:
        xs = np.nanmax(cols["env_steps"], axis=0)
    keep = np.isfinite(xs)
    return xs[keep], y[:, keep], len(names)


def _env_id(run_dir: Path) -> str:
    try:
        from ppox.host.evaluation import load_config

        return load_config(run_dir)[0].env_id
    except ConfigError:
        return ""


def plot_runs(run_dirs: Sequence[Path], out: Path, metric: str = "episode_return",
              x: XAxis = "env_steps", band: str = "std", title: str = "") -> Path:
    """Writes the learning curves of ``run_dirs`` to the PNG ``out``; returns its path."""
    from ppox.host.plots import plot_learning_curves

    curves = {}
    envs = []
    for run_dir in run_dirs:
        xs, y, seeds = run_curve(Path(run_dir), metric, x)
        env = _env_id(Path(run_dir))
        envs.append(env)
        label = f"{Path(run_dir).name} ({seeds} seed{'s' if seeds > 1 else ''})"
        if label in curves:
            label = f"{Path(run_dir)} ({seeds} seed{'s' if seeds > 1 else ''})"
        curves[label] = (xs, y)
    ylabel = metric.replace("_", " ")
    if metric == "episode_return":
        ylabel = "mean episode return (recent episodes)"
    if not title:
        title = ", ".join(dict.fromkeys(e for e in envs if e)) or metric
    return plot_learning_curves(curves, out, band=band, title=title,  # type: ignore[arg-type]
                                xlabel=X_LABELS[x], ylabel=ylabel)


def cmd_plot(argv: Sequence[str]) -> int:
    args = parse_command(PlotArgs, argv, "ppox plot")
    if not args.run_dirs:
        raise ConfigError("pass at least one RUN_DIR")
    out = args.out or (args.run_dirs[0] / f"{args.metric}.png" if len(args.run_dirs) == 1
                       else Path(f"{args.metric}.png"))
    if out.suffix.lower() != ".png":
        raise ConfigError(f"--out {out} must be a .png file")
    path = plot_runs(args.run_dirs, out, args.metric, args.x, args.band, args.title)
    print(f"wrote {path}")
    return 0


def write_learning_curve(run_dir: str | Path) -> Path:
    """``RUN_DIR/learning_curve.png``: the run's episode return over env steps."""
    run_dir = Path(run_dir)
    return plot_runs([run_dir], run_dir / "learning_curve.png")
