"""The PPO update: ``update_epochs`` x ``num_minibatches`` SGD steps, all in ``lax.scan``.

Minibatches are gathered per step from the flat batch with one index vector (a fused
gather), instead of materializing a fully permuted copy of the batch every epoch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct
from jax import lax

from ppox.config import HParams, PPOConfig
from ppox.losses import normalize_advantages, ppo_clip_loss, value_loss
from ppox.networks import Params, Policy
from ppox.packing import pack, unpack


@struct.dataclass
class Batch:
    """Flat training data, ``N = T * B`` rows (or a minibatch of them).

    Attributes:
        obs: ``[N, obs_dim]``; action: ``[N]`` or ``[N, act_dim]``; log_prob, value,
        advantages, returns: ``[N] float32``.
    """

    obs: jax.Array
    action: jax.Array
    log_prob: jax.Array
    value: jax.Array
    advantages: jax.Array
    returns: jax.Array


@struct.dataclass
class OptState:
    """Parameters and optimizer state."""

    params: Params
    opt_state: Any


@struct.dataclass
class SGDCarry:
    """The minibatch scan carry: optimizer state and running sums of the metrics."""

    opt: OptState
    metric_sums: dict[str, jax.Array]


@dataclass(frozen=True, eq=False)
class UpdateContext:
    cfg: PPOConfig
    hp: HParams
    policy: Policy
    packed_batch: jax.Array  # [N, F]: the Batch rows packed (see ppox.packing)
    template: Batch  # one row of the Batch, for unpacking
    axis_name: str | None = None  # set under data parallelism: gradients are pmean-ed


def flatten_time(x: jax.Array) -> jax.Array:
    """``[T, B, ...] -> [T * B, ...]``: the one minibatch reshape helper."""
    return x.reshape(x.shape[0] * x.shape[1], *x.shape[2:])


def make_optimizer(cfg: PPOConfig, hp: HParams) -> optax.GradientTransformation:
    """``clip_by_global_norm(max_grad_norm)`` then Adam (eps 1e-5) with a linear decay to 0.

    The schedule is always a function of the step count, annealed or not, so the optimizer
    state has the same structure either way. The learning rate drops once per update (not
    per minibatch): ``lr * (1 - update_index / num_updates)``.
    """
    steps_per_update = cfg.update_epochs * cfg.num_minibatches

    def schedule(count: jax.Array) -> jax.Array:
        if not cfg.anneal_lr:
            return jnp.asarray(hp.learning_rate, jnp.float32)
        frac = 1.0 - (count // steps_per_update) / cfg.num_updates
        return hp.learning_rate * frac

    return optax.chain(
        optax.clip_by_global_norm(hp.max_grad_norm),
        optax.adam(learning_rate=schedule, eps=1e-5),
    )


def ppo_loss(ctx: UpdateContext, params: Params, mb: Batch,
             key: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Total loss ``pg + vf_coef * vf - ent_coef * entropy`` on one minibatch."""
    hp, cfg = ctx.hp, ctx.cfg
    dist = ctx.policy.dist(params, mb.obs)
    log_prob = dist.log_prob(mb.action)
    adv = normalize_advantages(mb.advantages) if cfg.normalize_advantages else mb.advantages
    pg_loss, (approx_kl, clip_frac) = ppo_clip_loss(log_prob, mb.log_prob, adv, hp.clip_eps)
    value = ctx.policy.value(params, mb.obs)
    v_loss = value_loss(value, mb.value, mb.returns, hp.vf_clip_eps, cfg.clip_value_loss)
    entropy = jnp.mean(dist.entropy(key))
    total = pg_loss + hp.vf_coef * v_loss - hp.ent_coef * entropy
    return total, {"loss": total, "pg_loss": pg_loss, "v_loss": v_loss, "entropy": entropy,
                   "approx_kl": approx_kl, "clip_frac": clip_frac}


def sgd_step(ctx: UpdateContext, carry: SGDCarry,
             xs: tuple[jax.Array, jax.Array]) -> tuple[SGDCarry, None]:
    """One minibatch: gather rows ``idx`` (one gather), gradient, (pmean), clip, Adam."""
    idx, key = xs
    mb = unpack(jnp.take(ctx.packed_batch, idx, axis=0), ctx.template, batch_ndim=1)
    opt = carry.opt
    grads, metrics = jax.grad(ppo_loss, argnums=1, has_aux=True)(ctx, opt.params, mb, key)
    if ctx.axis_name is not None:
        grads = lax.pmean(grads, ctx.axis_name)
    tx = make_optimizer(ctx.cfg, ctx.hp)
    updates, opt_state = tx.update(grads, opt.opt_state, opt.params)
    params = optax.apply_updates(opt.params, updates)
    metrics["grad_norm"] = optax.global_norm(grads)
    sums = jax.tree.map(jnp.add, carry.metric_sums, metrics)
    return SGDCarry(OptState(params, opt_state), sums), None


def minibatch_indices(key: jax.Array, epochs: int, num_rows: int,
                      num_minibatches: int) -> jax.Array:
    """``[epochs * num_minibatches, num_rows // num_minibatches]`` row indices: a fresh
    permutation of the rows per epoch, split into minibatches."""
    keys = jax.random.split(key, epochs)
    perms = jax.vmap(lambda k: jax.random.permutation(k, num_rows))(keys)
    return perms.reshape(epochs * num_minibatches, num_rows // num_minibatches)


METRIC_NAMES = ("loss", "pg_loss", "v_loss", "entropy", "approx_kl", "clip_frac", "grad_norm")


def update(cfg: PPOConfig, hp: HParams, policy: Policy, batch: Batch, opt: OptState,
           key: jax.Array, axis_name: str | None = None,
           ) -> tuple[OptState, dict[str, jax.Array]]:
    """All epochs and minibatches as one scan; returns metrics averaged over the steps.

    ``batch`` rows: ``N`` (per device under data parallelism).
    """
    key_perm, key_ent = jax.random.split(key)
    num_rows = batch.obs.shape[0]
    idx = minibatch_indices(key_perm, cfg.update_epochs, num_rows, cfg.num_minibatches)
    ent_keys = jax.random.split(key_ent, idx.shape[0])
    ctx = UpdateContext(cfg=cfg, hp=hp, policy=policy, packed_batch=pack(batch, 1),
                        template=jax.tree.map(lambda x: x[:1], batch), axis_name=axis_name)
    zeros = {name: jnp.float32(0.0) for name in METRIC_NAMES}
    carry, _ = lax.scan(lambda c, xs: sgd_step(ctx, c, xs), SGDCarry(opt, zeros),
                        (idx, ent_keys))
    steps = idx.shape[0]
    return carry.opt, {k: v / steps for k, v in carry.metric_sums.items()}
