"""The one functional environment interface the trainer sees.

An ``Env`` is a pair of pure functions on a single (unbatched) environment; the rollout
vmaps them over ``num_envs``. ``step`` auto-resets: ``TimeStep.obs`` is the first
observation of the next episode when the episode ended, and ``TimeStep.final_obs`` is the
observation the step reached *before* that reset, which a truncated step bootstraps from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import jax
import numpy as np
from flax import struct


@struct.dataclass
class TimeStep:
    """What one environment step returns (shapes for one environment).

    Attributes:
        obs: ``[*obs_shape] float32`` observation to act on next (after auto-reset).
        reward: ``[] float32`` reward of this transition.
        terminated: ``[] bool`` the episode ended in a terminal state (no bootstrap).
        truncated: ``[] bool`` the episode was cut by a time limit (bootstrap from
            ``V(final_obs)``). Both may be true; terminated wins.
        final_obs: ``[*obs_shape] float32`` the observation reached by this step, before
            any reset (equal to ``obs`` when the episode goes on).
        info: extra per-step arrays (episode statistics live here, see wrappers).
    """

    obs: jax.Array
    reward: jax.Array
    terminated: jax.Array
    truncated: jax.Array
    final_obs: jax.Array
    info: dict[str, jax.Array]

    @property
    def done(self) -> jax.Array:
        """The episode ended, for either reason (only for bookkeeping, never for learning)."""
        return self.terminated | self.truncated


@dataclass(frozen=True)
class Discrete:
    """``n`` actions, integer-coded 0..n-1."""

    n: int


@dataclass(frozen=True)
class Box:
    """Continuous actions in ``[low, high]`` (element-wise), flat of length ``shape[0]``."""

    low: np.ndarray
    high: np.ndarray

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.low.shape)

    def __hash__(self) -> int:
        return hash((self.low.tobytes(), self.high.tobytes()))

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Box) and np.array_equal(self.low, other.low)
                and np.array_equal(self.high, other.high))


ActionSpace = Discrete | Box


@dataclass(frozen=True)
class EnvSpec:
    """Static facts about an environment.

    Attributes:
        env_id: the id it was made from.
        obs_shape: shape of one observation: ``(obs_dim,)``, or an image ``(H, W, C)``.
        action_space: ``Discrete`` or ``Box``.
        max_episode_steps: the time limit after which an episode is truncated.
    """

    env_id: str
    obs_shape: tuple[int, ...]
    action_space: ActionSpace
    max_episode_steps: int

    @property
    def is_discrete(self) -> bool:
        return isinstance(self.action_space, Discrete)

    @property
    def action_dim(self) -> int:
        """Number of logits (discrete) or action dimensions (continuous)."""
        if isinstance(self.action_space, Discrete):
            return self.action_space.n
        return int(np.prod(self.action_space.shape))


class Env(Protocol):
    """A single functional environment. Pure functions, safe under jit and vmap.

    Two batched methods are optional (``step_envs`` uses them where they exist):
    ``step_batch(keys, states, actions)``, ``step`` over a leading batch axis (an env whose
    reset is costly can reset only when some env is done), and ``advance_batch`` (same
    arguments), the batched step without the auto-reset, for an evaluation that counts
    first episodes only.
    """

    spec: EnvSpec

    def reset(self, key: jax.Array) -> tuple[jax.Array, Any]:
        """Returns ``(obs [*obs_shape] float32, env_state)``."""
        ...

    def step(self, key: jax.Array, state: Any, action: jax.Array) -> tuple[Any, TimeStep]:
        """Steps once and auto-resets; returns ``(next_state, TimeStep)``."""
        ...


def step_envs(env: Env, keys: jax.Array, states: Any, actions: jax.Array,
              auto_reset: bool = True) -> tuple[Any, TimeStep]:
    """Steps a batch of envs (leading axis ``B`` on every argument): ``env.step_batch`` where
    the env has one (an env whose reset is costly resets only when some env is done, see
    ``ppox.envs.brax``), else ``env.step`` vmapped. The same results either way.

    ``auto_reset=False`` is for a caller that ignores every step of an env after its
    episode ended (an evaluation of first episodes): an env with ``advance_batch`` (same
    arguments; the step without the reset, a done env going on from its last state) takes
    that instead, so the program holds no reset; any other env steps as usual."""
    if not auto_reset:
        advance = getattr(env, "advance_batch", None)
        if advance is not None:
            return advance(keys, states, actions)
    batched = getattr(env, "step_batch", None)
    if batched is not None:
        return batched(keys, states, actions)
    return jax.vmap(env.step)(keys, states, actions)
