"""Wrappers over the ``Env`` interface: in-jit episode statistics."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from ppox.envs.core import Env, EnvSpec, TimeStep, step_envs


@struct.dataclass
class EpisodeStatsState:
    """Inner env state plus the running undiscounted return and length of the episode."""

    inner: Any
    episode_return: jax.Array  # [] float32
    episode_length: jax.Array  # [] int32


@dataclass(frozen=True, eq=False)
class EpisodeStats:
    """Tracks episode return and length inside jit.

    Adds to ``TimeStep.info``: ``episode_done`` ([] bool), ``episode_return`` ([] float32)
    and ``episode_length`` ([] int32): the totals of the episode that ended at this step
    (0 where no episode ended).
    """

    env: Env

    @property
    def spec(self) -> EnvSpec:
        return self.env.spec

    def reset(self, key: jax.Array) -> tuple[jax.Array, EpisodeStatsState]:
        obs, inner = self.env.reset(key)
        return obs, EpisodeStatsState(inner, jnp.float32(0.0), jnp.int32(0))

    def step(self, key: jax.Array, state: EpisodeStatsState,
             action: jax.Array) -> tuple[EpisodeStatsState, TimeStep]:
        inner, ts = self.env.step(key, state.inner, action)
        return self._count(state, inner, ts)

    def step_batch(self, keys: jax.Array, states: EpisodeStatsState,
                   actions: jax.Array) -> tuple[EpisodeStatsState, TimeStep]:
        """``step`` over a leading batch axis, through the inner env's own batched step."""
        inner, ts = step_envs(self.env, keys, states.inner, actions)
        return self._count(states, inner, ts)

    def advance_batch(self, keys: jax.Array, states: EpisodeStatsState,
                      actions: jax.Array) -> tuple[EpisodeStatsState, TimeStep]:
        """``step_batch`` without the inner env's reset where it offers one
        (``step_envs(..., auto_reset=False)``)."""
        inner, ts = step_envs(self.env, keys, states.inner, actions, auto_reset=False)
        return self._count(states, inner, ts)

    @staticmethod
    def _count(state: EpisodeStatsState, inner: Any,
               ts: TimeStep) -> tuple[EpisodeStatsState, TimeStep]:
        """The episode bookkeeping (element-wise: one env or a batch alike)."""
        ret = state.episode_return + ts.reward
        length = state.episode_length + 1
        done = ts.done
        info = {
            **ts.info,
            "episode_done": done,
            "episode_return": jnp.where(done, ret, 0.0),
            "episode_length": jnp.where(done, length, 0),
        }
        new_state = EpisodeStatsState(
            inner=inner,
            episode_return=jnp.where(done, 0.0, ret),
            episode_length=jnp.where(done, 0, length),
        )
        return new_state, ts.replace(info=info)
