"""``ppox sweep``: flags on top of the train-style ones, then ``ppox.sweep.run_sweep``."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

from ppox.cli.args import resolve_train_args
from ppox.config import ConfigError
from ppox.sweep import load_spec, run_sweep


def _sweep_fields() -> list[tuple]:
    import tyro

    A, arg = Annotated, tyro.conf.arg
    return [
        ("spec", A[Path, arg(help="sweep spec TOML: seeds, [grid], [random], [static] "
                             "(see examples/sweep_cartpole.toml)")],
         dataclasses.field(kw_only=True)),
        ("out", A[Path, arg(help="sweep directory for results.csv, curves.npz, best.toml, "
                            "PNGs")], dataclasses.field(kw_only=True)),
        ("batch_size", A[int | None, arg(help="at most this many runs per vmapped call "
                                          "(default: estimated from free memory)")],
         dataclasses.field(default=None)),
        ("memory_budget_gb", A[float | None, arg(help="memory one call may use for the batch "
                                                  "size estimate (default: half the free "
                                                  "memory)")],
         dataclasses.field(default=None)),
        ("top_k", A[int, arg(help="configurations listed and plotted")],
         dataclasses.field(default=5)),
        ("plots", A[bool, arg(help="write the PNG figures (curves_top.png, heatmap.png)")],
         dataclasses.field(default=True)),
    ]


def cmd_sweep(argv: Sequence[str]) -> int:
    """``ppox sweep --env ENV --spec sweep.toml --out DIR [any train flag]``."""
    args, cfg, hp = resolve_train_args(
        argv, prog="ppox sweep",
        description="Hyperparameter sweep: every configuration x seed of a static setting "
                    "trained as one vmapped program (one compile). Train flags set the base "
                    "that the spec's values override. On a CPU every core is an XLA device "
                    "(PPOX_CPU_DEVICES=N chooses N), and the runs are split across them.",
        extra_fields=_sweep_fields())
    from ppox._platform import apply_env_cpu_xla_flags

    apply_env_cpu_xla_flags(cfg.env_id)  # before anything runs on a device
    if args.run_dir is not None:
        raise ConfigError("ppox sweep writes into --out DIR; --run-dir is for ppox train")
    if args.resume or args.checkpoint_every:
        raise ConfigError("ppox sweep does not checkpoint or resume; drop --resume and "
                          "--checkpoint-every")
    if args.data_parallel or args.split_networks:
        raise ConfigError("ppox sweep spreads its runs across the devices itself; drop "
                          "--data-parallel / --split-networks (they spread one run)")
    if args.top_k < 1:
        raise ConfigError(f"top_k={args.top_k} must be >= 1")
    if args.memory_budget_gb is not None and not args.memory_budget_gb > 0:
        raise ConfigError(f"memory_budget_gb={args.memory_budget_gb} must be > 0")
    if args.batch_size is not None and args.batch_size < 1:
        raise ConfigError(f"batch_size={args.batch_size} must be >= 1 (runs per vmapped call)")
    spec = load_spec(args.spec)
    if spec.seeds is not None and args.num_seeds not in (1, spec.seeds):
        print(f"note: the spec's seeds = {spec.seeds} overrides --num-seeds {args.num_seeds}")
    budget = (int(args.memory_budget_gb * 2**30) if args.memory_budget_gb is not None
              else None)
    run_sweep(spec, cfg, hp, args.out, base_seed=args.seed, num_seeds=args.num_seeds,
              batch_size=args.batch_size, memory_budget=budget,
              progress_chunks=args.progress_chunks, top_k=args.top_k,
              plots=args.plots, out=sys.stdout, progress=not args.quiet)
    return 0
