"""Train-style flags: every ``PPOConfig`` and ``HParams`` field, resolved in order.

Settings resolve in this order, later wins: built-in defaults, the per-environment table
(``ppox.defaults``), ``--config file.toml``, then explicit flags. ``ppox train`` and
``ppox sweep`` share this parser.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import tyro

from ppox.config import (
    ConfigError,
    HParams,
    PPOConfig,
    config_field_names,
    field_specs,
    field_types,
    hparam_names,
)


def _config_fields(defaults: PPOConfig, hp: HParams) -> list[tuple[str, Any, Any]]:
    """One flag per ``PPOConfig`` and ``HParams`` field, its help from the field's metadata."""
    hints = field_types(PPOConfig)
    fields = []
    for name, spec in field_specs(PPOConfig).items():
        if name == "env_id":
            continue
        fields.append((name, Annotated[hints[name], tyro.conf.arg(help=spec.help)],
                       dataclasses.field(default=getattr(defaults, name))))
    for name, spec in field_specs(HParams).items():
        fields.append((name, Annotated[float, tyro.conf.arg(help=spec.help)],
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


