"""``ppox train``, ``ppox eval`` and ``ppox envs``."""

from __future__ import annotations

import dataclasses
import signal
import sys
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import tyro

from ppox.cli.args import _default_run_dir, resolve_train_args
from ppox.cli.command_flags import parse_command
from ppox.cli.watch import watch_fields
from ppox.config import ConfigError


def _train_fields() -> list[tuple]:
    """``ppox train``'s own flags beside the train-style ones."""
    A, arg = Annotated, tyro.conf.arg
    return [
        ("overwrite", A[bool, arg(help="replace the run already in --run-dir (clears it) "
                                       "instead of refusing to touch it")],
         dataclasses.field(default=False)),
        ("checkpoint_every_s", A[float, arg(help="also save the full state when this many "
                                                 "seconds passed since the last save (0: "
                                                 "off); an interrupt always saves")],
         dataclasses.field(default=0.0)),
        *watch_fields(),
    ]


def _resume_flags(args: object) -> str:
    """The flags that change how a run is cut into chunks and saved (not in config.toml):
    a resume with the same ones continues bit for bit."""
    out = ""
    if args.progress_chunks != 20:
        out += f" --progress-chunks {args.progress_chunks}"
    if args.checkpoint_every:
        out += f" --checkpoint-every {args.checkpoint_every}"
    if args.checkpoint_every_s:
        out += f" --checkpoint-every-s {args.checkpoint_every_s:g}"
    if getattr(args, "coordinator", None) is not None:  # every process runs it again
        out += (f" --coordinator {args.coordinator} --num-processes {args.num_processes} "
                f"--process-id {args.process_id}")
    if getattr(args, "distributed", False):
        out += " --distributed"
    return out + (" --quiet" if args.quiet else "")


def _check_run_flags(args: Any) -> None:
    if args.resume and args.run_dir is None:
        raise ConfigError("--resume needs --run-dir pointing at the run to continue")
    if args.data_parallel and args.split_networks:
        raise ConfigError("--data-parallel and --split-networks are two ways to spread one "
                          "run over devices; choose one (a config file's `layout` sets one: "
                          "--no-data-parallel / --no-split-networks turns it off)")
    for flag, given in (("--data-parallel", args.data_parallel),
                        ("--split-networks", args.split_networks)):
        if given and args.num_seeds != 1:
            raise ConfigError(f"{flag} spreads one run across devices; use --num-seeds 1")
    if args.profile_updates < 0:
        raise ConfigError(f"--profile-updates {args.profile_updates} must be >= 0 (the "
                          "updates to trace; 0: off)")


def _announce(args: Any, cfg: Any, run_dir: Path, info: dict) -> None:
    """The first line, once the run directory's rules hold (nothing compiled yet)."""
    if info["complete"]:
        print(f"{run_dir}: the run is complete ({cfg.num_updates} updates); nothing to "
              "train", flush=True)
        return
    start = (f", resuming at update {info['resume_update']}"
             if info["resume_update"] is not None else "")
    print(f"training {cfg.env_id}: {args.num_seeds} seed(s), {cfg.num_updates} updates of "
          f"{cfg.num_envs} envs x {cfg.num_steps} steps -> {run_dir}{start}", flush=True)


def cmd_train(argv: Sequence[str]) -> int:
    from ppox.cli.args import distributed_fields, join_processes, run_joined

    procs = join_processes(argv)  # several processes: joined before anything uses a device
    args, cfg, hp = resolve_train_args(argv, extra_fields=[*_train_fields(),
                                                           *distributed_fields()])
    if procs is None:  # a small single run: one CPU thread (before JAX starts)
        from ppox._platform import use_one_cpu_thread_for

        use_one_cpu_thread_for(cfg, args.num_seeds, args.data_parallel or args.split_networks)
    return run_joined(procs, cfg, lambda writer: _train(args, cfg, hp, writer=writer))


