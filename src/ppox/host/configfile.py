"""Run configuration files (TOML).

Format (every key optional; ``ppox train`` writes the resolved one into each run dir)::

    env = "CartPole-v1"
    seed = 0
    num_seeds = 1
    layout = "single"      # or "data_parallel" / "split_networks" (one run over devices)
    layout_devices = 1     # devices one run's state is split over
    [config]        # PPOConfig fields
    num_envs = 4
    [hparams]       # HParams fields
    learning_rate = 2.5e-4

A playground env's own options (``--env-config key=value``) are an ``[env]`` table, which
then also holds the env id (TOML cannot have both ``env = "..."`` and ``[env]``)::

    [env]
    id = "playground/CartpoleSwingup"
    impl = "jax"
    episode_length = 500

Read, the table becomes ``env`` and ``config["env_config"]`` (``"impl=jax,episode_length=
500"``); written, a run with env options gets the table instead of ``env_config``.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import tomllib
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Literal

import tomli_w

from ppox.config import (
    META_KEY,
    ConfigError,
    HParams,
    PPOConfig,
    check_field,
    coerce_value,
    config_field_names,
    config_to_dict,
    field_default,
    field_types,
    hparam_names,
    option,
)

TOP_LEVEL_KEYS = ("env", "seed", "num_seeds", "layout", "layout_devices", "config", "hparams")
Layout = Literal["single", "data_parallel", "split_networks"]
LAYOUTS: tuple[str, ...] = typing.get_args(Layout)


@dataclass
class RunFile:
    """The contents of a config file; absent keys are None / empty. The top-level keys are
    ``option``s: their types and ranges are checked as the file is read."""

    env: str | None = option(None, help="environment id", example="CartPole-v1")
    seed: int | None = option(None, lo=0, hi=2**32 - 1, help="the first run's PRNG seed",
                              why="must lie in [0, 4294967295]", example=0)
    num_seeds: int | None = option(None, positive=True, help="runs, seed, seed+1, ...")
    layout: Layout | None = option(None, help="how one run is spread over devices",
                                   example="single")
    layout_devices: int | None = option(None, positive=True,
                                        help="devices one run's state is split over")
    config: dict[str, Any] = field(default_factory=dict)
    hparams: dict[str, Any] = field(default_factory=dict)


def read_run_file(path: str | Path) -> RunFile:
    """Parses and checks a config file: every key known, every value of its field's type
    (and in range where the range needs no other setting), tables converted (lists of widths
    to tuples, numbers to floats). Every problem is one ``ConfigError`` line naming the file.
    """
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"config file {str(path)!r} is a directory; pass a .toml file")
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist; pass an existing .toml file")
    try:
        text = path.read_text()
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        hint = ""
        if "[env]" in text and any(line.replace(" ", "").startswith("env=")
                                   for line in text.splitlines()):
            hint = ('; with an [env] table the env id is its key id, e.g. [env] then '
                    'id = "playground/CartpoleBalance", not a top-level env = "..."')
        raise ConfigError(f"config file {str(path)!r} is not valid TOML: {err}{hint}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"config file {str(path)!r} cannot be read ({err}); pass a readable "
                          "UTF-8 .toml file") from None
    where = f"config file {str(path)!r}"
    data = _env_table(where, data)
    unknown = sorted(set(data) - set(TOP_LEVEL_KEYS))
    if unknown:
        raise ConfigError(
            f"{where}: unknown key {unknown[0]!r}; top-level keys are "
            f"{', '.join(TOP_LEVEL_KEYS)} (PPOConfig fields go under [config], "
            "hyperparameters under [hparams])")
    tables = {}
    for name, cls, known in (("config", PPOConfig, config_field_names()),
                             ("hparams", HParams, hparam_names())):
        table = data.get(name, {})
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: {name} = {table!r} must be a table: a [{name}] line "
                              "followed by name = value lines")
        bad = sorted(set(table) - set(known))
        if bad:
            raise ConfigError(
                f"{where}: unknown [{name}] key {bad[0]!r}; valid keys: {', '.join(known)}")
        if "env_id" in table:
            raise ConfigError(f"{where}: [config] env_id: the environment is the top-level "
                              f"key env, e.g. env = {table['env_id']!r} before any table")
        tables[name] = {k: _coerced(where, name, cls, k, v) for k, v in table.items()}
    top = {}
    for f in dataclasses.fields(RunFile):
        if META_KEY in f.metadata and f.name in data:
            try:
                check_field(f.name, field_types(RunFile)[f.name], f.metadata[META_KEY], None,
                            data[f.name], style="toml")
            except ConfigError as err:
                raise ConfigError(f"{where}: {err}") from None
            top[f.name] = data[f.name]
    return RunFile(**top, config=tables["config"], hparams=tables["hparams"])


ENV_ID_KEY = "id"


def _env_table(where: str, data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with an ``[env]`` table turned into ``env`` (its ``id``, if any) and
    ``config["env_config"]`` (its other keys as ``key=value`` pairs, nested tables as dotted
    keys); which keys the env has is checked when the env is built."""
    table = data.get("env")
    if not isinstance(table, dict):
        return data
    options = _flat_options(where, {k: v for k, v in table.items() if k != ENV_ID_KEY})
    data = {k: v for k, v in data.items() if k != "env"}
    if ENV_ID_KEY in table:
        data["env"] = table[ENV_ID_KEY]
    if not options:
        return data
    config = data.get("config", {})
    if isinstance(config, dict) and "env_config" in config:
        raise ConfigError(f"{where}: the env's options are given twice, as [config] "
                          "env_config and as an [env] table; keep one (the [env] table)")
    env_id = data.get("env")
    if isinstance(env_id, str) and not env_id.startswith("playground/"):
        raise ConfigError(f"{where}: [env] options ({', '.join(options)}) apply to playground "
                          f"envs only, not {env_id}; its settings are [config] fields")
    pairs = ",".join(f"{k}={_option_text(v)}" for k, v in options.items())
    return {**data, "config": {**(config if isinstance(config, dict) else {}),
                               "env_config": pairs}}


