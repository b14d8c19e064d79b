"""Configuration: what is static (shapes, counts, flags) and what is traced (float knobs).

``PPOConfig`` decides shapes and control flow, so changing it recompiles. ``HParams`` is a
pytree of scalars that flows through ``jit`` as data, so ``jax.vmap`` over a batch of
``HParams`` trains many configurations in one program, and a new value never retraces.

Validation happens here, on the host, before anything is compiled: every check raises
``ConfigError`` with one line that names the value, says why it is wrong and what to do.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

import jax.numpy as jnp
import numpy as np
from flax import struct

Activation = Literal["tanh", "relu", "elu", "silu", "gelu"]
PolicyKind = Literal["auto", "categorical", "gaussian", "tanh_gaussian"]
Backend = Literal["spring", "positional", "generalized", "mjx"]
GradClip = Literal["global", "per_network"]


class ConfigError(ValueError):
    """Bad user input, reported as one line before any compilation."""


@dataclass(frozen=True)
class PPOConfig:
    """Static settings. Changing any of them changes the compiled program.

    Attributes:
        env_id: environment id: a gymnax id (``CartPole-v1``) or ``brax/<name>``.
        num_envs: environments stepped in parallel (vmapped).
        num_steps: rollout length T per environment per update.
        total_timesteps: environment steps to train for (all envs together).
        update_epochs: passes over each rollout.
        num_minibatches: minibatches per epoch; ``num_envs * num_steps`` must divide evenly.
        actor_hidden: hidden layer widths of the policy MLP.
        critic_hidden: hidden layer widths of the value MLP.
        activation: hidden activation of both MLPs.
        policy: action distribution; ``auto`` is Categorical for discrete and Gaussian
            (clipped to the bounds) for continuous action spaces.
        anneal_lr: decay the learning rate linearly to 0 over training.
        clip_value_loss: clip the value loss with ``HParams.vf_clip_eps``.
        normalize_advantages: normalize advantages per minibatch.
        normalize_obs: running mean/std observation normalization (state, not a wrapper).
        normalize_reward: scale rewards by a running std of the discounted return.
        obs_clip: normalized observations are clipped to [-obs_clip, obs_clip].
        backend: brax physics backend (brax envs only).
        episode_length: time limit in agent steps for brax envs (truncation).
        action_repeat: physics steps per agent step (brax envs only).
        num_eval_episodes: episodes run by ``ppox eval`` and the end-of-train evaluation.
        grad_clip: what ``HParams.max_grad_norm`` bounds: ``global``, the norm of the actor's
            and the critic's gradients together (CleanRL, PureJaxRL); ``per_network``, each
            network's gradient norm on its own, as with separate actor and critic
            optimizers (Stoix). Under network splitting ``per_network`` needs no
            collective per SGD step.
    """

    env_id: str = "CartPole-v1"
    num_envs: int = 4
    num_steps: int = 128
    total_timesteps: int = 500_000
    update_epochs: int = 4
    num_minibatches: int = 4
    actor_hidden: tuple[int, ...] = (64, 64)
    critic_hidden: tuple[int, ...] = (64, 64)
    activation: Activation = "tanh"
    policy: PolicyKind = "auto"
    anneal_lr: bool = True
    clip_value_loss: bool = True
    normalize_advantages: bool = True
    normalize_obs: bool = False
    normalize_reward: bool = False
    obs_clip: float = 10.0
    backend: Backend = "spring"
    episode_length: int = 1000
    action_repeat: int = 1
    num_eval_episodes: int = 16
    grad_clip: GradClip = "global"

    @property
    def batch_size(self) -> int:
        """Transitions per rollout: ``num_envs * num_steps``."""
        return self.num_envs * self.num_steps

    @property
    def minibatch_size(self) -> int:
        return self.batch_size // self.num_minibatches

    @property
    def num_updates(self) -> int:
        """Rollout+update iterations; the remainder of total_timesteps is not run."""
        return self.total_timesteps // self.batch_size

    @property
    def is_brax(self) -> bool:
        return self.env_id.startswith("brax/")

    def validate(self) -> None:
        """Checks that need no environment; raises ``ConfigError`` with one line."""
        for name in ("num_envs", "num_steps", "total_timesteps", "update_epochs",
                     "num_minibatches", "episode_length", "action_repeat",
                     "num_eval_episodes"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(
                    f"{name}={value!r} must be a positive integer; pass --{_flag(name)} N "
                    "with N >= 1")
        for name in ("actor_hidden", "critic_hidden"):
            widths = getattr(self, name)
            if len(widths) == 0 or any(int(w) <= 0 for w in widths):
                raise ConfigError(
                    f"{name}={widths!r} must be a non-empty list of positive layer widths, "
                    f"e.g. --{_flag(name)} 64 64")
        if self.batch_size % self.num_minibatches != 0:
            raise ConfigError(
                f"num_minibatches={self.num_minibatches} does not divide the batch "
                f"num_envs*num_steps={self.num_envs}*{self.num_steps}={self.batch_size}; "
                f"choose a divisor of {self.batch_size}, e.g. "
                f"{_divisor_near(self.batch_size, self.num_minibatches)}")
        if self.total_timesteps < self.batch_size:
            raise ConfigError(
                f"total_timesteps={self.total_timesteps} is smaller than one rollout "
                f"(num_envs*num_steps={self.batch_size}); raise --total-timesteps or "
                "lower --num-envs/--num-steps")
        if not self.obs_clip > 0:
            raise ConfigError(f"obs_clip={self.obs_clip!r} must be > 0")
        if self.grad_clip not in ("global", "per_network"):
            raise ConfigError(f"grad_clip={self.grad_clip!r} is not a clip scope; use "
                              "--grad-clip global or --grad-clip per_network")

    def replace(self, **changes: Any) -> PPOConfig:
        return dataclasses.replace(self, **changes)


@struct.dataclass
class HParams:
    """Traced float hyperparameters (a pytree): vmap over them, change them without retracing.

    Every leaf is a float32 scalar for one run, or an array with a leading batch axis for a
    sweep (``jax.vmap(train, in_axes=(0, 0))``).
    """

    learning_rate: Any = 2.5e-4
    clip_eps: Any = 0.2
    vf_clip_eps: Any = 0.2
    gamma: Any = 0.99
    gae_lambda: Any = 0.95
    ent_coef: Any = 0.01
    vf_coef: Any = 0.5
    max_grad_norm: Any = 0.5
    init_log_std: Any = 0.0

    def as_arrays(self) -> HParams:
        """Every leaf as a float32 array (so a Python float and an array trace the same)."""
        return HParams(**{k: jnp.asarray(v, jnp.float32) for k, v in self.to_dict().items()})

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def validate(self) -> None:
        """Checks every leaf on the host (works for scalars and sweep arrays)."""
        for name, value in self.to_dict().items():
            arr = np.asarray(value, dtype=np.float64)
            lo, hi, inclusive_lo, why = _HPARAM_BOUNDS[name]
            bad_lo = (arr < lo) if inclusive_lo else (arr <= lo)
            bad = bad_lo | (arr > hi) | ~np.isfinite(arr)
            if np.any(bad):
                shown = arr[bad].ravel()[0] if arr.ndim else float(arr)
                raise ConfigError(f"{name}={float(shown):g} is invalid: {why}")


def hparam_names() -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(HParams))


def config_field_names() -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(PPOConfig))


# name -> (lower bound, upper bound, lower bound allowed, one-line reason)
_HPARAM_BOUNDS: dict[str, tuple[float, float, bool, str]] = {
    "learning_rate": (0.0, math.inf, False, "the learning rate must be > 0 (e.g. 2.5e-4)"),
    "clip_eps": (0.0, math.inf, False, "the policy clip range must be > 0 (e.g. 0.2)"),
    "vf_clip_eps": (0.0, math.inf, False, "the value clip range must be > 0 (e.g. 0.2); "
                    "to turn value clipping off use --no-clip-value-loss"),
    "gamma": (0.0, 1.0, True, "the discount must lie in [0, 1] (e.g. 0.99)"),
    "gae_lambda": (0.0, 1.0, True, "GAE lambda must lie in [0, 1] (e.g. 0.95)"),
    "ent_coef": (0.0, math.inf, True, "the entropy coefficient must be >= 0"),
    "vf_coef": (0.0, math.inf, True, "the value-loss coefficient must be >= 0"),
    "max_grad_norm": (0.0, math.inf, False, "the global gradient-norm bound must be > 0"),
    "init_log_std": (-20.0, 5.0, True, "the initial log std must lie in [-20, 5]"),
}


def _flag(name: str) -> str:
    return name.replace("_", "-")


def _divisor_near(n: int, target: int) -> int:
    divisors = [d for d in range(1, n + 1) if n % d == 0]
    return min(divisors, key=lambda d: (abs(d - target), d))


def config_to_dict(cfg: PPOConfig) -> dict[str, Any]:
    out = dataclasses.asdict(cfg)
    for k, v in out.items():
        if isinstance(v, tuple):
            out[k] = list(v)
    return out


def config_from_dict(data: dict[str, Any], base: PPOConfig | None = None) -> PPOConfig:
    """Builds a config from a mapping (e.g. a TOML table); unknown keys are an error."""
    base = base or PPOConfig()
    known = set(config_field_names())
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(
            f"unknown config option {unknown[0]!r}; valid options: {', '.join(sorted(known))}")
    changes = {}
    for k, v in data.items():
        if k in ("actor_hidden", "critic_hidden"):
            v = tuple(int(w) for w in (v if isinstance(v, list | tuple) else [v]))
        changes[k] = v
    return dataclasses.replace(base, **changes)


def hparams_from_dict(data: dict[str, Any], base: HParams | None = None) -> HParams:
    base = base or HParams()
    known = set(hparam_names())
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(
            f"unknown hyperparameter {unknown[0]!r}; valid names: {', '.join(sorted(known))}")
    return base.replace(**{k: float(v) for k, v in data.items()})


__all__ = [
    "Activation",
    "Backend",
    "ConfigError",
    "HParams",
    "PPOConfig",
    "PolicyKind",
    "config_field_names",
    "config_from_dict",
    "config_to_dict",
    "hparam_names",
    "hparams_from_dict",
]
