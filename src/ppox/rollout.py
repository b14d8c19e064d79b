"""Collecting a rollout: one ``lax.scan`` over T steps of ``num_envs`` vmapped envs.

Only the actor runs inside the sequential loop. Values are computed afterwards in batched
critic passes (``Policy.values``; one scan for a recurrent critic): the value each step
bootstraps from is ``V(final_obs_t)``, which is ``V(s_{t+1})`` when the episode goes on
(``final_obs == next obs`` then) and the value of the pre-reset observation when it was
truncated. A small rollout takes one pass over all ``[T, B]`` observations and all ``[T,
B]`` final observations; from ``ppox.nets.TRUNCATED_PASS_ROWS`` rows on, one pass over the
observations and the one after the last step (``[T + 1, B]``) and one over the truncated
steps' final observations only (a 1024-env CartPole update 1.07x faster). That removes the
critic from the loop.

``act_and_step`` is the one act-and-step, shared with evaluation (``ppox.evaluate``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct
from jax import lax

from ppox.algo.base import Rollout
from ppox.envs.core import TimeStep, step_envs
from ppox.envs.wrappers import EpisodeStats
from ppox.nets import Params, Policy
from ppox.normalize import RunningMeanStd
from ppox.packing import pack, unpack
from ppox.tracing import trace_once


@struct.dataclass
class StepRecord:
    """What one step contributes to the rollout (``[B, ...]``; ``[T, B, ...]`` stacked).

    Inside the scan it is written as one packed float32 block (see ``ppox.packing``).
    ``reset`` (obs starts an episode) is recorded for recurrent policies only.
    """

    obs: jax.Array  # raw observation acted on
    action: jax.Array
    log_prob: jax.Array
    reward: jax.Array
    terminated: jax.Array
    truncated: jax.Array
    final_obs: jax.Array  # raw, before any reset
    reset: jax.Array | None = None


@struct.dataclass
class EnvCarry:
    """The envs between steps: batched env state, current raw obs ``[B, *obs_shape]``, the
    policy's recurrent carry (no leaves for a feed-forward policy) and, for recurrent
    policies, ``reset [B] bool``: the current obs starts an episode."""

    env_state: Any
    obs: jax.Array
    policy_carry: Any = struct.field(default_factory=dict)
    reset: jax.Array | None = None


@struct.dataclass
class EpisodeTotals:
    """Sums over the episodes that ended during a rollout (scalars)."""

    return_sum: jax.Array
    length_sum: jax.Array
    count: jax.Array

    @classmethod
    def zeros(cls) -> EpisodeTotals:
        return cls(jnp.float32(0.0), jnp.float32(0.0), jnp.float32(0.0))

    def add(self, info: dict[str, jax.Array]) -> EpisodeTotals:
        return EpisodeTotals(
            return_sum=self.return_sum + jnp.sum(info["episode_return"]),
            length_sum=self.length_sum + jnp.sum(info["episode_length"]).astype(jnp.float32),
            count=self.count + jnp.sum(info["episode_done"]).astype(jnp.float32))


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


def init_env_carry(policy: Policy, obs: jax.Array, env_state: Any) -> EnvCarry:
    """The carry of freshly reset envs (``obs [B, ...]``): every obs starts an episode."""
    num_envs = obs.shape[0]
    reset = jnp.ones((num_envs,), bool) if policy.is_recurrent else None
    return EnvCarry(env_state=env_state, obs=obs, policy_carry=policy.initial_carry((num_envs,)),
                    reset=reset)


def act_and_step(ctx: RolloutContext, env: EnvCarry, key_action: jax.Array,
                 env_keys: jax.Array, deterministic: bool = False, auto_reset: bool = True,
                 ) -> tuple[EnvCarry, jax.Array, jax.Array, TimeStep]:
    """The policy acts on every env's current obs and the envs step (auto-resetting).

    Returns the new carry, the raw action ``[B, ...]``, its log-prob ``[B]`` and the
    ``TimeStep``. ``deterministic`` takes the distribution's mode instead of a sample.
    ``auto_reset=False``: ``step_envs``'s, for a caller that drops every step of an env
    after its episode ended.
    """
    dist, carry = ctx.policy.act(ctx.params, normalize_obs(env.obs, ctx.obs_stats, ctx.obs_clip),
                                 env.policy_carry, env.reset)
    action = dist.mode() if deterministic else dist.sample(key_action)
    log_prob = dist.log_prob(action)
    env_state, ts = step_envs(ctx.env, env_keys, env.env_state, ctx.policy.env_action(action),
                              auto_reset)
    reset = None if env.reset is None else ts.done
    new = EnvCarry(env_state=env_state, obs=ts.obs, policy_carry=carry, reset=reset)
    return new, action, log_prob, ts


def env_step(ctx: RolloutContext, carry: RolloutCarry,
             keys: jax.Array) -> tuple[RolloutCarry, StepRecord]:
    """One step of all envs. ``keys: [B + 1]``: one for the action sample, B for the envs."""
    env, action, log_prob, ts = act_and_step(ctx, carry.env, keys[0], keys[1:])
    record = StepRecord(
        obs=carry.env.obs, action=action, log_prob=log_prob, reward=ts.reward,
        terminated=ts.terminated, truncated=ts.truncated, final_obs=ts.final_obs,
        reset=carry.env.reset)
    return RolloutCarry(env, carry.episodes.add(ts.info)), record


def collect(ctx: RolloutContext, env: EnvCarry, key: jax.Array,
            num_steps: int) -> tuple[EnvCarry, StepRecord, EpisodeTotals]:
    """Runs ``num_steps`` steps of all envs.

    Returns the envs after the last step, the ``[T, B, ...]`` records and the totals of the
    episodes that ended during the rollout.
    """
    num_envs = env.obs.shape[0]
    keys = jax.random.split(key, num_steps * (num_envs + 1)).reshape(
        num_steps, num_envs + 1, *key.shape)
    init = RolloutCarry(env, EpisodeTotals.zeros())
    # the env step traced once: its record's shapes unpack the scan's packed output
    step, (_, template) = trace_once(lambda c, k: env_step(ctx, c, k), init, keys[0])

    def packed_step(c: RolloutCarry, k: jax.Array) -> tuple[RolloutCarry, jax.Array]:
        c, record = step(c, k)
        return c, pack(record, batch_ndim=1)

    carry, packed = lax.scan(packed_step, init, keys)
    return carry.env, unpack(packed, template, batch_ndim=1), carry.episodes


def to_rollout(ctx: RolloutContext, rec: StepRecord, reward: jax.Array,
               start: EnvCarry, end: EnvCarry) -> tuple[Rollout, Any]:
    """Adds values (see the module doc); ``start`` and ``end`` are the envs before and
    after the rollout. Returns the rollout and the critic's carry after it (the policy
    carry's ``"critic"`` part for the next rollout)."""
    obs = normalize_obs(rec.obs, ctx.obs_stats, ctx.obs_clip)
    final_obs = normalize_obs(rec.final_obs, ctx.obs_stats, ctx.obs_clip)
    next_obs = normalize_obs(end.obs, ctx.obs_stats, ctx.obs_clip)
    value, bootstrap, critic_carry = ctx.policy.values(ctx.params, obs, final_obs,
                                                       start.policy_carry, rec.reset,
                                                       next_obs, rec.truncated)
    carry = start.policy_carry if ctx.policy.is_recurrent else None
    rollout = Rollout(
        obs=obs, action=rec.action, log_prob=rec.log_prob, value=value,
        reward=reward, terminated=rec.terminated, truncated=rec.truncated,
        bootstrap_value=bootstrap, reset=rec.reset, carry=carry)
    return rollout, critic_carry
