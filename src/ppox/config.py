"""Configuration: what is static (shapes, counts, flags) and what is traced (float knobs).

``PPOConfig`` decides shapes and control flow, so changing it recompiles. ``HParams`` is a
pytree of scalars that flows through ``jit`` as data, so ``jax.vmap`` over a batch of
``HParams`` trains many configurations in one program, and a new value never retraces.

Validation happens here, on the host, before anything is compiled: every check raises
``ConfigError`` with one line that names the value, says why it is wrong and what to do.

Adding a setting is one edit in this file: a field declared with ``option`` (``PPOConfig``)
or ``hparam`` (``HParams``) carries its default, its help text and its allowed values in its
field metadata (a ``FieldSpec``; the helpers and the one type check live in ``ppox.fields``
and are importable from here). ``validate``, the config-file reader and every ``ppox``
command's flags read them from there::

    # in PPOConfig: a static option; a Literal type is its closed list of choices
    norm: Literal["none", "layer"] = option("none", help="normalization in the torso")
    num_envs: int = option(4, help="environments stepped in parallel", positive=True)
    stop_kl: float | None = option(None, help="stop the epochs above this KL", lo=0.0,
                                   lo_open=True, example=0.02)
    frame_skip: int = option(1, positive=True, brax_only=True, help="...")
    # in HParams: a traced float, checked against its bounds on the host
    ent_decay: Any = hparam(1.0, help="entropy coefficient decay per update", lo=0.0, hi=1.0)
    kl_step: Any = hparam(0.01, help="KL limit of one step", lo=0.0, lo_open=True,
                          algos=("trpo",))  # read by trpo only: refused under another algo

The type annotation is the input type: ``bool`` (true/false only), ``int``, ``float``, ``str``,
a ``Literal`` of strings, ``tuple[int, ...]`` (layer widths) or ``X | None`` (None is left out
of run files); ``HParams`` fields are ``Any`` (a Python float, or an array with a batch axis
in a sweep) and are read as numbers. ``FieldSpec`` lists every key; ``check_applicable``
refuses a brax-only option on another env and an algorithm's own setting (``algos=``) under
another algorithm.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Literal

import jax.numpy as jnp
import numpy as np
from flax import struct

from ppox.fields import (
    META_KEY,
    ConfigError,
    FieldSpec,
    Style,
    check_field,
    check_value,
    coerce_value,
    field_default,
    field_specs,
    field_types,
    flag_name,
    hparam,
    literal_choices,
    option,
    optional_inner,
    value_problem,
    what_to_write,
)

Activation = Literal["tanh", "relu", "elu", "silu", "gelu"]
PolicyKind = Literal["auto", "categorical", "gaussian", "tanh_gaussian"]
Backend = Literal["spring", "positional", "generalized", "mjx"]
GradClip = Literal["global", "per_network"]
AutoReset = Literal["fresh", "first_state"]
AlgoName = Literal["ppo", "ppo_kl", "trpo"]  # one module each in ppox.algo


@dataclass(frozen=True)
class PPOConfig:
    """Static settings. Changing any of them changes the compiled program.

    Each field's help text (``ppox train --help``) and allowed values are in its ``option``.
    ``policy = "auto"`` is Categorical for discrete and Gaussian (clipped to the bounds) for
    continuous action spaces.
    """

    env_id: str = option("CartPole-v1", help="environment id: a gymnax id (CartPole-v1), "
                         "brax/<name> or playground/<Name>")
    num_envs: int = option(4, positive=True, help="environments stepped in parallel (vmapped)")
    num_steps: int = option(128, positive=True,
                            help="rollout length T per environment per update")
    total_timesteps: int = option(500_000, positive=True,
                                  help="environment steps to train for (all envs together)")
    update_epochs: int = option(4, positive=True, help="passes over each rollout")
    num_minibatches: int = option(4, positive=True, help="minibatches per epoch; "
                                  "num_envs * num_steps must divide evenly")
    actor_hidden: tuple[int, ...] = option((64, 64),
                                           help="hidden layer widths of the policy MLP")
    critic_hidden: tuple[int, ...] = option((64, 64),
                                            help="hidden layer widths of the value MLP")
    activation: Activation = option("tanh", what="an activation",
                                    help="hidden activation of both MLPs")
    torso: Literal["auto", "mlp", "cnn"] = option("auto", what="a torso", help=(
        "feature extractor of both networks: mlp (flattens the observation; layers "
        "actor_hidden/critic_hidden), cnn (3x3 convolutions of [H, W, C] images, then "
        "cnn_dense); auto is cnn for image observations, else mlp"))
    cnn_channels: tuple[int, ...] = option((16,), help="cnn: output channels of each 3x3 "
                                           "convolution (stride 1, no padding)")
    cnn_dense: tuple[int, ...] = option((128,), help="cnn: widths of the dense layers after "
                                        "the convolutions")
    recurrent: bool = option(False, help=(
        "a GRU after each network's torso (the critic has its own), its state reset where "
        "an episode starts; minibatches are whole env sequences (num_minibatches must "
        "divide each device's num_envs)"))
    gru_size: int = option(128, positive=True, help="recurrent: GRU hidden units")
    policy: PolicyKind = option("auto", what="a policy kind", help=(
        "action distribution; auto is Categorical for discrete and Gaussian (clipped to the "
        "bounds) for continuous action spaces"))
    anneal_lr: bool = option(True, help="decay the learning rate linearly to 0 over training")
    clip_value_loss: bool = option(True, help="clip the value loss with vf_clip_eps")
    normalize_advantages: bool = option(True, help="normalize advantages per minibatch")
    normalize_obs: bool = option(False, help="running mean/std observation normalization "
                                 "(state, not a wrapper)")
    normalize_reward: bool = option(False, help="scale rewards by a running std of the "
                                    "discounted return")
    obs_clip: float = option(10.0, lo=0.0, lo_open=True, help="normalized observations are "
                             "clipped to [-obs_clip, obs_clip]")
    backend: Backend = option("spring", brax_only=True, what="a brax physics backend",
                              help="brax physics backend (brax envs only)")
    episode_length: int = option(1000, positive=True, brax_only=True, help=(
        "time limit of a brax episode in physics steps (episode_length / action_repeat agent "
        "steps; brax envs only)"))
    action_repeat: int = option(1, positive=True, brax_only=True,
                                help="physics steps per agent step (brax envs only)")
    auto_reset: AutoReset = option("fresh", what="an auto-reset mode", help=(
        "brax and playground envs: what a finished episode restarts from. fresh: a new "
        "initial state drawn from the step key (the reset runs inside the training "
        "program); first_state: the env's own first state of the run, as Brax's and "
        "Playground's training wrappers do (num_envs distinct starts, no reset in the "
        "training program: a shorter compile and faster steps)"))
    env_config: str = option("", help=(
        "playground envs only: the env's own config overridden, comma-separated key=value "
        "pairs (e.g. impl=jax,episode_length=500; dotted keys reach nested fields); impl "
        "is jax unless given"))
    num_eval_episodes: int = option(16, positive=True, help="episodes run by ppox eval and "
                                    "the end-of-train evaluation")
    grad_clip: GradClip = option("global", what="a clip scope", help=(
        "what max_grad_norm bounds: global, the norm of the actor's and the critic's "
        "gradients together (CleanRL, PureJaxRL); per_network, each network's gradient norm "
        "on its own, as with separate actor and critic optimizers (Stoix). Under network "
        "splitting per_network needs no collective per SGD step"))
    algo: AlgoName = option("ppo", what="an algorithm", help=(
        "the update: ppo (clipped surrogate), ppo_kl (adaptive KL penalty), trpo (natural "
        "gradient with a KL line search); each is a module of ppox.algo"))
    target_kl: float | None = option(None, lo=0.0, lo_open=True, help=(
        "ppo: skip an update's remaining epochs once an epoch's mean approximate KL exceeds "
        "this (off when not given)"))
    cg_iters: int = option(10, positive=True, algos=("trpo",),
                           help="trpo: conjugate-gradient iterations")
    max_backtracks: int = option(10, positive=True, algos=("trpo",),
                                 help="trpo: line-search steps at most")

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
        for name in field_specs(PPOConfig):
            check_value(PPOConfig, name, getattr(self, name), style="flag")
        check_applicable(self)
        if self.env_config and not self.env_id.startswith("playground/"):
            raise ConfigError(f"env_config={self.env_config!r} applies to playground envs only "
                              f"and {self.env_id} is not one; drop --env-config")
        if self.auto_reset != "fresh" and not (
                self.is_brax or self.env_id.startswith("playground/")):
            raise ConfigError(f"auto_reset={self.auto_reset!r} applies to brax and playground "
                              f"envs only and {self.env_id} is not one; drop --auto-reset")
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

    def replace(self, **changes: Any) -> PPOConfig:
        return dataclasses.replace(self, **changes)


@struct.dataclass
class HParams:
    """Traced float hyperparameters (a pytree): vmap over them, change them without retracing.

    Every leaf is a float32 scalar for one run, or an array with a leading batch axis for a
    sweep (``jax.vmap(train, in_axes=(0, 0))``). Each field's help and bounds are in its
    ``hparam``.
    """

    learning_rate: Any = hparam(
        2.5e-4, lo=0.0, lo_open=True, help="Adam learning rate (start value when annealed)",
        why="the learning rate must be > 0 (e.g. 2.5e-4)")
    clip_eps: Any = hparam(0.2, lo=0.0, lo_open=True, help="PPO policy clip range epsilon",
                           why="the policy clip range must be > 0 (e.g. 0.2)")
    vf_clip_eps: Any = hparam(
        0.2, lo=0.0, lo_open=True,
        help="value-loss clip range (its own knob: it depends on the reward scale)",
        why="the value clip range must be > 0 (e.g. 0.2); to turn value clipping off use "
            "--no-clip-value-loss")
    gamma: Any = hparam(0.99, lo=0.0, hi=1.0, help="discount factor",
                        why="the discount must lie in [0, 1] (e.g. 0.99)")
    gae_lambda: Any = hparam(0.95, lo=0.0, hi=1.0, help="GAE lambda",
                             why="GAE lambda must lie in [0, 1] (e.g. 0.95)")
    ent_coef: Any = hparam(0.01, lo=0.0, help="entropy bonus coefficient",
                           why="the entropy coefficient must be >= 0")
    vf_coef: Any = hparam(0.5, lo=0.0, help="value-loss coefficient",
                          why="the value-loss coefficient must be >= 0")
    max_grad_norm: Any = hparam(
        0.5, lo=0.0, lo_open=True,
        help="gradient-norm clip bound (of every gradient together, or per network: see "
             "--grad-clip)",
        why="the gradient-norm bound must be > 0")
    init_log_std: Any = hparam(0.0, lo=-20.0, hi=5.0, help="initial log std of Gaussian "
                               "policies", why="the initial log std must lie in [-20, 5]")
    kl_coef: Any = hparam(1.0, lo=0.0, lo_open=True, algos=("ppo_kl",), help=(
        "ppo_kl: initial KL penalty coefficient beta (then halved or doubled after each "
        "update)"))
    kl_penalty_target: Any = hparam(0.01, lo=0.0, lo_open=True, algos=("ppo_kl",),
                                    help="ppo_kl: the mean KL d_targ that beta adapts towards")
    trpo_max_kl: Any = hparam(0.01, lo=0.0, lo_open=True, algos=("trpo",),
                              help="trpo: KL limit delta of one policy step")
    cg_damping: Any = hparam(0.1, lo=0.0, algos=("trpo",),
                             help="trpo: damping added to the Fisher-vector products")
    backtrack_coef: Any = hparam(0.8, lo=0.0, hi=1.0, lo_open=True, hi_open=True,
                                 algos=("trpo",), help="trpo: line-search step shrink factor")

    def as_arrays(self) -> HParams:
        """Every leaf as a float32 array (so a Python float and an array trace the same)."""
        return HParams(**{k: jnp.asarray(v, jnp.float32) for k, v in self.to_dict().items()})

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def validate(self) -> None:
        """Checks every leaf on the host (works for scalars and sweep arrays)."""
        specs = field_specs(HParams)
        for name, value in self.to_dict().items():
            if not hasattr(value, "shape"):  # a sweep's arrays are numbers by construction
                check_value(HParams, name, value)
            arr = np.asarray(value, dtype=np.float64)
            bad = specs[name].out_of_bounds(arr)
            if np.any(bad):
                shown = arr[bad].ravel()[0] if arr.ndim else float(arr)
                why = specs[name].why or f"{name} must be {specs[name].bounds_text()}"
                raise ConfigError(f"{name}={float(shown):g} is invalid: {why}")


def hparam_names() -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(HParams))


def config_field_names() -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(PPOConfig))


def check_applicable(cfg: PPOConfig, hp: HParams | None = None,
                     given: Collection[str] = ()) -> None:
    """Refuses a setting this run would not read: a brax-only option on another env, an
    algorithm's own option or hyperparameter under another ``algo``. A value other than the
    default is refused, and so is every name in ``given`` (flags typed on the command line)
    even at its default."""
    for cls, obj in ((PPOConfig, cfg), (HParams, hp)):
        if obj is None:
            continue
        defaults = cls()
        for name, spec in field_specs(cls).items():
            value, default = getattr(obj, name), getattr(defaults, name)
            if name not in given and not _differs(value, default):
                continue
            if spec.brax_only and not cfg.is_brax:
                raise ConfigError(not_applicable(name, _shown(value, default), cfg.env_id))
            if spec.algos and cfg.algo not in spec.algos:
                algos = " and ".join(spec.algos)
                raise ConfigError(
                    f"{name}={_shown(value, default)} is read by algo {algos} only "
                    f"and this run's algo is {cfg.algo!r}; drop --{flag_name(name)} (or {name} "
                    f"from the config file), or pass --algo {spec.algos[0]}")


def _differs(value: Any, default: Any) -> bool:
    if hasattr(value, "shape"):  # a sweep's array of values
        return bool(np.any(np.asarray(value) != default))
    return value != default


def _shown(value: Any, default: Any = None) -> str:
    """``value`` for a message; of a sweep's array, the first element other than ``default``."""
    if not hasattr(value, "shape"):
        return repr(value)
    flat = np.ravel(np.asarray(value))
    differing = flat[flat != default] if default is not None else flat
    return f"{float((differing if differing.size else flat)[0]):g}"


