"""The PPO update: ``update_epochs`` x ``num_minibatches`` SGD steps, all in ``lax.scan``.

Per epoch the batch is shuffled with one gather (memory: one batch), advantages are
normalized per minibatch for all minibatches at once, and the minibatches are packed into
one ``[M, mb, F]`` array, so the sequential SGD loop does nothing but the gradient step.
Diagnostics are computed once per update on the whole batch, not accumulated per step.

Network splitting (``split_axis``): the actor's and the critic's parameters are disjoint and
so are their parts of the loss, so their SGD steps can run at the same time on two devices
(``lax.axis_index(split_axis)``: 0 the actor, 1 the critic). Each device holds every
parameter (it runs the whole rollout) but updates only its own network, from its own
padded flat vector and Adam state; with ``grad_clip="global"`` one scalar ``psum`` per step
gives the global gradient norm the clip needs (``per_network`` needs none), and one
``all_gather`` after the last step shares the new parameters.
The arithmetic is the single-device update's (up to float summation order).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct
from jax import lax
from jax.flatten_util import ravel_pytree

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
    """Parameters and optimizer state.

    During the update the parameters are one flat float32 vector (``ravel_pytree``), and
    the optimizer state lives in that layout between updates: the global-norm clip and
    Adam then run as a handful of fused ops on one buffer instead of a few ops per weight
    matrix, which is a sizeable share of a small network's SGD step.
    """

    params: jax.Array
    opt_state: Any


@dataclass(frozen=True, eq=False)
class UpdateContext:
    cfg: PPOConfig
    hp: HParams
    policy: Policy
    template: Batch  # one row of the Batch, for unpacking packed minibatches
    unravel: Any  # flat parameter vector -> parameter pytree
    axis_name: str | None = None  # set under data parallelism: gradients are pmean-ed
    split: SplitLayout | None = None  # set under network splitting (see the module doc)
    critic_mask: jax.Array | None = None  # for grad_clip="per_network" on one device


@dataclass(frozen=True, eq=False)
class SplitLayout:
    """The actor's and the critic's flat parameter vectors under network splitting.

    The actor part is every parameter but ``"critic"`` (its MLP and, for continuous
    policies, ``log_std``). Both vectors are zero-padded to one length, ``size``, so the two
    devices' optimizer states have one shape; padding gets zero gradients and stays zero.
    """

    axis_name: str
    size: int
    actor_size: int
    critic_size: int
    unravel_actor: Any
    unravel_critic: Any

    @staticmethod
    def of(params: Params, axis_name: str) -> SplitLayout:
        actor, critic = _split_parts(params)
        fa, unravel_actor = ravel_pytree(actor)
        fc, unravel_critic = ravel_pytree(critic)
        return SplitLayout(axis_name=axis_name, size=max(fa.size, fc.size),
                           actor_size=fa.size, critic_size=fc.size,
                           unravel_actor=unravel_actor, unravel_critic=unravel_critic)

    def role(self) -> jax.Array:
        """``0`` on the device that updates the actor, ``1`` on the critic's."""
        return lax.axis_index(self.axis_name)

    def own(self, params: Params) -> jax.Array:
        """``[size]``: this device's network as a padded flat vector."""
        actor, critic = _split_parts(params)
        fa, fc = ravel_pytree(actor)[0], ravel_pytree(critic)[0]
        pad = lambda f: jnp.pad(f, (0, self.size - f.size))
        return jnp.where(self.role() == 0, pad(fa), pad(fc))

    def join(self, own: jax.Array) -> Params:
        """Every device's ``own`` vector -> the full parameter pytree (one ``all_gather``)."""
        both = lax.all_gather(own, self.axis_name)
        return {**self.unravel_actor(both[0, :self.actor_size]),
                **self.unravel_critic(both[1, :self.critic_size])}


