"""Environments: one interface (``core``), adapters for gymnax, brax and MuJoCo Playground,
and the registry.

This package is the only place that knows the gymnax, brax and Playground APIs.
"""

from __future__ import annotations

import difflib
import functools

from ppox.config import ConfigError
from ppox.envs.core import Box, Discrete, Env, EnvSpec, TimeStep
from ppox.envs.wrappers import EpisodeStats


@functools.cache
def gymnax_ids() -> tuple[str, ...]:
    from ppox.envs.gymnax import gymnax_env_ids

    return tuple(gymnax_env_ids())


@functools.cache
def brax_ids() -> tuple[str, ...]:
    from ppox.envs.brax import brax_env_ids

    return tuple(brax_env_ids())


@functools.cache
def playground_ids() -> tuple[str, ...]:
    """``playground/<Name>`` for every DM Control Suite env (listed without importing
    MuJoCo Playground, which is an extra: ``make_env`` says how to install it)."""
    from ppox.envs.playground import playground_env_ids

    return tuple(playground_env_ids())


# gymnax's classic-control ids (vector observations), known without importing gymnax: its
# import runs JAX code (``jnp.array`` at module level), which starts JAX's backends, and a
# small run of these envs picks its CPU threads before they start (``ppox._platform``)
CLASSIC_CONTROL_IDS = ("CartPole-v1", "Acrobot-v1", "Pendulum-v1", "MountainCar-v0",
                       "MountainCarContinuous-v0")


def env_ids() -> tuple[str, ...]:
    """Every environment id ``make_env`` accepts."""
    return gymnax_ids() + brax_ids() + playground_ids()


def check_env_id(env_id: str) -> None:
    """Raises ``ConfigError`` (one line, listing the valid ids) for an unknown id."""
    if env_id in CLASSIC_CONTROL_IDS:
        return
    if env_id.startswith("playground/"):
        known = playground_ids()
    else:
        known = brax_ids() if env_id.startswith("brax/") else gymnax_ids()
    if env_id in known:
        return
    if env_id.startswith("playground/"):
        from ppox.envs.playground import not_offered

        close = difflib.get_close_matches(env_id, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"{not_offered(env_id)}{hint}; valid ids: {', '.join(known)}")
    if env_id == "MNISTBandit-bsuite":
        raise ConfigError("MNISTBandit-bsuite is not supported: it downloads MNIST at run "
                          "time; choose another id (see `ppox envs`)")
    close = difflib.get_close_matches(env_id, env_ids(), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ConfigError(
        f"unknown environment {env_id!r}{hint}; valid ids: {', '.join(env_ids())}")


@functools.cache
def _make(env_id: str, options: tuple[tuple[str, object], ...]) -> EpisodeStats:
    kw = dict(options)
    if env_id.startswith("brax/"):
        from ppox.envs.brax import make_brax

        try:
            inner: Env = make_brax(env_id, **kw)
        except ValueError as err:  # brax: "Unsupported backend: spring."
            raise ConfigError(
                f"{env_id} cannot be built with backend={kw.get('backend')!r} ({err}); "
                "choose another --backend, e.g. generalized") from None
    elif env_id.startswith("playground/"):
        from ppox.envs.playground import make_playground

        inner = make_playground(env_id, **kw)
    else:
        from ppox.envs.gymnax import make_gymnax

        inner = make_gymnax(env_id, **kw)
    return EpisodeStats(inner)


def make_env(env_id: str, **options: object) -> EpisodeStats:
    """The environment ``env_id`` with in-jit episode statistics (cached per id and options).

    ``options`` are the adapter's own (brax: ``backend``, ``episode_length``,
    ``action_repeat``, ``auto_reset``; playground: ``env_config``, ``key=value`` pairs over
    the env's own config, and ``auto_reset``; gymnax: none); ``ppox.trainer.env_for(cfg)``
    picks them from a config.
    """
    check_env_id(env_id)
    return _make(env_id, tuple(sorted(options.items())))


__all__ = [
    "Box",
    "Discrete",
    "Env",
    "EnvSpec",
    "EpisodeStats",
    "TimeStep",
    "brax_ids",
    "check_env_id",
    "env_ids",
    "gymnax_ids",
    "make_env",
    "playground_ids",
]
