"""The training driver: a batch of runs (seeds, or seeds x hyperparameters) as one program.

``train_runs`` initializes every run with one vmapped call, then calls one compiled chunk of
``chunk_size`` updates repeatedly (the same executable every time, the last shorter chunk
included), printing progress, writing metrics and checkpoints between chunks. The next
chunk is dispatched before the previous chunk's metrics are read, so host work overlaps
device work. ``ppox train`` and ``ppox sweep`` both use it.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache, partial
from pathlib import Path
from typing import Any, TextIO

import jax
import jax.numpy as jnp
import numpy as np

from ppox.config import ConfigError, HParams, PPOConfig
from ppox.host.checkpoint import StateCheckpoints, save_policy
from ppox.host.configfile import (
    atomic_write_text,
    run_file_dict,
    run_file_differences,
    write_run_file,
)
from ppox.host.metrics import (
    MetricsWriter,
    episode_means,
    final_return,
    learning_curve_auc,
    to_jsonable,
    truncate_metrics,
)
from ppox.parallel import (
    DATA_AXIS,
    batched_jit,
    data_parallel_jit,
    device_count_for,
    shard_batch,
    shard_devices,
)
from ppox.trainer import build, make_init, make_train_chunk


@dataclass
class RunResult:
    """What a batch of runs produced. Arrays have the run axis first.

    Attributes:
        metrics: ``{name: [R, num_updates]}`` per-update metrics of every run.
        final_return: ``[R]`` mean return of each run's last episodes (see
            ``ppox.host.metrics.final_return``).
        auc: ``[R]`` area under each run's learning curve.
        state: the final ``TrainState`` (on device), leading axis: the runs (under data
            parallelism: the devices, each holding the same parameters).
        compile_s: seconds spent compiling (init + chunk), apart from running.
        run_s: seconds spent running the updates (after compilation).
        env_steps: environment steps per run.
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
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def steps_per_second(self) -> float:
        """Aggregate env steps per second over all runs (run time only)."""
        return len(self.seeds) * self.env_steps / max(self.run_s, 1e-9)


def stack_hparams(hps: list[HParams]) -> HParams:
    """A batch of HParams (leading run axis) from a list."""
    return jax.tree.map(lambda *xs: jnp.asarray(np.array(xs, np.float32)), *hps)


def broadcast_hparams(hp: HParams, n: int) -> HParams:
    return stack_hparams([hp] * n)


def run_keys(seeds: list[int]) -> jax.Array:
    """One PRNG key per run: ``PRNGKey(seed)``, so run ``i`` of a batch equals a lone run
    with the same seed."""
    return jnp.stack([jax.random.PRNGKey(s) for s in seeds])


def default_chunk_size(num_updates: int, progress_chunks: int) -> int:
    return max(1, math.ceil(num_updates / max(1, progress_chunks)))


Reporter = Callable[[dict[str, Any]], None]


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


@lru_cache(maxsize=4)
def compiled_programs(cfg: PPOConfig, chunk_size: int, num_runs: int, shards: int,
                      devices: tuple[Any, ...], split_networks: bool = False,
                      ) -> tuple[Any, Any]:
    """The compiled init and training-chunk programs for ``num_runs`` runs of ``cfg``
    (``shards > 1``: one run split across ``shards`` devices, its envs or, with
    ``split_networks``, its actor and critic updates), compiled once and reused by
    every later call with the same static settings -- e.g. each equal batch of a sweep.
    ``devices`` (the local devices) is part of the key: the programs are placed on them."""
    del devices
    if shards > 1:
        axes = ({"split_axis": DATA_AXIS} if split_networks
                else {"axis_name": DATA_AXIS, "num_shards": shards})
        init_fn = data_parallel_jit(make_init(cfg, **axes), shards, 1)
        chunk_fn = data_parallel_jit(make_train_chunk(cfg, chunk_size, **axes),
                                     shards, 2, donate_argnums=(0,))
        hp = HParams().as_arrays()
        keys = shard_devices(run_keys([0] * shards), shards)
    else:
        init_fn = batched_jit(make_init(cfg), in_axes=(0, 0), batch=num_runs)
        chunk_fn = batched_jit(make_train_chunk(cfg, chunk_size), in_axes=(0, 0, None),
                               batch=num_runs, donate_argnums=(0,))
        hp = shard_batch(broadcast_hparams(HParams(), num_runs), num_runs)
        keys = shard_batch(run_keys(list(range(num_runs))), num_runs)
    init_c = init_fn.lower(keys, hp).compile()
    state = init_c(keys, hp)  # a real state: the chunk is lowered for its shardings
    chunk_c = chunk_fn.lower(state, hp, jnp.int32(chunk_size)).compile()
    return init_c, chunk_c


