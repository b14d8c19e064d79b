"""Adapter from gymnax (>= 1.0) to the ppox ``Env`` interface.

gymnax 1.0's ``step`` returns ``(obs, state, reward, terminated, truncated, info)`` with
``info["final_observation"]`` holding the observation before the auto-reset. Observations
keep their shape as float32 (MinAtar frames stay ``[10, 10, C]`` images for a CNN; the MLP
torso flattens), a scalar one becomes ``[1]``; a discrete observation space (FrozenLake) is
one-hot encoded.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
import threading
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ppox.envs.core import Box, Discrete, EnvSpec, TimeStep

# Ids that cannot run here: MNISTBandit downloads MNIST at import of its data.
_EXCLUDED = {"MNISTBandit-bsuite"}

# What gymnax imports at the top of its env modules only to render (Pong, Catch, the mazes):
# seaborn (with scipy.stats and pandas, ~2.6 s of gymnax's ~3.9 s import here) and pyplot.
_RENDER_ONLY = ("seaborn", "matplotlib.pyplot")


class _OnFirstUse(ModuleType):
    """Stands in ``sys.modules`` for a module that is imported but maybe never used: the
    real module is imported at the first read of an attribute this one lacks, and every
    read goes to it from then on. (``importlib.util.LazyLoader`` does not do here: on
    Python 3.11 the ``import`` statement itself reads the module's ``__spec__`` and so loads
    it.)"""

    def __getattr__(self, attr: str) -> Any:
        real = self.__dict__.get("_ppox_real")
        if real is None:
            if sys.modules.get(self.__name__) is self:
                del sys.modules[self.__name__]
            real = importlib.import_module(self.__name__)
            self.__dict__["_ppox_real"] = real
        return getattr(real, attr)


def _on_first_use(name: str) -> None:
    """Puts an ``_OnFirstUse`` stand-in for ``name`` in ``sys.modules``; a module already
    imported, or not installed, is left alone."""
    if name in sys.modules or importlib.util.find_spec(name.partition(".")[0]) is None:
        return
    module = _OnFirstUse(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, None)
    sys.modules[name] = module


def import_gymnax() -> ModuleType:
    """``gymnax``, with its rendering-only imports (``_RENDER_ONLY``) made lazy: they load
    if gymnax renders, and are not paid for by a run that only trains."""
    _render_only_on_first_use()
    import gymnax

    return gymnax


def _render_only_on_first_use() -> None:
    if "gymnax" not in sys.modules:
        for name in _RENDER_ONLY:
            _on_first_use(name)


# gymnax's classic-control ids (``ppox.envs.CLASSIC_CONTROL_IDS``): their module and class
# in ``gymnax.environments.classic_control``, as ``gymnax.make`` builds them
_CLASSIC_CONTROL = {
    "CartPole-v1": ("cartpole", "CartPole"),
    "Acrobot-v1": ("acrobot", "Acrobot"),
    "Pendulum-v1": ("pendulum", "Pendulum"),
    "MountainCar-v0": ("mountain_car", "MountainCar"),
    "MountainCarContinuous-v0": ("continuous_mountain_car", "ContinuousMountainCar"),
}
# the packages above a classic-control module, whose ``__init__`` imports every gymnax env
# (bsuite, MinAtar, misc: ~0.11 s here, and FrozenLake's module compiles an array)
_GYMNAX_PACKAGES = ("gymnax", "gymnax.environments", "gymnax.environments.classic_control")
_importing_submodules = threading.local()


class _PackageOnFirstUse(ModuleType):
    """A package in ``sys.modules`` whose ``__init__`` has not run yet: its submodules can be
    imported (its ``__path__`` and ``__spec__`` are set), and the first read of any other
    attribute it lacks runs its ``__init__`` in this very module object, as an ordinary
    import would have (so ``import gymnax; gymnax.make(...)`` works as ever, and the
    classes already imported stay the ones gymnax hands out)."""

    def __getattr__(self, attr: str) -> Any:
        if (getattr(_importing_submodules, "on", False) and importlib.machinery.PathFinder
                .find_spec(f"{self.__name__}.{attr}", self.__path__) is not None):
            # the import system probing for a submodule (``from pkg import submodule`` reads
            # the attribute before it imports the submodule): not a use of the package
            raise AttributeError(attr)
        self.__class__ = ModuleType
        self.__spec__.loader.exec_module(self)  # type: ignore[union-attr]
        return getattr(self, attr)


def _import_below_gymnax(name: str) -> ModuleType:
    """The module ``name`` inside ``gymnax.environments.classic_control`` (or above it)
    imported without running the ``__init__`` of the packages above it (they stay
    ``_PackageOnFirstUse`` until read); where gymnax is imported already, the ordinary
    import."""
    _render_only_on_first_use()
    if "gymnax" not in sys.modules:
        spec = importlib.util.find_spec("gymnax")
        if spec is None or spec.submodule_search_locations is None:
            raise ModuleNotFoundError("No module named 'gymnax'", name="gymnax")
        parent: ModuleType | None = None
        for pkg in _GYMNAX_PACKAGES:
            if parent is not None:
                spec = importlib.machinery.PathFinder.find_spec(pkg, parent.__path__)
                assert spec is not None, pkg
            module = importlib.util.module_from_spec(spec)  # __spec__, __path__, ...
            module.__class__ = _PackageOnFirstUse
            sys.modules[pkg] = module
            if parent is not None:
                setattr(parent, pkg.rpartition(".")[2], module)
            parent = module
    _importing_submodules.on = True
    try:
        return importlib.import_module(name)
    finally:
        _importing_submodules.on = False


def gymnax_env_ids() -> list[str]:
    """Every gymnax id ppox supports (no downloads)."""
    gymnax = import_gymnax()

    return [name for name in gymnax.registered_envs if name not in _EXCLUDED]


@dataclass(frozen=True, eq=False)
class GymnaxEnv:
    """A gymnax environment with its default parameters, as a ppox ``Env``."""

    spec: EnvSpec
    env: Any
    params: Any
    obs_one_hot: int = 0  # > 0: the raw observation is an integer in [0, obs_one_hot)

    def _obs(self, raw: jax.Array) -> jax.Array:
        if self.obs_one_hot:
            return jax.nn.one_hot(raw, self.obs_one_hot, dtype=jnp.float32).reshape(-1)
        return jnp.asarray(raw, jnp.float32).reshape(self.spec.obs_shape)

    def reset(self, key: jax.Array) -> tuple[jax.Array, Any]:
        obs, state = self.env.reset(key, self.params)
        return self._obs(obs), state

    def step(self, key: jax.Array, state: Any, action: jax.Array) -> tuple[Any, TimeStep]:
        obs, state, reward, terminated, truncated, info = self.env.step(
            key, state, action, self.params)
        return state, TimeStep(
            obs=self._obs(obs),
            reward=jnp.asarray(reward, jnp.float32),
            terminated=jnp.asarray(terminated, bool),
            truncated=jnp.asarray(truncated, bool),
            final_obs=self._obs(info["final_observation"]),
            info={},
        )


def _discrete_obs_size(env: Any, params: Any, discrete: type) -> int:
    """The number of observations of a discrete observation space, else 0. The space is
    built inside a trace: its array bounds (CartPole's ``high``, ``-high``) would otherwise
    be eager device ops, each compiled at start-up; a space whose size is not a plain
    number there is built as usual."""
    spaces: list[Any] = []

    def probe(p: Any) -> jax.Array:
        spaces.append(env.observation_space(p))
        return jnp.zeros(())

    jax.eval_shape(probe, params)
    space = spaces[0]
    if not isinstance(space, discrete):
        return 0
    if isinstance(space.n, (int, np.integer)):
        return int(space.n)
    return int(env.observation_space(params).n)


def make_gymnax(env_id: str) -> GymnaxEnv:
    """Builds the adapter for a registered gymnax id (see ``gymnax_env_ids``)."""
    if env_id in _CLASSIC_CONTROL:  # what gymnax.make does, without gymnax's other envs
        module, cls = _CLASSIC_CONTROL[env_id]
        env = getattr(_import_below_gymnax(f"gymnax.environments.classic_control.{module}"),
                      cls)()
        params = env.default_params
        spaces = _import_below_gymnax("gymnax.environments.spaces")
    else:
        env, params = import_gymnax().make(env_id)
        from gymnax.environments import spaces

    one_hot = _discrete_obs_size(env, params, spaces.Discrete)
    # the shape the env really returns (a few spaces declare another one of the same size);
    # traced, like the key's shape: nothing runs on a device (each eager op is a compile)
    key = jax.eval_shape(jax.random.PRNGKey, 0)
    raw_shape = tuple(jax.eval_shape(env.reset, key, params)[0].shape)
    obs_shape = (one_hot,) if one_hot else (raw_shape or (1,))
    act = env.action_space(params)
    if isinstance(act, spaces.Discrete):
        action_space: Discrete | Box = Discrete(int(act.n))
    else:
        shape = tuple(act.shape)
        action_space = Box(
            low=np.broadcast_to(np.asarray(act.low, np.float32), shape).copy(),
            high=np.broadcast_to(np.asarray(act.high, np.float32), shape).copy(),
        )
    spec = EnvSpec(
        env_id=env_id,
        obs_shape=obs_shape,
        action_space=action_space,
        max_episode_steps=int(params.max_steps_in_episode),
    )
    return GymnaxEnv(spec=spec, env=env, params=params, obs_one_hot=one_hot)
