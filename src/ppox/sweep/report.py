"""A sweep's results: the arrays, the ranking, the files (CSV, npz, TOML, JSON, PNG) and
the lines printed before and after it runs."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from ppox.config import hparam_names
from ppox.sweep.plan import SweepConfig, SweepPlan, fmt_value
from ppox.sweep.spec import SweepSpec
from ppox.sweep.store import write_npz


@dataclass
class SweepResult:
    """What a sweep produced. ``C`` configurations, ``S`` seeds, ``U`` updates (the most of
    any static combination; shorter curves are NaN-padded).

    Attributes:
        configs: the ``C`` configurations (``configs[i].index == i``).
        seeds: the ``S`` seeds every configuration ran with.
        final_return: ``[C, S]`` final mean episodic return per run.
        auc: ``[C, S]`` area under each run's learning curve.
        curves: ``[C, S, U]`` mean return of the episodes that ended in each update (NaN
            where none ended or past a shorter run's end).
        env_steps: ``[C, U]`` env steps after each update (NaN past the end).
        diverged: ``[C, S]`` bool: the run's loss or final parameters became non-finite.
        wall_s_per_config: ``[C]`` each configuration's share of its batches' wall time.
        order: ``[C]`` configuration indices, best first (see ``rank_configs``).
        table: the rows of ``results.csv`` (configuration order).
        groups: static combinations compiled (one compile each).
        batches: vmapped calls made.
        batch_size: runs per call (including padding).
        devices: local devices each call was sharded across.
        traces: traces of the training chunk counted during the sweep (== groups when
            every batch of a group reused one executable; fewer after a resume that read
            finished batches back).
        compile_s, run_s, wall_s: compile seconds, training seconds (after compile) and
            total seconds of the sweep (``compile_s`` and ``run_s`` summed over the
            batches, each batch's own figures as recorded when it ran).
        env_steps_total: env steps the real runs trained (padding excluded) in the calls
            whose results these are (a batch resumed from its checkpoint: the updates
            after it), the steps of ``steps_per_second``.
        out_dir: where the files were written (None: nothing written).
        batches_read_back: finished batches a resume read from the sweep directory.
        batches_resumed: batches a resume continued from their checkpoint.
    """

    configs: list[SweepConfig]
    seeds: list[int]
    final_return: np.ndarray
    auc: np.ndarray
    curves: np.ndarray
    env_steps: np.ndarray
    diverged: np.ndarray
    wall_s_per_config: np.ndarray
    order: np.ndarray
    groups: int
    batches: int
    batch_size: int
    devices: int
    traces: int
    compile_s: float
    run_s: float
    wall_s: float
    env_steps_total: int
    out_dir: Path | None = None
    table: list[dict[str, Any]] = field(default_factory=list)
    batches_read_back: int = 0
    batches_resumed: int = 0

    @property
    def best(self) -> SweepConfig:
        return self.configs[int(self.order[0])]

    @property
    def steps_per_second(self) -> float:
        """Aggregate env steps per second of training (compile time excluded)."""
        return self.env_steps_total / max(self.run_s, 1e-9)


def rank_configs(final_mean: np.ndarray, diverged_any: np.ndarray,
                 auc_mean: np.ndarray | None = None) -> np.ndarray:
    """Configuration indices, best first.

    Sort keys, in order: configurations with no diverged run first; higher final return
    mean first, NaN last; higher AUC mean first (NaN last); lower index first.
    ``final_mean``, ``diverged_any``, ``auc_mean``: ``[C]``; returns ``[C]`` int.
    """
    final_mean = np.asarray(final_mean, np.float64)
    auc_mean = np.zeros_like(final_mean) if auc_mean is None else np.asarray(auc_mean,
                                                                             np.float64)
    idx = np.arange(len(final_mean))
    fm = np.where(np.isfinite(final_mean), -final_mean, np.inf)
    am = np.where(np.isfinite(auc_mean), -auc_mean, np.inf)
    return np.lexsort((idx, am, fm, np.asarray(diverged_any, bool)))


def seed_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (population) std across seeds: ``[C, S] -> ([C], [C])``; a NaN seed makes
    its configuration's mean NaN (ranked last), so a failed run is never averaged away."""
    x = np.asarray(x, np.float64)
    return x.mean(axis=1), x.std(axis=1)


def table_rows(result: SweepResult, spec: SweepSpec) -> list[dict[str, Any]]:
    """The rows of ``results.csv``: per configuration its rank, static options,
    hyperparameters, mean and std over seeds of final return and AUC, diverged runs and
    wall time."""
    final_mean, final_std = seed_stats(result.final_return)
    auc_mean, auc_std = seed_stats(result.auc)
    rank = np.empty(len(result.configs), int)
    rank[result.order] = np.arange(1, len(result.configs) + 1)
    rows = []
    for c in result.configs:
        i = c.index
        row: dict[str, Any] = {"config": i, "rank": int(rank[i])}
        row.update({k: c.static.get(k, getattr(c.cfg, k)) for k in spec.static})
        row.update({k: float(v) for k, v in c.hparams.to_dict().items()})
        row.update({
            "final_return_mean": float(final_mean[i]), "final_return_std": float(final_std[i]),
            "auc_mean": float(auc_mean[i]), "auc_std": float(auc_std[i]),
            "diverged": int(result.diverged[i].sum()), "num_seeds": len(result.seeds),
            "wall_time_s": float(result.wall_s_per_config[i]),
        })
        rows.append(row)
    return rows


def _csv_cell(v: Any) -> Any:
    if isinstance(v, tuple | list):
        return " ".join(str(w) for w in v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else repr(v)
    return v


def write_results(result: SweepResult, spec: SweepSpec, base_seed: int, *,
                  plots: bool = True, top_k: int = 5) -> None:
    """Writes ``results.csv``, ``curves.npz``, ``best.toml``, ``spec.toml``, ``sweep.json``
    and the figures into ``result.out_dir`` (each file atomically)."""
    import tomli_w

    from ppox.host.configfile import atomic_write_text, write_run_file

    out_dir = result.out_dir
    assert out_dir is not None
    out_dir.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(result.table[0]), lineterminator="\n")
    writer.writeheader()
    for row in result.table:
        writer.writerow({k: _csv_cell(v) for k, v in row.items()})
    atomic_write_text(out_dir / "results.csv", buf.getvalue())
    _write_curves(result, out_dir / "curves.npz")
    best = result.best
    write_run_file(out_dir / "best.toml", best.cfg, best.hparams, base_seed,
                   len(result.seeds))
    resolved = dataclasses.replace(spec, seed=base_seed, seeds=len(result.seeds))
    atomic_write_text(out_dir / "spec.toml", tomli_w.dumps(resolved.to_dict()))
    atomic_write_text(out_dir / "sweep.json", json.dumps(_summary_json(result), indent=2))
    if plots:
        write_plots(result, spec, top_k)


def _write_curves(result: SweepResult, path: Path) -> None:
    c, s, u = result.curves.shape
    names = list(hparam_names())
    write_npz(
        path, compressed=True,
        returns=result.curves.reshape(c * s, u),
        env_steps=np.repeat(result.env_steps, s, axis=0),
        config=np.repeat(np.arange(c), s),
        seed=np.tile(np.asarray(result.seeds), c),
        final_return=result.final_return.reshape(-1),
        auc=result.auc.reshape(-1),
        diverged=result.diverged.reshape(-1),
        hparam_names=np.asarray(names),
        hparams=np.asarray([[float(getattr(cf.hparams, n)) for n in names]
                            for cf in result.configs]),
    )


def _summary_json(result: SweepResult) -> dict[str, Any]:
    from ppox.host.metrics import to_jsonable

    best = result.best
    return to_jsonable({
        "env": best.cfg.env_id,
        "configs": len(result.configs),
        "seeds": result.seeds,
        "runs": len(result.configs) * len(result.seeds),
        "static_combinations": result.groups,
        "compiles": result.groups,
        "chunk_traces": result.traces,
        "batches": result.batches,
        "batches_read_back": result.batches_read_back,
        "batches_resumed": result.batches_resumed,
        "batch_size": result.batch_size,
        "devices": result.devices,
        "compile_s": result.compile_s,
        "run_s": result.run_s,
        "wall_s": result.wall_s,
        "env_steps_total": result.env_steps_total,
        "steps_per_second": result.steps_per_second,
        "best_config": best.index,
        "best": {**{k: fmt_value(v) for k, v in best.static.items()}, **best.swept},
        "best_final_return_mean": float(np.mean(result.final_return[best.index])),
    })


def write_plots(result: SweepResult, spec: SweepSpec, top_k: int = 5) -> list[Path]:
    """``curves_top.png`` (top-k configurations, band = min..max across seeds) and, for a
    grid of exactly two hyperparameters without a random part, ``heatmap.png`` of the final
    return mean (``heatmap_static<k>.png`` per static combination when there are several)."""
    from ppox.host.plots import forward_fill, plot_learning_curves

    assert result.out_dir is not None
    curves = {}
    for c in result.order[:top_k]:
        cf = result.configs[int(c)]
        fm = float(np.mean(result.final_return[c]))
        x = result.env_steps[c]
        keep = np.isfinite(x)
        curves[f"#{len(curves) + 1} {cf.label()} ({fm:.1f})"] = (
            x[keep], forward_fill(result.curves[c][:, keep]))
    paths = [plot_learning_curves(
        curves, result.out_dir / "curves_top.png",
        title=f"{result.best.cfg.env_id}: top {len(curves)} of {len(result.configs)} "
              f"configurations, {len(result.seeds)} seed(s)")]
    if len(spec.grid) == 2 and not spec.random:
        paths += _write_heatmaps(result, spec)
    return paths


def _write_heatmaps(result: SweepResult, spec: SweepSpec) -> list[Path]:
    from ppox.host.plots import plot_heatmap

    assert result.out_dir is not None
    (ya, yv), (xa, xv) = spec.grid.items()
    final_mean, _ = seed_stats(result.final_return)
    per = len(yv) * len(xv)
    paths = []
    for g in range(result.groups):
        values = final_mean[g * per:(g + 1) * per].reshape(len(yv), len(xv))
        name = "heatmap.png" if result.groups == 1 else f"heatmap_static{g}.png"
        static = " ".join(f"{k}={fmt_value(v)}"
                          for k, v in result.configs[g * per].static.items())
        paths.append(plot_heatmap(
            values, [f"{v:g}" for v in xv], [f"{v:g}" for v in yv],
            result.out_dir / name, xlabel=xa, ylabel=ya,
            title=f"final return, mean over {len(result.seeds)} seed(s)"
                  + (f"\n{static}" if static else ""),
            colorbar_label="final return"))
    return paths


def print_header(out: TextIO | None, plan: SweepPlan, env_id: str) -> None:
    """What the sweep will train: configurations x seeds, compiles, batches, devices."""
    if out is None:
        return
    import jax

    spec, configs, groups = plan.spec, plan.configs, plan.groups
    num_seeds = len(plan.seeds)
    n_hp = len(configs) // len(groups)
    grid = " x ".join(f"{len(v)} {k}" for k, v in spec.grid.items())
    rand = f"{spec.samples} random samples" if spec.random else ""
    what = " x ".join(p for p in (grid, rand) if p) or "the base hyperparameters"
    runs = len(configs) * num_seeds
    print(f"sweep {env_id}: {len(configs)} configurations ({what}"
          f"{f' x {len(groups)} static' if spec.static else ''}) x {num_seeds} seed(s) = "
          f"{runs} runs", file=out)
    n = len(groups)
    if spec.static:
        print(f"static options: {n} combination{'s' if n > 1 else ''} -> {n} "
              f"compile{'s' if n > 1 else ''} (static options change the program; the "
              f"{n_hp} hyperparameter configurations x seeds of each are vmapped)", file=out)
    else:
        print(f"static options: 1 combination -> 1 compile ({runs} runs vmapped in one "
              "program)", file=out)
    first = plan.plans[0]
    devs = jax.local_devices()
    how = "--batch-size" if plan.max_batch is not None else "memory estimate"
    print(f"batches: {plan.num_batches} vmapped call(s) of {first.batch_size} "
          f"runs ({how}; {sum(p.padding for p in plan.plans)} padding run(s)), sharded across "
          f"{first.num_devices} {devs[0].platform} device(s)", file=out)
    hint = cpu_device_hint(devs[0].platform, len(devs), jax.process_count())
    if hint:
        print(hint, file=out)
    out.flush()


def cpu_device_hint(platform: str, local_devices: int, processes: int) -> str | None:
    """A hint where a one-process CPU sweep runs on one XLA device but has more cores; none
    where the user chose one device (``PPOX_CPU_DEVICES`` / ``XLA_FLAGS``) or the sweep spans
    processes (each process trains on its own cores)."""
    cores = len(os.sched_getaffinity(0))
    chosen = os.environ.get("PPOX_CPU_DEVICES") or (
        "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""))
    if platform != "cpu" or local_devices > 1 or processes > 1 or cores <= 1 or chosen:
        return None
    return (f"hint: 1 XLA CPU device for {cores} cores; set PPOX_CPU_DEVICES={cores} (or "
            f"XLA_FLAGS=--xla_force_host_platform_device_count={cores}) before JAX starts to "
            "train runs on every core")


def print_summary(out: TextIO | None, result: SweepResult, top_k: int) -> None:
    """Totals, the top configurations (mean ± std over seeds) and where best.toml is."""
    if out is None:
        return
    runs = len(result.configs) * len(result.seeds)
    print(f"sweep done: {runs} runs in {result.wall_s:.1f} s (compile {result.compile_s:.1f} s "
          f"in {result.groups} compile(s), train {result.run_s:.1f} s): "
          f"{result.steps_per_second:,.0f} env steps/s aggregate", file=out)
    final_mean, final_std = seed_stats(result.final_return)
    auc_mean, _ = seed_stats(result.auc)
    print(f"top {min(top_k, len(result.configs))} of {len(result.configs)} configurations "
          "(final return mean ± std over seeds):", file=out)
    for rank, c in enumerate(result.order[:top_k], start=1):
        cf = result.configs[int(c)]
        div = (f"  [{int(result.diverged[c].sum())} diverged]"
               if result.diverged[c].any() else "")
        print(f"  {rank:>2d}. {final_mean[c]:8.2f} ± {final_std[c]:6.2f}  auc "
              f"{auc_mean[c]:8.2f}  {cf.label()}{div}", file=out)
    best = result.best
    dest = f" -> {result.out_dir / 'best.toml'}" if result.out_dir is not None else ""
    print(f"best config: {best.label()} (final return {final_mean[best.index]:.2f} ± "
          f"{final_std[best.index]:.2f}){dest}", file=out, flush=True)
