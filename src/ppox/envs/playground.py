"""Adapter from MuJoCo Playground's DM Control Suite to the ppox ``Env`` interface.

Playground envs have brax's ``Env`` interface (``reset(rng) -> State``, ``step(state,
action) -> State`` with ``obs``, ``reward``, ``done``), so the episode bookkeeping is the brax
adapter's (``ppox.envs.brax.BraxEnv``): ``terminated`` is the env's own ``done`` (DM Control
tasks only set it for a diverged simulation), ``truncated`` is the time limit from the env's
config (``episode_length`` env steps, ``action_repeat`` env steps per agent step, as
Playground's brax training wrapper counts them), ``final_obs`` the observation before the
reset, which draws a fresh initial state.

Actions are in ``[-1, 1]``: every DM Control Suite model's actuators have that control
range. Only the DM Control Suite is offered: its MJCF files ship inside the package. Playground's
locomotion and manipulation envs fetch the MuJoCo Menagerie at first use, which ppox does
not do. ``mujoco_playground`` is imported only when an env is built (``pip install
'ppox[playground]'``).

The env's own config is overridable with ``env_config`` ``key=value`` pairs (dotted keys
reach nested fields); ``impl`` defaults to ``jax`` (MJX) rather than Playground's ``warp``,
which ran ~8x slower on CPU.

Episodes are drawn from the kept states' ``qpos``/``qvel`` by MuJoCo's offscreen renderer
(``mujoco.Renderer``: EGL or OSMesa as ``MUJOCO_GL`` says), or written as brax's HTML viewer
from the bodies' world poses (``xpos``/``xquat``) of the same states.
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import jax
import numpy as np

from ppox.config import ConfigError
from ppox.envs.brax import BraxEnv
from ppox.envs.core import Box, EnvSpec
from ppox.tracing import CachedTrace

PLAYGROUND_PREFIX = "playground/"
DEFAULT_IMPL = "jax"
IMPLS = ("jax", "warp")

# mujoco_playground.dm_control_suite.ALL_ENVS of playground 0.2.0 (a test checks it), kept
# here so that listing and checking ids does not import the package (seconds) or need it.
DM_CONTROL_SUITE = (
    "AcrobotSwingup", "AcrobotSwingupSparse", "BallInCup", "CartpoleBalance",
    "CartpoleBalanceSparse", "CartpoleSwingup", "CartpoleSwingupSparse", "CheetahRun",
    "FingerSpin", "FingerTurnEasy", "FingerTurnHard", "FishSwim", "HopperHop", "HopperStand",
    "HumanoidStand", "HumanoidWalk", "HumanoidRun", "PendulumSwingup", "PointMass",
    "ReacherEasy", "ReacherHard", "SwimmerSwimmer6", "WalkerRun", "WalkerStand", "WalkerWalk",
)

INSTALL_HINT = "pip install 'ppox[playground]'"


def playground_env_ids() -> list[str]:
    return [PLAYGROUND_PREFIX + name for name in DM_CONTROL_SUITE]


def not_offered(env_id: str) -> str:
    """Why a ``playground/`` id that is not a DM Control Suite env is refused."""
    return (f"{env_id} is not a MuJoCo Playground DM Control Suite env; ppox offers only "
            "those (their model files ship in the package), not Playground's locomotion or "
            "manipulation envs, which download the MuJoCo Menagerie at first use")


def parse_env_config(text: str) -> dict[str, Any]:
    """``"impl=jax,episode_length=500"`` -> ``{"impl": "jax", "episode_length": 500}``.

    Values are read as integers, floats, ``true``/``false`` or else text; an empty string is
    no overrides. Raises ``ConfigError`` for a pair without ``=``.
    """
    out: dict[str, Any] = {}
    for pair in (p.strip() for p in text.split(",")):
        if not pair:
            continue
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"env_config {pair!r} is not key=value; e.g. --env-config "
                              "impl=jax,episode_length=500")
        out[key.strip()] = _value(raw.strip())
    return out


def _value(raw: str) -> Any:
    if raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    for kind in (int, float):
        try:
            return kind(raw)
        except ValueError:
            pass
    return raw


def _module() -> Any:
    """``mujoco_playground``'s DM Control Suite, or one ``ConfigError`` line saying how to
    install it."""
    if importlib.util.find_spec("mujoco_playground") is None:
        raise ConfigError(f"playground envs need MuJoCo Playground, which is not installed; "
                          f"{INSTALL_HINT}")
    from mujoco_playground import dm_control_suite

    return dm_control_suite


def env_config_for(env_id: str, overrides: dict[str, Any]) -> Any:
    """The env's default config (a locked ``ConfigDict``) with ``overrides`` applied and
    ``impl`` defaulting to ``DEFAULT_IMPL``; a bad key or value is one ``ConfigError``."""
    name = env_id.removeprefix(PLAYGROUND_PREFIX)
    config = _module().get_default_config(name)
    overrides = {"impl": DEFAULT_IMPL, **overrides}
    if overrides["impl"] not in IMPLS:
        raise ConfigError(f"env_config impl={overrides['impl']!r} is not one of "
                          f"{', '.join(IMPLS)}; e.g. --env-config impl=jax")
    flat = sorted(_flat_keys(config.to_dict()))
    for key, value in overrides.items():
        if key not in flat:
            raise ConfigError(f"env_config key {key!r} is not in {env_id}'s config; its keys: "
                              f"{', '.join(flat)}")
        try:
            config.update_from_flattened_dict({key: value})
        except (TypeError, ValueError) as err:
            raise ConfigError(f"env_config {key}={value!r} does not suit {env_id}'s config "
                              f"({str(err).splitlines()[0]})") from None
    return config


def _flat_keys(tree: dict[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for k, v in tree.items():
        keys.append(prefix + k)
        if isinstance(v, dict):
            keys += _flat_keys(v, prefix + k + ".")
    return keys


def _empty_to_none(tree: Any) -> Any:
    return jax.tree.map(lambda x: None if math.prod(np.shape(x)) == 0 else x, tree)


@dataclass(frozen=True, eq=False)
class CompactStates:
    """A Playground env (``base``) whose states carry ``data`` without its zero-size arrays
    (``None`` in their place, rebuilt as zeros for the env): ``mjx.Data`` has several
    (``act`` of a model without activations, contact buffers) and orbax refuses to
    checkpoint a zero-size array."""

    base: Any  # mujoco_playground MjxEnv
    data_shapes: Any  # mjx.Data of jax.ShapeDtypeStruct: one env's data
    base_reset: CachedTrace  # base.reset, traced once

    @classmethod
    def wrap(cls, base: Any, base_reset: CachedTrace | None = None) -> CompactStates:
        """``base_reset``: the caller's ``CachedTrace`` of ``base.reset``, if it has one (a
        trace of a Playground reset takes seconds)."""
        base_reset = base_reset or CachedTrace(base.reset)
        return cls(base, jax.eval_shape(base_reset, jax.random.PRNGKey(0)).data, base_reset)

    def _full(self, data: Any) -> Any:
        return jax.tree.map(lambda t, x: np.zeros(t.shape, t.dtype) if x is None else x,
                            self.data_shapes, data)

    def reset(self, rng: jax.Array) -> Any:
        state = self.base_reset(rng)
        return state.replace(data=_empty_to_none(state.data))

    def step(self, state: Any, action: jax.Array) -> Any:
        nxt = self.base.step(state.replace(data=self._full(state.data)), action)
        return nxt.replace(data=_empty_to_none(nxt.data))


def make_playground(env_id: str, env_config: str = "", auto_reset: str = "fresh") -> BraxEnv:
    """Builds ``playground/<Name>`` with its config overridden by ``env_config`` pairs and
    the auto-reset mode ``auto_reset`` (``ppox.envs.brax.BraxEnv``)."""
    if env_id.removeprefix(PLAYGROUND_PREFIX) not in DM_CONTROL_SUITE:
        raise ConfigError(not_offered(env_id))
    config = env_config_for(env_id, parse_env_config(env_config))
    env = _module().load(env_id.removeprefix(PLAYGROUND_PREFIX), config=config)
    base_reset = CachedTrace(env.reset)  # the one trace of the reset, shared by every program
    obs = jax.eval_shape(base_reset, jax.random.PRNGKey(0)).obs
    if not hasattr(obs, "shape") or len(obs.shape) != 1:
        shapes = jax.tree.map(lambda x: tuple(x.shape), obs)
        raise ConfigError(f"{env_id} with env_config {env_config!r} observes {shapes}; ppox "
                          "trains on flat state observations (drop vision=true)")
    episode_length, action_repeat = int(config.episode_length), int(config.action_repeat)
    if episode_length < 1 or action_repeat < 1:
        raise ConfigError(f"env_config episode_length={episode_length}, action_repeat="
                          f"{action_repeat}: both must be >= 1")
    spec = EnvSpec(
        env_id=env_id,
        obs_shape=(int(obs.shape[0]),),
        action_space=Box(low=-np.ones(env.action_size, np.float32),
                         high=np.ones(env.action_size, np.float32)),
        max_episode_steps=-(-episode_length // action_repeat),
    )
    return BraxEnv(spec=spec, env=CompactStates.wrap(env, base_reset),
                   episode_length=episode_length,
                   action_repeat=action_repeat, auto_reset=auto_reset)


def _episode_data(states: Any, length: int) -> list[Any]:
    """The ``mjx.Data`` (host arrays; ``None`` for the dropped zero-size ones) of the first
    ``length`` steps of ``states``, the eval's time-major episode-statistics state around a
    ``BraxEnvState`` of one env."""
    data = jax.tree.map(np.asarray, states.inner.inner.data)
    return [jax.tree.map(lambda x, i=i: x[i], data) for i in range(max(1, length))]


def render_frames(env: BraxEnv, states: Any, length: int, height: int = 240,
                  width: int = 320, camera: int | str = -1) -> list[np.ndarray]:
    """``[H, W, 3] uint8`` frames of one episode through ``mujoco.Renderer`` (offscreen GL,
    as ``MUJOCO_GL`` chose when mujoco was imported); raises whatever mujoco raises when
    there is no GL context to be had."""
    import mujoco

    model = env.env.base.mj_model
    frames = []
    with mujoco.Renderer(model, height=height, width=width) as renderer:
        data = mujoco.MjData(model)
        for d in _episode_data(states, length):
            data.qpos, data.qvel = d.qpos, d.qvel
            if d.mocap_pos is not None:
                data.mocap_pos, data.mocap_quat = d.mocap_pos, d.mocap_quat
            mujoco.mj_forward(model, data)
            renderer.update_scene(data, camera=camera)
            frames.append(renderer.render().copy())
    return frames


def render_html(env: BraxEnv, states: Any, length: int) -> str:
    """One episode as brax's HTML viewer (needs no GL here; the page loads the viewer's
    JavaScript from a CDN): the MJCF model as a brax ``System`` and each step's body poses."""
    from ppox.envs.brax import _quiet

    with _quiet():
        from brax.base import Transform
        from brax.io import html, mjcf

        sys = mjcf.load_model(env.env.base.mj_model)
    frames = [SimpleNamespace(x=Transform(pos=d.xpos[1:], rot=d.xquat[1:]))
              for d in _episode_data(states, length)]
    return html.render(sys.tree_replace({"opt.timestep": agent_dt(env)}), frames)


def agent_dt(env: BraxEnv) -> float:
    """Seconds of simulated time per agent step (``ctrl_dt`` x ``action_repeat``)."""
    return float(env.env.base.dt) * env.action_repeat
