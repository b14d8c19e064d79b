"""Device layouts and the programs that run over them.

``Layout`` (``ppox.parallel.layout``) says where one run lives; ``ppox.parallel.split`` holds
the network-splitting machinery. This module builds the jitted programs.

Batched programs over seeds / hyperparameters, split across the local devices.

``batched_jit(fn, in_axes)`` vmaps ``fn`` over a leading batch axis and, when the batch
divides evenly across ``jax.local_devices()``, runs it under ``shard_map`` so each device
trains its own slice of runs with no communication at all. On a CPU host, XLA runs these
small programs on one thread per device, so
``XLA_FLAGS=--xla_force_host_platform_device_count=<cores>`` uses every core.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from ppox.parallel.layout import DATA_AXIS, SINGLE, Layout

AXIS = "runs"


def device_count_for(batch: int, devices: Sequence[jax.Device] | None = None) -> int:
    """How many local devices a batch of ``batch`` runs is split across (1 if uneven)."""
    n = len(devices if devices is not None else jax.local_devices())
    while n > 1 and batch % n:
        n -= 1
    return n


def batched_jit(fn: Callable[..., Any], in_axes: Sequence[int | None], batch: int,
                donate_argnums: tuple[int, ...] = ()) -> Callable[..., Any]:
    """``jit(vmap(fn, in_axes))``, sharded over devices along the batch axis.

    Arguments with ``in_axes[i] is None`` are replicated; every output has the batch axis
    first. With one device (or a batch that does not divide across several) this is plain
    ``jit(vmap(...))``.
    """
    vfn = jax.vmap(fn, in_axes=tuple(in_axes))
    n_dev = device_count_for(batch)
    if n_dev == 1:
        return jax.jit(vfn, donate_argnums=donate_argnums)
    mesh = Mesh(np.array(jax.local_devices()[:n_dev]), (AXIS,))
    in_specs = tuple(P() if ax is None else P(AXIS) for ax in in_axes)
    sharded = jax.shard_map(vfn, mesh=mesh, in_specs=in_specs, out_specs=P(AXIS),
                            check_vma=False)
    return jax.jit(sharded, donate_argnums=donate_argnums)


def shard_batch(tree: Any, batch: int) -> Any:
    """Places a batched pytree (leading axis ``batch``) across the devices it will run on."""
    n_dev = device_count_for(batch)
    if n_dev == 1:
        return tree
    mesh = Mesh(np.array(jax.local_devices()[:n_dev]), (AXIS,))
    return jax.device_put(tree, NamedSharding(mesh, P(AXIS)))



def data_parallel_jit(fn: Callable[..., Any], num_shards: int, num_replicated: int,
                      donate_argnums: tuple[int, ...] = ()) -> Callable[..., Any]:
    """One run split across ``num_shards`` devices (data parallelism, or network splitting
    with the same axis as ``split_axis``).

    ``fn(local, *replicated)`` sees its device's slice of the first argument without the
    device axis, and calls collectives over ``DATA_AXIS``. The first argument and every
    output carry a leading device axis ``[num_shards, ...]`` (the output of device ``d``
    at index ``d``); the other ``num_replicated`` arguments are the same on every device.
    """
    mesh = Mesh(np.array(jax.local_devices()[:num_shards]), (DATA_AXIS,))

    def local(sharded: Any, *replicated: Any) -> Any:
        out = fn(jax.tree.map(lambda x: x[0], sharded), *replicated)
        return jax.tree.map(lambda x: x[None], out)

    in_specs = (P(DATA_AXIS),) + (P(),) * num_replicated
    sharded = jax.shard_map(local, mesh=mesh, in_specs=in_specs, out_specs=P(DATA_AXIS),
                            check_vma=False)
    return jax.jit(sharded, donate_argnums=donate_argnums)


def shard_devices(tree: Any, num_shards: int) -> Any:
    """Places a pytree with a leading device axis ``[num_shards, ...]`` one slice per device."""
    mesh = Mesh(np.array(jax.local_devices()[:num_shards]), (DATA_AXIS,))
    return jax.device_put(tree, NamedSharding(mesh, P(DATA_AXIS)))


__all__ = [
    "AXIS",
    "DATA_AXIS",
    "SINGLE",
    "Layout",
    "batched_jit",
    "data_parallel_jit",
    "device_count_for",
    "shard_batch",
    "shard_devices",
]
