"""A convolutional torso for image observations ``[H, W, C]`` (MinAtar-style).

Conv layers (3x3, stride 1, no padding, as in the MinAtar paper's network), each followed by
the activation, then the flattened feature map through dense layers. Every kernel is an
orthogonal matrix of the policy's one ``orthogonal_kernels`` draw: a conv kernel is drawn as
the ``(kh * kw * cin, cout)`` matrix that multiplies an image patch, then reshaped to flax's
``(kh, kw, cin, cout)`` layout (row-major, so the patch order is ``(kh, kw, cin)``).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp

from ppox.nets.torso import (
    ACTIVATIONS,
    HIDDEN_GAIN,
    Carry,
    Params,
    dense,
    dense_params,
    matmul_flops,
)

KERNEL = 3


def patches(x: jax.Array) -> jax.Array:
    """``x [..., H, W, C]`` -> every 3x3 patch ``[..., H - 2, W - 2, 9 * C]``, flattened in
    ``(kh, kw, cin)`` order (the rows of a kernel's patch matrix)."""
    h, w = x.shape[-3] - KERNEL + 1, x.shape[-2] - KERNEL + 1
    return jnp.concatenate([x[..., i:i + h, j:j + w, :]
                            for i in range(KERNEL) for j in range(KERNEL)], axis=-1)


def conv(params: Params, x: jax.Array) -> jax.Array:
    """A 3x3 ``VALID`` convolution of ``x [..., H, W, cin]`` with flax ``nn.Conv``'s
    parameters, as patches @ patch matrix: a matmul batches under ``vmap`` over parameters
    (seeds, sweeps), where a convolution with batched kernels becomes a grouped one, about
    2x slower on XLA:CPU (measured on a 512-frame gradient)."""
    kernel = params["kernel"]
    matrix = kernel.reshape(-1, kernel.shape[-1])
    return patches(x) @ matrix + params["bias"]


def conv_params(matrix: jax.Array, cin: int) -> Params:
    """A ``(kh * kw * cin, cout)`` patch matrix as a conv layer's parameters."""
    return {"kernel": matrix.reshape(KERNEL, KERNEL, cin, matrix.shape[1]),
            "bias": jnp.zeros((matrix.shape[1],), jnp.float32)}


@dataclass(frozen=True)
class CNNTorso:
    """``channels`` conv layers then ``dense`` layers on an ``obs_shape = (H, W, C)`` image."""

    obs_shape: tuple[int, ...]
    channels: tuple[int, ...] = (16,)
    dense: tuple[int, ...] = (128,)
    activation: str = "relu"

    is_recurrent = False

    @property
    def feature_map(self) -> tuple[int, int, int]:
        """``(H', W', C')`` after the convolutions (each trims ``KERNEL - 1`` rows/cols)."""
        h, w, c = self.obs_shape
        trim = (KERNEL - 1) * len(self.channels)
        return h - trim, w - trim, self.channels[-1] if self.channels else c

    @property
    def out_dim(self) -> int:
        return self.dense[-1] if self.dense else math.prod(self.feature_map)

    @property
    def head_name(self) -> str:
        return f"Dense_{len(self.dense)}"

    def matrices(self) -> list[tuple[int, int]]:
        cins = [self.obs_shape[-1], *self.channels[:-1]]
        convs = [(KERNEL * KERNEL * cin, cout) for cin, cout in zip(cins, self.channels,
                                                                     strict=True)]
        widths = [math.prod(self.feature_map), *self.dense]
        return [*convs, *itertools.pairwise(widths)]

    def gains(self) -> list[float]:
        return [HIDDEN_GAIN] * (len(self.channels) + len(self.dense))

    def row_flops(self) -> int:
        """One image's forward matmul FLOPs: each conv layer's patch matrix applied at
        every output position (``H' * W'`` rows of ``9 * cin`` -> ``cout``), then the dense
        layers."""
        n = len(self.channels)
        mats = self.matrices()
        h, w = self.obs_shape[0], self.obs_shape[1]
        total = 0
        for i, mat in enumerate(mats[:n]):
            positions = (h - (KERNEL - 1) * (i + 1)) * (w - (KERNEL - 1) * (i + 1))
            total += matmul_flops([mat], rows=positions)
        return total + matmul_flops(mats[n:])

    def input_flops(self) -> int:
        """The first layer's share of ``row_flops`` (its backward needs no input gradient)."""
        if not self.channels:
            return matmul_flops(self.matrices()[:1])
        h, w = self.obs_shape[0] - KERNEL + 1, self.obs_shape[1] - KERNEL + 1
        return matmul_flops(self.matrices()[:1], rows=h * w)

    def build(self, kernels: list[jax.Array]) -> Params:
        n = len(self.channels)
        cins = [self.obs_shape[-1], *self.channels[:-1]]
        params = {f"Conv_{i}": conv_params(w, cin)
                  for i, (w, cin) in enumerate(zip(kernels[:n], cins, strict=True))}
        params.update({f"Dense_{i}": dense_params(w) for i, w in enumerate(kernels[n:])})
        return params

    def initial_carry(self, batch_shape: tuple[int, ...]) -> Carry:
        return ()

    def apply(self, params: Params, x: jax.Array, carry: Carry = (),
              reset: jax.Array | None = None) -> tuple[jax.Array, Carry]:
        """``x [*batch, H, W, C]`` -> features ``[*batch, out_dim]``."""
        act = ACTIVATIONS[self.activation]
        for i in range(len(self.channels)):
            x = act(conv(params[f"Conv_{i}"], x))
        x = x.reshape(*x.shape[:x.ndim - 3], -1)
        for i in range(len(self.dense)):
            x = act(dense(params[f"Dense_{i}"], x))
        return x, carry
