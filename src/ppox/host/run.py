"""The training driver: a batch of runs (seeds, or seeds x hyperparameters) as one program.

``train_runs`` checks the settings and the run directory (``ppox.host.rundir``) before
anything compiles, initializes every run with one vmapped call, then calls one compiled chunk
of ``chunk_size`` updates repeatedly (the same executable every time, the last shorter chunk
included) in ``ppox.host.loop.ChunkLoop``: between chunks the host writes metrics (through
the loggers), reports progress, checks that every update was finite, writes checkpoints, and
acts on a SIGINT/SIGTERM (``ppox.host.interrupts``). ``ppox train`` and ``ppox sweep`` both
use it.

After ``ppox.parallel.distributed.initialize`` joined several processes, the runs (or one
data-parallel run's envs) are split across every process's devices (``jax.devices()``), every
process runs this same code with the same settings (checked), and only process 0 writes,
prints and reports; the decisions taken between chunks (stop, checkpoint) are taken together.
"""

from __future__ import annotations

import dataclasses
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

from ppox._platform import count_program_cache_hit, rolled_threefry
from ppox.config import ConfigError, HParams, PPOConfig
from ppox.host import interrupts, program_cache
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
    batch_sharding,
    batched_jit,
    data_parallel_jit,
    device_axis_sharding,
    device_count_for,
    distributed,
    gather,
    local_view,
    replicate,
    shard_batch,
    shard_devices,
    spans_processes,
)
from ppox.trainer import build, make_init, make_train_chunk

__all__ = [
    "EXIT_DIVERGED", "Reporter", "RunDiverged", "RunResult", "TrainOptions", "broadcast_hparams",
    "compiled_programs", "default_chunk_size", "mesh_devices", "print_reporter", "run_batch",
    "run_keys", "stack_hparams", "state_shape", "summary", "summary_lines", "train_runs",
]


def stack_hparams(hps: list[HParams]) -> HParams:
    """A batch of HParams (leading run axis) from a list (placed from the host: no eager
    program to compile)."""
    return jax.tree.map(lambda *xs: jax.device_put(np.array(xs, np.float32)), *hps)


def broadcast_hparams(hp: HParams, n: int) -> HParams:
    return stack_hparams([hp] * n)


def run_keys(seeds: list[int]) -> jax.Array:
    """One PRNG key per run: ``PRNGKey(seed)``, so run ``i`` of a batch equals a lone run
    with the same seed. Threefry's keys (JAX's default) are made on the host, the same bits
    without the two small eager programs (~10-40 ms of compile each at start-up; more on a
    GPU) that ``PRNGKey`` and ``stack`` would compile."""
    host = [host_prng_key(s) for s in seeds]
    if all(k is not None for k in host):
        return jax.device_put(np.stack(host))
    return jnp.stack([jax.random.PRNGKey(s) for s in seeds])


