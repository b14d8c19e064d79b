"""Train-style flags: every ``PPOConfig`` and ``HParams`` field, resolved in order.

Settings resolve in this order, later wins: built-in defaults, the per-environment table
(``ppox.defaults``), ``--config file.toml``, then explicit flags. ``ppox train`` and
``ppox sweep`` share this parser.

tyro builds the flags from the fields (help text from each field's metadata). Values that
can be wrong (numbers, counts, choices, layer widths) reach us as the text typed and are
converted and checked here, against the field's type and ``FieldSpec``, so that every bad
value is one ``ConfigError`` line (which value, why, what to pass) instead of a parser's box.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import tyro
from tyro.constructors import PrimitiveConstructorSpec

from ppox.config import (
    ConfigError,
    FieldSpec,
    HParams,
    PPOConfig,
    check_applicable,
    check_field,
    config_field_names,
    field_default,
    field_specs,
    field_types,
    hparam_names,
    literal_choices,
    option,
    optional_inner,
)

if TYPE_CHECKING:
    from ppox.parallel.distributed import Processes


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """The flags of a train-style command that are not ``PPOConfig``/``HParams`` fields.

    A config file's top-level keys (env, seed, num_seeds, layout) set some defaults.
    """

    env: str = option("CartPole-v1", help="environment id (see `ppox envs`)")
    config: Path | None = option(None, help="TOML config file ([config], [hparams] tables)")
    seed: int = option(0, lo=0, hi=2**32 - 1, help="PRNG seed (runs use seed, seed+1, ...)",
                       why="must lie in [0, 4294967295] (a JAX key keeps 32 bits of its seed: "
                           "others repeat these)")
    num_seeds: int = option(1, positive=True,
                            help="seeds trained together as one vmapped program")
    run_dir: Path | None = option(None, help="output directory (default: runs/<env>-<time>)")
    progress_chunks: int = option(20, positive=True,
                                  help="progress lines (jitted chunks) per run")
    checkpoint_every: int = option(
        0, lo=0.0, help="save the full state every N chunks (0: at the end)",
        why="must be >= 0 (a checkpoint every N chunks; 0: only at the end)")
    resume: bool = option(False, help="continue the run in --run-dir from its last "
                          "checkpoint, with the settings in its config.toml")
    quiet: bool = option(False, help="no progress lines")
    data_parallel: bool = option(False, help="split one run's envs across every local device "
                                 "(pays off for expensive envs, e.g. brax)")
    split_networks: bool = option(False, help=(
        "update the actor and the critic at the same time on 2 devices, one run (pays off "
        "when the update's small matmuls dominate, e.g. few envs on a CPU)"))


@dataclasses.dataclass(frozen=True)
class _Flag:
    """One flag: its field's name, the type its value is checked against, its spec and
    default, and the annotation tyro parses it with."""

    name: str
    hint: Any
    spec: FieldSpec
    default: Any
    annotation: Any

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


@dataclasses.dataclass(frozen=True)
class _Given:
    """A flag's strings as typed on the command line; converted and checked after parsing."""

    strings: tuple[str, ...]


def _strings_of(value: Any) -> list[str]:
    """A default as the flag's strings (for ``--help``)."""
    if isinstance(value, tuple | list):
        return [str(v) for v in value]
    return [str(value)]


def _metavar(hint: Any) -> str | None:
    inner = optional_inner(hint)
    if inner is not None:
        meta = _metavar(inner)
        return None if meta is None else "{None}|" + meta
    choices = literal_choices(hint)
    if choices is not None:
        return "{" + ",".join(choices) + "}"
    if typing.get_origin(hint) is tuple:
        return "[INT [INT ...]]"
    return {int: "INT", float: "FLOAT", Any: "FLOAT"}.get(hint)


def _as_text(hint: Any) -> Any:
    """``hint`` parsed as raw text (a ``_Given``) where a value can be wrong; else as is."""
    metavar = _metavar(hint)
    if metavar is None:  # bool flags, paths, free strings: tyro parses them
        return hint
    inner = optional_inner(hint) or hint
    spec = PrimitiveConstructorSpec(
        nargs="*" if typing.get_origin(inner) is tuple else 1, metavar=metavar,
        instance_from_str=lambda strings: _Given(tuple(strings)),
        is_instance=lambda value: True, str_from_instance=_strings_of)
    return Annotated[hint, spec]


