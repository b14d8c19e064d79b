"""Network splitting: the actor's and the critic's SGD steps at the same time on 2 devices.

The two networks' parameters are disjoint and so are their parts of a separable loss, so
device 0 (``lax.axis_index(axis) == 0``) can step the actor while device 1 steps the
critic. Each device holds every parameter (both run the whole rollout) but updates only its
own network, from its own zero-padded flat vector and optimizer state; with a global
gradient-norm clip one scalar ``psum`` per step gives the norm over both
(``clip_by_global_norm_across``), and one ``all_gather`` after the last step shares the new
parameters (``SplitParams.join``). The arithmetic is the single-device update's, up to
float summation order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax import lax
from jax.flatten_util import ravel_pytree

Params = Any


def split_parts(params: Params) -> tuple[Params, Params]:
    """``(actor part, critic part)``: the critic is ``params["critic"]``, the actor the rest
    (its network and, for continuous policies, ``log_std``)."""
    return {k: v for k, v in params.items() if k != "critic"}, {"critic": params["critic"]}


@dataclass(frozen=True, eq=False)
class SplitParams:
    """The actor's and the critic's flat parameter vectors under network splitting.

    Both vectors are zero-padded to one length, ``size``, so the two devices' optimizer
    states have one shape; padding gets zero gradients and stays zero.
    """

    axis_name: str
    size: int
    actor_size: int
    critic_size: int
    unravel_actor: Any
    unravel_critic: Any

    @staticmethod
    def of(params: Params, axis_name: str) -> SplitParams:
        actor, critic = split_parts(params)
        fa, unravel_actor = ravel_pytree(actor)
        fc, unravel_critic = ravel_pytree(critic)
        return SplitParams(axis_name=axis_name, size=max(fa.size, fc.size),
                           actor_size=fa.size, critic_size=fc.size,
                           unravel_actor=unravel_actor, unravel_critic=unravel_critic)

    def role(self) -> jax.Array:
        """``0`` on the device that updates the actor, ``1`` on the critic's."""
        return lax.axis_index(self.axis_name)

    def own(self, params: Params) -> jax.Array:
        """``[size]``: this device's network as a padded flat vector."""
        actor, critic = split_parts(params)
        fa, fc = ravel_pytree(actor)[0], ravel_pytree(critic)[0]
        pad = lambda f: jnp.pad(f, (0, self.size - f.size))
        return jnp.where(self.role() == 0, pad(fa), pad(fc))

    def join(self, own: jax.Array) -> Params:
        """Every device's ``own`` vector -> the full parameter pytree (one ``all_gather``)."""
        both = lax.all_gather(own, self.axis_name)
        return {**self.unravel_actor(both[0, :self.actor_size]),
                **self.unravel_critic(both[1, :self.critic_size])}

    def own_loss(self, actor_loss: Any, critic_loss: Any,
                 own: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
        """This device's part of a separable loss as a function of its own vector:
        ``actor_loss(actor params)`` on device 0, ``critic_loss(critic params)`` on 1, each
        ``-> (part, aux)``. Both devices return the same aux keys: their own part's, zeros
        for the other's (so the two devices' aux sum to the whole)."""
        parts = [lambda o: actor_loss(self.unravel_actor(o[:self.actor_size])),
                 lambda o: critic_loss(self.unravel_critic(o[:self.critic_size]))]
        shapes = [jax.eval_shape(f, own)[1] for f in parts]  # traced for shapes only
        zeros = {k: jnp.zeros(v.shape, v.dtype) for shape in shapes for k, v in shape.items()}

        def padded(part: Any) -> Any:
            def run(o: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
                total, aux = part(o)
                return total, {**zeros, **aux}
            return run

        return lax.switch(self.role(), [padded(f) for f in parts], own)


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
