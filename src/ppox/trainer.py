"""The one trainer: state, one update step, and the fused / chunked training programs.

``make_train(cfg)`` returns a pure ``train(key, hparams) -> (TrainState, metrics)`` whose
whole loop (num_updates x (rollout + GAE + epochs x minibatches)) is one ``lax.scan``;
``jax.jit(jax.vmap(train))`` trains many seeds or hyperparameter settings in one program.
``make_train_chunk(cfg)`` runs a given number of updates from a state, for host loops that
print progress and write checkpoints between chunks; chunks compose to the fused program.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct
from jax import lax

from ppox.config import ConfigError, HParams, PPOConfig
from ppox.envs import make_env
from ppox.envs.wrappers import EpisodeStats
from ppox.losses import explained_variance, gae
from ppox.networks import Params, Policy, make_policy
from ppox.normalize import RewardScaler, RunningMeanStd
from ppox.rollout import EnvCarry, RolloutContext, collect, to_transition
from ppox.update import (
    Batch,
    SplitLayout,
    critic_mask,
    flat_params,
    flatten_time,
    make_optimizer,
    update,
)

Metrics = dict[str, jax.Array]


@struct.dataclass
class TrainState:
    """Everything a run needs to continue, as one pytree.

    Attributes:
        params: actor/critic parameters (see ``Policy``).
        opt_state: optax state (its step count drives the learning-rate schedule).
        obs_stats: running observation moments (used only if ``normalize_obs``).
        reward_scaler: running return std (used only if ``normalize_reward``).
        env: batched env state and current observation ``[B, obs_dim]``.
        key: PRNG key for the next update.
        update_idx: ``[] int32`` updates done so far.
    """

    params: Params
    opt_state: Any
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
    axis_name: str | None = None  # data parallelism over a named mesh axis
    num_shards: int = 1  # devices the envs are split across (1: no data parallelism)
    split_axis: str | None = None  # network splitting: actor and critic SGD on 2 devices

    @property
    def local_envs(self) -> int:
        return self.cfg.num_envs // self.num_shards


def build(cfg: PPOConfig, axis_name: str | None = None, num_shards: int = 1,
          split_axis: str | None = None) -> Setup:
    """Validates ``cfg`` and builds env and policy; every error here is a ``ConfigError``.

    ``axis_name``/``num_shards``: data parallelism (the envs split across the devices of a
    mesh axis). ``split_axis``: network splitting, a 2-device mesh axis on which device 0
    updates the actor and device 1 the critic while both run the same rollout (see
    ``ppox.update``). The two are exclusive.
    """
    if split_axis is not None and axis_name is not None:
        raise ConfigError("network splitting and data parallelism cannot be combined: "
                          "choose one")
    cfg.validate()
    env = make_env(cfg)
    policy = make_policy(cfg, env.spec)
    local_batch = (cfg.num_envs // num_shards) * cfg.num_steps
    if cfg.num_envs % num_shards or local_batch % cfg.num_minibatches:
        raise ConfigError(
            f"data parallelism over {num_shards} devices needs num_envs={cfg.num_envs} "
            f"divisible by {num_shards} and each device's batch (num_envs/{num_shards} * "
            f"num_steps) divisible by num_minibatches={cfg.num_minibatches}")
    return Setup(cfg=cfg, env=env, policy=policy, axis_name=axis_name, num_shards=num_shards,
                 split_axis=split_axis)


def init(setup: Setup, hp: HParams, key: jax.Array) -> TrainState:
    """Fresh parameters, optimizer state, statistics and environments."""
    key_params, key_env, key_next = jax.random.split(key, 3)
    if setup.axis_name is not None:  # same parameters everywhere, different envs per device
        key_env = jax.random.fold_in(key_env, lax.axis_index(setup.axis_name))
        key_next = jax.random.fold_in(key_next, lax.axis_index(setup.axis_name))
    params = setup.policy.init(key_params, hp.init_log_std)
    if setup.split_axis is None:
        opt_state = make_optimizer(setup.cfg, hp, critic=critic_mask(params)).init(
            flat_params(params)[0])
    else:  # each device: the optimizer state of the network it updates
        own = SplitLayout.of(params, setup.split_axis).own(params)
        opt_state = make_optimizer(setup.cfg, hp, setup.split_axis).init(own)
    obs, env_state = jax.vmap(setup.env.reset)(jax.random.split(key_env, setup.local_envs))
    return TrainState(
        params=params,
        opt_state=opt_state,
        obs_stats=RunningMeanStd.create(setup.env.spec.obs_shape),
        reward_scaler=RewardScaler.create(setup.local_envs),
        env=EnvCarry(env_state=env_state, obs=obs),
        key=key_next,
        update_idx=jnp.int32(0),
    )


def _psum(x: jax.Array, axis_name: str | None) -> jax.Array:
    return x if axis_name is None else lax.psum(x, axis_name)


def _pmean(x: jax.Array, axis_name: str | None) -> jax.Array:
    return x if axis_name is None else lax.pmean(x, axis_name)


def update_step(setup: Setup, hp: HParams, state: TrainState) -> tuple[TrainState, Metrics]:
    """One rollout, GAE, and the epochs of minibatch SGD. Returns scalar metrics."""
    cfg = setup.cfg
    key, key_rollout, key_update = jax.random.split(state.key, 3)
    ctx = RolloutContext(
        env=setup.env, policy=setup.policy, params=state.params,
        obs_stats=state.obs_stats if cfg.normalize_obs else None, obs_clip=cfg.obs_clip)
    env_carry, rec, episodes = collect(ctx, state.env, key_rollout, cfg.num_steps)

    reward_scaler, reward = state.reward_scaler, rec.reward
    if cfg.normalize_reward:
        reward_scaler, reward = reward_scaler.update_and_scale(
            rec.reward, rec.terminated | rec.truncated, hp.gamma, setup.axis_name)
    tr = to_transition(ctx, rec, reward)
    advantages, returns = gae(tr.reward, tr.value, tr.bootstrap_value, tr.terminated,
                              tr.truncated, hp.gamma, hp.gae_lambda)
    batch = Batch(
        obs=flatten_time(tr.obs), action=flatten_time(tr.action),
        log_prob=flatten_time(tr.log_prob), value=flatten_time(tr.value),
        advantages=flatten_time(advantages), returns=flatten_time(returns))
    params, opt_state, metrics = update(cfg, hp, setup.policy, batch, state.params,
                                       state.opt_state, key_update, setup.axis_name,
                                       setup.split_axis)

    obs_stats = state.obs_stats
    if cfg.normalize_obs:  # after the update: old and new log-probs used the same stats
        obs_stats = obs_stats.update(rec.obs, setup.axis_name)

    if setup.axis_name is not None:  # per-device diagnostics -> their mean over devices
        metrics = lax.pmean(metrics, setup.axis_name)
    metrics = {
        **metrics,
        "episode_return_sum": _psum(episodes.return_sum, setup.axis_name),
        "episode_length_sum": _psum(episodes.length_sum, setup.axis_name),
        "episode_count": _psum(episodes.count, setup.axis_name),
        "explained_variance": _pmean(explained_variance(tr.value, returns), setup.axis_name),
        "learning_rate": learning_rate_at(cfg, hp, state.update_idx),
        # 1.0 when this update's loss or new parameters are not finite (a diverged run);
        # the host checks it once per chunk, never per step
        "nonfinite": nonfinite_flag(metrics),
    }
    new_state = TrainState(
        params=params, opt_state=opt_state, obs_stats=obs_stats,
        reward_scaler=reward_scaler, env=env_carry, key=key,
        update_idx=state.update_idx + 1)
    return new_state, metrics


def nonfinite_flag(metrics: Metrics) -> jax.Array:
    """``[] float32``: 1.0 if the update's loss or parameter step is NaN/inf (the step is
    ``||new - old||``, non-finite exactly when a new parameter is, given finite old ones)."""
    ok = jnp.isfinite(metrics["loss"]) & jnp.isfinite(metrics["update_norm"])
    return 1.0 - ok.astype(jnp.float32)


def learning_rate_at(cfg: PPOConfig, hp: HParams, update_idx: jax.Array) -> jax.Array:
    """The learning rate used during update ``update_idx`` (0-based)."""
    if not cfg.anneal_lr:
        return jnp.asarray(hp.learning_rate, jnp.float32)
    return hp.learning_rate * (1.0 - update_idx / cfg.num_updates)


def _scan_body(setup: Setup, hp: HParams, state: TrainState,
               _: None) -> tuple[TrainState, Metrics]:
    return update_step(setup, hp, state)


def run_updates(setup: Setup, hp: HParams, state: TrainState,
                num_updates: int) -> tuple[TrainState, Metrics]:
    """``num_updates`` update steps as one scan; metrics are stacked ``[num_updates]``."""
    return lax.scan(lambda s, x: _scan_body(setup, hp, s, x), state, None, num_updates)


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


def make_init(cfg: PPOConfig, axis_name: str | None = None, num_shards: int = 1,
              split_axis: str | None = None) -> Callable[[jax.Array, HParams], TrainState]:
    """``init(key, hp) -> TrainState``. With ``axis_name`` it must run under ``shard_map``
    over ``num_shards`` devices: same parameters everywhere, ``num_envs / num_shards`` envs
    with their own keys on each device. With ``split_axis``, under ``shard_map`` over 2
    devices given the same key: the same state on both but the optimizer state, which is
    the actor's on device 0 and the critic's on device 1."""
    setup = build(cfg, axis_name, num_shards, split_axis)
    return lambda key, hp: init(setup, hp.as_arrays(), key)


def make_train_chunk(
    cfg: PPOConfig, chunk_size: int, axis_name: str | None = None, num_shards: int = 1,
    split_axis: str | None = None,
) -> Callable[[TrainState, HParams, jax.Array], tuple[TrainState, Metrics]]:
    """``chunk(state, hp, n) -> (state, metrics [chunk_size])`` runs ``n <= chunk_size``
    updates (``n`` is traced: one compile serves every chunk, the last shorter one too).
    Rows ``>= n`` of the metrics are zeros. ``axis_name``: data parallelism (see
    ``make_init``): gradients and statistics are averaged over the devices each step.
    ``split_axis``: network splitting (see ``make_init`` and ``ppox.update``)."""
    setup = build(cfg, axis_name, num_shards, split_axis)

    def chunk(state: TrainState, hp: HParams, n: jax.Array) -> tuple[TrainState, Metrics]:
        hp = hp.as_arrays()
        _, template = jax.eval_shape(lambda s: update_step(setup, hp, s), state)
        buf = jax.tree.map(lambda m: jnp.zeros((chunk_size, *m.shape), m.dtype), template)

        def body(i: jax.Array, carry: tuple[TrainState, Metrics]):
            st, out = carry
            st, m = update_step(setup, hp, st)
            out = jax.tree.map(lambda b, v: b.at[i].set(v), out, m)
            return st, out

        return lax.fori_loop(0, jnp.minimum(n, chunk_size), body, (state, buf))

    return chunk
