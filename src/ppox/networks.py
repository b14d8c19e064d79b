"""Separate actor and critic MLPs and the policy that ties them to an action space.

Initialization follows the common PPO implementations (CleanRL, PureJaxRL): orthogonal
weights with gain sqrt(2) in hidden layers, 0.01 on the policy output and 1.0 on the value
output, zero biases; a state-independent log-std vector for Gaussian policies. The
orthogonal matrices come from ``ppox.initializers`` (no LAPACK call: see there why).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ppox.config import ConfigError, PPOConfig
from ppox.distributions import Categorical, Distribution, Gaussian, TanhGaussian
from ppox.envs.core import Box, EnvSpec
from ppox.initializers import orthogonal

_ACTIVATIONS = {
    "tanh": jnp.tanh,
    "relu": nn.relu,
    "elu": nn.elu,
    "silu": nn.silu,
    "gelu": nn.gelu,
}

Params = Any  # a pytree of arrays


class MLP(nn.Module):
    """Dense layers with an activation between them; the last layer is linear."""

    hidden: Sequence[int]
    out_dim: int
    activation: str = "tanh"
    out_gain: float = 1.0

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        act = _ACTIVATIONS[self.activation]
        for width in self.hidden:
            x = nn.Dense(width, kernel_init=orthogonal(math.sqrt(2.0)),
                         bias_init=nn.initializers.zeros)(x)
            x = act(x)
        return nn.Dense(self.out_dim, kernel_init=orthogonal(self.out_gain),
                        bias_init=nn.initializers.zeros)(x)


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


@dataclass(frozen=True, eq=False)
class Policy:
    """Actor and critic networks plus the action distribution for one env spec.

    Parameters are ``{"actor": ..., "critic": ..., "log_std": [d]}`` (``log_std`` only for
    continuous policies). ``obs`` may have any leading batch shape ``[..., obs_dim]``.
    """

    kind: str
    spec: EnvSpec
    actor: MLP
    critic: MLP

    def init(self, key: jax.Array, init_log_std: Any = 0.0) -> Params:
        key_actor, key_critic = jax.random.split(key)
        dummy = jnp.zeros((1, *self.spec.obs_shape), jnp.float32)
        params = {
            "actor": self.actor.init(key_actor, dummy)["params"],
            "critic": self.critic.init(key_critic, dummy)["params"],
        }
        if self.kind != "categorical":
            params["log_std"] = jnp.full((self.spec.action_dim,), init_log_std, jnp.float32)
        return params

    def dist(self, params: Params, obs: jax.Array) -> Distribution:
        out = self.actor.apply({"params": params["actor"]}, obs)
        if self.kind == "categorical":
            return Categorical(out)
        log_std = jnp.broadcast_to(params["log_std"], out.shape)
        return Gaussian(out, log_std) if self.kind == "gaussian" else TanhGaussian(out, log_std)

    def value(self, params: Params, obs: jax.Array) -> jax.Array:
        """``V(obs)``: ``[...]`` float32."""
        return self.critic.apply({"params": params["critic"]}, obs)[..., 0]

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


def make_policy(cfg: PPOConfig, spec: EnvSpec) -> Policy:
    kind = resolve_policy_kind(cfg, spec)
    return Policy(
        kind=kind,
        spec=spec,
        actor=MLP(tuple(cfg.actor_hidden), spec.action_dim, cfg.activation, out_gain=0.01),
        critic=MLP(tuple(cfg.critic_hidden), 1, cfg.activation, out_gain=1.0),
    )


def count_params(params: Params) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))
