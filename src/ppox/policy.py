"""A trained policy as a function: ``ppox.load_policy(RUN_DIR)(obs) -> action``.

Needs only the run directory (its ``config.toml`` and ``policy/``), not the trainer state or a
``ppox train`` in the same process.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from ppox.config import HParams, PPOConfig


def _act(net: Any, cfg: PPOConfig, deterministic: bool, params: Any, obs_stats: Any,
         obs: jax.Array, key: jax.Array, carry: Any) -> tuple[jax.Array, Any]:
    """``obs: [B, *obs_shape]`` -> (env actions ``[B, ...]``, the policy's new carry): the
    mode, or a sample with ``key``; observations normalized with the training statistics,
    as in evaluation."""
    from ppox.rollout import normalize_obs

    stats = obs_stats if cfg.normalize_obs else None
    reset = jnp.zeros(obs.shape[:1], bool) if net.is_recurrent else None
    dist, carry = net.act(params, normalize_obs(obs, stats, cfg.obs_clip), carry, reset)
    raw = dist.mode() if deterministic else dist.sample(key)
    return net.env_action(raw), carry


@dataclass(frozen=True, eq=False)
class Policy:
    """A trained policy. ``policy(obs)``: the deterministic action (mean / argmax);
    ``policy(obs, key)``: a sampled one. ``obs`` is one observation (``obs_shape``) or a batch
    (``[B, *obs_shape]``); the action has the same leading shape. Jitted; observation
    normalization from training is applied.

    Attributes:
        config: the run's ``PPOConfig``.
        hparams: the run's ``HParams``.
        params: the network parameters.
        obs_stats: the observation statistics (used when ``config.normalize_obs``).
        obs_shape: the shape of one observation, as ppox's env for ``env_id`` returns it.
        deterministic: what ``policy(obs)`` without a key does.
    """

    config: PPOConfig
    hparams: HParams
    params: Any
    obs_stats: Any
    obs_shape: tuple[int, ...]
    deterministic: bool = True
    _fns: Any = None

    @property
    def env_id(self) -> str:
        return self.config.env_id

    @property
    def is_recurrent(self) -> bool:
        """Whether the policy has a state: then ``policy(obs, key, state=...)`` returns
        ``(action, state)`` (``state=None``: the state of a fresh episode)."""
        return bool(self._fns[2].is_recurrent)

    def __call__(self, obs: Any, key: jax.Array | None = None, state: Any = None) -> Any:
        obs = jnp.asarray(obs, jnp.float32)
        single = obs.shape == self.obs_shape
        if not single and obs.shape[1:] != self.obs_shape:
            raise ValueError(f"observation of shape {obs.shape} does not fit {self.env_id}: "
                             f"expected {self.obs_shape} or [batch, *{self.obs_shape}]")
        batch = obs[None] if single else obs
        sample, mode, net = self._fns
        carry = net.initial_carry(batch.shape[:1]) if state is None else state
        if key is None and self.deterministic:
            action, carry = mode(self.params, self.obs_stats, batch, jax.random.PRNGKey(0),
                                 carry)
        else:
            if key is None:
                raise ValueError("this policy samples: pass a PRNG key, policy(obs, key)")
            action, carry = sample(self.params, self.obs_stats, batch, key, carry)
        action = action[0] if single else action
        return (action, carry) if net.is_recurrent else action


def load_policy(run_dir: str | Path, run_index: int = 0, deterministic: bool = True) -> Policy:
    """The policy of run ``run_index`` of a ``ppox train`` run directory.

    ``deterministic``: what ``policy(obs)`` does without a key (``policy(obs, key)``
    always samples).
    """
    from ppox.host.evaluation import load_policy as load_arrays
    from ppox.nets import make_policy
    from ppox.trainer import env_for

    loaded = load_arrays(run_dir, run_index)
    spec = env_for(loaded.cfg).spec
    net = make_policy(loaded.cfg, spec)
    fns = (jax.jit(partial(_act, net, loaded.cfg, False)),
           jax.jit(partial(_act, net, loaded.cfg, True)), net)
    return Policy(config=loaded.cfg, hparams=loaded.hparams, params=loaded.params,
                  obs_stats=loaded.obs_stats, obs_shape=tuple(spec.obs_shape),
                  deterministic=deterministic, _fns=fns)


__all__ = ["Policy", "load_policy"]