def not_applicable(name: str, shown: str, env_id: str) -> str:
    """The message for a brax-only option (its value as ``shown``) given to another env."""
    return (f"{name}={shown} applies to brax envs only and {env_id} is not one; drop "
            f"--{flag_name(name)} (or {name} from the config file)")


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
    """Builds a config from a mapping (e.g. a TOML table); unknown keys and values of the
    wrong type are an error."""
    base = base or PPOConfig()
    _check_known(data, config_field_names(), "config option", "options")
    changes = {k: coerce_value(PPOConfig, k, v) for k, v in data.items()}
    return dataclasses.replace(base, **changes)


def hparams_from_dict(data: dict[str, Any], base: HParams | None = None) -> HParams:
    """``base`` with the numbers in ``data`` (e.g. a TOML table); anything else is an error."""
    base = base or HParams()
    _check_known(data, hparam_names(), "hyperparameter", "names")
    return base.replace(**{k: coerce_value(HParams, k, v) for k, v in data.items()})


def _check_known(data: dict[str, Any], known: tuple[str, ...], what: str, plural: str) -> None:
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(
            f"unknown {what} {unknown[0]!r}; valid {plural}: {', '.join(sorted(known))}")


__all__ = [
    "META_KEY",
    "Activation",
    "Backend",
    "ConfigError",
    "FieldSpec",
    "GradClip",
    "HParams",
    "PPOConfig",
    "PolicyKind",
    "Style",
    "check_applicable",
    "check_field",
    "check_value",
    "coerce_value",
    "config_field_names",
    "config_from_dict",
    "config_to_dict",
    "field_default",
    "field_specs",
    "field_types",
    "flag_name",
    "hparam",
    "hparam_names",
    "hparams_from_dict",
    "literal_choices",
    "option",
    "optional_inner",
    "value_problem",
    "what_to_write",
]
