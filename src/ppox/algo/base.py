"""The algorithm seam: what the trainer hands an algorithm, and what it gets back.

An algorithm is a pair of pure functions, shaped like an optax ``GradientTransformation``::

    init(setup, params, hp) -> algo_state
    update(ctx, rollout, params, algo_state, key) -> (params, algo_state, metrics)

``algo_state`` is whatever the algorithm carries between updates (an optimizer state, an
adaptive KL coefficient, ...); it lives in ``TrainState.algo_state`` and is checkpointed
with it. ``metrics`` is a dict of scalars; every algorithm reports ``loss`` and
``update_norm`` (``||new params - old params||``), which the trainer's divergence flag
reads. The trainer collects the rollout and knows nothing else of the update.

A new algorithm is one module ``ppox.algo.<name>`` defining ``ALGORITHM`` (see
``ppox.algo.get``) plus its name in ``PPOConfig.algo``'s literal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import jax
from flax import struct

from ppox.config import ConfigError, HParams, PPOConfig
from ppox.nets import Params, Policy
from ppox.parallel.layout import Layout

Metrics = dict[str, jax.Array]


@struct.dataclass
class Rollout:
    """A rollout, time-major. ``T`` = num_steps, ``B`` = the envs (of this device).

    Attributes:
        obs: ``[T, B, *obs_shape] float32`` observation acted on (normalized if enabled).
        action: ``[T, B] int32`` or ``[T, B, act_dim] float32`` raw policy sample.
        log_prob: ``[T, B] float32`` log-prob of ``action`` under the behaviour policy.
        value: ``[T, B] float32`` V(obs_t).
        reward: ``[T, B] float32`` reward used for learning (scaled if enabled).
        terminated: ``[T, B] bool``.
        truncated: ``[T, B] bool``.
        bootstrap_value: ``[T, B] float32`` V(final_obs_t): V(s_{t+1}) when the episode goes
            on, the value of the pre-reset observation when it was truncated.
        reset: ``[T, B] bool`` obs_t starts an episode (recurrent policies reset there),
            or None for feed-forward policies.
        carry: the policy's recurrent carry at the rollout's start (``[B, ...]``), or None.
    """

    obs: jax.Array
    action: jax.Array
    log_prob: jax.Array
    value: jax.Array
    reward: jax.Array
    terminated: jax.Array
    truncated: jax.Array
    bootstrap_value: jax.Array
    reset: jax.Array | None = None
    carry: Any = None


@dataclass(frozen=True, eq=False)
class AlgoSetup:
    """What is static for a whole run: settings, networks, device layout."""

    cfg: PPOConfig
    policy: Policy
    layout: Layout


@dataclass(frozen=True, eq=False)
class UpdateContext:
    """What one update is given besides the data: the static setup, the (traced)
    hyperparameters and the index of this update (for schedules)."""

    setup: AlgoSetup
    hp: HParams
    update_idx: jax.Array

    @property
    def cfg(self) -> PPOConfig:
        return self.setup.cfg

    @property
    def policy(self) -> Policy:
        return self.setup.policy

    @property
    def layout(self) -> Layout:
        return self.setup.layout


class Algorithm(Protocol):
    """See the module docstring."""

    def check(self, setup: AlgoSetup) -> None:
        """Raises ``ConfigError`` for a combination this algorithm cannot run."""
        ...

    def init(self, setup: AlgoSetup, params: Params, hp: HParams) -> Any:
        ...

    def update(self, ctx: UpdateContext, rollout: Rollout, params: Params, algo_state: Any,
               key: jax.Array) -> tuple[Params, Any, Metrics]:
        ...


def refuse(what: str, why: str) -> ConfigError:
    """The one-line error for a combination an algorithm cannot run."""
    return ConfigError(f"{what}: {why}")