def host_prng_key(seed: int) -> np.ndarray | None:
    """``jax.random.PRNGKey(seed)``'s bits computed with numpy (threefry's seeding: the
    seed's high and low 32 bits, the high ones 0 without x64), or None where JAX's would
    differ or fail: another default PRNG implementation, or a seed outside int32 (int64
    with x64)."""
    if jax.config.jax_default_prng_impl != "threefry2x32":
        return None
    seed = int(seed)
    if jax.config.jax_enable_x64:
        if not -(1 << 63) <= seed < (1 << 63):
            return None
        bits = seed % (1 << 64)
        return np.array([bits >> 32, bits & 0xFFFFFFFF], np.uint32)
    if not -(1 << 31) <= seed < (1 << 31):
        return None
    return np.array([0, seed & 0xFFFFFFFF], np.uint32)


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
        prefetch: modules the caller imports after training (``ppox train``: its learning
            curve's ``ppox.host.plots``), imported in a thread once the programs are
            compiled, as a run directory's ``orbax.checkpoint`` is (``ppox.host.prefetch``).
        profile_updates: trace this many updates with ``jax.profiler`` (0: none), into
            ``profile_dir`` (default ``run_dir/profile``); ``ppox.host.profiling`` says which
            updates and what is written. ``RunResult.extra["profile"]`` describes the trace.
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
    prefetch: Sequence[str] = ()
    profile_updates: int = 0
    profile_dir: str | Path | None = None

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
        if self.profile_updates < 0:
            raise ConfigError(f"profile_updates={self.profile_updates} must be >= 0 (0: off)")
        if self.profile_dir is not None and not self.profile_updates:
            raise ConfigError("--profile-dir says where --profile-updates N writes its trace; "
                              "add --profile-updates N")
        if self.profile_updates and self.profile_directory is None:
            raise ConfigError("--profile-updates needs a directory for its trace: give "
                              "--profile-dir (or a run directory)")

    @property
    def profile_directory(self) -> Path | None:
        """Where a profile goes: ``profile_dir``, else ``run_dir/profile``."""
        if self.profile_dir is not None:
            return Path(self.profile_dir)
        return Path(self.run_dir) / "profile" if self.run_dir is not None else None

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
    ``on_nonfinite``, ``notify``, ``profile_updates``, ``profile_dir``, ...), is a
    ``TrainOptions`` field.

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
    distributed.check_same_settings(batch.settings())  # several processes: all the same
    opts = batch.opts
    rundir = None
    if opts.run_dir is not None:  # its rules hold before anything compiles
        rundir = RunDir.open_shared(opts.run_dir, batch.run_file, resume=opts.resume,
                                    overwrite=opts.overwrite, notify=opts.notify,
                                    write_config=batch.write_config)
    resumed = (distributed.from_writer(rundir.newest_intact)
               if rundir is not None and opts.resume else None)
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
    mesh: tuple[Any, ...]  # the devices the runs are split across (every process's)

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
        mesh = mesh_devices()
        if spans_processes(mesh):
            opts = _across_processes(opts, kind, len(seeds), len(mesh))
        layout = Layout.build(kind, len(seeds), len(mesh))
        build(cfg, layout)  # validates cfg, the env and the split before anything compiles
        if layout.spans_devices:
            n = layout.num_devices
            hp_batch = replicate(hparams[0].as_arrays(), mesh)
            keys = shard_devices(run_keys(seeds * n), n, mesh)
            place = partial(shard_devices, num_shards=n, devices=mesh)
        else:
            hp_batch = shard_batch(stack_hparams(hparams), len(seeds), mesh)
            keys = shard_batch(run_keys(seeds), len(seeds), mesh)
            place = partial(shard_batch, batch=len(seeds), devices=mesh)
        chunk = opts.chunk_size or default_chunk_size(cfg.num_updates, opts.progress_chunks)
        run_file = run_file_dict(cfg, hparams[0], seeds[0], len(seeds), kind,
                                 layout.num_devices)
        return _Batch(cfg, list(hparams), list(seeds), opts, layout, hp_batch, keys, place,
                      chunk, run_file, mesh)

    @property
    def across_processes(self) -> bool:
        return spans_processes(self.mesh)

    def settings(self) -> dict[str, Any]:
        """What every process must agree on: the resolved run and how it is cut and saved."""
        o = self.opts
        return {"run": self.run_file, "hparams": [hp.to_dict() for hp in self.hparams],
                "seeds": self.seeds, "chunk_size": self.chunk_size,
                "checkpoint_every": o.checkpoint_every,
                "checkpoint_every_s": o.checkpoint_every_s, "resume": o.resume,
                "overwrite": o.overwrite, "stop_after_chunks": o.stop_after_chunks,
                "on_nonfinite": o.on_nonfinite,
                "run_dir": None if o.run_dir is None else str(o.run_dir)}

    def steps(self, n: int) -> Any:
        """The updates of a chunk, as the chunk program's (replicated) argument."""
        return _steps(n, self.mesh)

    def to_host(self, tree: Any) -> Any:
        """A state (or any output) whole, as numpy; several processes: a collective."""
        return gather(tree) if self.across_processes else jax.device_get(tree)

    def metrics_view(self, metrics: dict[str, Any], n: int) -> dict[str, np.ndarray]:
        """``{name: [R, n]}`` a chunk's metrics on the host. Under data parallelism every
        device holds the same (reduced) metrics, so this process's own copy is read; a batch
        of runs across processes is gathered (a collective)."""
        if not self.across_processes:
            host = metrics
        elif self.layout.spans_devices:
            host = local_view(metrics)
        else:
            host = gather(metrics)
        return {k: np.asarray(v)[:self.num_runs, :n] for k, v in host.items()}

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
                                 self.mesh)

    def state_shape(self) -> Any:
        """The batched TrainState's shapes and dtypes (traced, not compiled)."""
        init_fn, _ = _program_fns(self.cfg, self.chunk_size, self.num_runs, self.layout,
                                  self.mesh)
        return jax.eval_shape(init_fn, self.keys, self.hp_batch)

    def host_view(self, state: Any) -> Any:
        """The runs of a state on the host (under data parallelism: device 0's copy);
        several processes: a collective."""
        return jax.tree.map(lambda x: np.asarray(x)[:self.num_runs], self.to_host(state))