def _split_parts(params: Params) -> tuple[Params, Params]:
    return {k: v for k, v in params.items() if k != "critic"}, {"critic": params["critic"]}


def clip_by_global_norm_across(max_norm: Any, axis_name: str) -> optax.GradientTransformation:
    """``optax.clip_by_global_norm`` for a parameter vector split across ``axis_name``: the
    norm is over every device's part (one scalar ``psum``); same state as optax's."""

    def init_fn(params: Any) -> optax.EmptyState:
        del params
        return optax.EmptyState()

    def update_fn(updates: Any, state: optax.EmptyState, params: Any = None):
        del params
        sq = sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(updates))
        g_norm = jnp.sqrt(lax.psum(sq, axis_name))
        trigger = g_norm < max_norm
        updates = jax.tree.map(
            lambda t: lax.select(trigger, t, (t / g_norm.astype(t.dtype)) * max_norm), updates)
        return updates, state

    return optax.GradientTransformation(init_fn, update_fn)


def critic_mask(params: Params) -> jax.Array:
    """``[P] bool``: which entries of the flat parameter vector (``flat_params``) are the
    critic's."""
    marks = {k: jax.tree.map(lambda x, c=(k == "critic"): jnp.full(x.shape, c, jnp.float32), v)
             for k, v in params.items()}
    return ravel_pytree(marks)[0] > 0.5


def clip_by_norm_per_network(max_norm: Any,
                             critic: jax.Array) -> optax.GradientTransformation:
    """``optax.clip_by_global_norm`` applied to the actor's and the critic's entries of one
    flat gradient vector (``critic``: the mask of the critic's entries) separately."""

    def init_fn(params: Any) -> optax.EmptyState:
        del params
        return optax.EmptyState()

    def update_fn(updates: jax.Array, state: optax.EmptyState, params: Any = None):
        del params
        sq = jnp.square(updates)
        norms = jnp.sqrt(jnp.stack([jnp.sum(jnp.where(critic, 0.0, sq)),
                                    jnp.sum(jnp.where(critic, sq, 0.0))]))
        scale = jnp.where(norms < max_norm, 1.0, max_norm / norms)
        return updates * jnp.where(critic, scale[1], scale[0]), state

    return optax.GradientTransformation(init_fn, update_fn)


def flatten_time(x: jax.Array) -> jax.Array:
    """``[T, B, ...] -> [T * B, ...]``: the one minibatch reshape helper."""
    return x.reshape(x.shape[0] * x.shape[1], *x.shape[2:])


def make_optimizer(cfg: PPOConfig, hp: HParams, split_axis: str | None = None,
                   critic: jax.Array | None = None) -> optax.GradientTransformation:
    """``clip_by_global_norm(max_grad_norm)`` then Adam (eps 1e-5) with a linear decay to 0.

    ``cfg.grad_clip == "per_network"`` clips the actor's and the critic's gradients each to
    the bound (``critic``: the mask of the critic's entries, see ``critic_mask``).
    ``split_axis``: under network splitting each device's vector is one network, and a
    global norm is taken across the devices.

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

    if cfg.grad_clip == "per_network" and split_axis is None:
        if critic is None:
            raise ValueError("grad_clip='per_network' needs the critic mask (critic_mask)")
        clip = clip_by_norm_per_network(hp.max_grad_norm, critic)
    elif cfg.grad_clip == "global" and split_axis is not None:
        clip = clip_by_global_norm_across(hp.max_grad_norm, split_axis)
    else:  # global on one device, or one network per device
        clip = optax.clip_by_global_norm(hp.max_grad_norm)
    return optax.chain(
        clip,
        optax.adam(learning_rate=schedule, eps=1e-5),
    )


def ppo_loss(ctx: UpdateContext, flat: jax.Array, mb: Batch,
             key: jax.Array | None) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Total loss ``pg + vf_coef * vf - ent_coef * entropy`` on one minibatch.

    ``mb.advantages`` are used as given (normalize them before, see ``update``). The
    auxiliary dict holds the loss parts and the PPO diagnostics; inside the SGD step only
    the gradient is used, so XLA drops the diagnostics there.
    """
    hp, cfg = ctx.hp, ctx.cfg
    params = ctx.unravel(flat)
    dist = ctx.policy.dist(params, mb.obs)
    log_prob = dist.log_prob(mb.action)
    pg_loss, (approx_kl, clip_frac) = ppo_clip_loss(log_prob, mb.log_prob, mb.advantages,
                                                    hp.clip_eps)
    value = ctx.policy.value(params, mb.obs)
    v_loss = value_loss(value, mb.value, mb.returns, hp.vf_clip_eps, cfg.clip_value_loss)
    entropy = jnp.mean(dist.entropy(key))
    total = pg_loss + hp.vf_coef * v_loss - hp.ent_coef * entropy
    return total, {"loss": total, "pg_loss": pg_loss, "v_loss": v_loss, "entropy": entropy,
                   "approx_kl": approx_kl, "clip_frac": clip_frac}


