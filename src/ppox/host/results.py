"""What a batch of runs produced, and the lines and summary.json made from it."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from ppox import _platform
from ppox.config import HParams, PPOConfig
from ppox.host.metrics import final_return, learning_curve_auc
from ppox.host.profiling import profile_line

Reporter = Callable[[dict[str, Any]], None]


@dataclass
class RunResult:
    """What a batch of runs produced. Arrays have the run axis first.

    Attributes:
        metrics: ``{name: [R, updates_done]}`` per-update metrics of every run (those of
            earlier processes too, after a resume).
        final_return: ``[R]`` mean return of each run's last episodes (see
            ``ppox.host.metrics.final_return``).
        auc: ``[R]`` area under each run's learning curve.
        state: the final ``TrainState`` (on device), leading axis: the runs (under data
            parallelism: the devices, each holding the same parameters).
        compile_s: seconds spent compiling (init + chunk), apart from running.
        run_s: seconds this process spent running updates (after compilation).
        env_steps: environment steps per run, from update 0.
        start_update: the update this process started from (a resume's checkpoint).
        status: ``complete``, ``stopped`` (``stop_after_chunks``) or ``already_complete``
            (a resumed run that had finished: nothing compiled or trained).
        nonfinite_update: ``[R]`` the first update (1-based) whose loss or parameter step
            was not finite, 0 where none was.
    """

    cfg: PPOConfig
    hparams: HParams
    seeds: list[int]
    metrics: dict[str, np.ndarray]
    final_return: np.ndarray
    auc: np.ndarray
    state: Any
    compile_s: float
    run_s: float
    env_steps: int
    devices: int = 1
    run_dir: Path | None = None
    start_update: int = 0
    status: str = "complete"
    nonfinite_update: np.ndarray | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def env_steps_this_process(self) -> int:
        """Env steps per run trained by this process (a resume's own share)."""
        return self.env_steps - self.start_update * self.cfg.batch_size

    @property
    def steps_per_second(self) -> float:
        """Env steps per second over all runs, this process's steps over its run time."""
        return len(self.seeds) * self.env_steps_this_process / max(self.run_s, 1e-9)


def print_reporter(out: TextIO = sys.stdout) -> Reporter:
    """Prints one progress line per chunk: steps, SPS, mean return of recent episodes."""

    def report(info: dict[str, Any]) -> None:
        ret = info["recent_return"]
        ret_s = "n/a" if not np.isfinite(ret).any() else f"{np.nanmean(ret):8.2f}"
        runs = f" ({info['runs']} runs)" if info["runs"] > 1 else ""
        print(f"[{info['updates_done']:>6d}/{info['num_updates']} updates] "
              f"steps {info['env_steps']:>11,d}{runs}  "
              f"SPS {info['sps']:>10,.0f}  return {ret_s}", file=out, flush=True)

    return report


def make_result(batch: Any, history: list[dict[str, np.ndarray]], state: Any, done: int,
                **kw: Any) -> RunResult:
    """A ``RunResult`` from a batch (``ppox.host.run``'s) and its per-chunk metrics."""
    cfg = batch.cfg
    if history:
        metrics = {k: np.concatenate([h[k] for h in history], axis=-1) for k in history[0]}
    else:
        metrics = {"episode_count": np.zeros((batch.num_runs, 0)),
                   "episode_return_sum": np.zeros((batch.num_runs, 0))}
    return RunResult(
        cfg=cfg, hparams=batch.hparams[0], seeds=batch.seeds, metrics=metrics,
        final_return=final_return(metrics, min_episodes=cfg.num_envs),
        auc=learning_curve_auc(metrics), state=state, env_steps=done * cfg.batch_size,
        devices=batch.devices, start_update=kw.pop("start"), **kw)


def summary(result: RunResult) -> dict[str, Any]:
    fr = result.final_return
    return {
        "env": result.cfg.env_id,
        "seeds": result.seeds,
        "env_steps_per_run": result.env_steps,
        "start_update": result.start_update,
        "env_steps_this_process": result.env_steps_this_process,
        "compile_s": result.compile_s,
        "run_s": result.run_s,
        "steps_per_second": result.steps_per_second,
        "devices": result.devices,
        "final_return": fr.tolist(),
        "final_return_mean": float(np.nanmean(fr)) if np.isfinite(fr).any() else None,
        "final_return_std": float(np.nanstd(fr)) if np.isfinite(fr).any() else None,
        **({"profile": result.extra["profile"]} if "profile" in result.extra else {}),
    }


def summary_lines(result: RunResult) -> list[str]:
    """The end-of-training summary; the last line starts with ``final return:``."""
    fr = result.final_return
    lines = [
        f"env {result.cfg.env_id}: {len(result.seeds)} run(s) x {result.env_steps:,d} env steps"
        f" on {result.devices} device(s){_platform.one_cpu_thread_note()}",
    ]
    if result.status == "already_complete":
        lines.append(f"the run was already complete ({result.start_update} updates): "
                     "nothing to train, nothing compiled")
    else:
        if result.start_update:
            lines.append(f"resumed at update {result.start_update}: "
                         f"{result.env_steps_this_process:,d} env steps per run in this run")
        note = result.extra.get("compile_cache")
        lines.append(f"compile {result.compile_s:.1f} s{f' ({note})' if note else ''}, "
                     f"run {result.run_s:.1f} s, {result.steps_per_second:,.0f} env steps/s")
    if result.run_dir is not None:
        lines.append(f"run dir: {result.run_dir}")
    if "profile" in result.extra:
        lines.append(profile_line(result.extra["profile"]))
    if not np.isfinite(fr).any():
        lines.append("final return: n/a (no episode ended during training)")
    elif len(fr) == 1:
        lines.append(f"final return: {fr[0]:.2f}")
    else:
        per = ", ".join(f"{x:.1f}" for x in fr)
        lines.append(f"per seed: {per}")
        lines.append(f"final return: {np.nanmean(fr):.2f} ± {np.nanstd(fr):.2f} "
                     f"(mean ± std over {len(fr)} seeds; min {np.nanmin(fr):.2f}, "
                     f"max {np.nanmax(fr):.2f})")
    return lines
