"""Sweep specs: the TOML file that lists what a sweep varies, parsed and checked.

Every problem is one ``ConfigError`` line naming the file, the key, why and what to do.
"""

from __future__ import annotations

import difflib
import itertools
import math
import tomllib
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ppox.config import ConfigError, HParams, PPOConfig, config_field_names, hparam_names

DistKind = Literal["uniform", "log_uniform"]
SPEC_KEYS = ("seeds", "seed", "random_seed", "grid", "random", "static")
DIST_KINDS: tuple[DistKind, ...] = ("uniform", "log_uniform")
HIDDEN_FIELDS = ("actor_hidden", "critic_hidden")


@dataclass(frozen=True)
class Distribution:
    """A random-search range: ``uniform`` on ``[low, high]`` or ``log_uniform`` (uniform in
    log space, ``0 < low <= high``)."""

    kind: DistKind
    low: float
    high: float

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``[n]`` float64 samples, rounded to 6 significant digits (so the CSV, best.toml
        and a rerun with those numbers all train the same float32 value)."""
        if self.kind == "log_uniform":
            x = np.exp(rng.uniform(math.log(self.low), math.log(self.high), n))
        else:
            x = rng.uniform(self.low, self.high, n)
        x = np.array([float(f"{v:.6g}") for v in x])
        return np.clip(x, self.low, self.high)

    def to_toml(self) -> dict[str, list[float]]:
        return {self.kind: [self.low, self.high]}


@dataclass(frozen=True)
class SweepSpec:
    """A parsed and checked sweep spec (build it with ``load_spec`` or ``parse_spec``).

    Attributes:
        grid: HParams name -> values; the configurations are their cartesian product.
        random: HParams name -> distribution; ``samples`` draws, crossed with the grid.
        samples: number of random-search draws (0 without a ``[random]`` table).
        static: PPOConfig field -> values; one compile per combination.
        seeds: runs per configuration (None: the caller's default, ``--num-seeds``).
        seed: base seed; run ``j`` uses ``seed + j`` (None: the caller's, ``--seed``).
        random_seed: seeds the numpy generator that draws the random-search samples.
        source: where the spec came from (named in error messages).
    """

    grid: dict[str, tuple[float, ...]] = field(default_factory=dict)
    random: dict[str, Distribution] = field(default_factory=dict)
    samples: int = 0
    static: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    seeds: int | None = None
    seed: int | None = None
    random_seed: int = 0
    source: str = "<spec>"

    def hparam_points(self) -> list[dict[str, float]]:
        """Every hyperparameter configuration: grid product x random samples.

        The grid varies its last name fastest; for each grid point the same ``samples``
        random draws follow (``len = prod(len(grid values)) * max(samples, 1)``).
        """
        grid_points = [dict(zip(self.grid, values, strict=True))
                       for values in itertools.product(*self.grid.values())]
        if not self.random:
            return grid_points
        rng = np.random.default_rng(self.random_seed)
        draws = {name: dist.sample(rng, self.samples) for name, dist in self.random.items()}
        samples = [{name: float(draws[name][i]) for name in self.random}
                   for i in range(self.samples)]
        return [{**g, **s} for g in grid_points for s in samples]

    def static_points(self) -> list[dict[str, Any]]:
        """Every combination of the ``[static]`` values (``[{}]`` without that table)."""
        return [dict(zip(self.static, values, strict=True))
                for values in itertools.product(*self.static.values())]

    def to_dict(self) -> dict[str, Any]:
        """The spec as a TOML-ready mapping (``parse_spec(spec.to_dict())`` round-trips)."""
        out: dict[str, Any] = {}
        if self.seeds is not None:
            out["seeds"] = self.seeds
        if self.seed is not None:
            out["seed"] = self.seed
        out["random_seed"] = self.random_seed
        if self.grid:
            out["grid"] = {k: list(v) for k, v in self.grid.items()}
        if self.random:
            out["random"] = {"samples": self.samples,
                             **{k: d.to_toml() for k, d in self.random.items()}}
        if self.static:
            out["static"] = {k: [list(x) if isinstance(x, tuple) else x for x in v]
                             for k, v in self.static.items()}
        return out


def load_spec(path: str | Path) -> SweepSpec:
    """Reads and checks a sweep spec file; every problem is one ``ConfigError`` line that
    names the file, the key, why it is wrong and what to do."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"sweep spec {str(path)!r} does not exist; pass an existing .toml "
                          "file (see examples/sweep_cartpole.toml)")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"sweep spec {str(path)!r} is not valid TOML: {err}") from None
    return parse_spec(data, source=str(path))