def train_runs(
    cfg: PPOConfig,
    hparams: list[HParams],
    seeds: list[int],
    run_dir: str | Path | None = None,
    progress_chunks: int = 20,
    chunk_size: int | None = None,
    checkpoint_every: int = 0,
    resume: bool = False,
    reporter: Reporter | None = None,
    stop_after_chunks: int | None = None,
    data_parallel: bool = False,
    split_networks: bool = False,
) -> RunResult:
    """Trains ``len(seeds)`` runs (run ``i``: ``hparams[i]``, ``PRNGKey(seeds[i])``).

    Args:
        cfg: static settings shared by every run.
        hparams: one HParams per run.
        seeds: one seed per run.
        run_dir: where to write config, metrics, checkpoints and the final policy (None:
            write nothing).
        progress_chunks: number of progress reports (chunks) over the whole run.
        chunk_size: updates per chunk (overrides ``progress_chunks``).
        checkpoint_every: save the full state every this many chunks (0: only at the end).
        resume: continue from the latest checkpoint in ``run_dir``.
        reporter: called after every chunk with a progress dict (None: silent).
        stop_after_chunks: stop early after this many chunks (for tests of resuming).
        data_parallel: split one run's envs across every local device (gradients and
            statistics averaged each step). Needs a single seed; worth it when a run's
            envs are expensive (brax) and several devices are available.
        split_networks: run one run on 2 devices, device 0 updating the actor and device 1
            the critic at the same time (both run the rollout); the same arithmetic as one
            device. Needs a single seed and 2 local devices; worth it when the update's
            small matmuls dominate (few envs, e.g. CartPole at 4 envs on a CPU).
    """
    if len(hparams) != len(seeds):
        raise ValueError("need one HParams per seed")
    for hp in hparams:
        hp.validate()
    build(cfg)  # validates cfg and the env before anything compiles
    num_runs = len(seeds)
    num_updates = cfg.num_updates
    chunk_size = chunk_size or default_chunk_size(num_updates, progress_chunks)
    run_names = [f"seed{s}" for s in seeds]

    if data_parallel and split_networks:
        raise ConfigError("data_parallel and split_networks are two ways to spread one run "
                          "over devices and cannot be combined: choose one")
    if (data_parallel or split_networks) and num_runs != 1:
        raise ConfigError(f"{'data_parallel' if data_parallel else 'split_networks'} "
                          f"spreads one run across devices, but {num_runs} seeds were given: "
                          "use one seed (or neither option, to spread the seeds instead)")
    shards = len(jax.local_devices()) if data_parallel else 1
    if split_networks:
        if len(jax.local_devices()) < 2:
            raise ConfigError(
                "split_networks needs 2 local devices, but JAX sees 1; on a CPU host start "
                "the process with XLA_FLAGS=--xla_force_host_platform_device_count=2 (the "
                "`ppox` CLI does this when the machine has 2+ cores)")
        shards = 2
    if data_parallel and shards > 1:
        build(cfg, DATA_AXIS, shards)  # checks the envs and minibatches split evenly
    if shards > 1:
        hp_batch = hparams[0].as_arrays()
        keys = shard_devices(run_keys(seeds * shards), shards)
        place = partial(shard_devices, num_shards=shards)
    else:
        hp_batch = shard_batch(stack_hparams(hparams), num_runs)
        keys = shard_batch(run_keys(seeds), num_runs)
        place = partial(shard_batch, batch=num_runs)

    layout = ("data_parallel" if data_parallel else
              "split_networks" if split_networks else "single")
    run_file = run_file_dict(cfg, hparams[0], seeds[0], num_runs, layout, shards)
    if run_dir is not None and resume:
        _check_resume(Path(run_dir), run_file)  # before the compile

    t0 = time.perf_counter()
    init_c, chunk_c = compiled_programs(cfg, chunk_size, num_runs, shards,
                                        tuple(jax.local_devices()), split_networks)
    compile_s = time.perf_counter() - t0
    state = init_c(keys, hp_batch)

    writer = ckpts = None
    done = 0
    history: list[dict[str, np.ndarray]] = []
    if run_dir is not None:
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        write_run_file(run_dir / "config.toml", cfg, hparams[0], seeds[0], num_runs, layout,
                       shards)
        ckpts = StateCheckpoints(run_dir)
        if resume and ckpts.latest_step() is not None:
            template = jax.eval_shape(lambda: state)
            state = place(jax.tree.map(jnp.asarray, ckpts.restore(template)))
            done = int(np.asarray(state.update_idx).reshape(-1)[0])
            truncate_metrics(run_dir / "metrics.jsonl", done)
            history = _load_history(run_dir / "metrics.jsonl", run_names, done)
        else:  # a new run, or a resume with no checkpoint yet: start from update 0
            (run_dir / "metrics.jsonl").unlink(missing_ok=True)
        writer = MetricsWriter(run_dir / "metrics.jsonl")

    run_s = 0.0
    pending: tuple[dict[str, Any], int, int] | None = None
    chunks = 0

    def finish(p: tuple[dict[str, Any], int, int]) -> None:
        nonlocal t_last, run_s
        metrics, start, n = p
        # [R, n]; under data parallelism every device holds the same (reduced) metrics
        host = {k: np.asarray(v)[:num_runs, :n] for k, v in metrics.items()}  # blocks
        now = time.perf_counter()
        elapsed, t_last = now - t_last, now
        run_s += elapsed
        history.append(host)
        if writer is not None:
            writer.write(start, host, cfg.batch_size, run_names)
        if reporter is not None:
            means = episode_means(host)
            recent = (np.nanmean(means, axis=-1) if np.isfinite(means).any()
                      else np.full(num_runs, np.nan))
            reporter({
                "updates_done": start + n, "num_updates": num_updates,
                "env_steps": (start + n) * cfg.batch_size, "runs": num_runs,
                "sps": num_runs * n * cfg.batch_size / max(elapsed, 1e-9),
                "recent_return": recent,
            })

    t_last = time.perf_counter()
    while done < num_updates:
        n = min(chunk_size, num_updates - done)
        state, metrics = chunk_c(state, hp_batch, jnp.int32(n))
        if pending is not None:
            finish(pending)
        pending = (metrics, done, n)
        done += n
        chunks += 1
        if ckpts is not None and checkpoint_every and chunks % checkpoint_every == 0:
            finish(pending)
            pending = None
            ckpts.save(done, state)
            t_last = time.perf_counter()  # checkpoint I/O is not training time
        if stop_after_chunks is not None and chunks >= stop_after_chunks:
            break
    if pending is not None:
        finish(pending)
    jax.block_until_ready(state)

    metrics_all = {k: np.concatenate([h[k] for h in history], axis=-1) for k in history[0]}
    result = RunResult(
        cfg=cfg, hparams=hparams[0], seeds=list(seeds), metrics=metrics_all,
        final_return=final_return(metrics_all, min_episodes=cfg.num_envs),
        auc=learning_curve_auc(metrics_all), state=state, compile_s=compile_s,
        run_s=run_s, env_steps=done * cfg.batch_size,
        devices=shards if shards > 1 else device_count_for(num_runs), run_dir=run_dir,
    )
    if run_dir is not None:
        if ckpts.latest_step() != done:
            ckpts.save(done, state)
        ckpts.close()
        writer.close()
        # under data parallelism every device holds the same policy: keep device 0's
        save_policy(run_dir, jax.tree.map(lambda x: x[:num_runs], state))
        atomic_write_text(run_dir / "summary.json", json.dumps(to_jsonable(summary(result)),
                                                               indent=2))
    return result


