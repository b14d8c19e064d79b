"""PPO with an adaptive KL penalty instead of the clip (Schulman et al. 2017, section 4).

One update: GAE, then the epochs x minibatches SGD of PPO (``ppox.algo.sgd``) on

    -(ratio * A) + beta * KL(pi_old || pi) + vf_coef * vf - ent_coef * entropy

with the exact KL of the two distributions (``dist.kl``: closed form for Categorical and
Gaussian; for tanh-Gaussian its base Gaussians' KL, which is exact because the KL is
invariant under the shared tanh). ``pi_old`` is the behaviour policy: the pre-update
parameters on the batch, computed once per update (the rollout was collected with them,
under the same observation statistics). After the update, with ``d`` the mean KL on the
whole batch: ``beta <- beta / 2`` if ``d < d_targ / 1.5``, ``beta <- 2 beta`` if
``d > 1.5 d_targ`` (the paper's rule, kept within ``[BETA_MIN, BETA_MAX]``). ``beta``
lives in the algorithm state (checkpointed with it); ``kl_coef`` (its start) and
``kl_penalty_target`` (``d_targ``) are ``HParams``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from ppox.algo.base import AlgoSetup, Metrics, Rollout, UpdateContext, refuse
from ppox.algo.ppo import (
    Batch,
    check_sequences,
    critic_terms,
    diagnostic_key,
    entropy_keys,
    gae_of,
    make_batch,
    policy_terms,
    sgd_order,
    update_metrics,
    value_term,
    whole_batch,
)
from ppox.algo.sgd import SGD, Objective
from ppox.config import HParams
from ppox.nets import Params


@struct.dataclass
class KLState:
    """The optimizer state and the current penalty coefficient ``beta`` (``[] float32``)."""

    opt_state: Any
    beta: jax.Array


# beta stays in [BETA_MIN, BETA_MAX]: halved ~150 times in float32 it would reach 0 and never
# grow again; from the floor, 20 doublings bring it back to 1
BETA_MIN, BETA_MAX = 1e-6, 1e6


def adapt_beta(beta: jax.Array, kl: jax.Array, target: jax.Array) -> jax.Array:
    """The paper's rule: halve below ``target / 1.5``, double above ``1.5 target`` (kept in
    ``[BETA_MIN, BETA_MAX]``)."""
    beta = jnp.where(kl < target / 1.5, beta / 2.0, beta)
    beta = jnp.where(kl > target * 1.5, beta * 2.0, beta)
    return jnp.clip(beta, BETA_MIN, BETA_MAX)


def penalty_terms(ctx: UpdateContext, params: Params, mb: Batch,
                  key: jax.Array | None) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """``(pg_loss = -mean(ratio A), mean KL(pi_old || pi), mean entropy, approx_kl)``."""
    dist, log_prob, entropy = policy_terms(ctx, params, mb, key)
    log_ratio = log_prob - mb.log_prob
    ratio = jnp.exp(log_ratio)
    pg_loss = -jnp.mean(ratio * mb.advantages)
    kl = jnp.mean(mb.behaviour.kl(dist))
    approx_kl = jax.lax.stop_gradient(jnp.mean((ratio - 1.0) - log_ratio))
    return pg_loss, kl, entropy, approx_kl


def kl_loss(ctx: UpdateContext, beta: jax.Array, params: Params, mb: Batch,
            key: jax.Array | None) -> tuple[jax.Array, Metrics]:
    """Total loss on one minibatch and its parts (``mb.behaviour``: pi_old per row)."""
    hp = ctx.hp
    pg_loss, kl, entropy, approx_kl = penalty_terms(ctx, params, mb, key)
    v_loss = value_term(ctx, params, mb)
    total = pg_loss + beta * kl + hp.vf_coef * v_loss - hp.ent_coef * entropy
    return total, {"loss": total, "pg_loss": pg_loss, "v_loss": v_loss, "entropy": entropy,
                   "kl": kl, "approx_kl": approx_kl}


def objective(ctx: UpdateContext, beta: jax.Array) -> Objective:
    """The penalized objective, with its actor and critic parts for network splitting."""
    hp = ctx.hp

    def actor(p: Params, mb: Batch, key: jax.Array | None) -> tuple[jax.Array, Metrics]:
        pg_loss, kl, entropy, approx_kl = penalty_terms(ctx, p, mb, key)
        return pg_loss + beta * kl - hp.ent_coef * entropy, {
            "pg_loss": pg_loss, "kl": kl, "entropy": entropy, "approx_kl": approx_kl}

    return Objective(loss=lambda p, mb, key: kl_loss(ctx, beta, p, mb, key), actor=actor,
                     critic=lambda p, mb: critic_terms(ctx, p, mb))


def with_behaviour(ctx: UpdateContext, batch: Batch, params: Params, carry: Any) -> Batch:
    """``batch`` with the behaviour policy's distribution at each row (or step)."""
    dist = ctx.policy.dist(params, batch.obs, carry, batch.reset)
    return batch.replace(behaviour=jax.lax.stop_gradient(dist))


@dataclass(frozen=True)
class PPOKL:
    """The adaptive-KL-penalty PPO update (see the module docstring)."""

    def check(self, setup: AlgoSetup) -> None:
        check_sequences(setup)
        if setup.cfg.target_kl is not None:
            raise refuse(f"target_kl={setup.cfg.target_kl:g} with algo=ppo_kl",
                         "the early stop is the clipped objective's; the penalty adapts "
                         "beta to kl_penalty_target instead: drop --target-kl")

    def init(self, setup: AlgoSetup, params: Params, hp: HParams) -> KLState:
        return KLState(opt_state=SGD(setup).init(params, hp),
                       beta=jnp.asarray(hp.kl_coef, jnp.float32))

    def update(self, ctx: UpdateContext, rollout: Rollout, params: Params, algo_state: KLState,
               key: jax.Array) -> tuple[Params, KLState, Metrics]:
        advantages, returns = gae_of(ctx, rollout)
        batch = with_behaviour(ctx, make_batch(rollout, advantages, returns), params,
                               rollout.carry)
        key_perm, key_ent, key_diag = jax.random.split(key, 3)
        beta = algo_state.beta
        new, opt_state = SGD(ctx.setup).run(
            ctx.hp, objective(ctx, beta), batch, rollout.carry, params, algo_state.opt_state,
            sgd_order(ctx, batch, key_perm), entropy_keys(ctx, key_ent))
        diag_batch = whole_batch(ctx, batch.replace(carry=rollout.carry))
        _, metrics = kl_loss(ctx, beta, new, diag_batch, diagnostic_key(ctx, key_diag))
        kl = ctx.layout.pmean(metrics["kl"])  # every device adapts beta alike
        new_beta = adapt_beta(beta, kl, ctx.hp.kl_penalty_target)
        metrics = {**metrics, **update_metrics(ctx, batch, params, new, returns),
                   "kl_beta": beta, "kl_beta_next": new_beta}
        return new, KLState(opt_state=opt_state, beta=new_beta), metrics


ALGORITHM = PPOKL()