def _flat_options(where: str, table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in table.items():
        name = prefix + key
        if isinstance(value, dict):
            out |= _flat_options(where, value, name + ".")
        elif isinstance(value, bool | int | float) or (
                isinstance(value, str) and value and not set(value) & set(",= ")):
            out[name] = value
        else:
            raise ConfigError(f"{where}: [env] {name} = {value!r}: an env option is a number, "
                              "true/false or a word (no commas, '=' or spaces)")
    return out


def _option_text(value: Any) -> str:
    """An [env] value as ``parse_env_config`` reads it back."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def env_table(env_id: str, env_config: str) -> dict[str, Any]:
    """The ``[env]`` table of a run with these env options (``"impl=jax,..."``): the id, then
    the options with their values typed (dotted keys as nested tables)."""
    from ppox.envs.playground import parse_env_config

    table: dict[str, Any] = {ENV_ID_KEY: env_id}
    for key, value in parse_env_config(env_config).items():
        *parents, leaf = key.split(".")
        node = table
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return table


def merge_env_config(base: str, override: str) -> str:
    """``base`` env options with ``override``'s keys replacing theirs (a config file's
    ``[env]`` table, then ``--env-config`` on the command line)."""
    from ppox.envs.playground import parse_env_config

    merged = parse_env_config(base) | parse_env_config(override)
    return ",".join(f"{k}={_option_text(v)}" for k, v in merged.items())


def _coerced(where: str, table: str, cls: type, key: str, value: Any) -> Any:
    try:
        value = coerce_value(cls, key, value, style="toml")
        if cls is HParams:
            HParams().replace(**{key: value}).validate()  # its bounds
        return value
    except ConfigError as err:
        raise ConfigError(f"{where}: [{table}] {err}") from None


def run_file_dict(cfg: PPOConfig, hp: HParams, seed: int, num_seeds: int = 1,
                  layout: str = "single", layout_devices: int = 1) -> dict[str, Any]:
    """The run file's contents. An option that is None (off) is left out: TOML has no null,
    and an absent key reads back as the default, None."""
    conf = {k: v for k, v in config_to_dict(cfg).items() if v is not None}
    env = conf.pop("env_id")
    env_config = conf.pop("env_config") if conf.get("env_config") else ""  # -> [env]
    return {
        "env": env_table(env, env_config) if env_config else env,
        "seed": int(seed),
        "num_seeds": int(num_seeds),
        "layout": layout,
        "layout_devices": int(layout_devices),
        "config": conf,
        "hparams": {k: float(v) for k, v in hp.to_dict().items()},
    }


def _comparable(data: dict[str, Any]) -> dict[str, Any]:
    """A run file's contents with an ``[env]`` table as ``env`` and ``env_config`` (so a run
    written either way compares), the env options in sorted order."""
    data = _env_table("", data)
    data.setdefault("config", {}).setdefault("env_config", "")  # a file from before it
    data["config"].setdefault("auto_reset", "fresh")  # what runs from before it did
    data.setdefault("hparams", {})
    if data["config"]["env_config"]:
        data["config"]["env_config"] = ",".join(sorted(
            merge_env_config("", data["config"]["env_config"]).split(",")))
    return data


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object]) -> None:
    """Calls ``write(file)`` on a temporary file in the same directory, syncs it and
    ``os.replace``s it into place: a reader (or a crash) sees the old file or the new one,
    never half of one. The file gets the mode a plain ``open`` would give it (0666 less the
    umask), not the temporary file's private 0600."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    """This process's umask (read by setting it, then putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | Path, text: str) -> None:
    """``text`` written atomically (see ``atomic_write``)."""
    atomic_write(path, lambda f: f.write(text.encode()))


def write_run_file(path: str | Path, cfg: PPOConfig, hp: HParams, seed: int,
                   num_seeds: int = 1, layout: str = "single", layout_devices: int = 1) -> None:
    atomic_write_text(path, tomli_w.dumps(
        run_file_dict(cfg, hp, seed, num_seeds, layout, layout_devices)))


def run_file_differences(path: str | Path, given: dict[str, Any]) -> list[str]:
    """What differs between the run file at ``path`` and ``given`` (a ``run_file_dict``),
    one ``"name: X here, Y in the run"`` string per setting. Keys the stored file lacks (a run
    dir written before the setting existed) are not compared, except options whose default is
    None: run files leave None out, so there an absent key means None."""
    stored = _comparable(tomllib.loads(Path(path).read_text()))
    given = _comparable(tomllib.loads(tomli_w.dumps(given)))  # as TOML reads it back
    out = []
    pairs = [(stored, given)] + [(stored.get(t, {}), given[t]) for t in ("config", "hparams")]
    for old, new in pairs:
        for key, value in new.items():
            if not isinstance(value, dict) and key in old and old[key] != value:
                out.append(f"{key}: {value!r} here, {old[key]!r} in the run")
    old, new = stored.get("config", {}), given["config"]
    for key in sorted(set(old) ^ set(new)):
        if key in config_field_names() and field_default(PPOConfig, key) is None:
            out.append(f"{key}: {new.get(key)!r} here, {old.get(key)!r} in the run")
    return out
