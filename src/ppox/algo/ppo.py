"""PPO with the clipped surrogate (Schulman et al. 2017), the first algorithm on the seam.

One update: GAE over the rollout, then ``update_epochs`` x ``num_minibatches`` SGD steps of
``pg + vf_coef * vf - ent_coef * entropy`` (``ppox.algo.sgd``). The algorithm state is the
optimizer state. The diagnostics come from the SGD steps' own forward passes, as in
CleanRL, Stable-Baselines3 and Brax (no pass of their own over the batch): the loss parts,
``approx_kl`` and ``clip_frac`` against the behaviour policy, averaged over the last epoch's
minibatches (every row once), each taken before its minibatch's step; then ``update_norm``,
``explained_variance`` and the learning rate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from ppox.algo.base import AlgoSetup, Metrics, Rollout, UpdateContext, refuse
from ppox.algo.sgd import (
    SGD,
    Objective,
    flat_params,
    flatten_time,
    learning_rate,
    permutations,
    step_keys,
)
from ppox.losses import (
    explained_variance,
    gae,
    normalize_advantages,
    ppo_clip_loss,
    value_loss,
)
from ppox.nets import Params


@struct.dataclass
class Batch:
    """Training data: rows ``[N, ...]`` (``N = T * B``), or time-major env sequences
    ``[T, B, ...]`` with ``reset [T, B]`` and the start ``carry [B, ...]`` (recurrent).

    Attributes:
        obs, action: as in the rollout; log_prob, value, advantages, returns: float32.
        behaviour: the behaviour policy's distribution at each row (or step), for losses
            that need more of it than the log-prob of the taken action (the KL penalty);
            None otherwise.
    """

    obs: jax.Array
    action: jax.Array
    log_prob: jax.Array
    value: jax.Array
    advantages: jax.Array
    returns: jax.Array
    reset: jax.Array | None = None
    carry: Any = None
    behaviour: Any = None


def make_batch(rollout: Rollout, advantages: jax.Array, returns: jax.Array) -> Batch:
    """Rows for a feed-forward policy; whole sequences (``rollout.reset`` set) otherwise."""
    batch = Batch(obs=rollout.obs, action=rollout.action, log_prob=rollout.log_prob,
                  value=rollout.value, advantages=advantages, returns=returns,
                  reset=rollout.reset)
    if rollout.reset is not None:
        return batch
    return jax.tree.map(flatten_time, batch)


def gae_of(ctx: UpdateContext, rollout: Rollout) -> tuple[jax.Array, jax.Array]:
    """``(advantages, returns)`` ``[T, B]`` of a rollout with the run's gamma and lambda."""
    return gae(rollout.reward, rollout.value, rollout.bootstrap_value, rollout.terminated,
               rollout.truncated, ctx.hp.gamma, ctx.hp.gae_lambda)


def policy_terms(ctx: UpdateContext, params: Params, mb: Batch,
                 key: jax.Array | None) -> tuple[Any, jax.Array, jax.Array]:
    """``(new distribution, new log-probs of the taken actions, mean entropy)``."""
    dist = ctx.policy.dist(params, mb.obs, mb.carry, mb.reset)
    return dist, dist.log_prob(mb.action), jnp.mean(dist.entropy(key))


def value_term(ctx: UpdateContext, params: Params, mb: Batch) -> jax.Array:
    value = ctx.policy.value(params, mb.obs, mb.carry, mb.reset)
    return value_loss(value, mb.value, mb.returns, ctx.hp.vf_clip_eps, ctx.cfg.clip_value_loss)


def actor_terms(ctx: UpdateContext, params: Params, mb: Batch,
                key: jax.Array | None) -> tuple[jax.Array, Metrics]:
    """The actor's part of the loss, ``pg - ent_coef * entropy``, and its diagnostics."""
    _, log_prob, entropy = policy_terms(ctx, params, mb, key)
    pg_loss, (approx_kl, clip_frac) = ppo_clip_loss(log_prob, mb.log_prob, mb.advantages,
                                                    ctx.hp.clip_eps)
    return pg_loss - ctx.hp.ent_coef * entropy, {
        "pg_loss": pg_loss, "entropy": entropy, "approx_kl": approx_kl, "clip_frac": clip_frac}


def critic_terms(ctx: UpdateContext, params: Params, mb: Batch) -> tuple[jax.Array, Metrics]:
    """The critic's part of the loss, ``vf_coef * vf``, and the value loss."""
    v_loss = value_term(ctx, params, mb)
    return ctx.hp.vf_coef * v_loss, {"v_loss": v_loss}


def with_total(ctx: UpdateContext, parts: Metrics) -> Metrics:
    """The loss parts and ``loss = pg + vf_coef * vf - ent_coef * entropy``."""
    hp = ctx.hp
    total = parts["pg_loss"] + hp.vf_coef * parts["v_loss"] - hp.ent_coef * parts["entropy"]
    return {"loss": total, **parts}


