"""The training driver: a batch of runs (seeds, or seeds x hyperparameters) as one program.

``train_runs`` checks the settings and the run directory (``ppox.host.rundir``) before
anything compiles, initializes every run with one vmapped call, then calls one compiled chunk
of ``chunk_size`` updates repeatedly (the same executable every time, the last shorter chunk
included) in ``ppox.host.loop.ChunkLoop``: between chunks the host writes metrics (through
the loggers), reports progress, checks that every update was finite, writes checkpoints, and
acts on a SIGINT/SIGTERM (``ppox.host.interrupts``). ``ppox train`` and ``ppox sweep`` both
use it.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache, partial
from pathlib import Path
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np

from ppox.config import ConfigError, HParams, PPOConfig
from ppox.host import interrupts
from ppox.host.checkpoint import Notify
from ppox.host.configfile import run_file_dict, write_run_file
from ppox.host.loggers import Logger, LoggerOptions
from ppox.host.loop import EXIT_DIVERGED, ChunkLoop, RunDiverged
from ppox.host.results import (
    Reporter,
    RunResult,
    make_result,
    print_reporter,
    summary,
    summary_lines,
)
from ppox.host.rundir import RunDir
from ppox.parallel import (
    Layout,
    batched_jit,
    data_parallel_jit,
    device_count_for,
    shard_batch,
    shard_devices,
)
from ppox.trainer import build, make_init, make_train_chunk

__all__ = [
    "EXIT_DIVERGED", "Reporter", "RunDiverged", "RunResult", "TrainOptions", "broadcast_hparams",
    "compiled_programs", "default_chunk_size", "print_reporter", "run_batch", "run_keys",
    "stack_hparams", "state_shape", "summary", "summary_lines", "train_runs",
]


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




def _stderr_notify(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class TrainOptions:
    """How ``train_runs`` runs and records a batch (everything but the runs themselves).

    Attributes:
        run_dir: where config, metrics, checkpoints, policy and summary go (None: nowhere).
        progress_chunks: chunks (progress reports) over the whole run.
        chunk_size: updates per chunk (overrides ``progress_chunks``).
        checkpoint_every: a checkpoint every this many chunks (0: none on a schedule).
        checkpoint_every_s: a checkpoint when this many seconds have passed since the last
            one (0: none on a clock). The end of a run and an interrupt always write one.
        resume: continue from the newest verified checkpoint in ``run_dir``.
        overwrite: clear an existing run in ``run_dir`` and start afresh.
        reporter: called after every chunk with a progress dict (None: silent).
        loggers: metric back-ends besides the run directory's own (``ppox.host.loggers``).
        logger_options: the run directory's optional back-ends (TensorBoard, W&B).
        stop_after_chunks: stop early after this many chunks (for tests of resuming).
        data_parallel, split_networks: one run over several devices (see ``train_runs``).
        on_nonfinite: ``stop``: a non-finite update ends the run with ``RunDiverged`` at the
            end of its chunk; ``continue``: train on and report it in
            ``RunResult.nonfinite_update`` (a sweep ranks such runs last). None: ``stop``
            with a run directory (nothing non-finite is ever saved), else ``continue``.
        notify: where one-line notices go (refused checkpoints, cleaned leftovers).
        on_start: called once the run directory's rules hold, before anything compiles,
            with ``{"resume_update": int | None, "complete": bool}`` (the newest intact
            checkpoint of a resume; whether the run had finished).
        evaluator: evaluation between chunks (``ppox.host.periodic_eval.PeriodicEval``):
            after a chunk at which ``evaluator.due(updates)``, ``evaluate(state, updates)``
            (before the next chunk takes the state); logged as ``eval_return``, reported.
    """

    run_dir: str | Path | None = None
    progress_chunks: int = 20
    chunk_size: int | None = None
    checkpoint_every: int = 0
    checkpoint_every_s: float = 0.0
    resume: bool = False
    overwrite: bool = False
    reporter: Reporter | None = None
    loggers: Sequence[Logger] = ()
    logger_options: LoggerOptions | None = None
    stop_after_chunks: int | None = None
    data_parallel: bool = False
    split_networks: bool = False
    on_nonfinite: Literal["stop", "continue"] | None = None
    notify: Notify = _stderr_notify
    on_start: Callable[[dict[str, Any]], None] | None = None
    evaluator: Any = None

    def validate(self) -> None:
        for name in ("progress_chunks", "chunk_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name}={value} must be >= 1")
        for name in ("checkpoint_every", "checkpoint_every_s"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}={getattr(self, name)} must be >= 0 (0: off)")
        if self.on_nonfinite not in (None, "stop", "continue"):
            raise ConfigError(f"on_nonfinite={self.on_nonfinite!r}: use 'stop' or 'continue'")
        if self.resume and self.overwrite:
            raise ConfigError("--resume continues a run and --overwrite replaces it; "
                              "choose one")

    @property
    def stops_on_nonfinite(self) -> bool:
        if self.on_nonfinite is None:
            return self.run_dir is not None
        return self.on_nonfinite == "stop"


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
    **options: Any,
) -> RunResult:
    """Trains ``len(seeds)`` runs (run ``i``: ``hparams[i]``, ``PRNGKey(seeds[i])``).

    ``data_parallel`` splits one run's envs across every local device (gradients and
    statistics averaged each step; one seed; pays off for expensive envs). ``split_networks``
    runs one run on 2 devices, device 0 updating the actor and device 1 the critic at the
    same time (the same arithmetic as one device; one seed; pays off when the update's small
    matmuls dominate). Every other argument, and the keyword ``options``
    (``checkpoint_every_s``, ``overwrite``, ``loggers``, ``logger_options``,
    ``on_nonfinite``, ``notify``), is a ``TrainOptions`` field.

    Raises ``ConfigError`` (bad settings, a run directory that breaks its rules; before any
    compile), ``RunDiverged``, ``StorageError`` (a failed write; what was kept is said) and
    ``interrupts.RunInterrupted`` (a ``KeyboardInterrupt``: SIGINT/SIGTERM, after writing a
    checkpoint of the last completed chunk).
    """
    opts = TrainOptions(
        run_dir=run_dir, progress_chunks=progress_chunks, chunk_size=chunk_size,
        checkpoint_every=checkpoint_every, resume=resume, reporter=reporter,
        stop_after_chunks=stop_after_chunks, data_parallel=data_parallel,
        split_networks=split_networks, **options)
    return run_batch(cfg, hparams, seeds, opts)


def run_batch(cfg: PPOConfig, hparams: list[HParams], seeds: list[int],
              opts: TrainOptions) -> RunResult:
    """``train_runs`` with its options as one ``TrainOptions``."""
    batch = _Batch.build(cfg, hparams, seeds, opts)
    rundir = None
    if opts.run_dir is not None:  # its rules hold before anything compiles
        rundir = RunDir.open(opts.run_dir, batch.run_file, resume=opts.resume,
                             overwrite=opts.overwrite, notify=opts.notify,
                             write_config=batch.write_config)
    resumed = rundir.newest_intact() if rundir is not None and opts.resume else None
    complete = resumed == cfg.num_updates
    if opts.on_start is not None:
        opts.on_start({"resume_update": resumed, "complete": complete})
    with interrupts.stop_requests():
        if complete:
            return _already_complete(batch, rundir)
        return ChunkLoop(batch, rundir).run()


@dataclass(frozen=True)
class _Batch:
    """The runs of one call, checked and placed on their devices."""

    cfg: PPOConfig
    hparams: list[HParams]
    seeds: list[int]
    opts: TrainOptions
    layout: Layout
    hp_batch: Any
    keys: Any
    place: Callable[[Any], Any]
    chunk_size: int
    run_file: dict[str, Any]

    @staticmethod
    def build(cfg: PPOConfig, hparams: list[HParams], seeds: list[int],
              opts: TrainOptions) -> _Batch:
        if len(hparams) != len(seeds):
            raise ValueError("need one HParams per seed")
        opts.validate()
        for hp in hparams:
            hp.validate()
        if opts.data_parallel and opts.split_networks:
            raise ConfigError("data_parallel and split_networks are two ways to spread one "
                              "run over devices and cannot be combined: choose one")
        kind = ("data_parallel" if opts.data_parallel else
                "split_networks" if opts.split_networks else "single")
        layout = Layout.build(kind, len(seeds), len(jax.local_devices()))
        build(cfg, layout)  # validates cfg, the env and the split before anything compiles
        if layout.spans_devices:
            n = layout.num_devices
            hp_batch = hparams[0].as_arrays()
            keys = shard_devices(run_keys(seeds * n), n)
            place = partial(shard_devices, num_shards=n)
        else:
            hp_batch = shard_batch(stack_hparams(hparams), len(seeds))
            keys = shard_batch(run_keys(seeds), len(seeds))
            place = partial(shard_batch, batch=len(seeds))
        chunk = opts.chunk_size or default_chunk_size(cfg.num_updates, opts.progress_chunks)
        run_file = run_file_dict(cfg, hparams[0], seeds[0], len(seeds), kind,
                                 layout.num_devices)
        return _Batch(cfg, list(hparams), list(seeds), opts, layout, hp_batch, keys, place,
                      chunk, run_file)

    @property
    def num_runs(self) -> int:
        return len(self.seeds)

    def write_config(self, path: Path) -> None:
        write_run_file(path, self.cfg, self.hparams[0], self.seeds[0], self.num_runs,
                       self.layout.kind, self.layout.num_devices)

    @property
    def run_names(self) -> list[str]:
        return [f"seed{s}" for s in self.seeds]

    @property
    def devices(self) -> int:
        return self.layout.num_devices if self.layout.spans_devices else \
            device_count_for(self.num_runs)

    def programs(self) -> tuple[Any, Any]:
        return compiled_programs(self.cfg, self.chunk_size, self.num_runs, self.layout,
                                 tuple(jax.local_devices()))

    def state_shape(self) -> Any:
        """The batched TrainState's shapes and dtypes (traced, not compiled)."""
        init_fn, _ = _program_fns(self.cfg, self.chunk_size, self.num_runs, self.layout)
        return jax.eval_shape(init_fn, self.keys, self.hp_batch)

    def host_view(self, state: Any) -> Any:
        """The runs of a state on the host (under data parallelism: device 0's copy)."""
        return jax.tree.map(lambda x: np.asarray(x)[:self.num_runs], jax.device_get(state))


