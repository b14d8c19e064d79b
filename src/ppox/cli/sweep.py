"""``ppox sweep``: flags on top of the train-style ones, then ``ppox.sweep.run_sweep``.

``ppox sweep --out DIR --resume`` reads the settings recorded in DIR (base.toml, spec.toml,
plan.json) as defaults, so it needs no other flag; a flag given that differs is refused by
the resume, naming the difference. ``--coordinator``/``--distributed`` split every batch
across several processes' devices; only process 0 prints and writes DIR.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

from ppox.cli.args import resolve_train_args
from ppox.config import ConfigError
from ppox.sweep import SweepInterrupted, SweepOptions, load_spec, run_sweep
from ppox.sweep.store import BASE_FILE, PLAN_FILE, SPEC_FILE, SweepDir


def _sweep_fields() -> list[tuple]:
    import tyro

    A, arg = Annotated, tyro.conf.arg
    return [
        ("spec", A[Path | None, arg(help="sweep spec TOML: seeds, [grid], [random], [static] "
                                    "(see examples/sweep_cartpole.toml); a resume reads "
                                    "the sweep's own")],
         dataclasses.field(default=None)),
        ("out", A[Path, arg(help="sweep directory for results.csv, curves.npz, best.toml, "
                            "PNGs, and each batch's run directory")],
         dataclasses.field(kw_only=True)),
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
        *_overwrite_field(),
    ]


def _overwrite_field() -> list[tuple]:
    """``--overwrite``, unless the shared train flags already have it."""
    import tyro

    from ppox.cli import args as train_args

    options = getattr(train_args, "RunOptions", None)
    if options is not None and "overwrite" in {f.name for f in dataclasses.fields(options)}:
        return []
    help_ = "clear an existing sweep directory --out instead of refusing it"
    return [("overwrite", Annotated[bool, tyro.conf.arg(help=help_)],
             dataclasses.field(default=False))]


def cmd_sweep(argv: Sequence[str]) -> int:
    """``ppox sweep --env ENV --spec sweep.toml --out DIR [any train flag]``;
    ``ppox sweep --out DIR --resume`` continues an interrupted sweep with its settings."""
    from ppox.cli.args import distributed_fields, join_processes, run_joined

    argv = [*_resume_defaults(argv), *argv]
    procs = join_processes(argv)  # several processes: joined before anything uses a device
    args, cfg, hp = resolve_train_args(
        argv, prog="ppox sweep",
        description="Hyperparameter sweep: every configuration x seed of a static setting "
                    "trained as one vmapped program (one compile). Train flags set the base "
                    "that the spec's values override. On a CPU every core is an XLA device "
                    "(PPOX_CPU_DEVICES=N chooses N), and the runs are split across them. "
                    "Each finished batch is kept in --out; --resume continues an interrupted "
                    "sweep.",
        extra_fields=[*_sweep_fields(), *distributed_fields()])
    return run_joined(procs, cfg, lambda writer: _sweep(args, cfg, hp, writer=writer))


def _sweep(args: Any, cfg: Any, hp: Any, writer: bool) -> int:
    """``ppox sweep`` once the flags are resolved; ``writer``: this process prints and
    writes the sweep directory (the only one, or process 0 of several, which split every
    batch's runs across all their devices)."""
    _check_args(args)
    if args.resume:
        SweepDir(args.out).read_record()  # one line when --out holds no sweep
    spec = load_spec(args.spec)
    if spec.seeds is not None and args.num_seeds not in (1, spec.seeds) and writer:
        print(f"note: the spec's seeds = {spec.seeds} overrides --num-seeds {args.num_seeds}")
    budget = (int(args.memory_budget_gb * 2**30) if args.memory_budget_gb is not None
              else None)
    options = SweepOptions(
        base_seed=args.seed, num_seeds=args.num_seeds, batch_size=args.batch_size,
        memory_budget=budget, progress_chunks=args.progress_chunks,
        checkpoint_every=args.checkpoint_every, resume=args.resume,
        overwrite=args.overwrite, top_k=args.top_k, plots=args.plots,
        out=sys.stdout if writer else None, progress=not args.quiet)
    try:
        run_sweep(spec, cfg, hp, args.out, options)
    except SweepInterrupted as stop:
        import signal

        name = f" ({signal.Signals(stop.signum).name})" if stop.signum else ""
        print(f"interrupted{name}: {stop}", file=sys.stderr, flush=True)
        return 130
    return 0


def _check_args(args: Any) -> None:
    """The sweep's own flag rules, each one ``ConfigError`` line."""
    if args.run_dir is not None:
        raise ConfigError("ppox sweep writes into --out DIR; --run-dir is for ppox train")
    if args.data_parallel or args.split_networks:
        raise ConfigError("ppox sweep spreads its runs across the devices itself; drop "
                          "--data-parallel / --split-networks (they spread one run)")
    if args.resume and args.overwrite:
        raise ConfigError("--resume continues the sweep in --out and --overwrite clears it; "
                          "choose one")
    if args.spec is None and not args.resume:
        raise ConfigError("ppox sweep needs --spec SPEC.toml (see examples/sweep_cartpole.toml)"
                          ", or --resume to continue the sweep in --out")
    if args.checkpoint_every < 0:
        raise ConfigError(f"checkpoint_every={args.checkpoint_every} must be >= 0 (chunks "
                          "between checkpoints of the running batch; 0: at its end)")
    if args.progress_chunks < 1:
        raise ConfigError(f"progress_chunks={args.progress_chunks} must be >= 1")
    if args.top_k < 1:
        raise ConfigError(f"top_k={args.top_k} must be >= 1")
    if args.memory_budget_gb is not None and not args.memory_budget_gb > 0:
        raise ConfigError(f"memory_budget_gb={args.memory_budget_gb} must be > 0")
    if args.batch_size is not None and args.batch_size < 1:
        raise ConfigError(f"batch_size={args.batch_size} must be >= 1 (runs per vmapped call)")


@dataclasses.dataclass(frozen=True)
class _Pre:
    """Only what a resume's defaults depend on."""

    out: Path | None = None
    config: Path | None = None
    resume: bool = False


def _resume_defaults(argv: Sequence[str]) -> list[str]:
    """For ``--resume`` of a sweep directory: its recorded settings as flags in front of the
    given ones (a given flag wins, and a different value is then refused by the resume)."""
    import tyro

    args = [a for a in argv if a not in ("-h", "--help")]
    try:
        pre, _ = tyro.cli(_Pre, args=args, return_unknown_args=True, add_help=False)
    except SystemExit:
        return []  # the full parser reports the problem
    if not pre.resume or pre.out is None or not (pre.out / PLAN_FILE).is_file():
        return []
    plan = json.loads((pre.out / PLAN_FILE).read_text())
    flags = ["--spec", str(pre.out / SPEC_FILE),
             "--progress-chunks", str(plan.get("progress_chunks", 20)),
             "--checkpoint-every", str(plan.get("checkpoint_every", 0))]
    if pre.config is None:
        flags = ["--config", str(pre.out / BASE_FILE), *flags]
    return flags
