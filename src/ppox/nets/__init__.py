"""Networks by composition: a torso (``ppox.nets.torso``) and a linear output layer make a
``Network``; an actor network with an action head (``ppox.nets.heads``) and a critic
network make the ``Policy``. The torsos are ``MLPTorso`` (``torso.py``), ``CNNTorso``
(``cnn.py``, for ``[H, W, C]`` images) and ``GRUTorso`` (``recurrent.py``, a GRU over either);
``make_torso`` picks one from ``PPOConfig.torso`` / ``recurrent`` and the observation shape.

Initialization follows the common PPO implementations (CleanRL, PureJaxRL): orthogonal
weights with gain sqrt(2) in hidden layers, 0.01 on the policy output and 1.0 on the value
output, zero biases; a state-independent log-std vector for Gaussian policies. All of a
network's kernels come from one ``ppox.initializers.orthogonal_kernels`` draw.

Parameters are ``{"actor": ..., "critic": ..., "log_std": [d]}`` (``log_std`` only for
continuous policies). A recurrent policy's carry is ``{"actor": ..., "critic": ...}``: the
critic has its own recurrent state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from ppox.config import ConfigError, PPOConfig
from ppox.distributions import Distribution
from ppox.envs.core import EnvSpec
from ppox.initializers import orthogonal_kernels
from ppox.nets.cnn import KERNEL, CNNTorso
from ppox.nets.heads import ActionHead, resolve_policy_kind
from ppox.nets.recurrent import GRUTorso
from ppox.nets.torso import Carry, MLPTorso, Params, dense, dense_params

# the protocol every torso follows is documented in ppox.nets.torso
Torso = MLPTorso | CNNTorso | GRUTorso


@dataclass(frozen=True)
class Network:
    """``torso`` then a linear layer to ``out_dim`` (kernel gain ``out_gain``)."""

    torso: Torso
    out_dim: int
    out_gain: float

    def gains(self) -> list[float]:
        """The orthogonal-init gain of every kernel, the output layer's last."""
        return [*self.torso.gains(), self.out_gain]

    def row_flops(self) -> int:
        """Matmul FLOPs of one observation through the torso and the output layer."""
        return self.torso.row_flops() + 2 * self.torso.out_dim * self.out_dim

    def input_flops(self) -> int:
        """The share of ``row_flops`` of the layer that reads the observation: a gradient
        pass costs ``2 * row_flops - input_flops`` (no gradient for the input itself)."""
        return self.torso.input_flops() if self.torso.matrices() else self.row_flops()

    def init(self, key: jax.Array) -> Params:
        shapes = [*self.torso.matrices(), (self.torso.out_dim, self.out_dim)]
        kernels = orthogonal_kernels(key, shapes, self.gains())
        params = self.torso.build(kernels[:-1])
        params[self.torso.head_name] = dense_params(kernels[-1])
        return params

    def apply(self, params: Params, x: jax.Array, carry: Carry = (),
              reset: jax.Array | None = None) -> tuple[jax.Array, Carry]:
        features, carry = self.torso.apply(params, x, carry, reset)
        return dense(params[self.torso.head_name], features), carry

    def apply_sequence(self, params: Params, xs: jax.Array, carry: Carry,
                       resets: jax.Array | None) -> jax.Array:
        """Outputs for a time-major ``[T, B, ...]`` sequence started from ``carry`` (``[B]``),
        resetting where ``resets`` (``[T, B]``) is set: the rollout's computation, replayed."""
        if not self.torso.is_recurrent:
            return self.apply(params, xs)[0]

        def step(c: Carry, inp: tuple[jax.Array, jax.Array]) -> tuple[Carry, jax.Array]:
            x, r = inp
            out, c = self.apply(params, x, c, r)
            return c, out

        return lax.scan(step, carry, (xs, resets))[1]


# From this many rollout rows on, the bootstrap values come from one pass over the rollout's
# observations and the truncated steps' final observations only (``Policy.values``); below
# it, from one pass over every observation and every final observation, which compiles into
# a smaller program.
TRUNCATED_PASS_ROWS = 16384