def _from_strings(hint: Any, strings: Sequence[str]) -> Any:
    """The value a flag's strings stand for; text that is not one stays text (and fails the
    type check with the text in its message)."""
    inner = optional_inner(hint)
    if inner is not None:
        return None if list(strings) == ["None"] else _from_strings(inner, strings)
    if typing.get_origin(hint) is tuple:
        return [_int_or_text(s) for s in strings]
    (text,) = strings
    if hint is int:
        return _int_or_text(text)
    if hint in (float, Any):
        return _float_or_text(text)
    return text


def _int_or_text(text: str) -> int | str:
    """An integer written as digits (``1_000_000``) or as a whole number in e-notation
    (``1e6``); anything else stays text."""
    text = text.strip()
    if re.fullmatch(r"[+-]?\d+(_\d+)*", text):
        return int(text)
    if re.fullmatch(r"[+-]?\d+(\.\d*)?[eE]\+?\d+", text):
        number = float(text)
        if number.is_integer() and abs(number) < 2**63:
            return int(number)
    return text


def _float_or_text(text: str) -> float | str:
    """A number as a float; anything else stays text."""
    try:
        return float(text)
    except ValueError:
        return text


def unknown_option(word: str, name: str, known: Sequence[str], prog: str) -> str:
    """The message for an unknown flag ``word`` (``name``: its flag part as looked up), with
    the nearest of the ``known`` flags."""
    near = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean {near[0]}?)" if near else ""
    return f"unknown option {word!r}{hint}; `{prog} --help` lists the options"


def _to_type(hint: Any, value: Any) -> Any:
    """A checked value in the field's Python type (tuples for widths, floats)."""
    if isinstance(value, list):
        return tuple(value)
    if value is not None and (hint in (float, Any) or optional_inner(hint) is float):
        return float(value)
    return value


def _flags(cfg: PPOConfig, hp: HParams, run: dict[str, Any],
           extra_fields: Sequence[tuple]) -> list[_Flag]:
    """Every flag of the command: run options (defaults in ``run``), extra fields, then
    the ``PPOConfig`` and ``HParams`` fields (defaults from ``cfg``/``hp``)."""
    flags = []
    for cls, defaults in ((RunOptions, run), (PPOConfig, cfg), (HParams, hp)):
        hints = field_types(cls)
        for name, spec in field_specs(cls).items():
            if cls is PPOConfig and name == "env_id":
                continue  # --env
            default = (defaults.get(name, field_default(RunOptions, name))
                       if isinstance(defaults, dict) else getattr(defaults, name))
            tyro_hint = float if cls is HParams else hints[name]
            if cls is HParams:
                default = float(default)
            flags.append(_Flag(name, hints[name], spec, default, Annotated[
                _as_text(tyro_hint), tyro.conf.arg(help=spec.help)]))
        if cls is RunOptions:
            flags += [_extra_flag(field) for field in extra_fields]
    return flags


def _extra_flag(field: tuple) -> _Flag:
    """A command's own field ``(name, Annotated[type, ...], dataclasses.field)``."""
    name, annotation, dc_field = field
    hint, *meta = (typing.get_args(annotation) if typing.get_origin(annotation) is Annotated
                   else (annotation,))
    helps = [m.help for m in meta if getattr(m, "help", None)]
    default = None if dc_field.default is dataclasses.MISSING else dc_field.default
    return _Flag(name, hint, FieldSpec(help=helps[0] if helps else ""), default,
                 Annotated[(_as_text(hint), *meta)] if meta else _as_text(hint))


def _field_of(flag: _Flag, extra_fields: Sequence[tuple]) -> tuple:
    original = next((f for f in extra_fields if f[0] == flag.name), None)
    if original is not None:
        return (flag.name, flag.annotation, original[2])
    return (flag.name, flag.annotation, dataclasses.field(default=flag.default))