def _train(args: Any, cfg: Any, hp: Any, writer: bool) -> int:
    """``ppox train`` once the flags are resolved; ``writer``: this process prints and
    writes (the only one, or process 0 of several)."""
    from ppox.parallel import distributed
    from ppox.trainer import build

    build(cfg)  # env + policy checks (e.g. a discrete-only option on a continuous env)
    from ppox.host import interrupts
    from ppox.host.interrupts import EXIT_INTERRUPTED, RunInterrupted
    from ppox.host.prefetch import TRAIN_TAIL_MODULES
    from ppox.host.run import summary_lines, train_runs
    from ppox.host.rundir import resume_command

    _check_run_flags(args)
    # several processes: process 0's default (a time stamp) for all of them
    run_dir = Path(distributed.broadcast(str(args.run_dir or _default_run_dir(cfg.env_id))))
    seeds = [args.seed + i for i in range(args.num_seeds)]
    interrupts.set_phase("startup", (
        f"{run_dir} is unchanged; resume with `{resume_command(run_dir, _resume_flags(args))}`"
        if args.resume else "nothing was saved"))
    from ppox.cli import watch
    from ppox.host.progress import close as close_progress

    log_opts = watch.logger_options(args)  # a missing package: one error, before the compile
    evaluator = watch.evaluator(args, cfg, len(seeds), run_dir)
    reporter = watch.reporter(args) if writer else None
    try:
        result = train_runs(cfg, [hp] * len(seeds), seeds, run_dir=run_dir,
                            progress_chunks=args.progress_chunks,
                            checkpoint_every=args.checkpoint_every, resume=args.resume,
                            reporter=reporter, logger_options=log_opts, evaluator=evaluator,
                            data_parallel=args.data_parallel,
                            split_networks=args.split_networks, overwrite=args.overwrite,
                            checkpoint_every_s=args.checkpoint_every_s,
                            prefetch=TRAIN_TAIL_MODULES if writer else (),
                            profile_updates=args.profile_updates,
                            profile_dir=args.profile_dir,
                            on_start=partial(_announce, args, cfg, run_dir) if writer else None)
    except RunInterrupted as stop:
        again = (f"; resume with: {resume_command(run_dir, _resume_flags(args))}"
                 if stop.checkpoint_step is not None else "")
        print(f"interrupted ({signal.Signals(stop.signum).name}): {stop.saved}{again}",
              file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    finally:
        close_progress(reporter)  # the bar ends (and the cursor comes back) before any text
    if not writer:
        return 0
    watch.after_training(run_dir)  # RUN_DIR/learning_curve.png
    for line in summary_lines(result):
        print(line, flush=True)
    return 0


@dataclasses.dataclass(frozen=True)
class EvalArgs:
    """Evaluate a trained run deterministically (the policy's mean/argmax action)."""

    run_dir: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(help="a ppox train run dir")]
    episodes: int = 16
    """number of evaluation episodes"""
    seed: int = 0
    """PRNG seed for the evaluation episodes' initial states"""
    run_index: int = 0
    """which run of a multi-seed run dir to evaluate"""
    html: Path | None = None
    """brax only: where to write the HTML visualisation (default: RUN_DIR/episode.html)"""
    no_html: bool = False
    """brax only: do not write the HTML file"""
    stochastic: bool = False
    """sample actions instead of taking the mode"""
    video: Path | None = None
    """also write one deterministic episode as a GIF or MP4 (brax and playground without
    offscreen OpenGL, EGL or OSMesa: brax's HTML viewer)"""


def cmd_eval(argv: Sequence[str]) -> int:
    args = parse_command(EvalArgs, argv, "ppox eval")
    from ppox.host.evaluation import evaluate_run

    if args.episodes < 1:
        raise ConfigError(f"episodes={args.episodes} must be >= 1")
    if args.video is not None:
        from ppox.host.video import prefer_offscreen_gl, record_video

        prefer_offscreen_gl()  # before anything imports mujoco
        vid = record_video(args.run_dir, args.video, seed=args.seed, run_index=args.run_index)
        if vid.note:
            print(f"video: {vid.note}")
        frames = f"{vid.frames} frames, " if vid.frames else ""
        print(f"wrote {vid.path} ({frames}{vid.renderer}; episode return "
              f"{vid.episode_return:.2f}, length {vid.episode_length})")
    out = evaluate_run(args.run_dir, episodes=args.episodes, seed=args.seed,
                       run_index=args.run_index, html=None if args.no_html else (
                           args.html or args.run_dir / "episode.html"),
                       deterministic=not args.stochastic)
    if out.html_path is not None:
        print(f"wrote {out.html_path}")
    print(f"episode length: {out.lengths.mean():.1f} (min {out.lengths.min()}, "
          f"max {out.lengths.max()})")
    print(f"eval return: {out.returns.mean():.2f} ± {out.returns.std():.2f} over "
          f"{len(out.returns)} episodes")
    return 0
