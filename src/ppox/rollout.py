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
    """What the scan emits per step (``[B, ...]``; stacked to ``[T, B, ...]``)."""

    obs: jax.Array  # raw observation acted on
    action: jax.Array
    log_prob: jax.Array
    reward: jax.Array
    terminated: jax.Array
    truncated: jax.Array
    final_obs: jax.Array  # raw
    episode_done: jax.Array
    episode_return: jax.Array
    episode_length: jax.Array


@struct.dataclass
class EnvCarry:
    """Scan carry: the batched env state and the current raw observation ``[B, obs_dim]``."""

    env_state: Any
    obs: jax.Array


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


def env_step(ctx: RolloutContext, carry: EnvCarry,
             keys: jax.Array) -> tuple[EnvCarry, StepRecord]:
    """One step of all envs. ``keys: [B + 1]``: one for the action sample, B for the envs."""
    dist = ctx.policy.dist(ctx.params, normalize_obs(carry.obs, ctx.obs_stats, ctx.obs_clip))
    action = dist.sample(keys[0])
    log_prob = dist.log_prob(action)
    env_action = ctx.policy.env_action(action)
    env_state, ts = jax.vmap(ctx.env.step)(keys[1:], carry.env_state, env_action)
    record = StepRecord(
        obs=carry.obs, action=action, log_prob=log_prob, reward=ts.reward,
        terminated=ts.terminated, truncated=ts.truncated, final_obs=ts.final_obs,
        episode_done=ts.info["episode_done"], episode_return=ts.info["episode_return"],
        episode_length=ts.info["episode_length"],
    )
    return EnvCarry(env_state=env_state, obs=ts.obs), record


def collect(ctx: RolloutContext, carry: EnvCarry, key: jax.Array,
            num_steps: int, unroll: int = 1) -> tuple[EnvCarry, StepRecord]:
    """Runs ``num_steps`` steps; returns the final carry and the ``[T, B, ...]`` records."""
    num_envs = carry.obs.shape[0]
    keys = jax.random.split(key, num_steps * (num_envs + 1)).reshape(
        num_steps, num_envs + 1, *key.shape)
    return lax.scan(lambda c, k: env_step(ctx, c, k), carry, keys, unroll=unroll)


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
