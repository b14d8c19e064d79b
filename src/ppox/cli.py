"""``ppox train | eval | sweep | bench | envs``: the command line (tyro).

Settings resolve in this order, later wins: built-in defaults, the per-environment table
(``ppox.defaults``), ``--config file.toml``, then explicit flags. Every ``PPOConfig`` and
``HParams`` field is a flag. Bad input exits with status 2 and one ``error:`` line, before
anything is compiled.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import re
import sys
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any

import tyro

from ppox.config import ConfigError, HParams, PPOConfig, config_field_names, hparam_names

HPARAM_HELP = {
    "learning_rate": "Adam learning rate (start value when annealed)",
    "clip_eps": "PPO policy clip range epsilon",
    "vf_clip_eps": "value-loss clip range (its own knob: it depends on the reward scale)",
    "gamma": "discount factor",
    "gae_lambda": "GAE lambda",
    "ent_coef": "entropy bonus coefficient",
    "vf_coef": "value-loss coefficient",
    "max_grad_norm": "gradient-norm clip bound (of every gradient together, or per network: "
                     "see --grad-clip)",
    "init_log_std": "initial log std of Gaussian policies",
}


def _attribute_help(cls: type) -> dict[str, str]:
    """``name: text`` pairs from a Google-style ``Attributes:`` docstring section."""
    doc = inspect.getdoc(cls) or ""
    if "Attributes:" not in doc:
        return {}
    block = doc.split("Attributes:", 1)[1]
    out: dict[str, str] = {}
    current = None
    for line in block.splitlines():
        m = re.match(r"^\s{4}(\w+):\s*(.*)$", line)
        if m:
            current = m.group(1)
            out[current] = m.group(2).strip()
        elif current and line.strip():
            out[current] += " " + line.strip()
    return out


def _config_fields(defaults: PPOConfig, hp: HParams) -> list[tuple[str, Any, Any]]:
    helps = _attribute_help(PPOConfig)
    hints = typing.get_type_hints(PPOConfig)
    fields = []
    for name in config_field_names():
        if name == "env_id":
            continue
        fields.append((name, Annotated[hints[name], tyro.conf.arg(help=helps.get(name, ""))],
                       dataclasses.field(default=getattr(defaults, name))))
    for name in hparam_names():
        fields.append((name, Annotated[float, tyro.conf.arg(help=HPARAM_HELP[name])],
                       dataclasses.field(default=float(getattr(hp, name)))))
    return fields


def _run_fields(env: str, config: Path | None, seed: int, num_seeds: int,
                layout: str = "single") -> list[tuple]:
    A = Annotated
    arg = tyro.conf.arg
    return [
        ("env", A[str, arg(help="environment id (see `ppox envs`)")],
         dataclasses.field(default=env)),
        ("config", A[Path | None, arg(help="TOML config file ([config], [hparams] tables)")],
         dataclasses.field(default=config)),
        ("seed", A[int, arg(help="PRNG seed (runs use seed, seed+1, ...)")],
         dataclasses.field(default=seed)),
        ("num_seeds", A[int, arg(help="seeds trained together as one vmapped program")],
         dataclasses.field(default=num_seeds)),
        ("run_dir", A[Path | None, arg(help="output directory (default: runs/<env>-<time>)")],
         dataclasses.field(default=None)),
        ("progress_chunks", A[int, arg(help="progress lines (jitted chunks) per run")],
         dataclasses.field(default=20)),
        ("checkpoint_every", A[int, arg(help="save the full state every N chunks (0: at the end)")],
         dataclasses.field(default=0)),
        ("resume", A[bool, arg(help="continue the run in --run-dir from its last checkpoint, "
                                    "with the settings in its config.toml")],
         dataclasses.field(default=False)),
        ("quiet", A[bool, arg(help="no progress lines")], dataclasses.field(default=False)),
        ("data_parallel", A[bool, arg(help="split one run's envs across every local device "
                                           "(pays off for expensive envs, e.g. brax)")],
         dataclasses.field(default=layout == "data_parallel")),
        ("split_networks", A[bool, arg(help="update the actor and the critic at the same time "
                                            "on 2 devices, one run (pays off when the "
                                            "update's small matmuls dominate, e.g. few envs "
                                            "on a CPU)")],
         dataclasses.field(default=layout == "split_networks")),
    ]


@dataclasses.dataclass(frozen=True)
class _Pre:
    """Only what decides the other defaults: the env and the config file."""

    env: str | None = None
    config: Path | None = None
    seed: int | None = None
    num_seeds: int | None = None
    run_dir: Path | None = None
    resume: bool = False


def _pre_parse(argv: Sequence[str]) -> _Pre:
    args = [a for a in argv if a not in ("-h", "--help")]
    pre, _ = tyro.cli(_Pre, args=args, return_unknown_args=True, add_help=False)
    return pre


def resolve_train_args(argv: Sequence[str], prog: str = "ppox train",
                       description: str = "Train PPO.",
                       extra_fields: Sequence[tuple] = ()) -> tuple[Any, PPOConfig, HParams]:
    """Parses train-style flags; returns (parsed args, resolved PPOConfig, HParams).

    Raises ``ConfigError`` for bad values (unknown env, bad config file, invalid numbers).
    """
    from ppox.defaults import resolve
    from ppox.envs import check_env_id
    from ppox.host.configfile import read_run_file

    pre = _pre_parse(argv)
    source = pre.config
    if source is None and pre.resume and pre.run_dir is not None:
        # a resumed run starts from the settings it was started with
        stored = pre.run_dir / "config.toml"
        source = stored if stored.is_file() else None
    file = read_run_file(source) if source is not None else None
    env = pre.env or (file.env if file and file.env else None) or PPOConfig().env_id
    check_env_id(env)
    cfg, hp = resolve(env)
    seed, num_seeds, layout = 0, 1, "single"
    if file is not None:
        from ppox.config import config_from_dict, hparams_from_dict

        cfg = config_from_dict(file.config, cfg)
        hp = hparams_from_dict(file.hparams, hp)
        seed = file.seed if file.seed is not None else seed
        num_seeds = file.num_seeds if file.num_seeds is not None else num_seeds
        layout = file.layout or layout
    cls = dataclasses.make_dataclass(
        "TrainArgs",
        [*_run_fields(env, pre.config, seed, num_seeds, layout), *extra_fields,
         *_config_fields(cfg, hp)],
        frozen=True,
    )
    args = tyro.cli(cls, args=list(argv), prog=prog, description=description)
    cfg = PPOConfig(env_id=args.env, **{k: getattr(args, k) for k in config_field_names()
                                        if k != "env_id"})
    if tuple(cfg.actor_hidden) != cfg.actor_hidden or tuple(cfg.critic_hidden) != cfg.critic_hidden:
        cfg = cfg.replace(actor_hidden=tuple(cfg.actor_hidden),
                          critic_hidden=tuple(cfg.critic_hidden))
    hp = HParams(**{k: float(getattr(args, k)) for k in hparam_names()})
    if args.env != env:
        check_env_id(args.env)
    cfg.validate()
    hp.validate()
    if args.num_seeds < 1:
        raise ConfigError(f"num_seeds={args.num_seeds} must be >= 1")
    return args, cfg, hp


def _default_run_dir(env: str) -> Path:
    import time

    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{env.replace('/', '_')}-{stamp}"


def cmd_train(argv: Sequence[str]) -> int:
    args, cfg, hp = resolve_train_args(argv)
    from ppox._platform import apply_env_cpu_xla_flags
    from ppox.trainer import build

    apply_env_cpu_xla_flags(cfg.env_id)  # before anything runs on a device

    build(cfg)  # env + policy checks (e.g. a discrete-only option on a continuous env)
    from ppox.host.run import print_reporter, summary_lines, train_runs

    run_dir = args.run_dir or _default_run_dir(cfg.env_id)
    if args.resume and args.run_dir is None:
        raise ConfigError("--resume needs --run-dir pointing at the run to continue")
    seeds = [args.seed + i for i in range(args.num_seeds)]
    if args.data_parallel and args.split_networks:
        raise ConfigError("--data-parallel and --split-networks are two ways to spread one "
                          "run over devices; choose one (a config file's `layout` sets one: "
                          "--no-data-parallel / --no-split-networks turns it off)")
    for flag, given in (("--data-parallel", args.data_parallel),
                        ("--split-networks", args.split_networks)):
        if given and args.num_seeds != 1:
            raise ConfigError(f"{flag} spreads one run across devices; use --num-seeds 1")
    print(f"training {cfg.env_id}: {args.num_seeds} seed(s), {cfg.num_updates} updates of "
          f"{cfg.num_envs} envs x {cfg.num_steps} steps -> {run_dir}", flush=True)
    result = train_runs(cfg, [hp] * len(seeds), seeds, run_dir=run_dir,
                        progress_chunks=args.progress_chunks,
                        checkpoint_every=args.checkpoint_every, resume=args.resume,
                        reporter=None if args.quiet else print_reporter(),
                        data_parallel=args.data_parallel,
                        split_networks=args.split_networks)
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


def cmd_eval(argv: Sequence[str]) -> int:
    args = tyro.cli(EvalArgs, args=list(argv), prog="ppox eval")
    from ppox.host.evaluation import evaluate_run

    if args.episodes < 1:
        raise ConfigError(f"episodes={args.episodes} must be >= 1")
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


def cmd_envs(argv: Sequence[str]) -> int:
    from ppox.envs import brax_ids, gymnax_ids

    tyro.cli(_NoArgs, args=list(argv), prog="ppox envs")
    print("gymnax: " + ", ".join(gymnax_ids()))
    print("brax:   " + ", ".join(brax_ids()))
    return 0


@dataclasses.dataclass(frozen=True)
class _NoArgs:
    """List the environment ids ppox accepts."""


def cmd_sweep(argv: Sequence[str]) -> int:
    from ppox.sweep import cmd_sweep as run

    return run(argv)


def cmd_bench(argv: Sequence[str]) -> int:
    from ppox.bench import cmd_bench as run

    return run(argv)


COMMANDS: dict[str, tuple[Callable[[Sequence[str]], int], str]] = {
    "train": (cmd_train, "train PPO (default: CartPole-v1)"),
    "eval": (cmd_eval, "evaluate a run dir deterministically; brax: write an HTML episode"),
    "sweep": (cmd_sweep, "hyperparameter sweep: every configuration and seed in one program"),
    "bench": (cmd_bench, "quick throughput benchmark (scaling, roofline)"),
    "envs": (cmd_envs, "list environment ids"),
}


def _usage() -> str:
    lines = ["usage: ppox {" + ",".join(COMMANDS) + "} [options]", ""]
    lines += [f"  {name:6s} {text}" for name, (_, text) in COMMANDS.items()]
    lines += ["", "`ppox <command> --help` lists a command's options."]
    return "\n".join(lines)


def use_every_cpu_core() -> int:
    """Exposes each CPU core as an XLA device (``--xla_force_host_platform_device_count``).

    XLA runs these programs' small ops on one thread per device, so batches of runs (seeds,
    sweeps) are split across devices to use every core. Only done when the user has not
    set the device count, the CPU backend is in use, and JAX has not started its backends
    yet; ``PPOX_CPU_DEVICES=N`` chooses N (1 turns this off). Returns the count set (0: none).
    """
    flags = os.environ.get("XLA_FLAGS", "")
    platforms = os.environ.get("JAX_PLATFORMS", "")
    if "xla_force_host_platform_device_count" in flags or (platforms and "cpu" not in platforms):
        return 0
    from jax._src import xla_bridge

    if xla_bridge.backends_are_initialized():
        return 0
    want = os.environ.get("PPOX_CPU_DEVICES")
    n = int(want) if want else len(os.sched_getaffinity(0))
    if n <= 1:
        return 0
    os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={n}".strip()
    return n


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    use_every_cpu_core()
    if not argv or argv[0] not in COMMANDS:
        if argv and argv[0] in ("-h", "--help"):
            print(_usage())
            return 0
        if not argv:
            argv = ["train"]  # `ppox` alone trains the embedded default, like `ppox train`
        else:
            print(f"error: unknown command {argv[0]!r}\n{_usage()}", file=sys.stderr)
            return 2
    command, _ = COMMANDS[argv[0]]
    try:
        return command(argv[1:])
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
