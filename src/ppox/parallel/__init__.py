"""Device layouts and the programs that run over them.

``Layout`` (``ppox.parallel.layout``) says where one run lives; ``ppox.parallel.split`` holds
the network-splitting machinery. This module builds the jitted programs.

Batched programs over seeds / hyperparameters, split across the local devices.

``batched_jit(fn, in_axes)`` vmaps ``fn`` over a leading batch axis (a single run goes through
``fn`` without a vmap: ``vmap_runs``) and, when the batch
divides evenly across ``jax.local_devices()``, runs it under ``shard_map`` so each device
trains its own slice of runs with no communication at all. On a CPU host, XLA runs these
small programs on one thread per device, so
``XLA_FLAGS=--xla_force_host_platform_device_count=<cores>`` uses every core.

Every builder takes ``devices`` (default ``jax.local_devices()``: one process, unchanged).
After ``ppox.parallel.distributed.initialize``, ``devices=jax.devices()`` builds the same
programs over one global mesh of every process's devices; ``local_view`` and ``gather`` read
their outputs back on the host.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from jax import lax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from ppox.config import ConfigError
from ppox.parallel.layout import DATA_AXIS, SINGLE, Layout

AXIS = "runs"


def spans_processes(devices: Sequence[jax.Device] | None) -> bool:
    """Whether ``devices`` include another process's (a global mesh)."""
    if devices is None:
        return False
    me = jax.process_index()
    return any(d.process_index != me for d in devices)


def _check_divides(batch: int, devices: Sequence[jax.Device], what: str) -> None:
    if batch % len(devices):
        raise ConfigError(f"{batch} {what} do not split evenly across the {len(devices)} "
                          f"devices of {jax.process_count()} processes: use a multiple of "
                          f"{len(devices)}")


def device_count_for(batch: int, devices: Sequence[jax.Device] | None = None) -> int:
    """How many of ``devices`` (default: the local ones) a batch of ``batch`` runs is split
    across (1 if uneven). Devices of several processes: all of them, or a ``ConfigError``."""
    if spans_processes(devices):
        _check_divides(batch, devices, "runs")
        return len(devices)
    n = len(devices if devices is not None else jax.local_devices())
    while n > 1 and batch % n:
        n -= 1
    return n


def _mesh(devices: Sequence[jax.Device] | None, n: int, axis: str) -> Mesh:
    return Mesh(np.array(list(devices if devices is not None else jax.local_devices())[:n]),
                (axis,))


def vmap_runs(fn: Callable[..., Any], in_axes: Sequence[int | None],
              size: int) -> Callable[..., Any]:
    """``jax.vmap(fn, in_axes)`` over a batch of ``size`` runs; for one run, ``fn`` on the
    run's slice with the batch axis put back on every output instead. The same values, but
    a size-1 vmap leaves a batch dimension of 1 on every op, which XLA's CPU backend
    compiles to slower programs (1024 CartPole envs: ~8% fewer env steps/s)."""
    if size != 1:
        return jax.vmap(fn, in_axes=tuple(in_axes))

    @functools.wraps(fn)  # jit names the program after fn (the sweep counts its traces)
    def one(*args: Any) -> Any:
        sliced = [a if ax is None else
                  jax.tree.map(lambda x, ax=ax: lax.index_in_dim(x, 0, ax, keepdims=False), a)
                  for a, ax in zip(args, in_axes, strict=True)]
        return jax.tree.map(lambda x: x[None], fn(*sliced))

    return one


