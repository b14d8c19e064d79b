"""The training driver: a batch of runs (seeds, or seeds x hyperparameters) as one program.

``train_runs`` initializes every run with one vmapped call, then calls one compiled chunk of
``chunk_size`` updates repeatedly (the same executable every time, the last shorter chunk
included). The next chunk is dispatched before the previous chunk's metrics are read, so host
work overlaps device work. Between chunks the host writes metrics (through the loggers),
reports progress, checks that every update was finite, writes checkpoints, and acts on a
SIGINT/SIGTERM (``ppox.host.interrupts``). The run directory (``ppox.host.rundir``) is
checked before anything compiles. ``ppox train`` and ``ppox sweep`` both use it.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import lru_cache, partial
from pathlib import Path
from typing import Any, Literal, TextIO

import jax
import jax.numpy as jnp
import numpy as np

from ppox.config import ConfigError, HParams, PPOConfig
from ppox.host import interrupts
from ppox.host.checkpoint import Notify, nonfinite_leaves
from ppox.host.configfile import run_file_dict, write_run_file
from ppox.host.loggers import Logger, LoggerOptions, close_all, write_all
from ppox.host.metrics import episode_means, final_return, learning_curve_auc
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

EXIT_DIVERGED = 3  # `ppox train` exit status of a run stopped by a non-finite update


class RunDiverged(Exception):
    """A run's loss, parameter step or state became non-finite; one line naming the update,
    the run and the quantity, and what was kept."""

    def __init__(self, message: str, info: dict[str, Any]) -> None:
        super().__init__(message)
        self.info = info


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
        return _Training(batch, rundir).run()


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
MAX_PARAMETER_STEP = 1e6


def _first_diverged(host: dict[str, np.ndarray], start: int) -> np.ndarray:
    """``[R]`` the first update (1-based) of a chunk that diverged, 0 where none did: its
    loss or parameter step not finite (``nonfinite``, computed in the program), or the step
    above ``MAX_PARAMETER_STEP``."""
    step = np.asarray(host["update_norm"], np.float64)
    flags = (np.asarray(host["nonfinite"]) > 0) | (np.abs(step) > MAX_PARAMETER_STEP)
    return np.where(flags.any(axis=-1), start + 1 + flags.argmax(axis=-1), 0)


def _quantity(host: dict[str, np.ndarray], run: int, i: int) -> str:
    """What diverged in update ``i`` of a chunk, in words."""
    loss, step = float(host["loss"][run, i]), float(host["update_norm"][run, i])
    if not math.isfinite(loss):
        return f"the loss is {loss}"
    if not math.isfinite(step):
        return f"the parameter step (update_norm) is {step}"
    return (f"the parameter step (update_norm) is {step:.3g}, above {MAX_PARAMETER_STEP:g} "
            "(the optimizer blew up)")


class _Training:
    """One call's chunk loop and what it writes; state lives on the instance so every step
    is a short method."""

    def __init__(self, batch: _Batch, rundir: RunDir | None) -> None:
        self.b, self.rd, self.opts = batch, rundir, batch.opts
        self.history: list[dict[str, np.ndarray]] = []
        self.loggers: list[Logger] = list(self.opts.loggers)
        self.start = self.done = self.chunks = self.checked = 0
        self.run_s = 0.0
        self.first_bad = np.zeros(batch.num_runs, np.int64)
        self.saved_step: int | None = None
        self._t_last = self._t_train = self._t_ckpt = time.perf_counter()

    def run(self) -> RunResult:
        interrupts.test_pause("compile", self.start)
        t0 = time.perf_counter()
        compiling = getattr(self.opts.reporter, "compiling", None)
        with compiling() if callable(compiling) else nullcontext():
            init_c, chunk_c = self.b.programs()
        compile_s = time.perf_counter() - t0
        state = init_c(self.b.keys, self.b.hp_batch)
        if self.rd is not None:
            state = self._open_run_dir(state)
        try:
            interrupts.set_phase("training")
            state = self._loop(chunk_c, state)
            return self._finish(state, compile_s)
        finally:
            close_all(self.loggers)

    def _open_run_dir(self, state: Any) -> Any:
        rd = self.rd
        if self.opts.resume:
            step, tree = rd.restore(jax.eval_shape(lambda: state),
                                    allow_nonfinite=not self.opts.stops_on_nonfinite)
            state = self.b.place(jax.tree.map(jnp.asarray, tree))
            self.start = self.done = int(np.asarray(state.update_idx).reshape(-1)[0])
            self.saved_step = step
            self.history = rd.history(self.b.run_names, self.done)
        else:
            rd.start()
        self.loggers += rd.loggers(self.b.cfg.batch_size, self.b.run_file, self.done,
                                   self.opts.logger_options)
        return state

    def _loop(self, chunk_c: Any, state: Any) -> Any:
        pending = None
        num_updates = self.b.cfg.num_updates
        self._t_last = self._t_train = self._t_ckpt = time.perf_counter()
        while self.done < num_updates and interrupts.requested() is None:
            n = min(self.b.chunk_size, num_updates - self.done)
            state, metrics = chunk_c(state, self.b.hp_batch, jnp.int32(n))
            if pending is not None:
                self._read(pending)
            pending = (metrics, self.done, n)
            self.done += n
            self.chunks += 1
            if self._checkpoint_due():
                self._read(pending)
                pending = None
                self._checkpoint(state)
            if self.opts.stop_after_chunks and self.chunks >= self.opts.stop_after_chunks:
                break
        if pending is not None:
            self._read(pending)
        jax.block_until_ready(state)
        if interrupts.requested() is not None and self.done < num_updates:
            self._interrupted(state)
        return state

    def _read(self, pending: tuple[dict[str, Any], int, int]) -> None:
        """Fetches one chunk's metrics (blocks on it), logs and reports them, and stops a
        run whose updates were not all finite."""
        metrics, start, n = pending
        # [R, n]; under data parallelism every device holds the same (reduced) metrics
        host = {k: np.asarray(v)[:self.b.num_runs, :n] for k, v in metrics.items()}
        now = time.perf_counter()
        elapsed, self._t_last = now - self._t_last, now
        self.run_s += elapsed
        self.history.append(host)
        write_all(self.loggers, start, host, self.b.run_names, now - self._t_train)
        self._report(host, start + n, elapsed)
        interrupts.test_pause("chunk", start + n)
        self.checked = start + n  # every update up to here was looked at
        bad = _first_diverged(host, start)
        new = (bad > 0) & (self.first_bad == 0)
        self.first_bad[new] = bad[new]
        if new.any() and self.opts.stops_on_nonfinite:
            self._diverged(host, start, bad)

    def _report(self, host: dict[str, np.ndarray], updates_done: int, elapsed: float) -> None:
        if self.opts.reporter is None:
            return
        means = episode_means(host)
        recent = (np.nanmean(means, axis=-1) if np.isfinite(means).any()
                  else np.full(self.b.num_runs, np.nan))
        n = host["nonfinite"].shape[-1]
        self.opts.reporter({
            "updates_done": updates_done, "num_updates": self.b.cfg.num_updates,
            "env_steps": updates_done * self.b.cfg.batch_size, "runs": self.b.num_runs,
            "sps": self.b.num_runs * n * self.b.cfg.batch_size / max(elapsed, 1e-9),
            "recent_return": recent,
        })

    def _checkpoint_due(self) -> bool:
        if self.rd is None:
            return False
        by_chunks = self.opts.checkpoint_every and self.chunks % self.opts.checkpoint_every == 0
        by_clock = (self.opts.checkpoint_every_s
                    and time.perf_counter() - self._t_ckpt >= self.opts.checkpoint_every_s)
        return bool(by_chunks or by_clock)

    def _checkpoint(self, state: Any) -> None:
        """Writes the state at ``self.done`` (its metrics already checked); checkpoint I/O
        is not training time."""
        tree = jax.device_get(state)
        bad = nonfinite_leaves(tree)
        if bad and self.opts.stops_on_nonfinite:
            self._diverged_state(bad[0])
        self.rd.save_checkpoint(self.done, tree)
        self.saved_step = self.done
        self._t_last = self._t_ckpt = time.perf_counter()

    def _kept(self) -> str:
        path = self.rd.latest_checkpoint() if self.rd is not None else None
        if path is None:
            return "no checkpoint had been written"
        return f"the last finite checkpoint {path} is kept"

    def _diverged(self, host: dict[str, np.ndarray], start: int, bad: np.ndarray) -> None:
        run = int(np.argmin(np.where(bad > 0, bad, np.iinfo(np.int64).max)))
        update = int(bad[run])
        quantity = _quantity(host, run, update - start - 1)
        others = int((bad > 0).sum()) - 1
        also = f" (and {others} other run(s))" if others > 0 else ""
        info = {"run": self.b.run_names[run], "seed": self.b.seeds[run], "update": update,
                "quantity": quantity}
        self._raise_diverged(f"run {info['run']} (seed {info['seed']}) diverged at update "
                             f"{update}{also}: {quantity}", info)

    def _diverged_state(self, leaf: str) -> None:
        self.checked = self.done
        info = {"run": None, "seed": None, "update": self.done,
                "quantity": f"non-finite values in the state's {leaf}"}
        self._raise_diverged(f"training diverged by update {self.done}: non-finite values "
                             f"in the state's {leaf}", info)

    def _raise_diverged(self, what: str, info: dict[str, Any]) -> None:
        message = (f"{what}; stopped at update {self.checked}, nothing saved from it; "
                   f"{self._kept()}")
        if self.rd is not None:
            self.rd.write_summary({**self._summary_head("diverged"), "diverged": info})
        raise RunDiverged(message, info)

    def _interrupted(self, state: Any) -> None:
        """Saves the last completed chunk and raises ``RunInterrupted``."""
        signum = interrupts.requested() or 2
        total = self.b.cfg.num_updates
        step: int | None = self.done
        if self.rd is None:
            saved, step = "nothing was saved (no run directory)", None
        elif self.done == 0:
            saved, step = (f"nothing was saved (no chunk had completed); start again with "
                           f"--overwrite (--run-dir {self.rd.path})"), None
        elif self.saved_step == self.done:
            saved = (f"the checkpoint {self.rd.checkpoints.path(self.done)} (update "
                     f"{self.done} of {total}) holds the last completed chunk")
        else:
            self._checkpoint(state)
            saved = (f"saved checkpoint {self.rd.checkpoints.path(self.done)} (update "
                     f"{self.done} of {total})")
        raise interrupts.RunInterrupted(saved, step, signum)

    def _summary_head(self, status: str) -> dict[str, Any]:
        return {"env": self.b.cfg.env_id, "seeds": self.b.seeds, "status": status,
                "updates_done": self.done, "num_updates": self.b.cfg.num_updates,
                "start_update": self.start}

    def _finish(self, state: Any, compile_s: float) -> RunResult:
        done = self.done
        status = "complete" if done == self.b.cfg.num_updates else "stopped"
        result = _result(self.b, self.history, state, done, compile_s=compile_s,
                         run_s=self.run_s, start=self.start, status=status,
                         run_dir=self.rd.path if self.rd is not None else None)
        result.nonfinite_update = self.first_bad.copy()
        if self.rd is not None:
            if self.saved_step != done:
                self._checkpoint(state)
            if not nonfinite_leaves(self.b.host_view(state)):
                self.rd.save_policy(self.b.host_view(state))
            self.rd.write_summary({**self._summary_head(status), **summary(result)})
        signum = interrupts.requested()
        if signum is not None:  # arrived during the last chunk or the final writes
            where = f": {self.rd.path} holds it" if self.rd is not None else ""
            raise interrupts.RunInterrupted(f"the run had finished{where}", done, signum)
        return result


def _result(batch: _Batch, history: list[dict[str, np.ndarray]], state: Any, done: int,
            **kw: Any) -> RunResult:
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


def _already_complete(batch: _Batch, rundir: RunDir) -> RunResult:
    """A resumed run that had finished: restores its last checkpoint (nothing compiles),
    writes the policy and summary if it stopped before writing them."""
    n = batch.cfg.num_updates
    step, tree = rundir.restore(batch.state_shape(),
                                allow_nonfinite=not batch.opts.stops_on_nonfinite)
    state = batch.place(jax.tree.map(jnp.asarray, tree))
    history = rundir.history(batch.run_names, step)
    result = _result(batch, history, state, step, compile_s=0.0, run_s=0.0, start=step,
                     status="already_complete", run_dir=rundir.path)
    if not rundir.has_final_outputs():
        rundir.save_policy(batch.host_view(state))
        rundir.write_summary({"env": batch.cfg.env_id, "seeds": batch.seeds,
                              "status": "complete", "updates_done": n, "num_updates": n,
                              **summary(result)})
    return result


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
    }


def summary_lines(result: RunResult) -> list[str]:
    """The end-of-training summary; the last line starts with ``final return:``."""
    fr = result.final_return
    lines = [
        f"env {result.cfg.env_id}: {len(result.seeds)} run(s) x {result.env_steps:,d} env steps"
        f" on {result.devices} device(s)",
    ]
    if result.status == "already_complete":
        lines.append(f"the run was already complete ({result.start_update} updates): "
                     "nothing to train, nothing compiled")
    else:
        if result.start_update:
            lines.append(f"resumed at update {result.start_update}: "
                         f"{result.env_steps_this_process:,d} env steps per run in this run")
        lines.append(f"compile {result.compile_s:.1f} s, run {result.run_s:.1f} s, "
                     f"{result.steps_per_second:,.0f} env steps/s")
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