def mesh_devices() -> tuple[Any, ...]:
    """The devices a batch is split across: every process's once the distributed runtime
    joined several (``jax.devices()``), else this process's own."""
    return tuple(jax.devices() if jax.process_count() > 1 else jax.local_devices())


def _steps(n: int, mesh: tuple[Any, ...]) -> Any:
    return replicate(np.int32(n), mesh) if spans_processes(mesh) else jax.device_put(np.int32(n))


def _silent(_line: str) -> None:
    pass


def _across_processes(opts: TrainOptions, kind: str, num_runs: int,
                      devices: int) -> TrainOptions:
    """The rules of a batch over several processes (one ``ConfigError`` line each); the
    options every process but 0 runs with: no reporter, no notices, no loggers."""
    procs = jax.process_count()
    if kind == "split_networks":
        raise ConfigError("--split-networks runs on 2 devices of one process; it is not "
                          f"supported across {procs} processes (use --data-parallel)")
    if opts.evaluator is not None:
        raise ConfigError("evaluation during training (--eval-every) is not supported across "
                          f"{procs} processes yet; evaluate afterwards with ppox eval")
    if kind == "single" and num_runs % devices:
        raise ConfigError(f"{num_runs} run(s) do not split evenly across the {devices} "
                          f"devices of {procs} processes: use a multiple of {devices} seeds "
                          "(or runs), or --data-parallel to split one run's envs across them")
    if distributed.is_writer():
        return opts
    return dataclasses.replace(opts, reporter=None, notify=_silent, loggers=(),
                               on_start=None)


def state_shape(cfg: PPOConfig, hparams: list[HParams], seeds: list[int],
                data_parallel: bool = False, split_networks: bool = False) -> Any:
    """The shapes and dtypes of ``train_runs``' batched TrainState (what its checkpoints
    hold), traced without compiling."""
    opts = TrainOptions(data_parallel=data_parallel, split_networks=split_networks)
    return _Batch.build(cfg, hparams, seeds, opts).state_shape()


def _program_fns(cfg: PPOConfig, chunk_size: int, num_runs: int, layout: Layout,
                 devices: tuple[Any, ...] | None = None) -> tuple[Any, Any]:
    if layout.spans_devices:
        n = layout.num_devices
        return (data_parallel_jit(make_init(cfg, layout), n, 1, devices=devices),
                data_parallel_jit(make_train_chunk(cfg, chunk_size, layout), n, 2,
                                  donate_argnums=(0,), devices=devices))
    return (batched_jit(make_init(cfg), in_axes=(0, 0), batch=num_runs, devices=devices),
            batched_jit(make_train_chunk(cfg, chunk_size), in_axes=(0, 0, None),
                        batch=num_runs, donate_argnums=(0,), devices=devices))


def program_placeholders(num_runs: int, layout: Layout,
                         devices: tuple[Any, ...]) -> tuple[Any, Any, Any]:
    """``(keys, hp, state sharding)``: placeholder inputs of the programs placed as a run's
    are, and where the init's outputs live (the batch or device axis split across the
    devices; None on one device). Nothing is traced."""
    if layout.spans_devices:
        n = layout.num_devices
        hp = replicate(HParams().as_arrays(), devices)
        keys = shard_devices(run_keys([0] * n), n, devices)
        return keys, hp, device_axis_sharding(n, devices)
    hp = shard_batch(broadcast_hparams(HParams(), num_runs), num_runs, devices)
    keys = shard_batch(run_keys(list(range(num_runs))), num_runs, devices)
    return keys, hp, batch_sharding(num_runs, devices)


