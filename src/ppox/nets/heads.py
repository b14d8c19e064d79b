"""Heads: the linear output layer's features -> an action distribution or a value.

The action head decides the distribution (Categorical, Gaussian clipped to the bounds,
tanh-Gaussian), its state-independent ``log_std`` for continuous actions, and how a stored
raw sample becomes the environment's action.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp

from ppox.config import ConfigError, PPOConfig
from ppox.distributions import Categorical, Distribution, Gaussian, TanhGaussian
from ppox.envs.core import Box, EnvSpec

POLICY_KINDS = ("categorical", "gaussian", "tanh_gaussian")


def resolve_policy_kind(cfg: PPOConfig, spec: EnvSpec) -> str:
    """``auto`` -> categorical (discrete) / gaussian (continuous); checks the pairing."""
    kind = cfg.policy
    if kind == "auto":
        return "categorical" if spec.is_discrete else "gaussian"
    if spec.is_discrete and kind != "categorical":
        raise ConfigError(
            f"policy={kind!r} needs continuous actions but {spec.env_id} has discrete "
            "actions; use --policy categorical (or auto)")
    if not spec.is_discrete and kind == "categorical":
        raise ConfigError(
            f"policy='categorical' needs discrete actions but {spec.env_id} has continuous "
            "actions; use --policy gaussian or tanh_gaussian (or auto)")
    return kind


@dataclass(frozen=True)
class ActionHead:
    """The distribution over actions, given the actor's output ``[..., action_dim]``."""

    kind: str
    spec: EnvSpec

    @property
    def continuous(self) -> bool:
        return self.kind != "categorical"

    def init(self, init_log_std: Any) -> dict[str, jax.Array]:
        """Head parameters outside the network: ``log_std`` for continuous actions."""
        if not self.continuous:
            return {}
        return {"log_std": jnp.full((self.spec.action_dim,), init_log_std, jnp.float32)}

    def dist(self, out: jax.Array, params: Any) -> Distribution:
        if self.kind == "categorical":
            return Categorical(out)
        log_std = jnp.broadcast_to(params["log_std"], out.shape)
        return Gaussian(out, log_std) if self.kind == "gaussian" else TanhGaussian(out, log_std)

    def env_action(self, raw: jax.Array) -> jax.Array:
        """Maps a stored sample to the env's action: identity, clip, or squash+rescale."""
        if self.kind == "categorical":
            return raw
        space = self.spec.action_space
        assert isinstance(space, Box)
        low, high = jnp.asarray(space.low), jnp.asarray(space.high)
        if self.kind == "gaussian":
            return jnp.clip(raw, low, high)
        return low + (jnp.tanh(raw) + 1.0) * 0.5 * (high - low)
