"""Hyperparameter sweeps: every configuration x seed of a static setting in one program.

A sweep spec (TOML) lists, per ``HParams`` field, grid values and/or random-search ranges,
and a number of seeds::

    seeds = 3                 # runs per configuration: seeds seed, seed+1, ...
    seed = 0                  # optional base seed (default: --seed)
    random_seed = 0           # optional: seeds the random search's sampling
    [grid]                    # HParams name -> list of values (cartesian product)
    learning_rate = [2.5e-4, 1e-3]
    clip_eps = [0.1, 0.2]
    [random]                  # optional; its samples are crossed with the grid
    samples = 16
    ent_coef = { log_uniform = [1e-4, 1e-1] }
    vf_coef = { uniform = [0.25, 1.0] }
    [static]                  # optional; PPOConfig field -> list (one compile each)
    num_envs = [4, 8]

Hyperparameters are traced (``HParams``), so all configurations x seeds of one static
setting are a batch of runs trained by one vmapped, jitted program -- one compile -- via
``ppox.host.run.train_runs``. Static options (``PPOConfig``: shapes, network widths) change
the program: the sweep loops over their combinations, one compile each, and says so. If a
batch is too large for memory, it runs in equal batches (the last padded by repeating a
run, whose result is dropped), each batch one vmapped call, with a batch size that is a
multiple of the local device count so every device trains its share of the runs. On a CPU
that needs one XLA device per core: ``ppox sweep`` sets it up itself (``ppox.cli.main``;
``PPOX_CPU_DEVICES=N`` chooses N); from Python, start the process with
``XLA_FLAGS=--xla_force_host_platform_device_count=<cores>`` (before JAX initializes).

Run ``j`` of a configuration uses ``PRNGKey(seed + j)``, exactly like
``ppox train --seed <seed + j>`` with that configuration: the same computation, equal up to
float rounding. (XLA may round differently for a batch of 64 runs than for one; over long
training such a difference can eventually flip one sampled action, after which the two
trajectories drift apart -- statistically alike, no longer equal. Over a CartPole budget
of 20 updates they agree to 1e-4, which the tests check.)

Outputs in ``--out DIR``: ``results.csv`` (one row per configuration), ``curves.npz``
(learning curves of every run), ``best.toml`` (``ppox train --config DIR/best.toml``),
``spec.toml`` (the resolved spec), ``sweep.json`` (timings), ``curves_top.png`` and, for a
two-parameter grid, ``heatmap.png``.
"""

from __future__ import annotations

import csv
import dataclasses
import difflib
import io
import itertools
import json
import math
import os
import sys
import time
import tomllib
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TextIO

import numpy as np

from ppox.config import (
    ConfigError,
    HParams,
    PPOConfig,
    config_field_names,
    config_from_dict,
    hparam_names,
)

DistKind = Literal["uniform", "log_uniform"]
SPEC_KEYS = ("seeds", "seed", "random_seed", "grid", "random", "static")
DIST_KINDS: tuple[DistKind, ...] = ("uniform", "log_uniform")
HIDDEN_FIELDS = ("actor_hidden", "critic_hidden")
CHUNK_NAME = "chunk"  # the name under which the training chunk is traced and compiled


# --------------------------------------------------------------------------------------
# The spec


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

    @property
    def swept_hparams(self) -> tuple[str, ...]:
        """The HParams names the spec varies: grid names, then random names."""
        return (*self.grid, *self.random)

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


# --------------------------------------------------------------------------------------
# Configurations and batches


@dataclass(frozen=True)
class SweepConfig:
    """One configuration of a sweep: its static options and hyperparameters.

    Attributes:
        index: position in ``results.csv`` (static-major, then the spec's order).
        static: the ``[static]`` values of this configuration (``{}`` without that table).
        swept: the ``[grid]``/``[random]`` values of this configuration.
        cfg: the full static config it trains with.
        hparams: the full hyperparameters it trains with.
        group: index of its static combination (one compile per group).
    """

    index: int
    static: dict[str, Any]
    swept: dict[str, float]
    cfg: PPOConfig
    hparams: HParams
    group: int

    def label(self) -> str:
        """``name=value`` of everything the sweep varies, e.g. ``learning_rate=0.001``."""
        parts = [f"{k}={_fmt_value(v)}" for k, v in {**self.static, **self.swept}.items()]
        return " ".join(parts) or "base config"


