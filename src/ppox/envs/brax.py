"""Adapter from brax environments to the ppox ``Env`` interface.

brax's own training wrappers lose information a correct PPO needs: ``AutoResetWrapper``
replaces the observation of the last step with the reset observation (and resets every
episode to the *same* first state), and ``EpisodeWrapper`` folds the time limit into
``done``. This adapter does the episode bookkeeping itself:

* ``terminated`` is the base environment's ``done`` (a fall, an unhealthy state), latched
  across action repeats; rewards after a termination inside a repeat are not counted.
* ``truncated`` is the time limit: ``episode_length`` physics steps, as in brax
  (``episode_length / action_repeat`` agent steps), and only when not terminated.
* ``final_obs`` is the observation before the reset. With ``auto_reset="fresh"`` (the
  default) the reset draws a fresh initial state from the step key; with
  ``"first_state"`` each env restarts from its own first state of the run (drawn by
  ``reset`` and kept in the state), as brax's ``AutoResetWrapper`` does: num_envs distinct
  starts instead of a new one per episode, and no reset inside the training program, whose
  compile is then shorter and whose steps faster (README, "Robotics control").

Actions are in ``[-1, 1]`` for every brax environment: that is the range brax environments
take (some rescale to their actuator range themselves, the others clip to it).
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
import warnings
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from ppox.envs.core import Box, EnvSpec, TimeStep
from ppox.tracing import CachedTrace

BRAX_PREFIX = "brax/"


_KNOWN_NOISE = ("is deprecated and will be removed in a future release",)


@contextlib.contextmanager
def _quiet() -> Any:
    """Silences what brax/mujoco print on import and env construction: mjx prints "Failed
    to import warp" to stdout (the optional warp backend is absent on CPU), brax warns
    that its pipelines are unmaintained on every environment it builds, and MuJoCo's C
    compiler writes deprecation warnings about brax's model files straight to fd 2. Other
    stderr output is passed through."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Brax System", category=UserWarning)
                yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode(errors="replace").splitlines(keepends=True):
                if line.strip() and not any(noise in line for noise in _KNOWN_NOISE):
                    sys.stderr.write(line)


def brax_envs() -> Any:
    """``brax.envs``, imported quietly."""
    with _quiet():
        from brax import envs
    return envs


def brax_env_names() -> list[str]:
    """Names of the environments registered in ``brax.envs`` (without the prefix)."""
    return sorted(name for name in brax_envs()._envs if name != "fast")


def brax_env_ids() -> list[str]:
    return [BRAX_PREFIX + name for name in brax_env_names()]


@jax.custom_batching.custom_vmap
def any_in_every_batch(flags: jax.Array) -> jax.Array:
    """``jnp.any(flags)``, and under ``vmap`` the any over the mapped axes too, so that the
    result stays one unbatched boolean (a ``lax.cond`` on it stays a conditional instead of
    becoming a select that runs both branches). Only for a cond whose two branches agree
    wherever this batch member's own ``any`` is false, as ``BraxEnv.step_batch``'s do."""
    return jnp.any(flags)


@any_in_every_batch.def_vmap
def _any_in_every_batch_vmap(axis_size: int, in_batched: Any,
                             flags: jax.Array) -> tuple[jax.Array, bool]:
    return any_in_every_batch(flags), False


@struct.dataclass
class BraxEnvState:
    """The brax pipeline state plus the physics steps taken in this episode."""

    inner: Any  # brax.envs.base.State
    steps: jax.Array  # [] int32
    first: Any = None  # auto_reset="first_state": the state this env restarts from