def batched_jit(fn: Callable[..., Any], in_axes: Sequence[int | None], batch: int,
                donate_argnums: tuple[int, ...] = (),
                devices: Sequence[jax.Device] | None = None) -> Callable[..., Any]:
    """``jit(vmap(fn, in_axes))``, sharded over devices along the batch axis.

    Arguments with ``in_axes[i] is None`` are replicated; every output has the batch axis
    first. With one device (or a batch that does not divide across several) this is plain
    ``jit(vmap(...))``. ``devices``: the local ones by default; ``jax.devices()`` after
    ``ppox.parallel.distributed.initialize`` splits the batch across every process (which
    must divide it) -- its inputs placed by ``shard_batch`` or ``shard_local_batch``.
    """
    n_dev = device_count_for(batch, devices)
    vfn = vmap_runs(fn, in_axes, batch // n_dev)
    if n_dev == 1:
        return jax.jit(vfn, donate_argnums=donate_argnums)
    mesh = _mesh(devices, n_dev, AXIS)
    in_specs = tuple(P() if ax is None else P(AXIS) for ax in in_axes)
    sharded = jax.shard_map(vfn, mesh=mesh, in_specs=in_specs, out_specs=P(AXIS),
                            check_vma=False)
    return jax.jit(sharded, donate_argnums=donate_argnums)


def _place_global(tree: Any, sharding: NamedSharding) -> Any:
    """The same full value given on every process: each process places only the slices of
    its own devices (``jax.make_array_from_callback``)."""
    def leaf(x: Any) -> jax.Array:
        host = np.asarray(x)
        return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])

    return jax.tree.map(leaf, tree)


def batch_sharding(batch: int, devices: Sequence[jax.Device] | None = None
                   ) -> NamedSharding | None:
    """Where ``batched_jit``'s inputs and outputs with the batch axis live: split along it
    across ``device_count_for(batch, devices)`` devices (None: one device, no sharding)."""
    n_dev = device_count_for(batch, devices)
    return None if n_dev == 1 else NamedSharding(_mesh(devices, n_dev, AXIS), P(AXIS))


def device_axis_sharding(num_shards: int, devices: Sequence[jax.Device] | None = None
                         ) -> NamedSharding:
    """Where ``data_parallel_jit``'s first argument and outputs live: one slice of the
    leading device axis per device."""
    return NamedSharding(_mesh(devices, num_shards, DATA_AXIS), P(DATA_AXIS))


def shard_batch(tree: Any, batch: int, devices: Sequence[jax.Device] | None = None) -> Any:
    """Places a batched pytree (leading axis ``batch``) across the devices it will run on.
    Across processes every process passes the whole batch and keeps only its own rows."""
    sharding = batch_sharding(batch, devices)
    if sharding is None:
        return tree
    if spans_processes(devices):
        return _place_global(tree, sharding)
    return jax.device_put(tree, sharding)


def process_rows(batch: int, devices: Sequence[jax.Device]) -> slice:
    """The rows of a batch of ``batch`` split across ``devices`` that this process holds
    (its devices' slices, contiguous as ``jax.devices()`` lists each process's together)."""
    n_dev = device_count_for(batch, devices)
    per = batch // n_dev
    mine = [i for i, d in enumerate(list(devices)[:n_dev])
            if d.process_index == jax.process_index()]
    if not mine:
        return slice(0, 0)
    if mine != list(range(mine[0], mine[-1] + 1)):
        raise ValueError("this process's devices are not contiguous in the mesh")
    return slice(mine[0] * per, (mine[-1] + 1) * per)


def shard_local_batch(tree: Any, batch: int, devices: Sequence[jax.Device]) -> Any:
    """The global batch (leading axis ``batch``) from this process's own rows only
    (``process_rows``), each process building nothing but its shard
    (``jax.make_array_from_process_local_data``)."""
    n_dev = device_count_for(batch, devices)
    sharding = NamedSharding(_mesh(devices, n_dev, AXIS), P(AXIS))
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(
            sharding, np.asarray(x), (batch, *np.shape(x)[1:])), tree)


def replicate(tree: Any, devices: Sequence[jax.Device] | None = None) -> Any:
    """``tree`` as the same value on every device: the replicated arguments of a program over
    several processes (every process passes the same value). One process: unchanged."""
    if not spans_processes(devices):
        return tree
    return _place_global(tree, NamedSharding(_mesh(devices, len(devices), AXIS), P()))


