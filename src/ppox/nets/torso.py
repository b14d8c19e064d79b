"""Torsos: observation (and recurrent carry) -> features.

A torso is a small frozen dataclass with one contract, so a CNN or a GRU plugs in without
touching the trainer::

    matrices() -> [(fan_in, fan_out), ...]   the kernels it wants orthogonally initialized
    gains() -> [gain, ...]                    their init gains, in the same order
    build(kernels) -> params                  its parameter tree from those kernels
    out_dim                                   feature width
    head_name                                 the key of the linear layer put on top of it
    initial_carry(batch_shape) -> carry       () for a feed-forward torso
    apply(params, x, carry, reset) -> (features, carry)
    row_flops() -> int                        matmul FLOPs of one observation's forward pass
    input_flops() -> int                      those of the layer that reads the observation

``x`` is ``[*batch, *obs_shape]``; a feed-forward torso accepts any batch shape and ignores
``carry``/``reset``; a recurrent one takes one step of ``[B, *obs_shape]`` and resets its
carry to ``initial_carry`` where ``reset`` (``[B] bool``) is set. Flattening the observation
is the MLP's business: observations keep their shape up to the torso.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Params = Any
Carry = Any

ACTIVATIONS = {
    "tanh": jnp.tanh,
    "relu": nn.relu,
    "elu": nn.elu,
    "silu": nn.silu,
    "gelu": nn.gelu,
}

HIDDEN_GAIN = math.sqrt(2.0)


def matmul_flops(matrices: list[tuple[int, int]], rows: int = 1) -> int:
    """FLOPs of ``rows`` rows through each ``(fan_in, fan_out)`` matrix: ``2 * a * b`` per
    row and matrix (a multiply and an add per weight)."""
    return sum(2 * rows * a * b for a, b in matrices)


# A few rows through a thin layer (one side at most this wide): the rollout's actor on a
# handful of envs, its input layer and its head. There a matmul library call costs more than
# the arithmetic, and XLA's own fused multiply-and-sum is 2-4x faster on CPU
# (benchmarks/results/HISTORY.md, "Platform set-up"); a wider layer or more rows stays a matmul.
FEW_ROWS = 8
THIN = 8


def dense(params: Params, x: jax.Array) -> jax.Array:
    """``x @ kernel + bias`` over the last axis: flax's ``nn.Dense`` arithmetic, op for op
    (the same program), without building and applying a module, which cost ~1 ms of tracing
    per call (CartPole's training chunk has 18). For at most ``FEW_ROWS`` rows through a
    layer at most ``THIN`` wide on one side, a sum of products: the same sum in another
    order."""
    kernel = params["kernel"]
    if math.prod(x.shape[:-1]) <= FEW_ROWS and min(kernel.shape) <= THIN:
        return jnp.sum(x[..., :, None] * kernel, axis=-2) + params["bias"]
    y = jax.lax.dot_general(x, kernel, (((x.ndim - 1,), (0,)), ((), ())))
    return y + jnp.reshape(params["bias"], (1,) * (y.ndim - 1) + (-1,))


def dense_params(kernel: jax.Array) -> Params:
    return {"kernel": kernel, "bias": jnp.zeros((kernel.shape[1],), jnp.float32)}


@dataclass(frozen=True)
class MLPTorso:
    """Dense layers with an activation after each; flattens ``obs_shape`` first."""

    obs_shape: tuple[int, ...]
    hidden: tuple[int, ...]
    activation: str = "tanh"

    is_recurrent = False

    @property
    def in_dim(self) -> int:
        return math.prod(self.obs_shape)

    @property
    def out_dim(self) -> int:
        return self.hidden[-1] if self.hidden else self.in_dim

    @property
    def head_name(self) -> str:
        return f"Dense_{len(self.hidden)}"

    def matrices(self) -> list[tuple[int, int]]:
        widths = [self.in_dim, *self.hidden]
        return list(itertools.pairwise(widths))

    def gains(self) -> list[float]:
        return [HIDDEN_GAIN] * len(self.hidden)

    def row_flops(self) -> int:
        """``2 * fan_in * fan_out`` per dense layer (bias adds and activations, O(width),
        are not counted)."""
        return matmul_flops(self.matrices())

    def input_flops(self) -> int:
        """The first layer's share of ``row_flops`` (its backward needs no input gradient)."""
        return matmul_flops(self.matrices()[:1])

    def build(self, kernels: list[jax.Array]) -> Params:
        return {f"Dense_{i}": dense_params(w) for i, w in enumerate(kernels)}

    def initial_carry(self, batch_shape: tuple[int, ...]) -> Carry:
        return ()

    def apply(self, params: Params, x: jax.Array, carry: Carry = (),
              reset: jax.Array | None = None) -> tuple[jax.Array, Carry]:
        nd = len(self.obs_shape)
        if nd != 1:
            x = x.reshape(*x.shape[:x.ndim - nd], self.in_dim)
        act = ACTIVATIONS[self.activation]
        for i in range(len(self.hidden)):
            x = act(dense(params[f"Dense_{i}"], x))
        return x, carry