def parse_spec(data: Mapping[str, Any], source: str = "<spec>") -> SweepSpec:
    """Checks a spec mapping (e.g. parsed TOML) and returns the ``SweepSpec``.

    Raises ``ConfigError`` (one line) for unknown keys, unknown or static names under
    ``[grid]``/``[random]``, empty lists, invalid values or ranges, and a name swept twice.
    """
    def err(where: str, why: str) -> ConfigError:
        return ConfigError(f"sweep spec {source!r}: {where}{': ' if where else ''}{why}")

    unknown = [k for k in data if k not in SPEC_KEYS]
    if unknown:
        raise err("", f"unknown key {unknown[0]!r}{_did_you_mean(unknown[0], SPEC_KEYS)}; "
                  f"top-level keys are {', '.join(SPEC_KEYS)} (value lists go under [grid], "
                  "ranges under [random], PPOConfig options under [static])")
    seeds = _opt_int(data, "seeds", 1, err)
    seed = _opt_int(data, "seed", None, err)
    random_seed = _opt_int(data, "random_seed", 0, err)
    grid = {name: _grid_values(name, values, err)
            for name, values in _table(data, "grid", err).items()}
    random_table = dict(_table(data, "random", err))
    samples = _samples(random_table, err)
    random = {name: _distribution(name, value, err) for name, value in random_table.items()}
    both = [name for name in grid if name in random]
    if both:
        raise err("", f"{both[0]} is in both [grid] and [random]; sweep each hyperparameter "
                  "in one of them")
    static = {name: _static_values(name, values, err)
              for name, values in _table(data, "static", err).items()}
    return SweepSpec(grid=grid, random=random, samples=samples, static=static,
                     seeds=seeds, seed=seed, random_seed=random_seed or 0, source=source)


ErrFn = Callable[[str, str], ConfigError]