@dataclass(frozen=True, eq=False)
class Policy:
    """Actor and critic networks plus the action head for one env spec.

    Feed-forward calls take ``obs`` of any leading batch shape ``[..., *obs_shape]``. With a
    recurrent torso, ``dist``/``value`` take time-major ``[T, B, ...]`` sequences with the
    carry at their start and the per-step episode starts ``reset [T, B]``.
    """

    head: ActionHead
    actor: Network
    critic: Network

    @property
    def kind(self) -> str:
        return self.head.kind

    @property
    def spec(self) -> EnvSpec:
        return self.head.spec

    @property
    def is_recurrent(self) -> bool:
        return self.actor.torso.is_recurrent or self.critic.torso.is_recurrent

    def init(self, key: jax.Array, init_log_std: Any = 0.0) -> Params:
        key_actor, key_critic = jax.random.split(key)
        return {"actor": self.actor.init(key_actor), "critic": self.critic.init(key_critic),
                **self.head.init(init_log_std)}

    def initial_carry(self, batch_shape: tuple[int, ...]) -> Carry:
        return {"actor": self.actor.torso.initial_carry(batch_shape),
                "critic": self.critic.torso.initial_carry(batch_shape)}

    def act(self, params: Params, obs: jax.Array, carry: Carry,
            reset: jax.Array | None) -> tuple[Distribution, Carry]:
        """One step of the actor (rollout, evaluation): the distribution and the new carry
        (the critic's carry is advanced later, in ``values``)."""
        out, actor_carry = self.actor.apply(params["actor"], obs, carry["actor"], reset)
        return self.head.dist(out, params), {**carry, "actor": actor_carry}

    def dist(self, params: Params, obs: jax.Array, carry: Carry | None = None,
             reset: jax.Array | None = None) -> Distribution:
        actor_carry = None if carry is None else carry["actor"]
        return self.head.dist(self.actor.apply_sequence(params["actor"], obs, actor_carry,
                                                        reset), params)

    def value(self, params: Params, obs: jax.Array, carry: Carry | None = None,
              reset: jax.Array | None = None) -> jax.Array:
        """``V(obs)``: ``[...]`` float32."""
        critic_carry = None if carry is None else carry["critic"]
        return self.critic.apply_sequence(params["critic"], obs, critic_carry, reset)[..., 0]

    def values(self, params: Params, obs: jax.Array, final_obs: jax.Array, carry: Carry,
               reset: jax.Array | None, next_obs: jax.Array,
               truncated: jax.Array) -> tuple[jax.Array, jax.Array, Carry]:
        """``(V(obs_t), bootstrap_t, critic carry after the last step)`` (values ``[T, B]``)
        for a rollout started with the policy carry ``carry``; ``next_obs [B, ...]`` is the
        observation after the rollout's last step.

        ``bootstrap_t`` is ``V(final_obs_t)`` wherever it is used: where the episode went on
        ``final_obs_t`` is the next observation, so its value is ``V(obs_{t+1})`` (or
        ``V(next_obs)`` after the last step), already computed; where it was truncated the
        critic runs on ``final_obs_t`` itself. Where it terminated (bootstrapped with 0) it
        is the next observation's value. Feed-forward: one pass over ``[T + 1, B]`` and the
        truncated rows (``_truncated_values``). Recurrent: one scan; the bootstrap value of
        step t reads ``final_obs_t`` with the carry after ``obs_t`` (no reset between).
        """
        if not self.critic.torso.is_recurrent and truncated.size < TRUNCATED_PASS_ROWS:
            v = self.value(params, jnp.stack([obs, final_obs]))
            return v[0], v[1], carry["critic"]
        if not self.critic.torso.is_recurrent:
            v = self.value(params, jnp.concatenate([obs, next_obs[None]]))
            bootstrap = self._truncated_values(params, final_obs, truncated, v[1:])
            return v[:-1], bootstrap, carry["critic"]
        net, p = self.critic, params["critic"]

        def step(c: Carry, inp: tuple[jax.Array, jax.Array, jax.Array]):
            o, fo, r = inp
            v, c = net.apply(p, o, c, r)
            bv, _ = net.apply(p, fo, c, jnp.zeros_like(r))
            return c, (v[..., 0], bv[..., 0])

        end, (v, bv) = lax.scan(step, carry["critic"], (obs, final_obs, reset))
        return v, bv, end

    def _truncated_values(self, params: Params, final_obs: jax.Array, truncated: jax.Array,
                          following: jax.Array) -> jax.Array:
        """``following [T, B]`` with ``V(final_obs_t)`` where ``truncated``: the truncated
        rows' indices in order, and the critic on them ``B`` rows at a time (a time limit
        truncates an env at most once per episode, so one block unless episodes are shorter
        than the rollout; a loop of as many blocks as it takes otherwise)."""
        t, b = truncated.shape
        n = t * b
        flat_obs = final_obs.reshape(n, *final_obs.shape[2:])
        flags = truncated.reshape(n)
        count = jnp.sum(flags, dtype=jnp.int32)
        rows = jnp.nonzero(flags, size=n, fill_value=n)[0]  # n: past the end, dropped
        block = min(b, n)

        def body(i: jax.Array, out: jax.Array) -> jax.Array:
            idx = lax.dynamic_slice(rows, (i * block,), (block,))
            v = self.value(params, flat_obs.at[idx].get(mode="fill", fill_value=0))
            return out.at[idx].set(v, mode="drop")

        blocks = (count + block - 1) // block
        return lax.fori_loop(0, blocks, body, following.reshape(n)).reshape(t, b)

    def env_action(self, raw: jax.Array) -> jax.Array:
        return self.head.env_action(raw)