def _fmt_value(v: Any) -> str:
    if isinstance(v, tuple | list):
        return "x".join(str(w) for w in v)
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def expand(spec: SweepSpec, base_cfg: PPOConfig,
           base_hp: HParams | None = None) -> list[SweepConfig]:
    """All configurations of ``spec`` on top of ``base_cfg``/``base_hp``, checked.

    Builds the env and policy of every static combination and validates every
    HParams point on the host, so a bad combination fails before anything compiles.
    """
    from ppox.trainer import build

    base_hp = base_hp or HParams()
    hp_points = spec.hparam_points()
    configs: list[SweepConfig] = []
    for group, static in enumerate(spec.static_points()):
        try:
            cfg = config_from_dict(static, base_cfg) if static else base_cfg
            build(cfg)
        except ConfigError as e:
            combo = ", ".join(f"{k}={_fmt_value(v)}" for k, v in static.items())
            raise ConfigError(f"sweep spec {spec.source!r}: [static] combination {{{combo}}}: "
                              f"{e}") from None
        for point in hp_points:
            hp = base_hp.replace(**point)
            hp.validate()
            configs.append(SweepConfig(index=len(configs), static=static, swept=point,
                                       cfg=cfg, hparams=hp, group=group))
    return configs


@dataclass(frozen=True)
class BatchPlan:
    """How ``num_runs`` runs are split into equal vmapped calls.

    ``num_batches`` calls of ``batch_size`` runs each (a multiple of the device count);
    ``padding`` runs (repeats of a real run, results dropped) fill the last batch.
    """

    num_runs: int
    batch_size: int
    num_batches: int
    num_devices: int

    @property
    def padding(self) -> int:
        return self.batch_size * self.num_batches - self.num_runs

    def batches(self) -> list[list[int]]:
        """Run indices per batch (``[num_batches][batch_size]``), the last padded with
        repeats of its last real run."""
        out = []
        for b in range(self.num_batches):
            real = list(range(b * self.batch_size, min((b + 1) * self.batch_size,
                                                       self.num_runs)))
            out.append(real + [real[-1]] * (self.batch_size - len(real)))
        return out