def split_loss(ctx: UpdateContext, own: jax.Array, mb: Batch,
               key: jax.Array | None) -> jax.Array:
    """Under network splitting: this device's part of ``ppo_loss`` as a function of its own
    network (``pg - ent_coef * entropy`` for the actor, ``vf_coef * vf`` for the critic)."""
    hp, cfg, split = ctx.hp, ctx.cfg, ctx.split
    assert split is not None

    def actor_part(own: jax.Array) -> jax.Array:
        dist = ctx.policy.dist(split.unravel_actor(own[:split.actor_size]), mb.obs)
        pg_loss, _ = ppo_clip_loss(dist.log_prob(mb.action), mb.log_prob, mb.advantages,
                                   hp.clip_eps)
        return pg_loss - hp.ent_coef * jnp.mean(dist.entropy(key))

    def critic_part(own: jax.Array) -> jax.Array:
        value = ctx.policy.value(split.unravel_critic(own[:split.critic_size]), mb.obs)
        return hp.vf_coef * value_loss(value, mb.value, mb.returns, hp.vf_clip_eps,
                                       cfg.clip_value_loss)

    return lax.switch(split.role(), [actor_part, critic_part], own)


def sgd_step(ctx: UpdateContext, opt: OptState,
             xs: tuple[jax.Array, jax.Array | None]) -> tuple[OptState, None]:
    """One minibatch (packed rows ``[mb, F]``): gradient, (pmean), clip, Adam."""
    packed, key = xs
    mb = unpack(packed, ctx.template, batch_ndim=1)
    if ctx.split is not None:
        grads = jax.grad(split_loss, argnums=1)(ctx, opt.params, mb, key)
    else:
        grads, _ = jax.grad(ppo_loss, argnums=1, has_aux=True)(ctx, opt.params, mb, key)
    if ctx.axis_name is not None:
        grads = lax.pmean(grads, ctx.axis_name)
    tx = make_optimizer(ctx.cfg, ctx.hp, ctx.split.axis_name if ctx.split else None,
                        ctx.critic_mask)
    updates, opt_state = tx.update(grads, opt.opt_state, opt.params)
    return OptState(optax.apply_updates(opt.params, updates), opt_state), None


def permutations(key: jax.Array, epochs: int, num_rows: int) -> jax.Array:
    """``[epochs, num_rows] int32``: an independent uniform permutation of the rows per epoch
    (one sort of random 32-bit keys per epoch; ties, p ~ N^2 / 2^33, keep index order)."""
    bits = jax.random.bits(key, (epochs, num_rows), jnp.uint32)
    rows = jnp.broadcast_to(jnp.arange(num_rows, dtype=jnp.int32), (epochs, num_rows))
    return lax.sort_key_val(bits, rows, dimension=1)[1]


