"""Running statistics held in the training state (pytrees, not env wrappers).

* ``RunningMeanStd``: mean and variance of observations, merged batch by batch with the
  parallel (Chan et al.) update; under ``pmean``-style data parallelism the batch moments
  are averaged across devices before merging.
* ``RewardScaler``: the running std of each env's discounted return; rewards are divided by
  it (no centering), as in the common PPO implementations' reward normalization.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct
from jax import lax


@struct.dataclass
class RunningMeanStd:
    """Per-feature running moments. ``mean``/``var``: ``[*shape] float32``; ``count``: []."""

    mean: jax.Array
    var: jax.Array
    count: jax.Array

    @classmethod
    def create(cls, shape: tuple[int, ...]) -> RunningMeanStd:
        # A tiny prior count: the first batch's moments dominate immediately.
        return cls(jnp.zeros(shape, jnp.float32), jnp.ones(shape, jnp.float32),
                   jnp.float32(1e-4))

    def update(self, batch: jax.Array, axis_name: str | None = None) -> RunningMeanStd:
        """Merges the moments of ``batch [N, *shape]`` (averaged over ``axis_name`` if set)."""
        batch = batch.reshape(-1, *self.mean.shape)
        b_mean = jnp.mean(batch, axis=0)
        b_sq = jnp.mean(jnp.square(batch), axis=0)
        b_count = jnp.float32(batch.shape[0])
        if axis_name is not None:
            b_mean, b_sq = lax.pmean((b_mean, b_sq), axis_name)
            b_count = lax.psum(b_count, axis_name)
        b_var = jnp.maximum(b_sq - jnp.square(b_mean), 0.0)
        total = self.count + b_count
        delta = b_mean - self.mean
        mean = self.mean + delta * (b_count / total)
        m2 = (self.var * self.count + b_var * b_count
              + jnp.square(delta) * self.count * b_count / total)
        return RunningMeanStd(mean=mean, var=m2 / total, count=total)

    def normalize(self, x: jax.Array, clip: float | jax.Array = 10.0) -> jax.Array:
        return jnp.clip((x - self.mean) * lax.rsqrt(self.var + 1e-8), -clip, clip)


@struct.dataclass
class RewardScaler:
    """Running std of the discounted return. ``ret``: ``[B]`` per-env discounted return."""

    ret: jax.Array
    stats: RunningMeanStd

    @classmethod
    def create(cls, num_envs: int) -> RewardScaler:
        return cls(jnp.zeros((num_envs,), jnp.float32), RunningMeanStd.create(()))

    def update_and_scale(
        self, reward: jax.Array, done: jax.Array, gamma: jax.Array | float,
        axis_name: str | None = None, clip: float = 10.0,
    ) -> tuple[RewardScaler, jax.Array]:
        """Given ``reward, done: [T, B]``, returns the new scaler and scaled rewards [T, B].

        ``G_t = gamma * G_{t-1} * (1 - done_{t-1}) + r_t`` per env; the variance of every
        ``G_t`` in the rollout is merged into the running statistics, then the rollout's
        rewards are divided by the updated std.
        """

        def discount(carry: jax.Array, xs: tuple[jax.Array, jax.Array]):
            r, d = xs
            g = carry * gamma + r
            return jnp.where(d, 0.0, g), g

        ret, returns = lax.scan(discount, self.ret, (reward, done))
        stats = self.stats.update(returns.reshape(-1), axis_name)
        scaled = jnp.clip(reward * lax.rsqrt(stats.var + 1e-8), -clip, clip)
        return RewardScaler(ret=ret, stats=stats), scaled
