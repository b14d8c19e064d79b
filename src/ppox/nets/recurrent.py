"""A recurrent torso: a feed-forward torso (MLP or CNN), then a GRU cell over its features.

The carry is the GRU's hidden state ``[B, size]``; where ``reset [B]`` is set (the
observation starts an episode) it is replaced by the initial state (zeros) before the step,
so no memory leaks across episodes, in the rollout and in the update's replay alike.

The GRU is flax's ``nn.GRUCell`` (its six kernels drawn, like every other kernel, from the
network's one ``orthogonal_kernels`` draw, with gain 1; biases zero).
"""

from __future__ import annotations

from dataclasses import dataclass

import flax.linen as nn
import jax
import jax.numpy as jnp

from ppox.nets.cnn import CNNTorso
from ppox.nets.torso import Carry, MLPTorso, Params, dense_params, matmul_flops

GRU_NAME = "GRUCell_0"
GRU_GAIN = 1.0
_INPUT_GATES = ("ir", "iz", "in")  # with biases
_HIDDEN_GATES = ("hr", "hz", "hn")  # only hn has a bias in flax's GRUCell


@dataclass(frozen=True)
class GRUTorso:
    """``inner`` (feed-forward) features through a GRU cell of ``size`` units."""

    inner: MLPTorso | CNNTorso
    size: int

    is_recurrent = True

    @property
    def obs_shape(self) -> tuple[int, ...]:
        return self.inner.obs_shape

    @property
    def out_dim(self) -> int:
        return self.size

    @property
    def head_name(self) -> str:
        return self.inner.head_name

    def matrices(self) -> list[tuple[int, int]]:
        gates = [(self.inner.out_dim, self.size)] * 3 + [(self.size, self.size)] * 3
        return [*self.inner.matrices(), *gates]

    def gains(self) -> list[float]:
        return [*self.inner.gains(), *[GRU_GAIN] * 6]

    def row_flops(self) -> int:
        """The inner torso's FLOPs plus the GRU's six gate matmuls (three on the features,
        three on the state) for one step of one env; the gates' element-wise work is not
        counted."""
        n = len(self.inner.matrices())
        return self.inner.row_flops() + matmul_flops(self.matrices()[n:])

    def input_flops(self) -> int:
        """The inner torso's first layer (its backward needs no input gradient)."""
        return self.inner.input_flops() if self.inner.matrices() else \
            matmul_flops(self.matrices()[:3])

    def build(self, kernels: list[jax.Array]) -> Params:
        n = len(self.inner.matrices())
        params = self.inner.build(kernels[:n])
        gru = {name: dense_params(w) for name, w in zip(_INPUT_GATES, kernels[n:n + 3],
                                                        strict=True)}
        for name, w in zip(_HIDDEN_GATES, kernels[n + 3:], strict=True):
            gru[name] = dense_params(w) if name == "hn" else {"kernel": w}
        params[GRU_NAME] = gru
        return params

    def initial_carry(self, batch_shape: tuple[int, ...]) -> Carry:
        return jnp.zeros((*batch_shape, self.size), jnp.float32)

    def reset_carry(self, carry: Carry, reset: jax.Array | None) -> Carry:
        """``carry`` with the rows where ``reset [B]`` is set back at the initial state."""
        if reset is None:
            return carry
        return jnp.where(reset[..., None], self.initial_carry(reset.shape), carry)

    def apply(self, params: Params, x: jax.Array, carry: Carry,
              reset: jax.Array | None = None) -> tuple[jax.Array, Carry]:
        """One step: ``x [B, *obs_shape]``, ``carry [B, size]`` -> (features, carry), both
        ``[B, size]`` (the GRU's output is its new state)."""
        features, _ = self.inner.apply(params, x)
        carry = self.reset_carry(carry, reset)
        carry, out = nn.GRUCell(self.size).apply({"params": params[GRU_NAME]}, carry, features)
        return out, carry