@dataclasses.dataclass(frozen=True)
class _Pre:
    """Only what decides the other defaults: the env, the algorithm and the config file."""

    env: str | None = None
    algo: str | None = None
    config: Path | None = None
    seed: str | None = None
    num_seeds: str | None = None
    run_dir: Path | None = None
    resume: bool = False


def _pre_parse(argv: Sequence[str]) -> _Pre:
    args = [a for a in argv if a not in ("-h", "--help")]
    try:
        pre, _ = tyro.cli(_Pre, args=args, return_unknown_args=True, add_help=False,
                          console_outputs=False)
    except SystemExit:  # e.g. --env without a value: the full parse says what is wrong
        return _Pre()
    return pre


def _check_argv(argv: Sequence[str], flags: Sequence[_Flag], extra_fields: Sequence[tuple],
                prog: str) -> None:
    """What the parser would answer with a box: a value missing after its flag, a required
    flag missing."""
    tokens = [a.split("=", 1)[0].replace("_", "-") for a in argv]
    takes_value = {f.flag: f for f in flags if f.hint is not bool
                   and typing.get_origin(optional_inner(f.hint) or f.hint) is not tuple}
    for i, token in enumerate(tokens):
        flag = takes_value.get(token)
        if flag is None or "=" in argv[i]:
            continue
        following = argv[i + 1] if i + 1 < len(argv) else None
        if following is None or following.startswith("--"):
            example = (f"e.g. {flag.flag} {' '.join(_strings_of(flag.default))}"
                       if flag.default is not None else flag.spec.help)
            raise ConfigError(f"{flag.flag} needs a value ({example})")
    if "-h" in argv or "--help" in argv:
        return
    for name, _, dc_field in extra_fields:
        flag = next(f for f in flags if f.name == name)
        if (dc_field.default is dataclasses.MISSING
                and dc_field.default_factory is dataclasses.MISSING
                and flag.flag not in tokens):
            raise ConfigError(f"{prog} needs {flag.flag} ({flag.spec.help}); see "
                              f"`{prog} --help`")


def _unknown_argument(unknown: Sequence[str], argv: Sequence[str], flags: Sequence[_Flag],
                      prog: str) -> str:
    """The message for what the parser did not take: a value after an on/off flag, an
    unknown flag (with the nearest known one) or a stray word."""
    word = unknown[0]
    switches = {f.flag: f for f in flags if f.hint is bool}
    switches |= {"--no-" + f.flag[2:]: f for f in list(switches.values())}
    index = list(argv).index(word) if word in argv else -1
    before = argv[index - 1].replace("_", "-") if index > 0 else ""
    joined = [a.split("=", 1)[0].replace("_", "-") for a in argv if a.endswith("=" + word)]
    before = joined[0] if index < 0 and joined else before  # --anneal-lr=yes
    if before in switches:
        flag = switches[before].flag
        return (f"{before} takes no value (got {word!r}); pass {flag} to turn it on or "
                f"--no-{flag[2:]} to turn it off")
    if word.startswith("-"):
        known = [f.flag for f in flags] + list(switches)
        return unknown_option(word, word.split("=", 1)[0], known, prog)
    return (f"unexpected argument {word!r}: every value follows its flag (e.g. --num-envs 8); "
            f"`{prog} --help` lists the options")


