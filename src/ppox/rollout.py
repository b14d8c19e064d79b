"""Collecting a rollout: one ``lax.scan`` over T steps of ``num_envs`` vmapped envs.

Only the actor runs inside the sequential loop. Values are computed afterwards in one
batched critic pass over all ``[T, B]`` observations and all ``[T, B]`` final observations:
the value each step bootstraps from is ``V(final_obs_t)``, which is ``V(s_{t+1})`` when the
episode goes on (``final_obs == next obs`` then) and the value of the pre-reset observation
when it was truncated. That removes the critic from the loop and needs no extra pass for
the last observation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct
from jax import lax

from ppox.envs.wrappers import EpisodeStats
from ppox.networks import Params, Policy
from ppox.normalize import RunningMeanStd
from ppox.packing import pack, unpack


@struct.dataclass
class Transition:
    """A rollout, time-major. ``T`` = num_steps, ``B`` = num_envs.

    Attributes:
        obs: ``[T, B, obs_dim] float32`` observation acted on (normalized if enabled).
        action: ``[T, B] int32`` or ``[T, B, act_dim] float32`` raw policy sample.
        log_prob: ``[T, B] float32`` log-prob of ``action`` under the behaviour policy.
        value: ``[T, B] float32`` V(obs_t).
        reward: ``[T, B] float32`` reward used for learning (scaled if enabled).
        terminated: ``[T, B] bool``.
        truncated: ``[T, B] bool``.
        bootstrap_value: ``[T, B] float32`` V(final_obs_t) (see module docstring).
    """

    obs: jax.Array
    action: jax.Array
    log_prob: jax.Array
    value: jax.Array
    reward: jax.Array
    terminated: jax.Array
    truncated: jax.Array
    bootstrap_value: jax.Array


@struct.dataclass
class StepRecord:
    """What one step contributes to the rollout (``[B, ...]``; ``[T, B, ...]`` stacked).

    Inside the scan it is written as one packed float32 block (see ``ppox.packing``).
    """

    obs: jax.Array  # raw observation acted on
    action: jax.Array
    log_prob: jax.Array
    reward: jax.Array
    terminated: jax.Array
    truncated: jax.Array
    final_obs: jax.Array  # raw, before any reset


@struct.dataclass
class EnvCarry:
    """The envs between steps: batched env state and current raw obs ``[B, obs_dim]``."""

    env_state: Any
    obs: jax.Array


@struct.dataclass
class EpisodeTotals:
    """Sums over the episodes that ended during a rollout (scalars)."""

    return_sum: jax.Array
    length_sum: jax.Array
    count: jax.Array

    @classmethod
    def zeros(cls) -> EpisodeTotals:
        return cls(jnp.float32(0.0), jnp.float32(0.0), jnp.float32(0.0))


@struct.dataclass
class RolloutCarry:
    env: EnvCarry
    episodes: EpisodeTotals


@dataclass(frozen=True, eq=False)
class RolloutContext:
    """Everything fixed during one rollout (bound into the scan body)."""

    env: EpisodeStats
    policy: Policy
    params: Params
    obs_stats: RunningMeanStd | None
    obs_clip: float


def normalize_obs(obs: jax.Array, stats: RunningMeanStd | None, clip: float) -> jax.Array:
    return obs if stats is None else stats.normalize(obs, clip)


def env_step(ctx: RolloutContext, carry: RolloutCarry,
             keys: jax.Array) -> tuple[RolloutCarry, StepRecord]:
    """One step of all envs. ``keys: [B + 1]``: one for the action sample, B for the envs."""
    obs = carry.env.obs
    dist = ctx.policy.dist(ctx.params, normalize_obs(obs, ctx.obs_stats, ctx.obs_clip))
    action = dist.sample(keys[0])
    log_prob = dist.log_prob(action)
    env_action = ctx.policy.env_action(action)
    env_state, ts = jax.vmap(ctx.env.step)(keys[1:], carry.env.env_state, env_action)
    ep = carry.episodes
    episodes = EpisodeTotals(
        return_sum=ep.return_sum + jnp.sum(ts.info["episode_return"]),
        length_sum=ep.length_sum + jnp.sum(ts.info["episode_length"]).astype(jnp.float32),
        count=ep.count + jnp.sum(ts.info["episode_done"]).astype(jnp.float32),
    )
    record = StepRecord(
        obs=obs, action=action, log_prob=log_prob, reward=ts.reward,
        terminated=ts.terminated, truncated=ts.truncated, final_obs=ts.final_obs)
    return RolloutCarry(EnvCarry(env_state=env_state, obs=ts.obs), episodes), record


def _packed_step(ctx: RolloutContext, carry: RolloutCarry,
                 keys: jax.Array) -> tuple[RolloutCarry, jax.Array]:
    carry, record = env_step(ctx, carry, keys)
    return carry, pack(record, batch_ndim=1)


def collect(ctx: RolloutContext, env: EnvCarry, key: jax.Array, num_steps: int,
            unroll: int = 1) -> tuple[EnvCarry, StepRecord, EpisodeTotals]:
    """Runs ``num_steps`` steps of all envs.

    Returns the envs after the last step, the ``[T, B, ...]`` records and the totals of the
    episodes that ended during the rollout.
    """
    num_envs = env.obs.shape[0]
    keys = jax.random.split(key, num_steps * (num_envs + 1)).reshape(
        num_steps, num_envs + 1, *key.shape)
    init = RolloutCarry(env, EpisodeTotals.zeros())
    template = jax.eval_shape(lambda c, k: env_step(ctx, c, k)[1], init, keys[0])
    carry, packed = lax.scan(lambda c, k: _packed_step(ctx, c, k), init, keys,
                             unroll=unroll)
    return carry.env, unpack(packed, template, batch_ndim=1), carry.episodes


def to_transition(ctx: RolloutContext, rec: StepRecord, reward: jax.Array) -> Transition:
    """Adds values with one batched critic pass over obs and final obs (see module doc)."""
    obs = normalize_obs(rec.obs, ctx.obs_stats, ctx.obs_clip)
    final_obs = normalize_obs(rec.final_obs, ctx.obs_stats, ctx.obs_clip)
    values = ctx.policy.value(ctx.params, jnp.stack([obs, final_obs]))
    return Transition(
        obs=obs, action=rec.action, log_prob=rec.log_prob, value=values[0],
        reward=reward, terminated=rec.terminated, truncated=rec.truncated,
        bootstrap_value=values[1],
    )
