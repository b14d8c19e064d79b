"""The sweep loop: plan, check, then train batch after batch, each one ``train_runs`` call.

With a sweep directory every batch trains in its own run directory
(``D/batches/<group>-<batch>/``, periodic checkpoints), and its results are written as soon
as it finishes, so an interrupted sweep (Ctrl-C, SIGTERM, kill -9, a crash) keeps every
finished batch and the running one's last checkpoint; ``resume=True`` continues from there
and ends with the same results as an uninterrupted sweep.

Several processes (``ppox.parallel.distributed``) run the same sweep together: every batch's
runs are split across all their devices, only process 0 writes the sweep directory, and what
it reads back (a resume's finished batches, checkpoints) is shared with the others.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from ppox.config import ConfigError, HParams, PPOConfig
from ppox.host import program_cache
from ppox.parallel import distributed
from ppox.sweep.plan import (
    Batch,
    Group,
    SweepPlan,
    expand,
    group_configs,
    plan_group,
)
from ppox.sweep.report import (
    SweepResult,
    print_header,
    print_summary,
    rank_configs,
    seed_stats,
    table_rows,
    write_results,
)
from ppox.sweep.spec import SweepSpec
from ppox.sweep.store import BatchRecord, SweepDir, SweepRecord, read_batch_metrics

CHUNK_NAME = "chunk"  # the name under which the training chunk is traced and compiled


@dataclass(frozen=True)
class SweepOptions:
    """How ``run_sweep`` runs and reports a sweep.

    Attributes:
        base_seed: run ``j`` of a configuration uses ``base_seed + j`` (``spec.seed`` wins).
        num_seeds: seeds per configuration (``spec.seeds`` wins).
        batch_size: at most this many runs per vmapped call (None: as many as the memory
            estimate allows; see ``estimate_run_bytes``). Rounded down to a multiple of the
            local device count.
        memory_budget: bytes the runs of one call may use (None: half the free memory).
        progress_chunks: progress lines (jitted chunks) per batch.
        checkpoint_every: with a sweep directory, checkpoint the running batch every this
            many chunks (0: only when it ends).
        resume: continue the sweep in the sweep directory (its recorded settings must match).
        overwrite: clear an existing sweep directory instead of refusing it.
        top_k: configurations in the printed table and in ``curves_top.png``.
        plots: write the PNG figures.
        out: where the header, progress and summary are printed (None: silent).
        progress: print a line per chunk of each batch (configs done / total, aggregate
            env steps per second).
    """

    base_seed: int = 0
    num_seeds: int = 1
    batch_size: int | None = None
    memory_budget: int | None = None
    progress_chunks: int = 10
    checkpoint_every: int = 0
    resume: bool = False
    overwrite: bool = False
    top_k: int = 5
    plots: bool = True
    out: TextIO | None = sys.stdout
    progress: bool = True


class SweepInterrupted(KeyboardInterrupt):
    """The sweep stopped on SIGINT/SIGTERM; the message says what the sweep directory
    keeps and how to resume (a ``KeyboardInterrupt``, so callers that only know Ctrl-C
    still stop). ``signum``: the signal, when known."""

    def __init__(self, message: str, signum: int | None = None) -> None:
        super().__init__(message)
        self.signum = signum


class CompileCounter:
    """Counts traces and XLA compiles of the training chunk while active (jax.monitoring).

    ``traces``: times JAX traced a function named ``chunk`` (ppox's training chunk: once per
    compile of the training program, none when ppox's program cache served it);
    ``compiles``: backend compiles of it (also as the program cache compiles it,
    ``program_cache.program_name``); ``compile_s``: their seconds.
    """

    def __init__(self, name: str = CHUNK_NAME) -> None:
        self.name = name
        self.traces = 0
        self.compiles = 0
        self.compile_s = 0.0

    def _listen(self, event: str, duration: float, **kwargs: Any) -> None:
        fun = str(kwargs.get("fun_name", ""))
        if event.endswith("jaxpr_trace_duration") and fun == self.name:
            self.traces += 1
        elif event.endswith("backend_compile_duration") and fun in (
                f"jit({self.name})", f"jit({program_cache.program_name(self.name)})"):
            self.compiles += 1
            self.compile_s += duration

    @contextmanager
    def active(self) -> Iterator[CompileCounter]:
        import jax

        jax.monitoring.register_event_duration_secs_listener(self._listen)
        try:
            yield self
        finally:
            jax.monitoring.unregister_event_duration_listener(self._listen)


@dataclass
class _Progress:
    """Running totals for the progress lines."""

    out: TextIO | None
    total_configs: int
    num_seeds: int
    configs_done: int = 0

    def reporter(self, label: str, real: list[int],
                 batch_size: int) -> Callable[[dict[str, Any]], None] | None:
        """A ``train_runs`` reporter for one batch whose real runs are ``real``."""
        if self.out is None:
            return None
        out = self.out
        done_after = self.configs_done + _configs_completed(real, self.num_seeds)
        share = len(real) / batch_size

        def report(info: dict[str, Any]) -> None:
            finished = info["updates_done"] >= info["num_updates"]
            ret = np.asarray(info["recent_return"], np.float64)
            ret_s = (f"{np.nanmean(ret):8.2f} (best {np.nanmax(ret):.2f})"
                     if np.isfinite(ret).any() else "n/a")
            print(f"[{label}] updates {info['updates_done']:>5d}/{info['num_updates']}  "
                  f"configs {done_after if finished else self.configs_done}/"
                  f"{self.total_configs} done  {info['sps'] * share:>12,.0f} env steps/s "
                  f"({len(real)} runs)  return {ret_s}", file=out, flush=True)

        return report


def _configs_completed(real: list[int], num_seeds: int) -> int:
    """Configurations whose last seed is among the runs ``real`` (runs are config-major)."""
    return sum(1 for r in real if r % num_seeds == num_seeds - 1)


def run_sweep(spec: SweepSpec, base_cfg: PPOConfig, base_hp: HParams | None = None,
              out_dir: str | Path | None = None, options: SweepOptions | None = None,
              **overrides: Any) -> SweepResult:
    """Trains every configuration x seed of ``spec`` and writes the results.

    ``base_cfg``/``base_hp`` are the settings the spec's values override (e.g. from CLI
    flags); ``out_dir`` the sweep directory (None: write nothing, just return); ``options``
    (or its fields as keywords, e.g. ``plots=False``) say how (``SweepOptions``). Every
    check -- the spec against the base, the sweep directory, a resume's settings -- raises
    ``ConfigError`` before anything compiles.
    """
    opts = dataclasses.replace(options or SweepOptions(), **overrides)
    t_start = time.perf_counter()
    store = SweepDir(out_dir) if out_dir is not None else None
    plan, base_seed = _prepare(spec, base_cfg, base_hp or HParams(), opts, store)
    print_header(opts.out, plan, base_cfg.env_id)
    with CompileCounter().active() as counter:
        records, stats = _run_batches(plan, store, opts)
    result = _assemble(plan, records, stats, counter.traces, time.perf_counter() - t_start)
    if store is not None:
        result.out_dir = store.path
        distributed.run_on_writer(lambda: write_results(result, plan.spec, base_seed,
                                                        plots=opts.plots, top_k=opts.top_k))
    print_summary(opts.out, result, opts.top_k)
    return result


def _prepare(spec: SweepSpec, base_cfg: PPOConfig, base_hp: HParams, opts: SweepOptions,
             store: SweepDir | None) -> tuple[SweepPlan, int]:
    """Expands and plans the sweep and sets up its directory (new, or a checked resume)."""
    from ppox.host.configfile import run_file_dict
    from ppox.host.run import mesh_devices

    base_seed = spec.seed if spec.seed is not None else opts.base_seed
    num_seeds = spec.seeds if spec.seeds is not None else opts.num_seeds
    if num_seeds < 1:
        raise ConfigError(f"num_seeds={num_seeds} must be >= 1")
    if opts.checkpoint_every < 0:
        raise ConfigError(f"checkpoint_every={opts.checkpoint_every} must be >= 0 (chunks "
                          "between checkpoints; 0: only at the end of each batch)")
    stored = (distributed.from_writer(store.read_record)
              if store is not None and opts.resume else None)
    configs = expand(spec, base_cfg, base_hp)  # everything checked before any compile
    seeds = [base_seed + j for j in range(num_seeds)]
    groups = group_configs(configs, seeds)
    devices = len(mesh_devices())  # several processes: every one's devices
    if stored is not None and opts.batch_size is None and _same_shape(stored, groups):
        plans = stored.plans()  # the recorded plan, not a new memory estimate
    else:
        plans = [plan_group(g, opts.batch_size, opts.memory_budget, devices,
                            opts.progress_chunks) for g in groups]
    resolved = dataclasses.replace(spec, seed=base_seed, seeds=num_seeds)
    record = SweepRecord(
        base=run_file_dict(base_cfg, base_hp, base_seed, num_seeds),
        spec=resolved.to_dict(),
        plan={"batch_size": opts.batch_size, "progress_chunks": opts.progress_chunks,
              "checkpoint_every": opts.checkpoint_every, "devices": devices,
              "groups": [[p.batch_size, p.num_batches, p.num_runs] for p in plans]})
    distributed.check_same_settings({
        "base": record.base, "spec": record.spec, "plan": record.plan,
        "out": None if store is None else str(store.path), "resume": opts.resume,
        "overwrite": opts.overwrite})
    if store is not None:
        if stored is not None:
            distributed.run_on_writer(lambda: store.check_resume(stored, record))
        else:
            distributed.run_on_writer(lambda: store.create(record, opts.overwrite))
    max_batch = opts.batch_size if stored is None else (
        opts.batch_size or stored.plan.get("batch_size"))
    return SweepPlan(spec=spec, configs=configs, groups=groups, plans=plans, seeds=seeds,
                     max_batch=max_batch), base_seed


def _same_shape(stored: SweepRecord, groups: list[Group]) -> bool:
    """The recorded plan covers these groups (else the spec differs: check_resume says so)."""
    recorded = stored.plan.get("groups", [])
    return len(recorded) == len(groups) and all(
        n == g.num_runs for (_, _, n), g in zip(recorded, groups, strict=True))


@dataclass
class _Totals:
    """Sums over the batches: compile and training seconds, env steps trained."""

    compile_s: float = 0.0
    run_s: float = 0.0
    env_steps: int = 0
    read_back: int = 0
    resumed: int = 0


@dataclass
class _Sweep:
    """What every batch of one sweep shares."""

    plan: SweepPlan
    store: SweepDir | None
    opts: SweepOptions
    progress: _Progress
    totals: _Totals


def _run_batches(plan: SweepPlan, store: SweepDir | None,
                 opts: SweepOptions) -> tuple[list[BatchRecord], _Totals]:
    """Every batch in order: read back when a resume finds it finished, else trained."""
    sweep = _Sweep(plan, store, opts, _Progress(
        out=opts.out if opts.progress else None, total_configs=len(plan.configs),
        num_seeds=len(plan.seeds)), _Totals())
    records: list[BatchRecord] = []
    batches = plan.batches()
    for k, batch in enumerate(batches):
        label = f"batch {k + 1}/{len(batches)}" + (
            f", static {batch.group + 1}/{len(plan.groups)}" if len(plan.groups) > 1 else "")
        try:
            _stop_if_requested()
            _before_training(store, k, len(batches))
            record = _batch_result(sweep, batch, label)
        except KeyboardInterrupt as err:
            raise SweepInterrupted(_kept_after_interrupt(store, batches, label, err),
                                   getattr(err, "signum", None) or _requested_signal()) from err
        sweep.progress.configs_done += _configs_completed(batch.real, len(plan.seeds))
        sweep.totals.compile_s += record.compile_s
        sweep.totals.run_s += record.run_s
        sweep.totals.env_steps += record.env_steps
        records.append(record)
    return records, sweep.totals


def _batch_result(sweep: _Sweep, batch: Batch, label: str) -> BatchRecord:
    """The batch's results: read back when a resume finds it finished, else trained (and
    then kept in the sweep directory)."""
    store = sweep.store
    record = (distributed.from_writer(lambda: store.load_batch(batch))
              if store is not None and sweep.opts.resume else None)
    if record is not None:
        sweep.totals.read_back += 1
        _say(sweep.opts.out, f"{label}: finished before, read back from {store.path}")
        return record
    record = _train_batch(sweep, batch, label)
    if store is not None:
        distributed.run_on_writer(lambda: store.save_batch(batch, record))
    return record


def _say(out: TextIO | None, line: str) -> None:
    if out is not None:
        print(line, file=out, flush=True)


def _before_training(store: SweepDir | None, done: int, total: int) -> None:
    """Until a batch trains, a Ctrl-C on the command line exits at once (nothing of that
    batch is worth waiting for); says what the sweep directory keeps."""
    try:
        from ppox.host.interrupts import set_phase
    except ImportError:
        return
    kept = (f"{done} of {total} batches finished and kept in {store.path}; resume with: "
            f"ppox sweep --out {store.path} --resume" if store is not None
            else "nothing is kept (no sweep directory)")
    set_phase("startup", kept)


def _requested_signal() -> int | None:
    """The signal of a pending stop request (``train_runs`` turns SIGINT/SIGTERM into one,
    acted on between its chunks), or None."""
    try:
        from ppox.host.interrupts import requested
    except ImportError:  # a Ctrl-C is then a KeyboardInterrupt wherever it lands
        return None
    return requested()


def _stop_if_requested() -> None:
    """A stop request that arrived while no batch was training stops the sweep before the
    next batch (any process's: several processes stop together)."""
    if distributed.agreed_max([_requested_signal() or 0])[0]:
        raise KeyboardInterrupt


def _kept_after_interrupt(store: SweepDir | None, batches: list[Batch], label: str,
                          err: KeyboardInterrupt) -> str:
    """What an interrupt kept, and the command that continues the sweep."""
    saved = getattr(err, "saved", "")
    running = f"{label}: {saved}" if saved else f"at {label}"
    if store is None:
        return f"{running}; nothing is kept (no sweep directory)"
    # several processes stop together and say the same: what process 0's directory holds
    done = distributed.from_writer(lambda: sum(store.is_finished(b) for b in batches))
    return (f"{done} of {len(batches)} batches finished and kept in {store.path} "
            f"({running}); resume with: ppox sweep --out {store.path} --resume")


def _train_batch(sweep: _Sweep, batch: Batch, label: str) -> BatchRecord:
    """One vmapped ``train_runs`` call over the runs of ``batch``, continuing from its
    checkpoint when one exists (or from the start, said in one line, when that checkpoint
    cannot be used)."""
    from ppox.host.run import train_runs

    store, opts = sweep.store, sweep.opts
    group = sweep.plan.groups[batch.group]
    runs = [group.run(r) for r in batch.runs]
    seeds = [s for _, s in runs]
    start = (distributed.from_writer(lambda: store.start_batch(batch))
             if store is not None else None)
    if start is not None:
        sweep.totals.resumed += 1
        _say(opts.out, f"{label}: resuming from its checkpoint at update {start}")
    args = (group.cfg, [c.hparams for c, _ in runs], seeds)
    kwargs = {"run_dir": store.batch_dir(batch) if store is not None else None,
              "progress_chunks": opts.progress_chunks,
              "checkpoint_every": opts.checkpoint_every if store is not None else 0,
              "reporter": sweep.progress.reporter(label, batch.real, len(batch.runs)),
              **_continue_past_nonfinite()}
    t0 = time.perf_counter()
    try:
        res = train_runs(*args, resume=start is not None, **kwargs)
    except ConfigError as err:  # checked settings: only the batch's checkpoints can fail
        if store is None or start is None:
            raise
        _say(opts.out, f"{label}: cannot continue from its checkpoint ({err}); training it "
                       "again from the start")
        sweep.totals.resumed -= 1
        distributed.run_on_writer(lambda: store.restart_batch(batch))
        start = None
        res = train_runs(*args, resume=False, **kwargs)
    wall_s = time.perf_counter() - t0
    start = getattr(res, "start_update", start or 0)
    metrics = res.metrics
    if start and len(set(seeds)) < len(seeds):
        assert store is not None
        metrics = distributed.from_writer(lambda: read_batch_metrics(
            store.batch_dir(batch), len(runs), group.cfg.num_updates))
    n_real = len(batch.real)
    trained = (group.cfg.num_updates - start) * group.cfg.batch_size * n_real
    from ppox.parallel import gather

    params = gather(res.state.params)  # several processes: each holds its own runs
    return _batch_record(metrics, params, group.cfg, n_real,
                         (wall_s, res.compile_s, res.run_s, trained))


def _continue_past_nonfinite() -> dict[str, Any]:
    """A sweep trains on past a diverged run (ranked last, the other runs of its batch
    untouched), where ``train_runs`` with a run directory would stop the batch."""
    import ppox.host.run as host_run

    options = getattr(host_run, "TrainOptions", None)
    if options is not None and "on_nonfinite" in {f.name for f in dataclasses.fields(options)}:
        return {"on_nonfinite": "continue"}
    return {}


def _batch_record(metrics: dict[str, np.ndarray], params: Any, cfg: PPOConfig, n_real: int,
                  times: tuple[float, float, float, int]) -> BatchRecord:
    """The results of a batch's real runs (the padding repeats come last) from its
    ``[R, U]`` metrics and final parameters."""
    from ppox.host.metrics import episode_means, final_return, learning_curve_auc

    metrics = {k: np.asarray(v)[:n_real] for k, v in metrics.items()}
    wall_s, compile_s, run_s, trained = times
    return BatchRecord(
        final_return=np.asarray(final_return(metrics, min_episodes=cfg.num_envs), np.float64),
        auc=np.asarray(learning_curve_auc(metrics), np.float64),
        curves=np.asarray(episode_means(metrics), np.float32),
        diverged=_diverged_runs(metrics, params)[:n_real],
        wall_s=wall_s, compile_s=compile_s, run_s=run_s, env_steps=trained)


def _diverged_runs(metrics: dict[str, np.ndarray], params: Any) -> np.ndarray:
    """``[R]`` bool: the run's loss became non-finite or its final parameters are."""
    import jax

    bad = ~np.isfinite(np.asarray(metrics["loss"], np.float64)).all(axis=-1)
    if "nonfinite" in metrics:
        bad |= (np.asarray(metrics["nonfinite"]) > 0).any(axis=-1)
    for leaf in jax.tree.leaves(params):
        x = np.asarray(leaf)
        ok = np.isfinite(x.reshape(x.shape[0], -1)).all(axis=-1)
        bad |= ~ok[:len(bad)]
    return bad


def _assemble(plan: SweepPlan, records: list[BatchRecord], totals: _Totals, traces: int,
              wall_s: float) -> SweepResult:
    """The ``[C, S, ...]`` result arrays from the batches' records."""
    n_cfg, num_seeds = len(plan.configs), len(plan.seeds)
    max_updates = max(g.cfg.num_updates for g in plan.groups)
    final = np.full((n_cfg, num_seeds), np.nan)
    auc = np.full((n_cfg, num_seeds), np.nan)
    curves = np.full((n_cfg, num_seeds, max_updates), np.nan, np.float32)
    env_steps = np.full((n_cfg, max_updates), np.nan)
    diverged = np.zeros((n_cfg, num_seeds), bool)
    wall = np.zeros(n_cfg)
    for batch, rec in zip(plan.batches(), records, strict=True):
        group = plan.groups[batch.group]
        u = rec.curves.shape[-1]
        for i, r in enumerate(batch.real):
            c, j = group.configs[r // num_seeds].index, r % num_seeds
            final[c, j] = rec.final_return[i]
            auc[c, j] = rec.auc[i]
            diverged[c, j] = rec.diverged[i]
            curves[c, j, :u] = rec.curves[i]
            env_steps[c, :u] = np.arange(1, u + 1) * group.cfg.batch_size
            wall[c] += rec.wall_s / len(batch.real)
    final_mean, _ = seed_stats(final)
    auc_mean, _ = seed_stats(auc)
    result = SweepResult(
        configs=plan.configs, seeds=plan.seeds, final_return=final, auc=auc, curves=curves,
        env_steps=env_steps, diverged=diverged, wall_s_per_config=wall,
        order=rank_configs(final_mean, diverged.any(axis=1), auc_mean),
        groups=len(plan.groups), batches=plan.num_batches,
        batch_size=max(p.batch_size for p in plan.plans),
        devices=max(p.num_devices for p in plan.plans), traces=traces,
        compile_s=totals.compile_s, run_s=totals.run_s, wall_s=wall_s,
        env_steps_total=totals.env_steps,
        batches_read_back=totals.read_back, batches_resumed=totals.resumed)
    result.table = table_rows(result, plan.spec)
    return result


__all__ = ["CompileCounter", "SweepInterrupted", "SweepOptions", "run_sweep"]
