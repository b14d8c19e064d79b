"""Deterministic evaluation: run episodes with the policy's mode, in one jitted scan.

``num_episodes`` environments run in parallel for up to ``max_episode_steps`` steps; each
contributes the return of its first episode. An env that can step without its auto-reset
(brax, Playground: ``advance_batch``) does so here, so the program compiles no reset beyond
the first. Observation statistics from training are applied exactly as during training.
For brax the pipeline states of the first episode can be kept for rendering.

``jit_evaluate`` jits it as ppox's commands do: on a CPU without XLA's newer fusion emitters
(``eval_compiler_options``), and with JAX's rolled threefry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct
from jax import lax

from ppox._platform import LowersRolled
from ppox.config import PPOConfig
from ppox.envs.wrappers import EpisodeStats
from ppox.nets import Params, Policy, make_policy
from ppox.normalize import RunningMeanStd
from ppox.rollout import EnvCarry, RolloutContext, act_and_step, init_env_carry
from ppox.trainer import env_for


@struct.dataclass
class EvalCarry:
    env: EnvCarry  # env state, obs [E, *obs_shape], policy carry
    alive: jax.Array  # [E] bool: still in the first episode
    episode_return: jax.Array  # [E]
    episode_length: jax.Array  # [E]


@dataclass(frozen=True, eq=False)
class EvalContext:
    env: EpisodeStats
    policy: Policy
    params: Params
    obs_stats: RunningMeanStd | None
    obs_clip: float
    deterministic: bool
    keep_states: bool


def eval_step(ctx: EvalContext, carry: EvalCarry, key: jax.Array) -> tuple[EvalCarry, Any]:
    key_action, key_env = jax.random.split(key)
    keys = jax.random.split(key_env, carry.env.obs.shape[0])
    rollout_ctx = RolloutContext(env=ctx.env, policy=ctx.policy, params=ctx.params,
                                 obs_stats=ctx.obs_stats, obs_clip=ctx.obs_clip)
    # only first episodes count: an env that can step without its reset does (the program
    # then holds no reset but the first; a brax/Playground reset compiles for seconds)
    env, _, _, ts = act_and_step(rollout_ctx, carry.env, key_action, keys, ctx.deterministic,
                                 auto_reset=False)
    alive = carry.alive
    new = EvalCarry(
        env=env,
        alive=alive & ~ts.done,
        episode_return=carry.episode_return + jnp.where(alive, ts.reward, 0.0),
        episode_length=carry.episode_length + alive.astype(jnp.int32),
    )
    # The state the policy acted on is what a renderer should draw (an env without a
    # reset-free step has reset by the step's end): take env 0's state from the carry.
    out = jax.tree.map(lambda x: x[0], carry.env.env_state) if ctx.keep_states else None
    return new, out


def make_evaluate(
    cfg: PPOConfig, num_episodes: int | None = None, deterministic: bool = True,
    keep_states: bool = False,
) -> Callable[[jax.Array, Params, RunningMeanStd], tuple[jax.Array, jax.Array, Any]]:
    """``evaluate(key, params, obs_stats) -> (returns [E], lengths [E], states)``.

    ``states`` is the env state of episode 0 at every step (a pytree with a leading time
    axis) when ``keep_states``, else None. Only steps ``< lengths[0]`` belong to the episode.
    """
    env = env_for(cfg)
    policy = make_policy(cfg, env.spec)
    num_episodes = num_episodes or cfg.num_eval_episodes
    max_steps = env.spec.max_episode_steps

    def evaluate(key: jax.Array, params: Params, obs_stats: RunningMeanStd):
        key_reset, key_steps = jax.random.split(key)
        obs, env_state = jax.vmap(env.reset)(jax.random.split(key_reset, num_episodes))
        ctx = EvalContext(env=env, policy=policy, params=params,
                          obs_stats=obs_stats if cfg.normalize_obs else None,
                          obs_clip=cfg.obs_clip, deterministic=deterministic,
                          keep_states=keep_states)
        carry = EvalCarry(init_env_carry(policy, obs, env_state), jnp.ones(num_episodes, bool),
                          jnp.zeros(num_episodes, jnp.float32),
                          jnp.zeros(num_episodes, jnp.int32))
        carry, states = lax.scan(lambda c, k: eval_step(ctx, c, k), carry,
                                 jax.random.split(key_steps, max_steps))
        return carry.episode_return, carry.episode_length, states

    return evaluate


# XLA's options for an evaluation program on a CPU. It runs once per evaluation, and XLA's
# newer fusion emitters cost it more compile time than their kernels save: 128 episodes of
# brax/inverted_pendulum compile in 2.2 s against 3.6 s and run in 0.45 against 0.5 s
# without them (README, "Platform set-up"). Training programs keep them. The evaluation also
# lowers with JAX's rolled threefry (``ppox._platform.rolled_threefry``): a deterministic one
# draws random numbers for its first reset only (a stochastic one also for its actions), and
# it runs once per evaluation, so its compile matters more than the speed of its draws.
CPU_EVAL_COMPILER_OPTIONS = {"xla_cpu_use_fusion_emitters": False}


def eval_compiler_options() -> dict[str, Any] | None:
    """The XLA options an evaluation program compiles with: ``CPU_EVAL_COMPILER_OPTIONS``
    on the CPU backend, else XLA's defaults (None)."""
    return dict(CPU_EVAL_COMPILER_OPTIONS) if jax.default_backend() == "cpu" else None


def jit_eval_program(fn: Callable[..., Any]) -> LowersRolled:
    """``fn`` (an evaluation, or a function of one) jitted with ``eval_compiler_options``
    and lowered with JAX's rolled threefry (``LowersRolled``): how ppox compiles every
    evaluation program. It is a top-level program (JAX takes compiler options only there):
    call it outside any ``jit``."""
    return LowersRolled(jax.jit(fn, compiler_options=eval_compiler_options()))


def jit_evaluate(
    cfg: PPOConfig, num_episodes: int | None = None, deterministic: bool = True,
    keep_states: bool = False,
) -> LowersRolled:
    """``make_evaluate``'s function as ppox's commands compile it (``jit_eval_program``).
    Its ``lower(key, params, obs_stats)`` lowers it the same way."""
    return jit_eval_program(make_evaluate(cfg, num_episodes, deterministic, keep_states))