def program_inputs(cfg: PPOConfig, chunk_size: int, num_runs: int, layout: Layout,
                   devices: tuple[Any, ...]) -> tuple[Any, Any, Any, Any, Any]:
    """``(init_fn, chunk_fn, keys, hp, state_shape)``: the two jitted programs, placeholder
    inputs placed as a run's are, and the init's output as ``jax.ShapeDtypeStruct`` leaves.
    The chunk needs only the state's shapes, dtypes (weak types too: ``eval_shape`` keeps
    them) and shardings (known for every output: the batch or device axis split across the
    devices), so lowering it from ``state_shape`` gives the HLO a real state gives."""
    init_fn, chunk_fn = _program_fns(cfg, chunk_size, num_runs, layout, devices)
    keys, hp, sharding = program_placeholders(num_runs, layout, devices)
    state_shape = jax.tree.map(
        lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, weak_type=s.weak_type,
                                       sharding=sharding),
        jax.eval_shape(init_fn, keys, hp))
    return init_fn, chunk_fn, keys, hp, state_shape


@lru_cache(maxsize=4)
def compiled_programs(cfg: PPOConfig, chunk_size: int, num_runs: int, layout: Layout,
                      devices: tuple[Any, ...]) -> tuple[Any, Any]:
    """The compiled init and training-chunk programs for ``num_runs`` runs of ``cfg`` under
    ``layout``, compiled once and reused by every later call with the same static settings
    -- e.g. each equal batch of a sweep. ``devices`` (``mesh_devices()``: the local ones, or
    every process's) is part of the key: the programs are placed on them.

    With the compilation cache on, they come from ppox's program cache when it has them
    (``ppox.host.program_cache``: nothing traced), else they are traced once, exported,
    compiled and kept there: both are traced and exported first, then XLA compiles the init
    in a thread (it releases the GIL) while this one compiles the chunk, lowered from the
    init's output shapes (``program_inputs``). Without the program cache the init's compile
    starts before the chunk is traced. Starting it before the chunk's trace on the cache's
    path too was measured slower: the compile's threads slow the trace
    (``benchmarks/results/HISTORY.md``, "Platform set-up"). The init compiles with
    ``program_cache.init_compiler_options`` (on a CPU, unoptimized: it runs once)."""
    init_options = program_cache.init_compiler_options(cfg.env_id)
    key = program_cache.key_for(
        {"programs": "init, chunk", "settings": program_cache.describe(cfg, layout),
         "chunk_size": chunk_size, "num_runs": num_runs}, devices)
    steps = _steps(chunk_size, devices)
    if key is not None:
        keys, hp, sharding = program_placeholders(num_runs, layout, devices)
        stored = program_cache.load(key, (keys, hp), sharding, steps, init_options)
        if stored is not None:
            count_program_cache_hit()
            return stored
    init_fn, chunk_fn, keys, hp, state_shape = program_inputs(cfg, chunk_size, num_runs,
                                                              layout, devices)
    if key is not None:
        programs = program_cache.export_and_compile(
            key, (init_fn, (keys, hp)), (chunk_fn, (state_shape, hp, steps)), init_options)
        if programs is not None:
            return programs
    with rolled_threefry():  # the init runs once: its smaller threefry compiles quicker
        init_low = init_fn.lower(keys, hp)
    return program_cache.init_beside_chunk(
        lambda: init_low.compile(compiler_options=init_options),
        lambda: chunk_fn.lower(state_shape, hp, steps).compile())


# An update whose parameter step is larger than this has blown up even when every number
# is still finite (``--learning-rate 1e10``: steps of ~1e12, losses of ~1e20): parameters
# are O(1), and a sane step is O(1) or less for any network size and learning rate.
def _already_complete(batch: _Batch, rundir: RunDir) -> RunResult:
    """A resumed run that had finished: restores its last checkpoint (nothing compiles),
    writes the policy and summary if it stopped before writing them."""
    n = batch.cfg.num_updates
    step, tree = rundir.restore_shared(batch.state_shape(),
                                       allow_nonfinite=not batch.opts.stops_on_nonfinite)
    state = batch.place(tree if batch.across_processes else jax.tree.map(jnp.asarray, tree))
    history = distributed.from_writer(lambda: rundir.history(batch.run_names, step))
    result = make_result(batch, history, state, step, compile_s=0.0, run_s=0.0, start=step,
                     status="already_complete", run_dir=rundir.path)

    def finish() -> None:
        if not rundir.has_final_outputs():
            rundir.save_policy(jax.tree.map(lambda x: np.asarray(x)[:batch.num_runs], tree))
            rundir.write_summary({"env": batch.cfg.env_id, "seeds": batch.seeds,
                                  "status": "complete", "updates_done": n, "num_updates": n,
                                  **summary(result)})

    distributed.run_on_writer(finish)
    return result


