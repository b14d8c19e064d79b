"""Separate actor and critic MLPs and the policy that ties them to an action space.

Initialization follows the common PPO implementations (CleanRL, PureJaxRL): orthogonal
weights with gain sqrt(2) in hidden layers, 0.01 on the policy output and 1.0 on the value
output, zero biases; a state-independent log-std vector for Gaussian policies. The
orthogonal matrices come from ``ppox.initializers`` (no LAPACK call: see there why), all
of a network's kernels from one draw (``MLP.init_params``).
"""

from __future__ import annotations

import itertools
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
from ppox.initializers import orthogonal, orthogonal_kernels

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

    def gains(self) -> list[float]:
        """The orthogonal-init gain of each Dense layer's kernel, in order."""
        return [math.sqrt(2.0)] * len(self.hidden) + [self.out_gain]

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        act = _ACTIVATIONS[self.activation]
        gains = self.gains()
        for width, gain in zip(self.hidden, gains, strict=False):
            x = nn.Dense(width, kernel_init=orthogonal(gain),
                         bias_init=nn.initializers.zeros)(x)
            x = act(x)
        return nn.Dense(self.out_dim, kernel_init=orthogonal(gains[-1]),
                        bias_init=nn.initializers.zeros)(x)

    def init_params(self, key: jax.Array, in_dim: int) -> Params:
        """The parameters ``init`` would make (same tree, same distribution), with every
        kernel from one ``orthogonal_kernels`` call: a fraction of the compile time of
        flax's layer-by-layer init (see ``ppox.initializers``)."""
        widths = [in_dim, *self.hidden, self.out_dim]
        shapes = list(itertools.pairwise(widths))
        kernels = orthogonal_kernels(key, shapes, self.gains())
        return {f"Dense_{i}": {"kernel": w, "bias": jnp.zeros((shape[1],), jnp.float32)}
                for i, (w, shape) in enumerate(zip(kernels, shapes, strict=True))}


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
        in_dim = self.spec.obs_shape[-1]  # Dense acts on the last axis
        params = {
            "actor": self.actor.init_params(key_actor, in_dim),
            "critic": self.critic.init_params(key_critic, in_dim),
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
