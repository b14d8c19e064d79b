"""PPO's pure pieces: GAE, the clipped surrogate, the (clipped) value loss.

All arrays are time-major ``[T, B]``. Nothing here knows about networks or environments.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax


def gae(
    reward: jax.Array,
    value: jax.Array,
    bootstrap_value: jax.Array,
    terminated: jax.Array,
    truncated: jax.Array,
    gamma: jax.Array | float,
    gae_lambda: jax.Array | float,
) -> tuple[jax.Array, jax.Array]:
    """Generalized advantage estimation with terminations and truncations kept apart.

    Args:
        reward: ``[T, B] float32`` r_t.
        value: ``[T, B] float32`` V(s_t).
        bootstrap_value: ``[T, B] float32`` the value of the state this step reached:
            V(s_{t+1}) when the episode goes on, V(final_obs_t) when it was truncated
            (its value when terminated is ignored).
        terminated: ``[T, B] bool`` s_{t+1} is terminal: bootstrap with 0.
        truncated: ``[T, B] bool`` the episode was cut after step t.
        gamma, gae_lambda: scalars.

    Returns:
        ``(advantages, returns)``, both ``[T, B] float32``; ``returns = advantages + value``.

    delta_t = r_t + gamma * (1 - terminated_t) * bootstrap_value_t - V(s_t)
    A_t = delta_t + gamma * lambda * (1 - done_t) * A_{t+1}, done = terminated | truncated,
    so no advantage flows across an episode boundary of either kind.
    """
    not_terminated = 1.0 - terminated.astype(jnp.float32)
    not_done = 1.0 - (terminated | truncated).astype(jnp.float32)
    delta = reward + gamma * not_terminated * bootstrap_value - value
    decay = gamma * gae_lambda * not_done

    def backward(next_adv: jax.Array, xs: tuple[jax.Array, jax.Array]):
        d, k = xs
        adv = d + k * next_adv
        return adv, adv

    _, advantages = lax.scan(backward, jnp.zeros_like(delta[0]), (delta, decay),
                             reverse=True)
    return advantages, advantages + value


def normalize_advantages(adv: jax.Array, eps: float = 1e-8) -> jax.Array:
    """Zero mean, unit std over all elements; a one-element batch gives 0, not NaN.

    Uses the population std (ddof=0): for a single element it is 0 and ``(a - mean) = 0``,
    so the result is exactly 0 (the sample std, ddof=1, would divide by zero).
    """
    centered = adv - jnp.mean(adv)
    return centered / (jnp.sqrt(jnp.mean(centered * centered)) + eps)


def ppo_clip_loss(
    log_prob: jax.Array,
    old_log_prob: jax.Array,
    advantages: jax.Array,
    clip_eps: jax.Array | float,
) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    """Clipped surrogate loss ``-mean(min(r A, clip(r, 1-eps, 1+eps) A))``.

    Returns ``(loss, (approx_kl, clip_fraction))`` where ``approx_kl = mean((r-1) - log r)``
    (the low-variance estimator) and ``clip_fraction = mean(|r - 1| > eps)``.
    """
    log_ratio = log_prob - old_log_prob
    ratio = jnp.exp(log_ratio)
    unclipped = ratio * advantages
    clipped = jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * advantages
    loss = -jnp.mean(jnp.minimum(unclipped, clipped))
    approx_kl = jnp.mean((ratio - 1.0) - log_ratio)
    clip_frac = jnp.mean((jnp.abs(ratio - 1.0) > clip_eps).astype(jnp.float32))
    return loss, (lax.stop_gradient(approx_kl), lax.stop_gradient(clip_frac))


def value_loss(
    value: jax.Array,
    old_value: jax.Array,
    returns: jax.Array,
    vf_clip_eps: jax.Array | float,
    clip: bool = True,
) -> jax.Array:
    """``0.5 * mean(max((V - R)^2, (V_clipped - R)^2))`` with
    ``V_clipped = old_V + clip(V - old_V, -eps, eps)``; plain ``0.5 * mean((V - R)^2)``
    when ``clip`` is False."""
    err = jnp.square(value - returns)
    if not clip:
        return 0.5 * jnp.mean(err)
    clipped = old_value + jnp.clip(value - old_value, -vf_clip_eps, vf_clip_eps)
    return 0.5 * jnp.mean(jnp.maximum(err, jnp.square(clipped - returns)))


def explained_variance(pred: jax.Array, target: jax.Array) -> jax.Array:
    """``1 - Var(target - pred) / Var(target)`` (NaN-free: 0 when Var(target) is 0)."""
    var_t = jnp.var(target)
    return jnp.where(var_t > 0, 1.0 - jnp.var(target - pred) / jnp.where(var_t > 0, var_t, 1.0),
                     0.0)