def _check_resume(run_dir: Path, run_file: dict[str, Any]) -> None:
    """A resumed run must keep the settings it started with: its checkpoint holds state
    shaped by them (num_envs, networks, devices) and its learning-rate schedule and
    metrics assume them. One ``ConfigError`` naming every difference, before any compile."""
    path = run_dir / "config.toml"
    if not path.is_file():
        return  # nothing recorded to compare with (a run dir from outside ppox train)
    diffs = run_file_differences(path, run_file)
    if diffs:
        raise ConfigError(
            f"cannot resume {str(run_dir)!r} with other settings than it started with "
            f"({'; '.join(diffs)}). `ppox train --run-dir {run_dir} --resume` with no other "
            "flags reads them from its config.toml; to change them, start a new --run-dir")


def _load_history(path: Path, run_names: list[str], upto: int) -> list[dict[str, np.ndarray]]:
    """Rebuilds ``[R, upto]`` metric arrays from metrics.jsonl after a resume."""
    if upto == 0 or not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    keys = [k for k in rows[0] if k not in ("run", "update", "env_steps", "episode_return")]
    out = {k: np.full((len(run_names), upto), np.nan, np.float32) for k in keys}
    index = {name: i for i, name in enumerate(run_names)}
    for row in rows:
        r, u = index.get(row["run"]), row["update"] - 1
        if r is None or u >= upto:
            continue
        for k in keys:
            out[k][r, u] = np.nan if row[k] is None else row[k]
    return [out]


def summary(result: RunResult) -> dict[str, Any]:
    fr = result.final_return
    return {
        "env": result.cfg.env_id,
        "seeds": result.seeds,
        "env_steps_per_run": result.env_steps,
        "compile_s": result.compile_s,
        "run_s": result.run_s,
        "steps_per_second": result.steps_per_second,
        "devices": result.devices,
        "final_return": fr.tolist(),
        "final_return_mean": float(np.nanmean(fr)) if np.isfinite(fr).any() else None,
        "final_return_std": float(np.nanstd(fr)) if np.isfinite(fr).any() else None,
    }


def summary_lines(result: RunResult) -> list[str]:
    """The end-of-training summary; the last line starts with ``final return:``."""
    fr = result.final_return
    lines = [
        f"env {result.cfg.env_id}: {len(result.seeds)} run(s) x {result.env_steps:,d} env steps"
        f" on {result.devices} device(s)",
        f"compile {result.compile_s:.1f} s, run {result.run_s:.1f} s, "
        f"{result.steps_per_second:,.0f} env steps/s",
    ]
    if result.run_dir is not None:
        lines.append(f"run dir: {result.run_dir}")
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
