"""Where one run's computation lives: one ``Layout`` built and validated once.

* ``single``: the run on one device (a batch of runs is vmapped and split across devices by
  ``ppox.parallel.batched_jit``, with no communication).
* ``data_parallel``: one run's envs split across ``num_devices`` devices of the mesh axis
  ``DATA_AXIS``; gradients and statistics are averaged over it every SGD step.
* ``split_networks``: one run on 2 devices; device 0 updates the actor and device 1 the
  critic at the same time while both run the same rollout (see ``ppox.parallel.split``).

The collectives are methods (``psum``, ``pmean``, ``device_key``), identities where the
layout has no data axis, so the trainer and algorithms never test which layout they run in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import jax
from jax import lax

from ppox.config import ConfigError

LayoutKind = Literal["single", "data_parallel", "split_networks"]
LAYOUT_KINDS: tuple[str, ...] = ("single", "data_parallel", "split_networks")
DATA_AXIS = "data"


@dataclass(frozen=True)
class Layout:
    """One run's device layout. ``num_devices``: the devices one run spans (1 for single)."""

    kind: LayoutKind = "single"
    num_devices: int = 1

    @staticmethod
    def build(kind: str, num_runs: int, local_devices: int) -> Layout:
        """The layout for ``kind``, checked against the runs and the devices JAX sees; every
        rule lives here, with one message each."""
        if kind not in LAYOUT_KINDS:
            raise ConfigError(f"layout={kind!r} is not a layout; use one of "
                              f"{', '.join(LAYOUT_KINDS)}")
        if kind == "single":
            return Layout()
        if num_runs != 1:
            raise ConfigError(f"{kind} spreads one run across devices, but {num_runs} seeds "
                              "were given: use one seed (or neither --data-parallel nor "
                              "--split-networks, to spread the seeds instead)")
        if kind == "split_networks":
            if local_devices < 2:
                raise ConfigError(
                    "split_networks needs 2 local devices, but JAX sees 1; on a CPU host "
                    "start the process with XLA_FLAGS=--xla_force_host_platform_device_"
                    "count=2 (the `ppox` CLI does this when the machine has 2+ cores)")
            return Layout("split_networks", 2)
        return Layout("data_parallel", local_devices)

    @property
    def data_axis(self) -> str | None:
        """The mesh axis the envs are split over (data parallelism only)."""
        return DATA_AXIS if self.kind == "data_parallel" and self.num_devices > 1 else None

    @property
    def split_axis(self) -> str | None:
        """The 2-device axis of network splitting (actor on 0, critic on 1)."""
        return DATA_AXIS if self.kind == "split_networks" else None

    @property
    def spans_devices(self) -> bool:
        """One run over several devices (run under ``data_parallel_jit``)."""
        return self.data_axis is not None or self.split_axis is not None

    @property
    def shards(self) -> int:
        """How many slices the envs are cut into."""
        return self.num_devices if self.data_axis is not None else 1

    def local_envs(self, num_envs: int) -> int:
        return num_envs // self.shards

    def check(self, num_envs: int, num_steps: int, num_minibatches: int) -> None:
        """The envs and each device's minibatches must split evenly."""
        n = self.shards
        if num_envs % n or (num_envs // n) * num_steps % num_minibatches:
            raise ConfigError(
                f"data parallelism over {n} devices needs num_envs={num_envs} divisible by "
                f"{n} and each device's batch (num_envs/{n} * num_steps) divisible by "
                f"num_minibatches={num_minibatches}")

    def psum(self, x: Any) -> Any:
        return x if self.data_axis is None else lax.psum(x, self.data_axis)

    def pmean(self, x: Any) -> Any:
        return x if self.data_axis is None else lax.pmean(x, self.data_axis)

    def device_key(self, key: jax.Array) -> jax.Array:
        """Under data parallelism each device's own key (its envs differ); else ``key``."""
        if self.data_axis is None:
            return key
        return jax.random.fold_in(key, lax.axis_index(self.data_axis))


SINGLE = Layout()