def state_shape(cfg: PPOConfig, hparams: list[HParams], seeds: list[int],
                data_parallel: bool = False, split_networks: bool = False) -> Any:
    """The shapes and dtypes of ``train_runs``' batched TrainState (what its checkpoints
    hold), traced without compiling."""
    opts = TrainOptions(data_parallel=data_parallel, split_networks=split_networks)
    return _Batch.build(cfg, hparams, seeds, opts).state_shape()


def _program_fns(cfg: PPOConfig, chunk_size: int, num_runs: int,
                 layout: Layout) -> tuple[Any, Any]:
    if layout.spans_devices:
        n = layout.num_devices
        return (data_parallel_jit(make_init(cfg, layout), n, 1),
                data_parallel_jit(make_train_chunk(cfg, chunk_size, layout), n, 2,
                                  donate_argnums=(0,)))
    return (batched_jit(make_init(cfg), in_axes=(0, 0), batch=num_runs),
            batched_jit(make_train_chunk(cfg, chunk_size), in_axes=(0, 0, None),
                        batch=num_runs, donate_argnums=(0,)))


@lru_cache(maxsize=4)
def compiled_programs(cfg: PPOConfig, chunk_size: int, num_runs: int, layout: Layout,
                      devices: tuple[Any, ...]) -> tuple[Any, Any]:
    """The compiled init and training-chunk programs for ``num_runs`` runs of ``cfg`` under
    ``layout``, compiled once and reused by every later call with the same static settings
    -- e.g. each equal batch of a sweep. ``devices`` (the local devices) is part of the key:
    the programs are placed on them."""
    del devices
    init_fn, chunk_fn = _program_fns(cfg, chunk_size, num_runs, layout)
    if layout.spans_devices:
        n = layout.num_devices
        hp = HParams().as_arrays()
        keys = shard_devices(run_keys([0] * n), n)
    else:
        hp = shard_batch(broadcast_hparams(HParams(), num_runs), num_runs)
        keys = shard_batch(run_keys(list(range(num_runs))), num_runs)
    init_c = init_fn.lower(keys, hp).compile()
    state = init_c(keys, hp)  # a real state: the chunk is lowered for its shardings
    chunk_c = chunk_fn.lower(state, hp, jnp.int32(chunk_size)).compile()
    return init_c, chunk_c


# An update whose parameter step is larger than this has blown up even when every number
# is still finite (``--learning-rate 1e10``: steps of ~1e12, losses of ~1e20): parameters
# are O(1), and a sane step is O(1) or less for any network size and learning rate.
def _already_complete(batch: _Batch, rundir: RunDir) -> RunResult:
    """A resumed run that had finished: restores its last checkpoint (nothing compiles),
    writes the policy and summary if it stopped before writing them."""
    n = batch.cfg.num_updates
    step, tree = rundir.restore(batch.state_shape(),
                                allow_nonfinite=not batch.opts.stops_on_nonfinite)
    state = batch.place(jax.tree.map(jnp.asarray, tree))
    history = rundir.history(batch.run_names, step)
    result = make_result(batch, history, state, step, compile_s=0.0, run_s=0.0, start=step,
                     status="already_complete", run_dir=rundir.path)
    if not rundir.has_final_outputs():
        rundir.save_policy(batch.host_view(state))
        rundir.write_summary({"env": batch.cfg.env_id, "seeds": batch.seeds,
                              "status": "complete", "updates_done": n, "num_updates": n,
                              **summary(result)})
    return result


