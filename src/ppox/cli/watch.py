"""``ppox train``'s flags for watching a run: progress, TensorBoard, W&B, evaluation during
training; and what the command does with them before and after training."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Any, Literal

import tyro

from ppox.config import ConfigError, PPOConfig


def watch_fields() -> list[tuple]:
    """The flags, as ``resolve_train_args(extra_fields=...)`` takes them."""
    A, arg, f = Annotated, tyro.conf.arg, dataclasses.field
    return [
        ("no_progress", A[bool, arg(help="one plain progress line per chunk instead of the "
                                         "progress bar (also what a non-terminal gets)")],
         f(default=False)),
        ("tensorboard", A[bool, arg(help="also write TensorBoard event files to "
                                         "RUN_DIR/tensorboard (one TensorBoard run per seed)")],
         f(default=False)),
        ("wandb", A[bool, arg(help="also log to Weights & Biases, one W&B run per seed "
                                   "(pip install 'ppox[wandb]')")],
         f(default=False)),
        ("wandb_project", A[str, arg(help="the W&B project")], f(default="ppox")),
        ("wandb_mode", A[Literal["online", "offline", "disabled"],
                         arg(help="W&B mode; offline writes RUN_DIR/wandb without network "
                                  "(wandb sync uploads it later)")],
         f(default="online")),
        ("eval_every", A[int, arg(help="every N updates (at the next chunk's end) play "
                                       "--eval-episodes deterministic episodes per seed and "
                                       "log eval_return; also at the end (0: off)")],
         f(default=0)),
        ("eval_episodes", A[int | None, arg(help="episodes per evaluation (default: "
                                                 "num_eval_episodes)")],
         f(default=None)),
        ("save_best", A[bool, arg(help="with --eval-every: keep each seed's best-evaluated "
                                       "policy in RUN_DIR/best, a run dir for ppox eval and "
                                       "ppox.load_policy")],
         f(default=False)),
        ("profile_updates", A[int, arg(help="trace N training updates (after the first "
                                            "chunk) with jax.profiler into --profile-dir: "
                                            "a Perfetto trace and TensorBoard's profile "
                                            "files; they run slower while traced (0: off)")],
         f(default=0)),
        ("profile_dir", A[Path | None, arg(help="where --profile-updates writes (default: "
                                                "RUN_DIR/profile)")],
         f(default=None)),
    ]


def logger_options(args: Any) -> Any:
    """The ``LoggerOptions`` the flags ask for; a missing package is one error, now."""
    from ppox.host.loggers import LoggerOptions, check_options

    if (args.wandb_project != "ppox" or args.wandb_mode != "online") and not args.wandb:
        raise ConfigError("--wandb-project and --wandb-mode set up --wandb; add --wandb")
    opts = LoggerOptions(tensorboard=args.tensorboard, wandb=args.wandb,
                         wandb_project=args.wandb_project, wandb_mode=args.wandb_mode)
    check_options(opts)
    return opts


def reporter(args: Any) -> Any:
    """The progress reporter: nothing with --quiet, plain lines with --no-progress or
    without a terminal, else the bar."""
    from ppox.host.progress import make_progress

    return make_progress("none" if args.quiet else "plain" if args.no_progress else "auto")


def evaluator(args: Any, cfg: PPOConfig, num_runs: int, run_dir: Path) -> Any:
    """The ``PeriodicEval`` for --eval-every (None when off)."""
    if args.eval_every < 0:
        raise ConfigError(f"--eval-every {args.eval_every} must be >= 0 (0: off)")
    if args.eval_episodes is not None and args.eval_episodes < 1:
        raise ConfigError(f"--eval-episodes {args.eval_episodes} must be >= 1")
    if args.save_best and not args.eval_every:
        raise ConfigError("--save-best keeps the best-evaluated policy: add --eval-every N")
    if not args.eval_every:
        return None
    from ppox.host.periodic_eval import BEST_DIR, PeriodicEval

    return PeriodicEval(cfg, num_runs, args.eval_every,
                        args.eval_episodes or cfg.num_eval_episodes, seed=args.seed,
                        best_dir=run_dir / BEST_DIR if args.save_best else None,
                        config_file=run_dir / "config.toml")


def after_training(run_dir: Path) -> Path | None:
    """``RUN_DIR/learning_curve.png`` (None when the run has no metrics)."""
    from ppox.cli.plot import write_learning_curve

    try:
        return write_learning_curve(run_dir)
    except ConfigError:
        return None
