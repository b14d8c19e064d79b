"""What a sweep trains: its configurations, their static groups, and the batches.

Hyperparameters are traced, so the configurations x seeds of one static combination (a
group) are one vmapped program; a group too large for memory runs in equal batches (the
last padded by repeating a run), each a multiple of the local device count.
"""

from __future__ import annotations

import itertools
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ppox.config import ConfigError, HParams, PPOConfig, check_applicable, config_from_dict
from ppox.sweep.spec import SweepSpec


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
        parts = [f"{k}={fmt_value(v)}" for k, v in {**self.static, **self.swept}.items()]
        return " ".join(parts) or "base config"


def fmt_value(v: Any) -> str:
    """A value as labels and file names show it: ``64x64``, ``0.001``, ``True``."""
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
            combo = ", ".join(f"{k}={fmt_value(v)}" for k, v in static.items())
            raise ConfigError(f"sweep spec {spec.source!r}: [static] combination {{{combo}}}: "
                              f"{e}") from None
        for point in hp_points:
            hp = base_hp.replace(**point)
            hp.validate()
            try:  # a swept hyperparameter this algorithm does not read is refused
                check_applicable(cfg, hp, given=point)
            except ConfigError as e:
                raise ConfigError(f"sweep spec {spec.source!r}: {e}") from None
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


@dataclass
class Group:
    """The runs of one static combination (run ``r = c * S + j``: config ``c``, seed ``j``)."""

    cfg: PPOConfig
    configs: list[SweepConfig]
    seeds: list[int]

    @property
    def num_runs(self) -> int:
        return len(self.configs) * len(self.seeds)

    def run(self, r: int) -> tuple[SweepConfig, int]:
        return self.configs[r // len(self.seeds)], self.seeds[r % len(self.seeds)]


@dataclass(frozen=True)
class Batch:
    """One vmapped call: batch ``number`` of group ``group``; ``runs`` are run indices of the
    group (``[batch_size]``, the padding repeats last)."""

    group: int
    number: int
    runs: list[int]

    @property
    def real(self) -> list[int]:
        """The distinct runs, in order (the padding dropped)."""
        return sorted(set(self.runs))

    @property
    def name(self) -> str:
        """``<group>-<batch>``: its directory under ``batches/`` in the sweep directory."""
        return f"{self.group}-{self.number}"


@dataclass(frozen=True)
class SweepPlan:
    """Everything a sweep trains: the configurations, grouped by static combination, each
    group split into ``plans[g]`` batches (at most ``max_batch`` runs each; None: as the
    memory estimate allowed); every configuration runs with ``seeds``."""

    spec: SweepSpec
    configs: list[SweepConfig]
    groups: list[Group]
    plans: list[BatchPlan]
    seeds: list[int]
    max_batch: int | None = None

    @property
    def num_batches(self) -> int:
        return sum(p.num_batches for p in self.plans)

    def batches(self) -> list[Batch]:
        """Every batch, group by group, in the order they run."""
        return [Batch(g, b, runs) for g, plan in enumerate(self.plans)
                for b, runs in enumerate(plan.batches())]


def group_configs(configs: list[SweepConfig], seeds: list[int]) -> list[Group]:
    """The configurations split by static combination (``expand`` keeps them together)."""
    by_group = [list(g) for _, g in itertools.groupby(configs, key=lambda c: c.group)]
    return [Group(cfg=g[0].cfg, configs=g, seeds=seeds) for g in by_group]


def plan_group(group: Group, batch_size: int | None, memory_budget: int | None,
               devices: int, progress_chunks: int) -> BatchPlan:
    """The batches of one group: at most ``batch_size`` runs each, or as many as
    ``memory_budget`` (default: half the free memory) holds by ``estimate_run_bytes``."""
    if batch_size is None:
        chunk = math.ceil(group.cfg.num_updates / max(1, progress_chunks))
        per_run = estimate_run_bytes(group.cfg, group.configs[0].hparams, chunk)
        budget = memory_budget if memory_budget is not None else memory_budget_bytes()
        batch_size = max(1, budget // max(per_run, 1))
    return plan_batches(group.num_runs, batch_size, devices)