def ppo_loss(ctx: UpdateContext, params: Params, mb: Batch,
             key: jax.Array | None) -> tuple[jax.Array, Metrics]:
    """Total loss ``pg + vf_coef * vf - ent_coef * entropy`` on one minibatch.

    ``mb.advantages`` are used as given (normalized before). The auxiliary dict holds the
    loss parts and the PPO diagnostics (``approx_kl``, ``clip_frac``).
    """
    actor, actor_aux = actor_terms(ctx, params, mb, key)
    critic, critic_aux = critic_terms(ctx, params, mb)
    return actor + critic, {"loss": actor + critic, **actor_aux, **critic_aux}


def objective(ctx: UpdateContext) -> Objective:
    """The clipped objective, with its actor and critic parts for network splitting."""
    return Objective(loss=lambda p, mb, key: ppo_loss(ctx, p, mb, key),
                     actor=lambda p, mb, key: actor_terms(ctx, p, mb, key),
                     critic=lambda p, mb: critic_terms(ctx, p, mb),
                     combine=lambda parts: with_total(ctx, parts))


def entropy_keys(ctx: UpdateContext, key: jax.Array) -> jax.Array | None:
    """One key per SGD step for the tanh-Gaussian entropy estimate (None otherwise)."""
    return step_keys(key, ctx.cfg) if ctx.policy.kind == "tanh_gaussian" else None


def sgd_order(ctx: UpdateContext, batch: Batch, key: jax.Array) -> jax.Array:
    """Per epoch, a permutation of the rows (feed-forward) or of the envs (sequences)."""
    sequences = batch.reset is not None
    n = batch.obs.shape[1] if sequences else batch.obs.shape[0]
    return permutations(key, ctx.cfg.update_epochs, n)


def whole_batch(ctx: UpdateContext, batch: Batch) -> Batch:
    """The batch as the diagnostics see it: advantages normalized over all of it (if
    ``normalize_advantages``)."""
    if ctx.cfg.normalize_advantages:
        return batch.replace(advantages=normalize_advantages(batch.advantages))
    return batch


def diagnostic_key(ctx: UpdateContext, key: jax.Array) -> jax.Array | None:
    """The entropy estimate's key for a tanh-Gaussian policy (None otherwise)."""
    return key if ctx.policy.kind == "tanh_gaussian" else None


def update_metrics(ctx: UpdateContext, batch: Batch, old: Params, new: Params,
                   returns: jax.Array) -> Metrics:
    """What every algorithm reports besides its loss: ``update_norm`` (``||new - old||``),
    the critic's ``explained_variance`` (of the values the rollout stored) and the
    ``learning_rate`` of this update."""
    return {"update_norm": jnp.linalg.norm(flat_params(new)[0] - flat_params(old)[0]),
            "explained_variance": explained_variance(batch.value.reshape(returns.shape),
                                                     returns),
            "learning_rate": learning_rate(ctx.cfg, ctx.hp, ctx.update_idx)}


def check_sequences(setup: AlgoSetup) -> None:
    """A recurrent policy's minibatches are whole env sequences: ``num_minibatches`` must
    divide each device's envs."""
    cfg, envs = setup.cfg, setup.layout.local_envs(setup.cfg.num_envs)
    if setup.policy.is_recurrent and envs % cfg.num_minibatches:
        raise refuse(f"num_minibatches={cfg.num_minibatches} with recurrent and {envs} envs "
                     "per device", "minibatches are whole env sequences; choose a "
                     f"num_minibatches that divides {envs} (or more --num-envs)")


@dataclass(frozen=True)
class PPO:
    """The clipped-surrogate PPO update (see the module docstring)."""

    def check(self, setup: AlgoSetup) -> None:
        check_sequences(setup)  # otherwise it runs with every policy, torso and layout

    def init(self, setup: AlgoSetup, params: Params, hp: Any) -> Any:
        return SGD(setup).init(params, hp)

    def update(self, ctx: UpdateContext, rollout: Rollout, params: Params, algo_state: Any,
               key: jax.Array) -> tuple[Params, Any, Metrics]:
        advantages, returns = gae_of(ctx, rollout)
        batch = make_batch(rollout, advantages, returns)
        key_perm, key_ent, _ = jax.random.split(key, 3)  # as ever: the same shuffles
        new, opt_state, aux, epochs = SGD(ctx.setup).run_measured(
            ctx.hp, objective(ctx), batch, rollout.carry, params, algo_state,
            sgd_order(ctx, batch, key_perm), entropy_keys(ctx, key_ent),
            stop_kl=ctx.cfg.target_kl)
        return new, opt_state, {**aux, **update_metrics(ctx, batch, params, new, returns),
                                "epochs_run": epochs.astype(jnp.float32)}


ALGORITHM = PPO()