def plan_batches(num_runs: int, max_batch: int | None, num_devices: int = 1) -> BatchPlan:
    """Splits ``num_runs`` into as few equal batches as fit in ``max_batch`` runs.

    The batch size is a multiple of ``num_devices`` (runs are sharded across the local
    devices only when they divide evenly); ``max_batch`` is rounded down to one (at least
    ``num_devices``). E.g. 10 runs, at most 8, 2 devices: 2 batches of 6 (2 padding runs);
    3 runs, no limit, 2 devices: 1 batch of 4 (1 padding run).
    """
    if num_runs < 1:
        raise ValueError("a sweep needs at least one run")
    if max_batch is not None and max_batch < 1:
        raise ConfigError(f"batch_size={max_batch} must be >= 1 (runs per vmapped call)")
    num_devices = max(1, num_devices)
    if max_batch is None:  # no limit: one call, rounded up to shard evenly
        cap = math.ceil(num_runs / num_devices) * num_devices
    else:  # a limit (memory): round down to a multiple of the devices
        cap = max(num_devices, max_batch // num_devices * num_devices)
    num_batches = math.ceil(num_runs / cap)
    size = math.ceil(num_runs / num_batches)
    size = math.ceil(size / num_devices) * num_devices
    return BatchPlan(num_runs=num_runs, batch_size=size, num_batches=num_batches,
                     num_devices=num_devices)


def _tree_bytes(tree: Any) -> int:
    import jax

    return sum(math.prod(x.shape) * x.dtype.itemsize for x in jax.tree.leaves(tree))


def estimate_run_bytes(cfg: PPOConfig, hp: HParams | None = None, chunk_size: int = 1) -> int:
    """A rough upper estimate of the device memory one run of a batch needs, in bytes.

    From ``jax.eval_shape`` of the run's ``TrainState`` (parameters, optimizer moments, env
    states) plus the rollout of one update (``[T, B]`` transitions with observations and
    final observations, advantages, a shuffled copy) and the chunk's metric rows; x3 for
    the buffers XLA keeps alive across the update (inputs, outputs, gradients). Nothing is
    compiled.
    """
    import jax

    from ppox.trainer import build, init

    setup = build(cfg)
    hp_arr = (hp or HParams()).as_arrays()
    state = jax.eval_shape(lambda k: init(setup, hp_arr, k), jax.random.PRNGKey(0))
    obs = math.prod(setup.env.spec.obs_shape)
    per_step = (3 * obs + 16) * 4  # obs, final_obs, shuffled obs; ~16 float32 scalars
    rollout = cfg.num_steps * cfg.num_envs * per_step
    metrics = chunk_size * 16 * 4
    return 3 * (_tree_bytes(state) + rollout) + metrics


def memory_budget_bytes(fraction: float = 0.5) -> int:
    """``fraction`` of the memory the local devices have free.

    Accelerators: ``bytes_limit - bytes_in_use`` summed over ``jax.local_devices()``. CPU:
    the host's available memory (psutil if installed, else ``/proc/meminfo``
    ``MemAvailable``, else ``os.sysconf``).
    """
    import jax

    free = 0
    for dev in jax.local_devices():
        stats = dev.memory_stats() if dev.platform != "cpu" else None
        if stats and "bytes_limit" in stats:
            free += int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
    if free == 0:
        free = _host_available_bytes()
    return int(free * fraction)


def _host_available_bytes() -> int:
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 4 << 30


# --------------------------------------------------------------------------------------
# Counting compiles


class CompileCounter:
    """Counts traces and XLA compiles of the training chunk while active (jax.monitoring).

    ``traces``: times JAX traced a function named ``chunk`` (once per compile of the
    training program); ``compiles``: backend compiles of it; ``compile_s``: their seconds.
    """

    def __init__(self, name: str = CHUNK_NAME) -> None:
        self.name = name
        self.traces = 0
        self.compiles = 0
        self.compile_s = 0.0

    def _listen(self, event: str, duration: float, **kwargs: Any) -> None:
        fun = str(kwargs.get("fun_name", ""))
        if event.endswith("jaxpr_trace_duration") and fun == self.name:
            self.traces += 1
        elif event.endswith("backend_compile_duration") and fun == f"jit({self.name})":
            self.compiles += 1
            self.compile_s += duration

    @contextmanager
    def active(self) -> Iterator[CompileCounter]:
        import jax

        jax.monitoring.register_event_duration_secs_listener(self._listen)
        try:
            yield self
        finally:
            jax.monitoring.unregister_event_duration_listener(self._listen)


# --------------------------------------------------------------------------------------
# Running


@dataclass
class SweepResult:
    """What a sweep produced. ``C`` configurations, ``S`` seeds, ``U`` updates (the most of
    any static combination; shorter curves are NaN-padded).

    Attributes:
        configs: the ``C`` configurations (``configs[i].index == i``).
        seeds: the ``S`` seeds every configuration ran with.
        final_return: ``[C, S]`` final mean episodic return per run.
        auc: ``[C, S]`` area under each run's learning curve.
        curves: ``[C, S, U]`` mean return of the episodes that ended in each update (NaN
            where none ended or past a shorter run's end).
        env_steps: ``[C, U]`` env steps after each update (NaN past the end).
        diverged: ``[C, S]`` bool: the run's loss or final parameters became non-finite.
        wall_s_per_config: ``[C]`` each configuration's share of its batches' wall time.
        order: ``[C]`` configuration indices, best first (see ``rank_configs``).
        table: the rows of ``results.csv`` (configuration order).
        groups: static combinations compiled (one compile each).
        batches: vmapped calls made.
        batch_size: runs per call (including padding).
        devices: local devices each call was sharded across.
        traces: traces of the training chunk counted during the sweep (== groups when
            every batch of a group reused one executable).
        compile_s, run_s, wall_s: compile seconds, training seconds (after compile) and
            total seconds of the sweep.
        env_steps_total: env steps trained by all real runs (padding excluded).
        out_dir: where the files were written (None: nothing written).
    """

    configs: list[SweepConfig]
    seeds: list[int]
    final_return: np.ndarray
    auc: np.ndarray
    curves: np.ndarray
    env_steps: np.ndarray
    diverged: np.ndarray
    wall_s_per_config: np.ndarray
    order: np.ndarray
    table: list[dict[str, Any]]
    groups: int
    batches: int
    batch_size: int
    devices: int
    traces: int
    compile_s: float
    run_s: float
    wall_s: float
    env_steps_total: int
    out_dir: Path | None = None

    @property
    def best(self) -> SweepConfig:
        return self.configs[int(self.order[0])]

    @property
    def steps_per_second(self) -> float:
        """Aggregate env steps per second of training (compile time excluded)."""
        return self.env_steps_total / max(self.run_s, 1e-9)


def rank_configs(final_mean: np.ndarray, diverged_any: np.ndarray,
                 auc_mean: np.ndarray | None = None) -> np.ndarray:
    """Configuration indices, best first.

    Sort keys, in order: configurations with no diverged run first; higher final return
    mean first, NaN last; higher AUC mean first (NaN last); lower index first.
    ``final_mean``, ``diverged_any``, ``auc_mean``: ``[C]``; returns ``[C]`` int.
    """
    final_mean = np.asarray(final_mean, np.float64)
    auc_mean = np.zeros_like(final_mean) if auc_mean is None else np.asarray(auc_mean,
                                                                             np.float64)
    idx = np.arange(len(final_mean))
    fm = np.where(np.isfinite(final_mean), -final_mean, np.inf)
    am = np.where(np.isfinite(auc_mean), -auc_mean, np.inf)
    return np.lexsort((idx, am, fm, np.asarray(diverged_any, bool)))


def seed_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (population) std across seeds: ``[C, S] -> ([C], [C])``; a NaN seed makes
    its configuration's mean NaN (ranked last), so a failed run is never averaged away."""
    x = np.asarray(x, np.float64)
    return x.mean(axis=1), x.std(axis=1)


@dataclass
class _Group:
    """The runs of one static combination (run ``r = c * S + j``: config ``c``, seed ``j``)."""

    cfg: PPOConfig
    configs: list[SweepConfig]
    seeds: list[int]

    @property
    def num_runs(self) -> int:
        return len(self.configs) * len(self.seeds)

    def run(self, r: int) -> tuple[SweepConfig, int]:
        return self.configs[r // len(self.seeds)], self.seeds[r % len(self.seeds)]


@dataclass
class _Progress:
    """Running totals for the progress lines."""

    out: TextIO | None
    total_configs: int
    num_seeds: int
    configs_done: int = 0
    env_steps: int = 0
    run_s: float = 0.0

    def reporter(self, label: str, real: list[int],
                 batch_size: int) -> Callable[[dict[str, Any]], None] | None:
        """A ``train_runs`` reporter for one batch whose real runs are ``real``."""
        if self.out is None:
            return None
        out = self.out
        done_after = self.configs_done + _configs_completed(real, self.num_seeds)
        share = len(real) / batch_size

        def report(info: dict[str, Any]) -> None:
            finished = info["updates_done"] >= info["num_updates"]
            ret = np.asarray(info["recent_return"], np.float64)
            ret_s = (f"{np.nanmean(ret):8.2f} (best {np.nanmax(ret):.2f})"
                     if np.isfinite(ret).any() else "n/a")
            print(f"[{label}] updates {info['updates_done']:>5d}/{info['num_updates']}  "
                  f"configs {done_after if finished else self.configs_done}/"
                  f"{self.total_configs} done  {info['sps'] * share:>12,.0f} env steps/s "
                  f"({len(real)} runs)  return {ret_s}", file=out, flush=True)

        return report


def _configs_completed(real: list[int], num_seeds: int) -> int:
    """Configurations whose last seed is among the runs ``real`` (runs are config-major)."""
    return sum(1 for r in real if r % num_seeds == num_seeds - 1)


def run_sweep(
    spec: SweepSpec,
    base_cfg: PPOConfig,
    base_hp: HParams | None = None,
    out_dir: str | Path | None = None,
    *,
    base_seed: int = 0,
    num_seeds: int = 1,
    batch_size: int | None = None,
    memory_budget: int | None = None,
    progress_chunks: int = 10,
    top_k: int = 5,
    plots: bool = True,
    out: TextIO | None = sys.stdout,
    progress: bool = True,
) -> SweepResult:
    """Trains every configuration x seed of ``spec`` and writes the results.

    Args:
        spec: the sweep (``load_spec`` / ``parse_spec``).
        base_cfg, base_hp: the settings the spec's values override (e.g. from CLI flags).
        out_dir: where to write results (None: write nothing, just return).
        base_seed: run ``j`` of a configuration uses ``base_seed + j`` (``spec.seed`` wins).
        num_seeds: seeds per configuration (``spec.seeds`` wins).
        batch_size: at most this many runs per vmapped call (None: as many as the memory
            estimate allows; see ``estimate_run_bytes``). Rounded down to a multiple of the
            local device count.
        memory_budget: bytes the runs of one call may use (None: half the free memory).
        progress_chunks: progress lines (jitted chunks) per batch.
        top_k: configurations in the printed table and in ``curves_top.png``.
        plots: write the PNG figures.
        out: where the header, progress and summary are printed (None: silent).
        progress: print a line per chunk of each batch (configs done / total, aggregate
            env steps per second).
    """
    import jax

    t_start = time.perf_counter()
    base_hp = base_hp or HParams()
    base_seed = spec.seed if spec.seed is not None else base_seed
    num_seeds = spec.seeds if spec.seeds is not None else num_seeds
    if num_seeds < 1:
        raise ConfigError(f"num_seeds={num_seeds} must be >= 1")
    configs = expand(spec, base_cfg, base_hp)  # everything checked before any compile
    seeds = [base_seed + j for j in range(num_seeds)]
    by_group = [list(g) for _, g in itertools.groupby(configs, key=lambda c: c.group)]
    groups = [_Group(cfg=g[0].cfg, configs=g, seeds=seeds) for g in by_group]
    devices = len(jax.local_devices())
    plans = [_plan_group(g, batch_size, memory_budget, devices, progress_chunks)
             for g in groups]
    _print_header(out, spec, base_cfg, configs, groups, plans, num_seeds, batch_size)

    max_updates = max(g.cfg.num_updates for g in groups)
    n_cfg = len(configs)
    final = np.full((n_cfg, num_seeds), np.nan)
    auc = np.full((n_cfg, num_seeds), np.nan)
    curves = np.full((n_cfg, num_seeds, max_updates), np.nan, np.float32)
    env_steps = np.full((n_cfg, max_updates), np.nan)
    diverged = np.zeros((n_cfg, num_seeds), bool)
    wall = np.zeros(n_cfg)
    tracker = _Progress(out=out if progress else None, total_configs=n_cfg, num_seeds=num_seeds)
    compile_s = 0.0
    num_calls = sum(p.num_batches for p in plans)
    call = 0
    with CompileCounter().active() as counter:
        for g, (group, plan) in enumerate(zip(groups, plans, strict=True)):
            for batch in plan.batches():
                call += 1
                label = f"batch {call}/{num_calls}" + (
                    f", static {g + 1}/{len(groups)}" if len(groups) > 1 else "")
                res, t_call = _run_batch(group, batch, plan, label, tracker,
                                         progress_chunks)
                compile_s += res.compile_s
                _collect(group, batch, res, t_call, final, auc, curves, env_steps,
                         diverged, wall)
    final_mean, final_std = seed_stats(final)
    auc_mean, auc_std = seed_stats(auc)
    order = rank_configs(final_mean, diverged.any(axis=1), auc_mean)
    table = _table_rows(configs, spec, final_mean, final_std, auc_mean, auc_std,
                        diverged, wall, order, num_seeds)
    result = SweepResult(
        configs=configs, seeds=seeds, final_return=final, auc=auc, curves=curves,
        env_steps=env_steps, diverged=diverged, wall_s_per_config=wall, order=order,
        table=table, groups=len(groups), batches=num_calls,
        batch_size=max(p.batch_size for p in plans), devices=max(p.num_devices for p in plans),
        traces=counter.traces, compile_s=compile_s, run_s=tracker.run_s,
        wall_s=time.perf_counter() - t_start, env_steps_total=tracker.env_steps,
        out_dir=Path(out_dir) if out_dir is not None else None)
    if out_dir is not None:
        write_results(result, spec, base_seed, plots=plots, top_k=top_k)
    _print_summary(out, result, top_k)
    return result


def _plan_group(group: _Group, batch_size: int | None, memory_budget: int | None,
                devices: int, progress_chunks: int) -> BatchPlan:
    if batch_size is None:
        chunk = math.ceil(group.cfg.num_updates / max(1, progress_chunks))
        per_run = estimate_run_bytes(group.cfg, group.configs[0].hparams, chunk)
        budget = memory_budget if memory_budget is not None else memory_budget_bytes()
        batch_size = max(1, budget // max(per_run, 1))
    return plan_batches(group.num_runs, batch_size, devices)


def _run_batch(group: _Group, batch: list[int], plan: BatchPlan, label: str,
               progress: _Progress, progress_chunks: int) -> tuple[Any, float]:
    """One vmapped ``train_runs`` call over the runs ``batch`` of ``group``."""
    from ppox.host.run import train_runs

    runs = [group.run(r) for r in batch]
    real = sorted(set(batch))
    t0 = time.perf_counter()
    res = train_runs(group.cfg, [c.hparams for c, _ in runs], [s for _, s in runs],
                     run_dir=None, progress_chunks=progress_chunks,
                     reporter=progress.reporter(label, real, plan.batch_size))
    t_call = time.perf_counter() - t0
    progress.configs_done += _configs_completed(real, len(group.seeds))
    progress.env_steps += len(real) * res.env_steps
    progress.run_s += res.run_s
    return res, t_call


def _collect(group: _Group, batch: list[int], res: Any, t_call: float, final: np.ndarray,
             auc: np.ndarray, curves: np.ndarray, env_steps: np.ndarray,
             diverged: np.ndarray, wall: np.ndarray) -> None:
    """Copies the real runs of one batch into the ``[C, S, ...]`` result arrays."""
    from ppox.host.metrics import episode_means

    means = episode_means(res.metrics)  # [batch, U]
    bad = _diverged_runs(res)
    num_seeds = len(group.seeds)
    u = means.shape[-1]
    num_real = len(set(batch))
    for i, r in enumerate(batch[:num_real]):  # the padding repeats come last
        c = group.configs[r // num_seeds].index
        j = r % num_seeds
        final[c, j] = res.final_return[i]
        auc[c, j] = res.auc[i]
        curves[c, j, :u] = means[i]
        env_steps[c, :u] = np.arange(1, u + 1) * group.cfg.batch_size
        diverged[c, j] = bad[i]
        wall[c] += t_call / num_real


def _diverged_runs(res: Any) -> np.ndarray:
    """``[R]`` bool: the run's loss became non-finite or its final parameters are."""
    import jax

    bad = ~np.isfinite(np.asarray(res.metrics["loss"])).all(axis=-1)
    for leaf in jax.tree.leaves(res.state.params):
        x = np.asarray(leaf)
        bad |= ~np.isfinite(x.reshape(x.shape[0], -1)).all(axis=-1)
    return bad


# --------------------------------------------------------------------------------------
# Results


METRIC_COLUMNS = ("final_return_mean", "final_return_std", "auc_mean", "auc_std",
                  "diverged", "num_seeds", "wall_time_s")


def _table_rows(configs: list[SweepConfig], spec: SweepSpec, final_mean: np.ndarray,
                final_std: np.ndarray, auc_mean: np.ndarray, auc_std: np.ndarray,
                diverged: np.ndarray, wall: np.ndarray, order: np.ndarray,
                num_seeds: int) -> list[dict[str, Any]]:
    rank = np.empty(len(configs), int)
    rank[order] = np.arange(1, len(configs) + 1)
    rows = []
    for c in configs:
        i = c.index
        row: dict[str, Any] = {"config": i, "rank": int(rank[i])}
        row.update({k: c.static.get(k, getattr(c.cfg, k)) for k in spec.static})
        row.update({k: float(v) for k, v in c.hparams.to_dict().items()})
        row.update({
            "final_return_mean": float(final_mean[i]), "final_return_std": float(final_std[i]),
            "auc_mean": float(auc_mean[i]), "auc_std": float(auc_std[i]),
            "diverged": int(diverged[i].sum()), "num_seeds": num_seeds,
            "wall_time_s": float(wall[i]),
        })
        rows.append(row)
    return rows


def _csv_cell(v: Any) -> Any:
    if isinstance(v, tuple | list):
        return " ".join(str(w) for w in v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else repr(v)
    return v


def write_results(result: SweepResult, spec: SweepSpec, base_seed: int, *,
                  plots: bool = True, top_k: int = 5) -> None:
    """Writes ``results.csv``, ``curves.npz``, ``best.toml``, ``spec.toml``, ``sweep.json``
    and the figures into ``result.out_dir``."""
    import tomli_w

    from ppox.host.configfile import atomic_write_text, write_run_file

    out_dir = result.out_dir
    assert out_dir is not None
    out_dir.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(result.table[0]), lineterminator="\n")
    writer.writeheader()
    for row in result.table:
        writer.writerow({k: _csv_cell(v) for k, v in row.items()})
    atomic_write_text(out_dir / "results.csv", buf.getvalue())
    _write_curves(result, out_dir / "curves.npz")
    best = result.best
    write_run_file(out_dir / "best.toml", best.cfg, best.hparams, base_seed,
                   len(result.seeds))
    resolved = dataclasses.replace(spec, seed=base_seed, seeds=len(result.seeds))
    atomic_write_text(out_dir / "spec.toml", tomli_w.dumps(resolved.to_dict()))
    atomic_write_text(out_dir / "sweep.json", json.dumps(_summary_json(result), indent=2))
    if plots:
        write_plots(result, spec, top_k)


def _write_curves(result: SweepResult, path: Path) -> None:
    c, s, u = result.curves.shape
    names = list(hparam_names())
    np.savez_compressed(
        path,
        returns=result.curves.reshape(c * s, u),
        env_steps=np.repeat(result.env_steps, s, axis=0),
        config=np.repeat(np.arange(c), s),
        seed=np.tile(np.asarray(result.seeds), c),
        final_return=result.final_return.reshape(-1),
        auc=result.auc.reshape(-1),
        diverged=result.diverged.reshape(-1),
        hparam_names=np.asarray(names),
        hparams=np.asarray([[float(getattr(cf.hparams, n)) for n in names]
                            for cf in result.configs]),
    )


def _summary_json(result: SweepResult) -> dict[str, Any]:
    from ppox.host.metrics import to_jsonable

    best = result.best
    return to_jsonable({
        "env": best.cfg.env_id,
        "configs": len(result.configs),
        "seeds": result.seeds,
        "runs": len(result.configs) * len(result.seeds),
        "static_combinations": result.groups,
        "compiles": result.groups,
        "chunk_traces": result.traces,
        "batches": result.batches,
        "batch_size": result.batch_size,
        "devices": result.devices,
        "compile_s": result.compile_s,
        "run_s": result.run_s,
        "wall_s": result.wall_s,
        "env_steps_total": result.env_steps_total,
        "steps_per_second": result.steps_per_second,
        "best_config": best.index,
        "best": {**{k: _fmt_value(v) for k, v in best.static.items()}, **best.swept},
        "best_final_return_mean": float(np.mean(result.final_return[best.index])),
    })


def write_plots(result: SweepResult, spec: SweepSpec, top_k: int = 5) -> list[Path]:
    """``curves_top.png`` (top-k configurations, band = min..max across seeds) and, for a
    grid of exactly two hyperparameters without a random part, ``heatmap.png`` of the final
    return mean (``heatmap_static<k>.png`` per static combination when there are several)."""
    from ppox.host.plots import forward_fill, plot_heatmap, plot_learning_curves

    assert result.out_dir is not None
    paths = []
    curves = {}
    for c in result.order[:top_k]:
        cf = result.configs[int(c)]
        fm = float(np.mean(result.final_return[c]))
        x = result.env_steps[c]
        keep = np.isfinite(x)
        curves[f"#{len(curves) + 1} {cf.label()} ({fm:.1f})"] = (
            x[keep], forward_fill(result.curves[c][:, keep]))
    paths.append(plot_learning_curves(
        curves, result.out_dir / "curves_top.png",
        title=f"{result.best.cfg.env_id}: top {len(curves)} of {len(result.configs)} "
              f"configurations, {len(result.seeds)} seed(s)"))
    if len(spec.grid) == 2 and not spec.random:
        (ya, yv), (xa, xv) = spec.grid.items()
        final_mean, _ = seed_stats(result.final_return)
        per = len(yv) * len(xv)
        for g in range(result.groups):
            values = final_mean[g * per:(g + 1) * per].reshape(len(yv), len(xv))
            name = "heatmap.png" if result.groups == 1 else f"heatmap_static{g}.png"
            static = " ".join(f"{k}={_fmt_value(v)}"
                              for k, v in result.configs[g * per].static.items())
            paths.append(plot_heatmap(
                values, [f"{v:g}" for v in xv], [f"{v:g}" for v in yv],
                result.out_dir / name, xlabel=xa, ylabel=ya,
                title=f"final return, mean over {len(result.seeds)} seed(s)"
                      + (f"\n{static}" if static else ""),
                colorbar_label="final return"))
    return paths


# --------------------------------------------------------------------------------------
# Printing


def _print_header(out: TextIO | None, spec: SweepSpec, base_cfg: PPOConfig,
                  configs: list[SweepConfig], groups: list[_Group], plans: list[BatchPlan],
                  num_seeds: int, batch_size: int | None) -> None:
    if out is None:
        return
    import jax

    n_hp = len(configs) // len(groups)
    grid = " x ".join(f"{len(v)} {k}" for k, v in spec.grid.items())
    rand = f"{spec.samples} random samples" if spec.random else ""
    what = " x ".join(p for p in (grid, rand) if p) or "the base hyperparameters"
    runs = len(configs) * num_seeds
    print(f"sweep {base_cfg.env_id}: {len(configs)} configurations ({what}"
          f"{f' x {len(groups)} static' if spec.static else ''}) x {num_seeds} seed(s) = "
          f"{runs} runs", file=out)
    n = len(groups)
    if spec.static:
        print(f"static options: {n} combination{'s' if n > 1 else ''} -> {n} "
              f"compile{'s' if n > 1 else ''} (static options change the program; the "
              f"{n_hp} hyperparameter configurations x seeds of each are vmapped)", file=out)
    else:
        print(f"static options: 1 combination -> 1 compile ({runs} runs vmapped in one "
              "program)", file=out)
    plan = plans[0]
    devs = jax.local_devices()
    how = "--batch-size" if batch_size is not None else "memory estimate"
    print(f"batches: {sum(p.num_batches for p in plans)} vmapped call(s) of {plan.batch_size} "
          f"runs ({how}; {sum(p.padding for p in plans)} padding run(s)), sharded across "
          f"{plan.num_devices} {devs[0].platform} device(s)", file=out)
    if devs[0].platform == "cpu" and len(devs) == 1 and (os.cpu_count() or 1) > 1:
        print(f"hint: 1 XLA CPU device; start with XLA_FLAGS="
              f"--xla_force_host_platform_device_count={os.cpu_count()} to train runs on "
              "every core", file=out)
    out.flush()


def _print_summary(out: TextIO | None, result: SweepResult, top_k: int) -> None:
    if out is None:
        return
    runs = len(result.configs) * len(result.seeds)
    print(f"sweep done: {runs} runs in {result.wall_s:.1f} s (compile {result.compile_s:.1f} s "
          f"in {result.groups} compile(s), train {result.run_s:.1f} s): "
          f"{result.steps_per_second:,.0f} env steps/s aggregate", file=out)
    final_mean, final_std = seed_stats(result.final_return)
    auc_mean, _ = seed_stats(result.auc)
    print(f"top {min(top_k, len(result.configs))} of {len(result.configs)} configurations "
          "(final return mean ± std over seeds):", file=out)
    for rank, c in enumerate(result.order[:top_k], start=1):
        cf = result.configs[int(c)]
        div = (f"  [{int(result.diverged[c].sum())} diverged]"
               if result.diverged[c].any() else "")
        print(f"  {rank:>2d}. {final_mean[c]:8.2f} ± {final_std[c]:6.2f}  auc "
              f"{auc_mean[c]:8.2f}  {cf.label()}{div}", file=out)
    best = result.best
    dest = f" -> {result.out_dir / 'best.toml'}" if result.out_dir is not None else ""
    print(f"best config: {best.label()} (final return {final_mean[best.index]:.2f} ± "
          f"{final_std[best.index]:.2f}){dest}", file=out, flush=True)


__all__ = [
    "BatchPlan",
    "CompileCounter",
    "Distribution",
    "SweepConfig",
    "SweepResult",
    "SweepSpec",
    "estimate_run_bytes",
    "expand",
    "load_spec",
    "memory_budget_bytes",
    "parse_spec",
    "plan_batches",
    "rank_configs",
    "run_sweep",
    "seed_stats",
    "write_plots",
    "write_results",
]