def resolve_train_args(argv: Sequence[str], prog: str = "ppox train",
                       description: str = "Train PPO.",
                       extra_fields: Sequence[tuple] = ()) -> tuple[Any, PPOConfig, HParams]:
    """Parses train-style flags; returns (parsed args, resolved PPOConfig, HParams).

    ``extra_fields``: a command's own flags, ``(name, Annotated[type, tyro.conf.arg(...)],
    dataclasses.field(...))`` each. Raises ``ConfigError`` for bad values (unknown env, bad
    config file, a value of the wrong type or out of its range, an option the env does not
    read), before anything is built or compiled.
    """
    from ppox.defaults import resolve
    from ppox.envs import check_env_id

    argv = list(argv)
    pre = _pre_parse(argv)
    file = _settings_file(pre)
    env = _env_of(pre, file)
    check_env_id(env)
    cfg, hp = resolve(env, pre.algo or (file.config.get("algo") if file else None) or "ppo")
    run: dict[str, Any] = {"env": env, "config": pre.config}
    if file is not None:
        from ppox.config import config_from_dict, hparams_from_dict

        cfg = config_from_dict(file.config, cfg)
        hp = hparams_from_dict(file.hparams, hp)
        run |= {k: v for k, v in (("seed", file.seed), ("num_seeds", file.num_seeds)) if v
                is not None}
        run |= {"data_parallel": file.layout == "data_parallel",
                "split_networks": file.layout == "split_networks"}
    flags = _flags(cfg, hp, run, extra_fields)
    _check_argv(argv, flags, extra_fields, prog)
    cls = dataclasses.make_dataclass(
        "TrainArgs", [_field_of(f, extra_fields) for f in flags], frozen=True)
    args, unknown = tyro.cli(cls, args=argv, prog=prog, description=description,
                             return_unknown_args=True)
    if unknown:
        raise ConfigError(_unknown_argument(unknown, argv, flags, prog))
    args = _checked(args, flags)
    if file is not None and file.config.get("env_config") and "env_config" in _given_names(
            argv, flags):  # --env-config replaces the keys it names of the file's [env]
        from ppox.host.configfile import merge_env_config

        args = dataclasses.replace(args, env_config=merge_env_config(
            file.config["env_config"], args.env_config))
    if args.env != env:
        check_env_id(args.env)
    cfg = PPOConfig(env_id=args.env, **{k: getattr(args, k) for k in config_field_names()
                                        if k != "env_id"})
    if args.seed + args.num_seeds > 2**32:
        raise ConfigError(f"seeds {args.seed}..{args.seed + args.num_seeds - 1} go past "
                          f"4294967295 (a JAX key keeps 32 bits of its seed); lower --seed")
    hp = HParams(**{k: getattr(args, k) for k in hparam_names()})
    cfg.validate()
    hp.validate()
    # a flag this run would not read is refused even at its default: it was asked for
    check_applicable(cfg, hp, given=_given_names(argv, flags))
    return args, cfg, hp


def _checked(args: Any, flags: Sequence[_Flag]) -> Any:
    """``args`` with every flag given as text converted to its type, each checked."""
    changes = {}
    for f in flags:
        value = getattr(args, f.name)
        if isinstance(value, _Given):
            value = _from_strings(f.hint, value.strings)
            check_field(f.name, f.hint, f.spec, f.default, value, style="flag")
            changes[f.name] = _to_type(f.hint, value)
    return dataclasses.replace(args, **changes)


def _given_names(argv: Sequence[str], flags: Sequence[_Flag]) -> set[str]:
    """The fields whose flag appears on the command line."""
    tokens = {a.split("=", 1)[0].replace("_", "-") for a in argv}
    return {f.name for f in flags if f.flag in tokens or "--no-" + f.flag[2:] in tokens}


def _default_run_dir(env: str) -> Path:
    import time

    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{env.replace('/', '_')}-{stamp}"


# --- several processes (multi-host): the runtime joins before anything touches a device ---

DISTRIBUTED_TIMEOUT_S = 60


def distributed_fields() -> list[tuple]:
    """``ppox train`` and ``ppox sweep``'s flags that join several processes into one run
    (as ``resolve_train_args(extra_fields=...)`` takes them); ``join_processes`` reads
    them first."""
    A, arg, f = Annotated, tyro.conf.arg, dataclasses.field
    return [
        ("coordinator", A[str | None, arg(help=(
            "HOST:PORT where process 0 listens: several processes (hosts) train as one, "
            "with --num-processes and --process-id; only process 0 writes"))],
         f(default=None)),
        ("num_processes", A[int | None, arg(help="processes in all (with --coordinator)")],
         f(default=None)),
        ("process_id", A[int | None, arg(help="this process's index, 0 .. num_processes-1 "
                                              "(with --coordinator)")],
         f(default=None)),
        ("distributed", A[bool, arg(help=(
            "join the processes the cluster's environment describes (SLURM, Open MPI, "
            "...): jax.distributed reads the coordinator, count and index itself"))],
         f(default=False)),
        ("distributed_timeout_s", A[int, arg(help=(
            "seconds every process has to connect at start-up; a process silent this long "
            "is declared dead and the others stop"))],
         f(default=DISTRIBUTED_TIMEOUT_S)),
    ]


