"""Pack a pytree of per-row arrays into one float32 matrix, and back.

Inside a ``lax.scan`` every output leaf costs one ``dynamic_update_slice`` per iteration,
and every gathered leaf costs one gather: on CPU, where these programs are bound by the
number of small ops, writing one packed ``[B, F]`` row block per step (and gathering one
``[N, F]`` matrix per minibatch) instead of a dozen leaves is measurably faster.

Integers and booleans travel as float32; that is exact for |values| < 2**24, which covers
actions, flags and episode lengths.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp


def pack(tree: Any, batch_ndim: int) -> jax.Array:
    """Leaves ``[*batch, *rest]`` -> ``[*batch, sum(prod(rest))] float32``."""
    leaves = jax.tree.leaves(tree)
    batch = leaves[0].shape[:batch_ndim]
    cols = [jnp.asarray(x, jnp.float32).reshape(*batch, -1) for x in leaves]
    return jnp.concatenate(cols, axis=-1)


def unpack(packed: jax.Array, template: Any, batch_ndim: int) -> Any:
    """Inverse of ``pack``. ``template`` holds arrays (or shape/dtype structs) shaped
    ``[*template_batch, *rest]`` with ``batch_ndim`` batch axes; the result's batch axes are
    ``packed.shape[:-1]`` (so a ``[T, B, F]`` scan output unpacks with a ``[B, ...]``
    per-step template and ``batch_ndim=1``)."""
    leaves, treedef = jax.tree.flatten(template)
    out, start = [], 0
    batch = packed.shape[:-1]
    for leaf in leaves:
        rest = tuple(leaf.shape[batch_ndim:])
        width = math.prod(rest)
        col = packed[..., start:start + width].reshape(*batch, *rest)
        out.append(col.astype(leaf.dtype))
        start += width
    if start != packed.shape[-1]:
        raise ValueError(f"packed width {packed.shape[-1]} != template width {start}")
    return jax.tree.unflatten(treedef, out)