def data_parallel_jit(fn: Callable[..., Any], num_shards: int, num_replicated: int,
                      donate_argnums: tuple[int, ...] = (),
                      devices: Sequence[jax.Device] | None = None) -> Callable[..., Any]:
    """One run split across ``num_shards`` devices (data parallelism, or network splitting
    with the same axis as ``split_axis``).

    ``fn(local, *replicated)`` sees its device's slice of the first argument without the
    device axis, and calls collectives over ``DATA_AXIS``. The first argument and every
    output carry a leading device axis ``[num_shards, ...]`` (the output of device ``d``
    at index ``d``); the other ``num_replicated`` arguments are the same on every device.
    ``devices``: the first ``num_shards`` of them (default: the local devices);
    ``jax.devices()`` after ``ppox.parallel.distributed.initialize`` spans every process, so
    P processes of D devices compute what one process of P*D devices does.
    """
    mesh = _mesh(devices, num_shards, DATA_AXIS)

    def local(sharded: Any, *replicated: Any) -> Any:
        out = fn(jax.tree.map(lambda x: x[0], sharded), *replicated)
        return jax.tree.map(lambda x: x[None], out)

    in_specs = (P(DATA_AXIS),) + (P(),) * num_replicated
    sharded = jax.shard_map(local, mesh=mesh, in_specs=in_specs, out_specs=P(DATA_AXIS),
                            check_vma=False)
    return jax.jit(sharded, donate_argnums=donate_argnums)


def shard_devices(tree: Any, num_shards: int,
                  devices: Sequence[jax.Device] | None = None) -> Any:
    """Places a pytree with a leading device axis ``[num_shards, ...]`` one slice per device
    (of ``devices``, default the local ones; across processes each process passes the whole
    tree and keeps its own devices' slices)."""
    sharding = device_axis_sharding(num_shards, devices)
    if spans_processes(devices):
        _check_divides(num_shards, devices[:num_shards], "device slices")
        return _place_global(tree, sharding)
    return jax.device_put(tree, sharding)


def _local_leaf(x: Any) -> np.ndarray:
    if not isinstance(x, jax.Array) or x.is_fully_addressable:
        return np.asarray(x)
    if x.ndim == 0:
        return np.asarray(x.addressable_data(0))
    shards = sorted(x.addressable_shards, key=lambda s: s.index[0].start or 0)
    rows: list[np.ndarray] = []
    seen: set[int] = set()
    for s in shards:  # replicated slices (several devices of one process) count once
        if (s.index[0].start or 0) not in seen:
            seen.add(s.index[0].start or 0)
            rows.append(np.asarray(s.data))
    return np.concatenate(rows) if rows else np.zeros((0, *x.shape[1:]), x.dtype)


def local_view(tree: Any) -> Any:
    """The rows of a (leading-axis sharded) output that this process holds, as numpy, in
    order; no communication. Under data parallelism each row is one device's copy and the
    replicated parts (parameters, metrics) are the same in every row: row 0 is the run."""
    return jax.tree.map(_local_leaf, tree)


def gather(tree: Any) -> Any:
    """The whole of a sharded output on every process, as numpy (a collective across
    processes: every process must call it; e.g. a checkpoint of a batch of runs)."""
    leaves, treedef = jax.tree.flatten(tree)
    spread = [i for i, x in enumerate(leaves)
              if isinstance(x, jax.Array) and not x.is_fully_addressable]
    out = [None if i in spread else np.asarray(x) for i, x in enumerate(leaves)]
    if spread:
        from jax.experimental import multihost_utils

        whole = multihost_utils.process_allgather([leaves[i] for i in spread], tiled=True)
        for i, x in zip(spread, whole, strict=True):
            out[i] = np.asarray(x)
    return jax.tree.unflatten(treedef, out)


__all__ = [
    "AXIS",
    "DATA_AXIS",
    "SINGLE",
    "Layout",
    "batch_sharding",
    "batched_jit",
    "data_parallel_jit",
    "device_axis_sharding",
    "device_count_for",
    "gather",
    "local_view",
    "process_rows",
    "replicate",
    "shard_batch",
    "shard_devices",
    "shard_local_batch",
    "spans_processes",
    "vmap_runs",
]