@dataclasses.dataclass(frozen=True)
class _DistributedPre:
    """The distributed flags as text, read before the full parse."""

    coordinator: str | None = None
    num_processes: str | None = None
    process_id: str | None = None
    distributed: bool = False
    distributed_timeout_s: str | None = None


def _int_flag(name: str, text: str | None, default: int | None = None) -> int | None:
    if text is None:
        return default
    value = _int_or_text(text)
    if not isinstance(value, int):
        raise ConfigError(f"--{name.replace('_', '-')} {text!r} is not a whole number")
    return value


def _settings_file(pre: Any) -> Any:
    """The run file the settings start from: ``--config``, else a resumed run's own
    ``config.toml`` (a resumed run starts from the settings it was started with), else
    None."""
    from ppox.host.configfile import read_run_file

    source = pre.config
    if source is None and pre.resume and pre.run_dir is not None:
        stored = pre.run_dir / "config.toml"
        source = stored if stored.is_file() else None
    return read_run_file(source) if source is not None else None


def _env_of(pre: Any, file: Any) -> str:
    """The env id: the flag, else the settings file's, else the default."""
    return pre.env or (file.env if file and file.env else None) or PPOConfig().env_id


def _env_before_parse(argv: Sequence[str]) -> str:
    """The env id the full parse will resolve (flag, config file, or a resumed run's own)."""
    pre = _pre_parse(argv)
    return _env_of(pre, _settings_file(pre))


def run_joined(procs: Any, cfg: PPOConfig, run: Any) -> int:
    """A command's body once its flags are resolved: the env's CPU XLA flags first (before
    anything runs on a device), then ``run(writer)`` -- alone (``procs`` None: this process
    writes), or as one of several processes, where a dead peer is one line and exit 4."""
    from ppox._platform import apply_env_cpu_xla_flags

    apply_env_cpu_xla_flags(cfg.env_id)
    if procs is None:
        return run(True)
    from ppox.parallel import distributed

    with distributed.exit_on_peer_failure():
        return run(procs.is_writer)


def join_processes(argv: Sequence[str]) -> Processes | None:
    """Joins this process to the others when ``argv`` asks for it (``--coordinator`` /
    ``--distributed``), first thing: the distributed runtime must start before JAX uses a
    device, and resolving some envs' defaults already does. The env's XLA CPU flags are
    applied before it. Returns the ``Processes`` (None: one process, nothing touched).
    Bad combinations are one ``ConfigError`` line."""
    if "-h" in argv or "--help" in argv:
        return None
    args = [a for a in argv if a not in ("-h", "--help")]
    try:
        pre, _ = tyro.cli(_DistributedPre, args=args, return_unknown_args=True,
                          add_help=False, console_outputs=False)
    except SystemExit:  # e.g. --coordinator without a value: the full parse says so
        return None
    num = _int_flag("num_processes", pre.num_processes)
    pid = _int_flag("process_id", pre.process_id)
    timeout = _int_flag("distributed_timeout_s", pre.distributed_timeout_s,
                        DISTRIBUTED_TIMEOUT_S)
    from ppox.parallel import distributed

    if pre.coordinator is None and not pre.distributed:
        if num not in (None, 1) or pid not in (None, 0):
            raise distributed.DistributedError(
                "--num-processes/--process-id need --coordinator HOST:PORT (or "
                "--distributed on a cluster)")
        return None
    from ppox._platform import apply_env_cpu_xla_flags

    apply_env_cpu_xla_flags(_env_before_parse(argv))
    return distributed.initialize(pre.coordinator, num, pid, auto=pre.distributed,
                                  timeout_s=timeout)
