"""Action distributions: Categorical, Gaussian (clipped to the bounds) and tanh-Gaussian.

Each is a small pytree with ``sample``, ``log_prob``, ``entropy``, ``mode`` and ``kl``
(exact, closed form for all three: see ``TanhGaussian.kl``). The value a
policy stores in a rollout is the *raw* sample (an integer, an unclipped Gaussian sample, or
the pre-tanh sample); ``env_action`` maps it to what the environment receives. Log-probs
are always of the raw sample, so the ratio in the PPO objective is exact.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import struct

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
_LOG2 = math.log(2.0)


@struct.dataclass
class Categorical:
    """Categorical over the last axis of ``logits [..., n]``; samples are int32 ``[...]``."""

    logits: jax.Array

    def _log_probs(self) -> jax.Array:
        return jax.nn.log_softmax(self.logits, axis=-1)

    def sample(self, key: jax.Array) -> jax.Array:
        return jax.random.categorical(key, self.logits, axis=-1).astype(jnp.int32)

    def log_prob(self, action: jax.Array) -> jax.Array:
        idx = jnp.asarray(action, jnp.int32)[..., None]
        return jnp.take_along_axis(self._log_probs(), idx, axis=-1)[..., 0]

    def entropy(self, key: jax.Array | None = None) -> jax.Array:
        logp = self._log_probs()
        return -jnp.sum(jnp.exp(logp) * logp, axis=-1)

    def mode(self) -> jax.Array:
        return jnp.argmax(self.logits, axis=-1).astype(jnp.int32)

    def kl(self, other: Categorical) -> jax.Array:
        """Exact ``KL(self || other)`` over the last axis: ``[...]``."""
        logp, logq = self._log_probs(), other._log_probs()
        return jnp.sum(jnp.exp(logp) * (logp - logq), axis=-1)


@struct.dataclass
class Gaussian:
    """Diagonal Gaussian ``N(mean, exp(log_std)^2)`` over the last axis ``[..., d]``.

    The environment receives the sample clipped to the action bounds; the log-prob is that
    of the unclipped sample.
    """

    mean: jax.Array
    log_std: jax.Array

    def sample(self, key: jax.Array) -> jax.Array:
        noise = jax.random.normal(key, self.mean.shape, self.mean.dtype)
        return self.mean + jnp.exp(self.log_std) * noise

    def log_prob(self, x: jax.Array) -> jax.Array:
        z = (x - self.mean) * jnp.exp(-self.log_std)
        return jnp.sum(-0.5 * z * z - self.log_std - _HALF_LOG_2PI, axis=-1)

    def entropy(self, key: jax.Array | None = None) -> jax.Array:
        per_dim = self.log_std + 0.5 + _HALF_LOG_2PI
        return jnp.sum(jnp.broadcast_to(per_dim, self.mean.shape), axis=-1)

    def mode(self) -> jax.Array:
        return self.mean

    def kl(self, other: Gaussian) -> jax.Array:
        """Exact ``KL(self || other)`` of two diagonal Gaussians, summed over the last axis."""
        var_ratio = jnp.exp(2.0 * (self.log_std - other.log_std))
        mean_term = jnp.square((self.mean - other.mean) * jnp.exp(-other.log_std))
        per_dim = 0.5 * (var_ratio + mean_term - 1.0) - (self.log_std - other.log_std)
        return jnp.sum(per_dim, axis=-1)


def tanh_log_det_jacobian(u: jax.Array) -> jax.Array:
    """``log(1 - tanh(u)^2)`` summed over the last axis, stable for large ``|u|``.

    Uses ``1 - tanh(u)^2 = 4 / (e^u + e^-u)^2``, i.e. ``2 * (log 2 - u - softplus(-2u))``,
    which never forms ``1 - 1`` (the naive form is ``-inf`` once ``tanh(u)`` rounds to 1).
    """
    return jnp.sum(2.0 * (_LOG2 - u - jax.nn.softplus(-2.0 * u)), axis=-1)


@struct.dataclass
class TanhGaussian:
    """``tanh(u)`` with ``u ~ N(mean, std^2)``; the stored sample is the pre-tanh ``u``.

    ``log_prob(u) = log N(u) - sum log(1 - tanh(u)^2)``: computing it from ``u`` avoids
    ``atanh(+-1) = inf``. The entropy has no closed form; ``entropy(key)`` is the base
    entropy plus the log-det Jacobian at one reparameterized sample (an unbiased one-sample
    estimate), and the base entropy when no key is given.
    """

    mean: jax.Array
    log_std: jax.Array

    @property
    def base(self) -> Gaussian:
        return Gaussian(self.mean, self.log_std)

    def sample(self, key: jax.Array) -> jax.Array:
        return self.base.sample(key)

    def log_prob(self, u: jax.Array) -> jax.Array:
        return self.base.log_prob(u) - tanh_log_det_jacobian(u)

    def log_prob_action(self, action: jax.Array, eps: float = 1e-6) -> jax.Array:
        """Log-density of a squashed action in ``[-1, 1]``; finite at the bounds."""
        u = jnp.arctanh(jnp.clip(action, -1.0 + eps, 1.0 - eps))
        return self.log_prob(u)

    def entropy(self, key: jax.Array | None = None) -> jax.Array:
        base = self.base.entropy()
        if key is None:
            return base
        return base + tanh_log_det_jacobian(self.sample(key))

    def mode(self) -> jax.Array:
        return self.mean

    def kl(self, other: TanhGaussian) -> jax.Array:
        """Exact ``KL(self || other)``: tanh is a bijection, and the KL divergence is
        invariant under a bijection applied to both, so it is the base Gaussians' KL."""
        return self.base.kl(other.base)


Distribution = Categorical | Gaussian | TanhGaussian
