"""Orthogonal initialization without LAPACK.

``jax.nn.initializers.orthogonal`` draws a Gaussian matrix and takes the Q of its QR
decomposition. On CPU that QR is a LAPACK custom call which splits its batch over XLA's
intra-op thread pool and *blocks* a pool thread until the pieces finish. XLA runs
independent initializers (actor and critic layers) concurrently on that same pool; with as
many QRs in flight as pool threads (2 on a 2-core machine), every pool thread is blocked
waiting for work that no free thread can run, and the program hangs forever. We hit this
(jaxlib 0.10.2; the stacks show ``jax::ParallelBatchMap`` inside ``lapack_sgeqrf_ffi`` and
``lapack_sorgqr_ffi`` on both ``tf_XLAEigen`` threads) whenever a training program was
compiled while another process kept the CPU busy.

This initializer computes the same matrix with plain XLA ops: Gram-Schmidt (with one
re-orthogonalization pass) on the same Gaussian draw. Its Q has a positive-diagonal R,
which is exactly jax's sign-corrected QR, so the result equals
``jax.nn.initializers.orthogonal`` for the same key up to float rounding (tested).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax


def _orthonormal_columns(a: jax.Array) -> jax.Array:
    """Q of the QR decomposition of ``a [m, n]`` (m >= n) with R's diagonal positive."""
    m, n = a.shape
    cols = jnp.arange(n)

    def body(j: jax.Array, q: jax.Array) -> jax.Array:
        v = lax.dynamic_index_in_dim(a, j, axis=1, keepdims=False)
        mask = (cols < j).astype(a.dtype)
        for _ in range(2):  # "twice is enough": the second pass restores orthogonality
            v = v - q @ ((q.T @ v) * mask)
        v = v / jnp.linalg.norm(v)
        return lax.dynamic_update_index_in_dim(q, v, j, axis=1)

    return lax.fori_loop(0, n, body, jnp.zeros((m, n), a.dtype))


def orthogonal(scale: float = 1.0, column_axis: int = -1) -> Callable[..., jax.Array]:
    """A drop-in for ``jax.nn.initializers.orthogonal(scale)`` (2-D and higher shapes)."""

    def init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
        if len(shape) < 2:
            raise ValueError("orthogonal initializer requires at least a 2D shape")
        n_rows, n_cols = math.prod(shape) // shape[column_axis], shape[column_axis]
        z = jax.random.normal(key, (max(n_rows, n_cols), min(n_rows, n_cols)), dtype)
        q = _orthonormal_columns(z)
        if n_rows < n_cols:
            q = q.T
        keep = tuple(d for i, d in enumerate(shape) if i != column_axis % len(shape))
        q = jnp.moveaxis(q.reshape(*keep, shape[column_axis]), -1, column_axis)
        return jnp.asarray(scale, dtype) * q

    return init
