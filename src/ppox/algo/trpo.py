"""TRPO (Schulman et al. 2015): a natural-gradient policy step under a KL limit.

One update, on the whole batch (advantages from GAE, normalized over the batch if
``normalize_advantages``):

1. ``g``, the gradient of the surrogate ``L(theta) = mean(ratio * A)`` at the behaviour
   parameters, with respect to the actor's flat parameter vector;
2. ``x ~ F^-1 g`` by ``cg_iters`` conjugate-gradient iterations on Fisher-vector products
   ``F v = d/de grad KL(pi_old || pi_{theta + e v}) + cg_damping * v`` (``jax.jvp`` over
   ``jax.grad`` of the mean exact KL, no matrix; its Hessian at ``theta_old`` is the Fisher);
3. the full step ``sqrt(2 delta / x^T F x) * x`` (``delta = trpo_max_kl``);
4. a backtracking line search over ``backtrack_coef^i`` times that step, ``i < max_backtracks``,
   accepting the first that improves the surrogate and keeps the mean KL <= delta; if none
   does, the policy stays where it was.

The value function is fitted by the minibatch SGD PPO uses (``ppox.algo.sgd``: Adam at
``learning_rate``, ``update_epochs`` x ``num_minibatches``) on the value loss alone; its
gradient is zero on the actor's entries of the flat vector, so Adam leaves them unchanged,
and the new parameters take the actor from step 4 and the critic from the fit. The policy
step has no entropy bonus (``ent_coef`` is not read). Under data parallelism the gradient,
the Fisher-vector products and the line search's surrogate and KL are averaged over the
devices, so every device takes the same step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct
from jax import lax

from ppox.algo.base import AlgoSetup, Metrics, Rollout, UpdateContext, refuse
from ppox.algo.ppo import (
    Batch,
    check_sequences,
    gae_of,
    make_batch,
    sgd_order,
    update_metrics,
    value_term,
    whole_batch,
)
from ppox.algo.ppo_kl import with_behaviour
from ppox.algo.sgd import SGD, Objective, flat_params
from ppox.config import HParams
from ppox.nets import Params
from ppox.parallel.split import split_parts


def conjugate_gradient(matvec: Callable[[jax.Array], jax.Array], b: jax.Array,
                       iters: int) -> jax.Array:
    """``x ~ A^-1 b`` for a symmetric positive definite ``A`` given as ``matvec``, after
    ``iters`` conjugate-gradient iterations from ``x = 0`` (a converged residual stays
    zero: no division by zero)."""

    def body(_: int, s: tuple[jax.Array, jax.Array, jax.Array, jax.Array]):
        x, r, p, rr = s
        ap = matvec(p)
        pap = jnp.vdot(p, ap)
        alpha = jnp.where(pap > 0, rr / jnp.where(pap > 0, pap, 1.0), 0.0)
        x, r = x + alpha * p, r - alpha * ap
        rr_new = jnp.vdot(r, r)
        beta = jnp.where(rr > 0, rr_new / jnp.where(rr > 0, rr, 1.0), 0.0)
        return x, r, r + beta * p, rr_new

    x, *_ = lax.fori_loop(0, iters, body, (jnp.zeros_like(b), b, b, jnp.vdot(b, b)))
    return x


@dataclass(frozen=True, eq=False)
class PolicyObjective:
    """The surrogate and the mean KL on the whole batch as functions of the actor's flat
    vector (this device's batch: the caller averages over devices)."""

    ctx: UpdateContext
    batch: Batch  # with ``behaviour`` (pi_old) and the start ``carry`` of sequences
    critic: Params
    unravel: Any

    def dist(self, flat: jax.Array) -> Any:
        params = {**self.unravel(flat), **self.critic}
        b = self.batch
        return self.ctx.policy.dist(params, b.obs, b.carry, b.reset)

    def surrogate_of(self, dist: Any) -> jax.Array:
        ratio = jnp.exp(dist.log_prob(self.batch.action) - self.batch.log_prob)
        return jnp.mean(ratio * self.batch.advantages)

    def surrogate(self, flat: jax.Array) -> jax.Array:
        return self.surrogate_of(self.dist(flat))

    def kl(self, flat: jax.Array) -> jax.Array:
        """Mean exact ``KL(pi_old || pi_flat)``."""
        return jnp.mean(self.batch.behaviour.kl(self.dist(flat)))

    def surrogate_and_kl(self, flat: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Both, from one forward pass, averaged over the data-parallel devices."""
        dist = self.dist(flat)
        both = jnp.stack([self.surrogate_of(dist), jnp.mean(self.batch.behaviour.kl(dist))])
        both = self.ctx.layout.pmean(both)
        return both[0], both[1]

    def fisher_product(self, flat: jax.Array, damping: Any) -> Callable[[jax.Array], jax.Array]:
        """``v -> F v + damping * v`` at ``flat`` (the Hessian of the mean KL)."""

        def fvp(v: jax.Array) -> jax.Array:
            hv = jax.jvp(jax.grad(self.kl), (flat,), (v,))[1]
            return self.ctx.layout.pmean(hv) + damping * v

        return fvp


@struct.dataclass
class Search:
    """The line search's loop state: the candidate index ``i`` (``[] int32``), whether it
    was accepted, and the accepted vector with its surrogate and KL (the start's otherwise)."""

    i: jax.Array
    accepted: jax.Array
    flat: jax.Array
    surrogate: jax.Array
    kl: jax.Array


def line_search(obj: PolicyObjective, flat: jax.Array, full_step: jax.Array,
                surrogate0: jax.Array, hp: HParams, max_backtracks: int) -> Search:
    """Tries ``flat + backtrack_coef^i * full_step`` for ``i = 0, 1, ...`` until one improves
    the surrogate and keeps the mean KL <= ``trpo_max_kl``, or ``max_backtracks`` were tried
    (then ``accepted`` is False, ``i == max_backtracks`` and ``flat`` is the start)."""

    def untried(s: Search) -> jax.Array:
        return ~s.accepted & (s.i < max_backtracks)

    def attempt(s: Search) -> Search:
        cand = flat + jnp.power(hp.backtrack_coef, s.i.astype(jnp.float32)) * full_step
        surr, kl = obj.surrogate_and_kl(cand)
        ok = (surr > surrogate0) & (kl <= hp.trpo_max_kl) & jnp.isfinite(surr + kl)
        pick = lambda new, old: jnp.where(ok, new, old)
        return Search(i=s.i + (~ok).astype(jnp.int32), accepted=ok, flat=pick(cand, s.flat),
                      surrogate=pick(surr, s.surrogate), kl=pick(kl, s.kl))

    start = Search(i=jnp.int32(0), accepted=jnp.bool_(False), flat=flat, surrogate=surrogate0,
                   kl=jnp.float32(0.0))
    return lax.while_loop(untried, attempt, start)


def natural_step(obj: PolicyObjective, flat: jax.Array, hp: HParams,
                 cg_iters: int) -> tuple[jax.Array, jax.Array]:
    """``(full step sqrt(2 delta / x^T F x) x with x ~ F^-1 g, expected improvement g . step)``
    at ``flat``; a zero step when ``x^T F x`` is not positive."""
    g = obj.ctx.layout.pmean(jax.grad(obj.surrogate)(flat))
    fvp = obj.fisher_product(flat, hp.cg_damping)
    x = conjugate_gradient(fvp, g, cg_iters)
    xfx = jnp.vdot(x, fvp(x))
    scale = jnp.where(xfx > 0, jnp.sqrt(2.0 * hp.trpo_max_kl / jnp.where(xfx > 0, xfx, 1.0)),
                      0.0)
    full_step = scale * x
    return full_step, jnp.vdot(g, full_step)


def policy_step(ctx: UpdateContext, batch: Batch, params: Params) -> tuple[Params, Metrics]:
    """The actor's TRPO step on the whole batch; the new actor part and its metrics."""
    actor, critic = split_parts(params)
    flat, unravel = flat_params(actor)
    obj = PolicyObjective(ctx=ctx, batch=batch, critic=critic, unravel=unravel)
    surrogate0, _ = obj.surrogate_and_kl(flat)
    full_step, expected = natural_step(obj, flat, ctx.hp, ctx.cfg.cg_iters)
    found = line_search(obj, flat, full_step, surrogate0, ctx.hp, ctx.cfg.max_backtracks)
    accepted = found.accepted.astype(jnp.float32)
    return unravel(found.flat), {
        "pg_loss": -found.surrogate,
        "kl": found.kl,
        "line_search_step": jnp.where(found.accepted, found.i, -1).astype(jnp.float32),
        "step_accepted": accepted,
        "surrogate_improvement": found.surrogate - surrogate0,
        "expected_improvement": expected,
        "step_norm": jnp.linalg.norm(found.flat - flat),
        # the new policy's mean entropy (tanh-Gaussian: its base Gaussian's, no estimate)
        "entropy": jnp.mean(obj.dist(found.flat).entropy()),
    }


def value_objective(ctx: UpdateContext) -> Objective:
    """The value loss alone (its gradient is zero on the actor's parameters)."""

    def loss(p: Params, mb: Batch, key: jax.Array | None) -> tuple[jax.Array, Metrics]:
        del key
        v_loss = value_term(ctx, p, mb)
        return v_loss, {"v_loss": v_loss}

    return Objective(loss=loss)


@dataclass(frozen=True)
class TRPO:
    """The TRPO update (see the module docstring)."""

    def check(self, setup: AlgoSetup) -> None:
        check_sequences(setup)  # the critic's minibatches
        if setup.layout.split_axis is not None:
            raise refuse("algo=trpo with split_networks", "the policy step is one "
                         "full-batch natural-gradient step, not SGD to run beside the "
                         "critic's; drop --split-networks (--data-parallel works)")
        if setup.cfg.target_kl is not None:
            raise refuse(f"target_kl={setup.cfg.target_kl:g} with algo=trpo",
                         "TRPO bounds each step's KL by trpo_max_kl; drop --target-kl")

    def init(self, setup: AlgoSetup, params: Params, hp: HParams) -> Any:
        return SGD(setup).init(params, hp)

    def update(self, ctx: UpdateContext, rollout: Rollout, params: Params, algo_state: Any,
               key: jax.Array) -> tuple[Params, Any, Metrics]:
        advantages, returns = gae_of(ctx, rollout)
        batch = make_batch(rollout, advantages, returns)
        policy_batch = whole_batch(ctx, with_behaviour(ctx, batch, params, rollout.carry))
        actor, metrics = policy_step(ctx, policy_batch.replace(carry=rollout.carry), params)
        fitted, opt_state = SGD(ctx.setup).run(
            ctx.hp, value_objective(ctx), batch, rollout.carry, params, algo_state,
            sgd_order(ctx, batch, key), None)
        new = {**actor, "critic": fitted["critic"]}
        v_loss = value_term(ctx, new, batch.replace(carry=rollout.carry))
        metrics = {**metrics, "v_loss": v_loss,
                   "loss": metrics["pg_loss"] + ctx.hp.vf_coef * v_loss,
                   **update_metrics(ctx, batch, params, new, returns)}
        return new, opt_state, metrics


ALGORITHM = TRPO()
