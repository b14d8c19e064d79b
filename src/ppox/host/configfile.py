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
"""

from __future__ import annotations

import os
import tempfile
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from ppox.config import (
    ConfigError,
    HParams,
    PPOConfig,
    config_field_names,
    config_to_dict,
    hparam_names,
)

TOP_LEVEL_KEYS = ("env", "seed", "num_seeds", "layout", "layout_devices", "config", "hparams")
LAYOUTS = ("single", "data_parallel", "split_networks")


@dataclass
class RunFile:
    """The contents of a config file; absent keys are None / empty."""

    env: str | None = None
    seed: int | None = None
    num_seeds: int | None = None
    layout: str | None = None
    layout_devices: int | None = None
    config: dict[str, Any] = field(default_factory=dict)
    hparams: dict[str, Any] = field(default_factory=dict)


def read_run_file(path: str | Path) -> RunFile:
    """Parses and checks a config file; every problem is one ``ConfigError`` line."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist; pass an existing .toml file")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"config file {str(path)!r} is not valid TOML: {err}") from None
    unknown = sorted(set(data) - set(TOP_LEVEL_KEYS))
    if unknown:
        raise ConfigError(
            f"config file {str(path)!r}: unknown key {unknown[0]!r}; top-level keys are "
            f"{', '.join(TOP_LEVEL_KEYS)} (PPOConfig fields go under [config], "
            "hyperparameters under [hparams])")
    cfg = data.get("config", {})
    hps = data.get("hparams", {})
    for table, known, what in ((cfg, config_field_names(), "[config]"),
                               (hps, hparam_names(), "[hparams]")):
        bad = sorted(set(table) - set(known))
        if bad:
            raise ConfigError(
                f"config file {str(path)!r}: unknown {what} key {bad[0]!r}; valid keys: "
                f"{', '.join(known)}")
    layout = data.get("layout")
    if layout is not None and layout not in LAYOUTS:
        raise ConfigError(f"config file {str(path)!r}: layout={layout!r} is not one of "
                          f"{', '.join(map(repr, LAYOUTS))}")
    return RunFile(env=data.get("env"), seed=data.get("seed"), num_seeds=data.get("num_seeds"),
                   layout=layout, layout_devices=data.get("layout_devices"),
                   config=cfg, hparams=hps)


def run_file_dict(cfg: PPOConfig, hp: HParams, seed: int, num_seeds: int = 1,
                  layout: str = "single", layout_devices: int = 1) -> dict[str, Any]:
    conf = config_to_dict(cfg)
    env = conf.pop("env_id")
    return {
        "env": env,
        "seed": int(seed),
        "num_seeds": int(num_seeds),
        "layout": layout,
        "layout_devices": int(layout_devices),
        "config": conf,
        "hparams": {k: float(v) for k, v in hp.to_dict().items()},
    }


def atomic_write_text(path: str | Path, text: str) -> None:
    """Writes via a temporary file in the same directory and ``os.replace``: a reader sees
    the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_run_file(path: str | Path, cfg: PPOConfig, hp: HParams, seed: int,
                   num_seeds: int = 1, layout: str = "single", layout_devices: int = 1) -> None:
    atomic_write_text(path, tomli_w.dumps(
        run_file_dict(cfg, hp, seed, num_seeds, layout, layout_devices)))


def run_file_differences(path: str | Path, given: dict[str, Any]) -> list[str]:
    """What differs between the run file at ``path`` and ``given`` (a ``run_file_dict``),
    one ``"name: X here, Y in the run"`` string per setting. Keys the stored file lacks (a run
    dir written before the setting existed) are not compared."""
    stored = tomllib.loads(Path(path).read_text())
    given = tomllib.loads(tomli_w.dumps(given))  # compare as TOML reads it (tuples -> lists)
    out = []
    pairs = [(stored, given)] + [(stored.get(t, {}), given[t]) for t in ("config", "hparams")]
    for old, new in pairs:
        for key, value in new.items():
            if not isinstance(value, dict) and key in old and old[key] != value:
                out.append(f"{key}: {value!r} here, {old[key]!r} in the run")
    return out