def _did_you_mean(name: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _opt_int(data: Mapping[str, Any], key: str, minimum: int | None, err: ErrFn) -> int | None:
    if key not in data:
        return None
    value = data[key]
    if not isinstance(value, int) or isinstance(value, bool) or (
            minimum is not None and value < minimum):
        bound = f"an integer >= {minimum}" if minimum is not None else "an integer"
        what = {"seeds": " (the number of seeds per configuration), e.g. seeds = 3",
                "seed": " (the base seed; run j uses seed + j), e.g. seed = 0",
                "random_seed": " (seeds the random-search sampling), e.g. random_seed = 0"}[key]
        raise err(key, f"{key}={value!r} must be {bound}{what}")
    return value


def _table(data: Mapping[str, Any], key: str, err: ErrFn) -> Mapping[str, Any]:
    table = data.get(key, {})
    if not isinstance(table, Mapping):
        raise err(f"[{key}]", f"must be a table, e.g. [{key}] on its own line followed by "
                  "name = ... lines")
    return table


def _check_hparam_name(table: str, name: str, err: ErrFn) -> None:
    where = f"[{table}] {name}"
    if name in hparam_names():
        return
    if name in config_field_names():
        raise err(where, "is a static option (a PPOConfig field: it changes shapes or the "
                  "compiled program) and cannot be vmapped; move it to a [static] table, "
                  f"e.g. [static] {name} = [...] (one compile per combination)")
    raise err(f"[{table}]", f"unknown hyperparameter {name!r}"
              f"{_did_you_mean(name, hparam_names())}; valid names: "
              f"{', '.join(hparam_names())}")


def _number(where: str, value: Any, err: ErrFn) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise err(where, f"{value!r} is not a number")
    return float(value)


def _check_bounds(where: str, name: str, values: Sequence[float], err: ErrFn) -> None:
    try:
        for v in values:
            HParams(**{name: v}).validate()
    except ConfigError as e:
        raise err(where, str(e)) from None


def _grid_values(name: str, values: Any, err: ErrFn) -> tuple[float, ...]:
    _check_hparam_name("grid", name, err)
    where = f"[grid] {name}"
    if not isinstance(values, list):
        raise err(where, f"must be a list of values, e.g. {name} = [{values!r}] "
                  "(ranges go under [random])")
    if not values:
        raise err(where, f"is an empty list; give at least one value, e.g. {name} = "
                  f"[{_example(name)}], or remove the line")
    out = tuple(_number(where, v, err) for v in values)
    _check_bounds(where, name, out, err)
    return out


def _example(name: str) -> str:
    return f"{float(getattr(HParams(), name)):g}"


def _samples(table: dict[str, Any], err: ErrFn) -> int:
    samples = table.pop("samples", None)
    if samples is None:
        if table:
            raise err("[random]", "needs samples = N (N >= 1 random configurations, "
                      "crossed with the grid)")
        return 0
    if not isinstance(samples, int) or isinstance(samples, bool) or samples < 1:
        raise err("[random] samples", f"samples={samples!r} must be an integer >= 1")
    if not table:
        raise err("[random]", "has samples but no ranges; add e.g. ent_coef = "
                  "{ log_uniform = [1e-4, 1e-1] }")
    return samples


def _distribution(name: str, value: Any, err: ErrFn) -> Distribution:
    _check_hparam_name("random", name, err)
    where = f"[random] {name}"
    example = f"{name} = {{ log_uniform = [1e-4, 1e-1] }} or {{ uniform = [0.1, 0.3] }}"
    if (not isinstance(value, Mapping) or len(value) != 1
            or next(iter(value)) not in DIST_KINDS):
        raise err(where, f"must be a table with one key, uniform or log_uniform, e.g. {example}"
                  " (value lists go under [grid])")
    kind, bounds = next(iter(value.items()))
    if not isinstance(bounds, list) or len(bounds) != 2:
        raise err(where, f"{kind} needs [low, high], e.g. {example}")
    low, high = (_number(where, b, err) for b in bounds)
    if kind == "log_uniform" and not low > 0:
        raise err(where, f"log_uniform needs 0 < low <= high, got low={low:g}; use a positive "
                  "lower bound (e.g. 1e-5), or uniform for a range that includes 0 or "
                  "negative values")
    if low > high:
        raise err(where, f"{kind} needs low <= high, got [{low:g}, {high:g}]; swap the bounds")
    _check_bounds(where, name, (low, high), err)
    return Distribution(kind, low, high)


def _static_values(name: str, values: Any, err: ErrFn) -> tuple[Any, ...]:
    where = f"[static] {name}"
    if name in hparam_names():
        raise err(where, "is a hyperparameter (traced: every value shares one compile); put "
                  "it under [grid] or [random]")
    if name == "env_id":
        raise err(where, "cannot be swept; choose the environment with --env (one sweep per "
                  "environment)")
    if name not in config_field_names():
        raise err("[static]", f"unknown option {name!r}"
                  f"{_did_you_mean(name, config_field_names())}; valid options: "
                  f"{', '.join(n for n in config_field_names() if n != 'env_id')}")
    if not isinstance(values, list):
        raise err(where, f"must be a list of values, e.g. {name} = [{values!r}]")
    if not values:
        raise err(where, "is an empty list; give at least one value, or remove the line")
    if name in HIDDEN_FIELDS:
        if not all(isinstance(v, list) and v and all(
                isinstance(w, int) and not isinstance(w, bool) and w > 0 for w in v)
                for v in values):
            raise err(where, f"must be a list of layer-width lists, e.g. {name} = "
                      "[[64, 64], [128, 128]]")
        return tuple(tuple(v) for v in values)
    for v in values:
        _check_static_type(where, name, v, err)
    return tuple(values)


def _check_static_type(where: str, name: str, value: Any, err: ErrFn) -> None:
    """The value has the field's type (a Literal's choices, bool, int, float); ranges and
    combinations are checked later, with the base config (``expand``)."""
    hint = typing.get_type_hints(PPOConfig)[name]
    if typing.get_origin(hint) is Literal:
        choices = typing.get_args(hint)
        if value not in choices:
            raise err(where, f"{value!r} is not one of {', '.join(map(repr, choices))}")
        return
    checks: dict[Any, tuple[str, Callable[[Any], bool]]] = {
        bool: ("true or false", lambda v: isinstance(v, bool)),
        int: ("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)),
        float: ("a number", lambda v: isinstance(v, int | float) and not isinstance(v, bool)),
        str: ("a string", lambda v: isinstance(v, str)),
    }
    if hint in checks and not checks[hint][1](value):
        raise err(where, f"{value!r} must be {checks[hint][0]}")