def shuffle_epoch(cfg: PPOConfig, batch: Batch, perm: jax.Array) -> jax.Array:
    """One epoch's minibatches, packed: ``[num_minibatches, minibatch_size, F]``.

    A single gather per epoch (memory: one batch), then advantages are normalized per
    minibatch, vectorized over all minibatches at once (outside the sequential SGD loop).
    """
    shuffled = jax.tree.map(lambda x: jnp.take(x, perm, axis=0), batch)
    mbs = jax.tree.map(lambda x: x.reshape(cfg.num_minibatches, -1, *x.shape[1:]), shuffled)
    if cfg.normalize_advantages:
        mbs = mbs.replace(advantages=jax.vmap(normalize_advantages)(mbs.advantages))
    return pack(mbs, batch_ndim=2)


def sgd_epoch(ctx: UpdateContext, batch: Batch, opt: OptState,
              xs: tuple[jax.Array, jax.Array | None]) -> tuple[OptState, None]:
    perm, keys = xs
    packed = shuffle_epoch(ctx.cfg, batch, perm)
    opt, _ = lax.scan(lambda o, x: sgd_step(ctx, o, x), opt, (packed, keys))
    return opt, None


def flat_params(params: Params) -> tuple[jax.Array, Any]:
    """The parameter pytree as one flat float32 vector, and the function that undoes it."""
    return ravel_pytree(params)


def update(cfg: PPOConfig, hp: HParams, policy: Policy, batch: Batch, params: Params,
           opt_state: Any, key: jax.Array, axis_name: str | None = None,
           split_axis: str | None = None,
           ) -> tuple[Params, Any, dict[str, jax.Array]]:
    """``update_epochs`` passes of minibatch SGD over ``batch`` (``N`` rows, per device
    under data parallelism; the whole batch on both devices under network splitting).

    ``opt_state`` is over the flat parameter vector (``flat_params``; under network
    splitting, over this device's ``SplitLayout.own`` vector). Returns the new
    parameters, the new optimizer state and diagnostics computed once, after the last step, on
    the whole batch with the updated parameters (advantages normalized over the batch):
    the loss parts, ``approx_kl`` and ``clip_frac`` of the new policy against the behaviour
    policy, and ``update_norm`` = ||new params - old params||.
    """
    key_perm, key_ent, key_diag = jax.random.split(key, 3)
    perms = permutations(key_perm, cfg.update_epochs, batch.obs.shape[0])
    ent_keys = None
    if policy.kind == "tanh_gaussian":  # only its entropy estimate needs a key
        ent_keys = jax.random.split(key_ent, cfg.update_epochs * cfg.num_minibatches).reshape(
            cfg.update_epochs, cfg.num_minibatches, *key_ent.shape)
    flat, unravel = flat_params(params)
    split = None if split_axis is None else SplitLayout.of(params, split_axis)
    ctx = UpdateContext(cfg=cfg, hp=hp, policy=policy, unravel=unravel,
                        template=jax.tree.map(lambda x: x[:1], batch), axis_name=axis_name,
                        split=split,
                        critic_mask=(critic_mask(params) if cfg.grad_clip == "per_network"
                                     and split is None else None))
    opt = OptState(flat if split is None else split.own(params), opt_state)
    new, _ = lax.scan(lambda o, xs: sgd_epoch(ctx, batch, o, xs), opt, (perms, ent_keys))
    # under network splitting every device goes on with the full new parameters
    new_flat = new.params if split is None else flat_params(split.join(new.params))[0]
    diag_batch = batch
    if cfg.normalize_advantages:
        diag_batch = batch.replace(advantages=normalize_advantages(batch.advantages))
    _, metrics = ppo_loss(ctx, new_flat, diag_batch,
                          key_diag if policy.kind == "tanh_gaussian" else None)
    metrics["update_norm"] = jnp.linalg.norm(new_flat - flat)
    return unravel(new_flat), new.opt_state, metrics
