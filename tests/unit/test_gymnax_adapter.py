"""The gymnax adapter reproduces gymnax's own step outputs."""

import gymnax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ppox.envs.gymnax import gymnax_env_ids, make_gymnax
from ppox.envs.wrappers import EpisodeStats


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1", "Acrobot-v1",
                                    "Breakout-MinAtar", "Catch-bsuite", "FrozenLake-misc"])
def test_adapter_matches_gymnax_step_for_several_steps(env_id):
    ours = make_gymnax(env_id)
    env, params = gymnax.make(env_id)
    key = jax.random.PRNGKey(0)
    obs_a, st_a = ours.reset(key)
    obs_b, st_b = env.reset(key, params)
    np.testing.assert_array_equal(np.asarray(obs_a), np.asarray(ours._obs(obs_b)))
    space = env.action_space(params)
    for _ in range(12):
        key, k_act, k_step = jax.random.split(key, 3)
        action = space.sample(k_act)
        st_a, ts = ours.step(k_step, st_a, action)
        o, st_b, r, term, trunc, info = env.step(k_step, st_b, action, params)
        np.testing.assert_array_equal(np.asarray(ts.obs), np.asarray(ours._obs(o)))
        np.testing.assert_array_equal(np.asarray(ts.final_obs),
                                      np.asarray(ours._obs(info["final_observation"])))
        assert float(ts.reward) == pytest.approx(float(r))
        assert bool(ts.terminated) == bool(term)
        assert bool(ts.truncated) == bool(trunc)
        assert ts.obs.dtype == jnp.float32 and ts.obs.shape == ours.spec.obs_shape


def test_cartpole_truncates_at_500_with_final_obs_before_reset():
    ours = EpisodeStats(make_gymnax("CartPole-v1"))
    _, state = ours.reset(jax.random.PRNGKey(0))
    # put the pole upright with no velocity, one step before the time limit: pushing left
    # and right alternately keeps it alive, and the next step hits the 500-step limit
    inner = state.inner.replace(time=499, x=0.0, x_dot=0.0, theta=0.0, theta_dot=0.0)
    state = state.replace(inner=inner, episode_length=jnp.int32(499),
                          episode_return=jnp.float32(499.0))
    state, ts = ours.step(jax.random.PRNGKey(1), state, jnp.int32(1))
    assert bool(ts.truncated) and not bool(ts.terminated)
    # final_obs is the state the step reached (x moved right a little), obs is a fresh reset
    assert float(ts.final_obs[1]) > 0.0  # x_dot after pushing right
    assert not np.allclose(np.asarray(ts.final_obs), np.asarray(ts.obs))
    assert bool(ts.info["episode_done"])
    assert float(ts.info["episode_return"]) == 500.0
    assert int(ts.info["episode_length"]) == 500
    assert int(state.episode_length) == 0


def test_every_listed_gymnax_env_builds_and_steps():
    # shapes only (traced, not compiled): the value test above covers the step semantics
    for env_id in gymnax_env_ids():
        env = make_gymnax(env_id)
        obs, state = jax.eval_shape(env.reset, jax.random.PRNGKey(0))
        assert obs.shape == env.spec.obs_shape, env_id
        shape = () if env.spec.is_discrete else env.spec.action_space.shape
        action = jnp.zeros(shape, jnp.int32 if env.spec.is_discrete else jnp.float32)
        _, ts = jax.eval_shape(env.step, jax.random.PRNGKey(1), state, action)
        assert ts.obs.shape == env.spec.obs_shape, env_id
        assert ts.final_obs.shape == env.spec.obs_shape, env_id
    assert "MNISTBandit-bsuite" not in gymnax_env_ids()


def test_gymnax_is_imported_without_its_rendering_only_modules(passes_in_a_process):
    # gymnax imports seaborn (scipy.stats, pandas) and pyplot at the top of its env modules
    # for rendering only; ppox leaves them unloaded until something reads them
    code = (
        "import sys\n"
        "from ppox.envs.gymnax import make_gymnax\n"
        "make_gymnax('CartPole-v1')\n"
        "heavy = [m for m in ('scipy.stats', 'pandas') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "assert type(sys.modules['seaborn']).__name__ == '_OnFirstUse'\n"
        "from gymnax.environments.misc import pong\n"
        "palette = pong.sns.color_palette('cubehelix', 3)\n"  # the real seaborn, on first use
        "assert len(palette) == 3 and 'scipy.stats' in sys.modules\n"
        "assert type(sys.modules['seaborn']).__name__ == 'module'\n"
        "import matplotlib.pyplot as plt\n"
        "assert callable(plt.figure)\n"
        "print('ok')\n")
    passes_in_a_process(code)


def test_classic_control_ids_are_checked_without_importing_gymnax():
    import subprocess
    import sys

    import gymnax

    from ppox.envs import CLASSIC_CONTROL_IDS

    assert set(CLASSIC_CONTROL_IDS) <= set(gymnax.registered_envs)
    child = ("import sys\nfrom ppox.envs import CLASSIC_CONTROL_IDS, check_env_id\n"
             "for e in CLASSIC_CONTROL_IDS: check_env_id(e)\n"
             "from jax._src import xla_bridge\n"
             "print('gymnax' in sys.modules, xla_bridge.backends_are_initialized())")
    proc = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["False", "False"]


def test_classic_control_envs_are_built_without_gymnax_other_envs(passes_in_a_process):
    # a classic-control id imports its own gymnax module, not gymnax's package __init__
    # (every bsuite, MinAtar and misc env); gymnax imported afterwards is the whole package,
    # handing out the very classes ppox built its envs from
    code = (
        "import sys\n"
        "import numpy as np, jax\n"
        "from ppox.envs import CLASSIC_CONTROL_IDS\n"
        "from ppox.envs.gymnax import make_gymnax\n"
        "ours = {e: make_gymnax(e) for e in CLASSIC_CONTROL_IDS}\n"
        "others = sorted(m for m in sys.modules if m.startswith('gymnax.environments.') and\n"
        "                m.split('.')[2] in ('bsuite', 'minatar', 'misc'))\n"
        "assert not others and 'gymnax.registration' not in sys.modules, others\n"
        "assert type(sys.modules['gymnax']).__name__ == '_PackageOnFirstUse'\n"
        "import gymnax\n"
        "assert len(gymnax.registered_envs) == 26, gymnax.registered_envs\n"
        "assert type(sys.modules['gymnax']).__name__ == 'module'\n"
        "from gymnax.environments import spaces\n"
        "assert gymnax.environments.bsuite.Catch and spaces.Discrete\n"
        "for e, mine in ours.items():\n"
        "    env, params = gymnax.make(e)\n"
        "    assert type(env) is type(mine.env), e\n"
        "    assert jax.tree.all(jax.tree.map(lambda a, b: np.array_equal(a, b), params,\n"
        "                                     mine.params)), e\n"
        "    key = jax.random.PRNGKey(3)\n"
        "    theirs = mine._obs(env.reset(key, params)[0])\n"
        "    np.testing.assert_array_equal(mine.reset(key)[0], theirs)\n"
        "assert gymnax.environments.CartPole is type(ours['CartPole-v1'].env)\n"
        "assert isinstance(ours['CartPole-v1'].env, gymnax.environments.environment.Environment)\n"
        "print('ok')\n")
    passes_in_a_process(code)