@dataclass(frozen=True, eq=False)
class BraxEnv:
    """A brax environment as a ppox ``Env`` (see the module docstring for semantics)."""

    spec: EnvSpec
    env: Any  # brax.envs.base.Env
    episode_length: int
    action_repeat: int
    auto_reset: str = "fresh"  # or "first_state" (module docstring)
    # the env's reset, traced once and reused by every program that resets (init, the
    # auto-reset in the training step, evaluation): a Playground reset takes seconds to
    # trace. ``make_brax`` passes the trace it read the observation's shape from.
    _reset: CachedTrace | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self._reset is None:
            object.__setattr__(self, "_reset", CachedTrace(self.env.reset))

    def reset(self, key: jax.Array) -> tuple[jax.Array, BraxEnvState]:
        inner = self._reset(key)
        first = inner if self.auto_reset == "first_state" else None
        return inner.obs, BraxEnvState(inner=inner, steps=jnp.int32(0), first=first)

    def _repeat(self, state: Any, action: jax.Array) -> tuple[Any, jax.Array, jax.Array]:
        """``action_repeat`` physics steps; returns (state, summed reward, terminated)."""

        def one(carry: tuple[Any, jax.Array, jax.Array], _: None):
            st, total, term = carry
            nxt = self.env.step(st, action)
            total = total + jnp.where(term, 0.0, nxt.reward)
            return (nxt, total, term | (nxt.done > 0.5)), None

        if self.action_repeat == 1:
            nxt = self.env.step(state, action)
            return nxt, jnp.asarray(nxt.reward, jnp.float32), nxt.done > 0.5
        init = (state, jnp.float32(0.0), jnp.asarray(False))
        (nxt, total, term), _ = jax.lax.scan(one, init, None, self.action_repeat)
        return nxt, total, term

    def _advance(self, state: BraxEnvState,
                 action: jax.Array) -> tuple[BraxEnvState, jax.Array, jax.Array, jax.Array]:
        """One agent step with no reset: (state, reward, terminated, truncated)."""
        nxt, reward, terminated = self._repeat(state.inner, action)
        steps = state.steps + self.action_repeat
        truncated = (steps >= self.episode_length) & ~terminated
        return state.replace(inner=nxt, steps=steps), reward, terminated, truncated

    def _reset_where(self, key: jax.Array, stepped: BraxEnvState,
                     done: jax.Array) -> tuple[BraxEnvState, jax.Array]:
        """One env's auto-reset: ``reset(key)``'s state and obs (``first_state``: the env's
        first state, no key used) where ``done``, else the stepped ones."""
        if self.auto_reset == "first_state":
            reset_state = stepped.replace(inner=stepped.first, steps=jnp.int32(0))
            reset_obs = stepped.first.obs
        else:
            reset_obs, reset_state = self.reset(key)
        state = jax.tree.map(lambda r, s: jnp.where(done, r, s), reset_state, stepped)
        return state, jnp.where(done, reset_obs, stepped.inner.obs)

    def step(self, key: jax.Array, state: BraxEnvState,
             action: jax.Array) -> tuple[BraxEnvState, TimeStep]:
        stepped, reward, terminated, truncated = self._advance(state, action)
        new_state, obs = self._reset_where(key, stepped, terminated | truncated)
        return new_state, self._timestep(obs, stepped, reward, terminated, truncated)

    def step_batch(self, keys: jax.Array, states: BraxEnvState,
                   actions: jax.Array) -> tuple[BraxEnvState, TimeStep]:
        """``step`` vmapped over a leading batch axis, but the resets are computed only when
        some env of the batch is done (``lax.cond``): a Playground reset can cost hundreds of
        physics steps (CheetahRun settles for 200), and a vmapped ``step`` pays for a reset
        at every step. The values are ``step``'s: each done env takes ``reset(its key)``.
        Under an outer vmap (seeds, sweeps) the resets run when an env of any run is done
        (``any_in_every_batch``), each run still taking only its own done envs' resets."""
        stepped, reward, terminated, truncated = jax.vmap(self._advance)(states, actions)
        done = terminated | truncated
        if self.auto_reset == "first_state":  # a select, nothing to skip
            new_state, obs = jax.vmap(self._reset_where)(keys, stepped, done)
            return new_state, self._timestep(obs, stepped, reward, terminated, truncated)
        new_state, obs = jax.lax.cond(
            any_in_every_batch(done),
            lambda _: jax.vmap(self._reset_where)(keys, stepped, done),
            lambda _: (stepped, stepped.inner.obs), None)
        return new_state, self._timestep(obs, stepped, reward, terminated, truncated)

    def advance_batch(self, keys: jax.Array, states: BraxEnvState,
                      actions: jax.Array) -> tuple[BraxEnvState, TimeStep]:
        """``step_batch`` without the auto-reset (``step_envs(..., auto_reset=False)``): a
        done env goes on from its last state, its obs the stepped one. No key is used."""
        del keys
        stepped, reward, terminated, truncated = jax.vmap(self._advance)(states, actions)
        return stepped, self._timestep(stepped.inner.obs, stepped, reward, terminated,
                                       truncated)

    @staticmethod
    def _timestep(obs: jax.Array, stepped: BraxEnvState, reward: jax.Array,
                  terminated: jax.Array, truncated: jax.Array) -> TimeStep:
        return TimeStep(obs=obs, reward=reward, terminated=terminated, truncated=truncated,
                        final_obs=stepped.inner.obs, info={})


def make_brax(env_id: str, backend: str = "spring", episode_length: int = 1000,
              action_repeat: int = 1, auto_reset: str = "fresh") -> BraxEnv:
    """Builds ``brax/<name>`` with the given physics backend, time limit and auto-reset
    mode (``"fresh"`` or ``"first_state"``, see the module docstring)."""
    name = env_id.removeprefix(BRAX_PREFIX)
    with _quiet():
        env = brax_envs().get_environment(name, backend=backend)
    # the observation's shape from one abstract trace of the reset, kept for the programs:
    # brax's ``env.observation_size`` runs the reset op by op, ~140 small XLA compiles
    # (3.5 s for inverted_pendulum)
    reset = CachedTrace(env.reset)
    obs = jax.eval_shape(reset, jax.eval_shape(jax.random.PRNGKey, 0)).obs  # a key's shape
    if not isinstance(obs, jax.ShapeDtypeStruct):
        raise ValueError(f"{env_id}: dict observations are not supported")
    spec = EnvSpec(
        env_id=env_id,
        obs_shape=(int(obs.shape[-1]),),
        action_space=Box(low=-np.ones(env.action_size, np.float32),
                         high=np.ones(env.action_size, np.float32)),
        max_episode_steps=-(-episode_length // action_repeat),
    )
    return BraxEnv(spec=spec, env=env, episode_length=episode_length,
                   action_repeat=action_repeat, auto_reset=auto_reset, _reset=reset)


def render_html(env: BraxEnv, states: Any, length: int) -> str:
    """An HTML page (brax's viewer) of one episode.

    ``states``: the wrapped env state of one env at every step, time-major, as kept by
    ``ppox.evaluate`` (episode-statistics state around a ``BraxEnvState``); the first
    ``length`` steps are drawn. The page loads the viewer's JavaScript from a CDN.
    """
    brax_envs()
    from brax.io import html

    pipeline = states.inner.inner.pipeline_state
    frames = [jax.tree.map(lambda x, i=i: x[i], pipeline) for i in range(max(1, length))]
    return html.render(env.env.sys.tree_replace({"opt.timestep": env.env.dt}), frames)
