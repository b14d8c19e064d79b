"""The one trainer: state, one update step, and the fused / chunked training programs.

``make_train(cfg)`` returns a pure ``train(key, hparams) -> (TrainState, metrics)`` whose
whole loop (num_updates x (rollout + the algorithm's update)) is one ``lax.scan``;
``jax.jit(jax.vmap(train))`` trains many seeds or hyperparameter settings in one program.
``make_train_chunk(cfg)`` runs a given number of updates from a state, for host loops that
print progress and write checkpoints between chunks; chunks compose to the fused program.

The trainer collects the rollout (with observation normalization and reward scaling) and
calls the algorithm (``ppox.algo``, chosen by ``PPOConfig.algo``); it knows nothing of the
update itself. Where one run lives is a ``ppox.parallel.Layout``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct
from jax import lax

from ppox import algo
from ppox.algo.base import Algorithm, AlgoSetup, UpdateContext
from ppox.config import HParams, PPOConfig, field_specs
from ppox.envs import make_env
from ppox.envs.wrappers import EpisodeStats
from ppox.nets import Params, Policy, make_policy
from ppox.normalize import RewardScaler, RunningMeanStd
from ppox.parallel.layout import SINGLE, Layout
from ppox.rollout import EnvCarry, RolloutContext, collect, init_env_carry, to_rollout
from ppox.tracing import trace_once

Metrics = dict[str, jax.Array]


@struct.dataclass
class TrainState:
    """Everything a run needs to continue, as one pytree.

    Attributes:
        params: actor/critic parameters (see ``ppox.nets.Policy``).
        algo_state: what the algorithm carries between updates (PPO: the optimizer state,
            whose step count drives the learning-rate schedule).
        obs_stats: running observation moments (used only if ``normalize_obs``).
        reward_scaler: running return std (used only if ``normalize_reward``).
        env: batched env state, current observation ``[B, *obs_shape]`` and policy carry.
        key: PRNG key for the next update.
        update_idx: ``[] int32`` updates done so far.
    """

    params: Params
    algo_state: Any
    obs_stats: RunningMeanStd
    reward_scaler: RewardScaler
    env: EnvCarry
    key: jax.Array
    update_idx: jax.Array


@dataclass(frozen=True, eq=False)
class Setup:
    """The static parts of training, built once per ``PPOConfig`` on the host."""

    cfg: PPOConfig
    env: EpisodeStats
    policy: Policy
    algorithm: Algorithm
    layout: Layout = SINGLE

    @property
    def algo_setup(self) -> AlgoSetup:
        return AlgoSetup(cfg=self.cfg, policy=self.policy, layout=self.layout)

    @property
    def local_envs(self) -> int:
        return self.layout.local_envs(self.cfg.num_envs)


def env_options(cfg: PPOConfig) -> dict[str, Any]:
    """The settings an env adapter takes: the brax-only fields and ``auto_reset`` for brax
    envs, the env's own config overrides and ``auto_reset`` for playground envs, else
    none."""
    # auto_reset only when not the adapters' default: make_env caches per options given,
    # and a plain make_env(env_id) must find the env a default config built
    reset = {"auto_reset": cfg.auto_reset} if cfg.auto_reset != "fresh" else {}
    if cfg.env_id.startswith("playground/"):
        return {"env_config": cfg.env_config, **reset}
    if not cfg.is_brax:
        return {}
    return {**reset, **{name: getattr(cfg, name) for name, spec in
                        field_specs(PPOConfig).items() if spec.brax_only}}


def env_for(cfg: PPOConfig) -> EpisodeStats:
    """The environment of ``cfg`` (``ppox.envs.make_env`` with its adapter's options)."""
    return make_env(cfg.env_id, **env_options(cfg))


def build(cfg: PPOConfig, layout: Layout = SINGLE) -> Setup:
    """Validates ``cfg`` and builds env, policy and algorithm; every error here is a
    ``ConfigError`` (one line, before anything compiles)."""
    cfg.validate()
    env = env_for(cfg)
    policy = make_policy(cfg, env.spec)
    layout.check(cfg.num_envs, cfg.num_steps, cfg.num_minibatches)
    algorithm = algo.get(cfg.algo)
    setup = Setup(cfg=cfg, env=env, policy=policy, algorithm=algorithm, layout=layout)
    algorithm.check(setup.algo_setup)
    return setup


def init(setup: Setup, hp: HParams, key: jax.Array) -> TrainState:
    """Fresh parameters, algorithm state, statistics and environments (under data
    parallelism: the same parameters everywhere, each device its own envs)."""
    key_params, key_env, key_next = jax.random.split(key, 3)
    key_env, key_next = setup.layout.device_key(key_env), setup.layout.device_key(key_next)
    params = setup.policy.init(key_params, hp.init_log_std)
    algo_state = setup.algorithm.init(setup.algo_setup, params, hp)
    obs, env_state = jax.vmap(setup.env.reset)(jax.random.split(key_env, setup.local_envs))
    return TrainState(
        params=params,
        algo_state=algo_state,
        obs_stats=RunningMeanStd.create(setup.env.spec.obs_shape),
        reward_scaler=RewardScaler.create(setup.local_envs),
        env=init_env_carry(setup.policy, obs, env_state),
        key=key_next,
        update_idx=jnp.int32(0),
    )


def nonfinite_flag(metrics: Metrics) -> jax.Array:
    """``[] float32``: 1.0 if the update's loss or parameter step is NaN/inf (the step is
    ``||new - old||``, non-finite exactly when a new parameter is, given finite old ones)."""
    ok = jnp.isfinite(metrics["loss"]) & jnp.isfinite(metrics["update_norm"])
    return 1.0 - ok.astype(jnp.float32)


def update_step(setup: Setup, hp: HParams, state: TrainState) -> tuple[TrainState, Metrics]:
    """One rollout and the algorithm's update. Returns scalar metrics."""
    cfg, layout = setup.cfg, setup.layout
    key, key_rollout, key_update = jax.random.split(state.key, 3)
    ctx = RolloutContext(
        env=setup.env, policy=setup.policy, params=state.params,
        obs_stats=state.obs_stats if cfg.normalize_obs else None, obs_clip=cfg.obs_clip)
    env_carry, rec, episodes = collect(ctx, state.env, key_rollout, cfg.num_steps)

    reward_scaler, reward = state.reward_scaler, rec.reward
    if cfg.normalize_reward:
        reward_scaler, reward = reward_scaler.update_and_scale(
            rec.reward, rec.terminated | rec.truncated, hp.gamma, layout.data_axis)
    rollout, critic_carry = to_rollout(ctx, rec, reward, state.env, env_carry)
    env_carry = env_carry.replace(policy_carry={**env_carry.policy_carry,
                                                "critic": critic_carry})
    params, algo_state, metrics = setup.algorithm.update(
        UpdateContext(setup.algo_setup, hp, state.update_idx), rollout, state.params,
        state.algo_state, key_update)

    obs_stats = state.obs_stats
    if cfg.normalize_obs:  # after the update: old and new log-probs used the same stats
        obs_stats = obs_stats.update(rec.obs, layout.data_axis)

    metrics = {
        **layout.pmean(metrics),  # per-device diagnostics -> their mean over devices
        "episode_return_sum": layout.psum(episodes.return_sum),
        "episode_length_sum": layout.psum(episodes.length_sum),
        "episode_count": layout.psum(episodes.count),
    }
    # 1.0 when this update's loss or new parameters are not finite (a diverged run); the
    # host checks it once per chunk, never per step
    metrics["nonfinite"] = nonfinite_flag(metrics)
    new_state = TrainState(
        params=params, algo_state=algo_state, obs_stats=obs_stats,
        reward_scaler=reward_scaler, env=env_carry, key=key,
        update_idx=state.update_idx + 1)
    return new_state, metrics


def run_updates(setup: Setup, hp: HParams, state: TrainState,
                num_updates: int) -> tuple[TrainState, Metrics]:
    """``num_updates`` update steps as one scan; metrics are stacked ``[num_updates]``."""
    return lax.scan(lambda s, _: update_step(setup, hp, s), state, None, num_updates)


def make_train(cfg: PPOConfig) -> Callable[[jax.Array, HParams], tuple[TrainState, Metrics]]:
    """A pure ``train(key, hparams) -> (final TrainState, metrics [num_updates])``.

    Validates ``cfg`` and builds the environment now (errors surface before any compile).
    Wrap it as you like: ``jax.jit(train)``, ``jax.jit(jax.vmap(train, (0, None)))`` for
    seeds, ``jax.jit(jax.vmap(train))`` for seeds x hyperparameters.
    """
    setup = build(cfg)

    def train(key: jax.Array, hp: HParams) -> tuple[TrainState, Metrics]:
        hp = hp.as_arrays()
        state = init(setup, hp, key)
        return run_updates(setup, hp, state, cfg.num_updates)

    return train


def make_init(cfg: PPOConfig,
              layout: Layout = SINGLE) -> Callable[[jax.Array, HParams], TrainState]:
    """``init(key, hp) -> TrainState``. With a layout that spans devices it must run under
    ``shard_map`` over them (``ppox.parallel.data_parallel_jit``), given the same key on
    every device: data parallelism gives the same parameters everywhere and
    ``num_envs / devices`` envs with their own keys on each; network splitting gives the
    same state on both but the optimizer state (the actor's on device 0, the critic's on
    device 1)."""
    setup = build(cfg, layout)
    return lambda key, hp: init(setup, hp.as_arrays(), key)


def make_train_chunk(
    cfg: PPOConfig, chunk_size: int, layout: Layout = SINGLE,
) -> Callable[[TrainState, HParams, jax.Array], tuple[TrainState, Metrics]]:
    """``chunk(state, hp, n) -> (state, metrics [chunk_size])`` runs ``n <= chunk_size``
    updates (``n`` is traced: one compile serves every chunk, the last shorter one too).
    Rows ``>= n`` of the metrics are zeros. ``layout``: see ``make_init``."""
    setup = build(cfg, layout)

    def chunk(state: TrainState, hp: HParams, n: jax.Array) -> tuple[TrainState, Metrics]:
        hp = hp.as_arrays()
        # one trace of the update: its metrics' shapes size the buffers, the loop runs it
        step, (_, template) = trace_once(lambda s: update_step(setup, hp, s), state)
        buf = jax.tree.map(lambda m: jnp.zeros((chunk_size, *m.shape), m.dtype), template)

        def body(i: jax.Array, carry: tuple[TrainState, Metrics]):
            st, out = carry
            st, m = step(st)
            out = jax.tree.map(lambda b, v: b.at[i].set(v), out, m)
            return st, out

        return lax.fori_loop(0, jnp.minimum(n, chunk_size), body, (state, buf))

    return chunk