def torso_kind(cfg: PPOConfig, spec: EnvSpec) -> str:
    """``"mlp"`` or ``"cnn"`` for ``cfg.torso`` on ``spec``'s observations (auto: cnn for
    images ``[H, W, C]``); raises ``ConfigError`` for a CNN that cannot run on them."""
    shape = tuple(spec.obs_shape)
    kind = ("cnn" if len(shape) == 3 else "mlp") if cfg.torso == "auto" else cfg.torso
    if kind == "cnn" and len(shape) != 3:
        raise ConfigError(f"torso='cnn' needs image observations [H, W, C] and {spec.env_id} "
                          f"gives shape {shape}; use --torso mlp or auto")
    smallest = 1 + (KERNEL - 1) * len(cfg.cnn_channels)
    if kind == "cnn" and min(shape[:2]) < smallest:
        raise ConfigError(f"cnn_channels={cfg.cnn_channels}: {len(cfg.cnn_channels)} "
                          f"{KERNEL}x{KERNEL} convolutions need images of at least "
                          f"{smallest}x{smallest} and {spec.env_id} gives {shape}; use fewer "
                          "--cnn-channels or --torso mlp")
    return kind


def make_torso(cfg: PPOConfig, spec: EnvSpec, hidden: tuple[int, ...]) -> Torso:
    """The torso of one network: MLP (``hidden`` widths) or CNN (``cnn_channels``,
    ``cnn_dense``), see ``torso_kind``; with ``recurrent``, a GRU on top of it."""
    obs_shape = tuple(spec.obs_shape)
    base: MLPTorso | CNNTorso
    if torso_kind(cfg, spec) == "cnn":
        base = CNNTorso(obs_shape, tuple(cfg.cnn_channels), tuple(cfg.cnn_dense), cfg.activation)
    else:
        base = MLPTorso(obs_shape, tuple(hidden), cfg.activation)
    return GRUTorso(base, cfg.gru_size) if cfg.recurrent else base


def make_policy(cfg: PPOConfig, spec: EnvSpec) -> Policy:
    kind = resolve_policy_kind(cfg, spec)
    return Policy(
        head=ActionHead(kind, spec),
        actor=Network(make_torso(cfg, spec, cfg.actor_hidden), spec.action_dim, 0.01),
        critic=Network(make_torso(cfg, spec, cfg.critic_hidden), 1, 1.0),
    )


__all__ = ["ActionHead", "CNNTorso", "GRUTorso", "MLPTorso", "Network", "Params", "Policy",
           "Torso", "make_policy", "make_torso", "resolve_policy_kind", "torso_kind"]
