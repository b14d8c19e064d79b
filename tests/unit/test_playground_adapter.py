"""The MuJoCo Playground adapter against the env's own reset/step: same observations,
rewards and done flags; the time limit truncates with the pre-reset final observation."""

import importlib.util

import jax
import numpy as np
import pytest

from ppox.config import ConfigError, PPOConfig
from ppox.envs import check_env_id, env_ids, make_env
from ppox.envs.playground import DM_CONTROL_SUITE, make_playground, parse_env_config
from ppox.trainer import env_for

dm_control_suite = pytest.importorskip("mujoco_playground").dm_control_suite

ENV_ID = "playground/CartpoleSwingup"


def _actions(n: int, dim: int) -> list[jax.Array]:
    return list(jax.random.uniform(jax.random.PRNGKey(7), (n, dim), minval=-1.0, maxval=1.0))


def _adapter_steps(env, actions, key=0):
    """The adapter's time steps for ``actions`` from ``reset(key)``, and its last state."""
    _, state = jax.jit(env.reset)(jax.random.PRNGKey(key))
    step = jax.jit(env.step)
    out = []
    for t, a in enumerate(actions):
        state, ts = step(jax.random.PRNGKey(1000 + t), state, a)
        out.append(ts)
    return out, state


@pytest.fixture(scope="module")
def own():
    """Playground's own env (episode_length=6) with its reset and step jitted once."""
    env = make_playground(ENV_ID, "episode_length=6")
    return env, jax.jit(env.env.base.reset), jax.jit(env.env.base.step)


def _own_steps(own, actions, key=0, repeat=1):
    """Playground's own reset/step: its first state, then (state, summed reward) after each
    agent step."""
    _, reset, step = own
    state = reset(jax.random.PRNGKey(key))
    first, out = state, []
    for a in actions:
        reward = 0.0
        for _ in range(repeat):
            state = step(state, a)
            reward += float(state.reward)
        out.append((state, reward))
    return first, out


def test_ids_are_the_packages_dm_control_suite():
    assert set(DM_CONTROL_SUITE) == set(dm_control_suite.ALL_ENVS)
    ids = [i for i in env_ids() if i.startswith("playground/")]
    assert ids == ["playground/" + n for n in DM_CONTROL_SUITE]


def test_steps_match_the_env_then_the_time_limit_truncates(own):
    env, base = own[0], own[0].env.base
    assert base.mjx_model.impl.value == "jax"  # Playground's default is warp
    assert env.spec.obs_shape == (base.observation_size,)
    assert env.spec.action_space.shape == (base.action_size,) == (1,)
    np.testing.assert_array_equal(base.mj_model.actuator_ctrlrange, [[-1.0, 1.0]])
    assert env.spec.max_episode_steps == 6
    actions = _actions(7, base.action_size)
    steps, last_state = _adapter_steps(env, actions)
    obs0, _ = jax.jit(env.reset)(jax.random.PRNGKey(0))
    first, expected = _own_steps(own, actions[:6])
    np.testing.assert_array_equal(np.asarray(obs0), np.asarray(first.obs))
    # the same observations, rewards and done flags as the env's own step
    for ts, (state, reward) in zip(steps[:6], expected, strict=True):
        np.testing.assert_allclose(np.asarray(ts.final_obs), np.asarray(state.obs), rtol=1e-6)
        np.testing.assert_allclose(float(ts.reward), reward, rtol=1e-6)
        assert bool(ts.terminated) is bool(state.done > 0.5) is False
    for ts, (state, _) in zip(steps[:5], expected, strict=False):
        np.testing.assert_allclose(np.asarray(ts.obs), np.asarray(state.obs), rtol=1e-6)
    flags = [(bool(ts.terminated), bool(ts.truncated)) for ts in steps]
    assert flags == [(False, False)] * 5 + [(False, True), (False, False)]
    # at the limit: final_obs is the env's 6th observation, obs a new episode's first
    # (swing-up starts hanging down, cos ~ -1)
    assert not np.allclose(np.asarray(steps[5].obs), np.asarray(steps[5].final_obs))
    assert float(steps[5].obs[1]) < -0.99
    # orbax cannot checkpoint a zero-size array; mjx.Data has some (e.g. act)
    leaves = jax.tree.leaves(last_state)
    assert leaves and all(np.size(x) > 0 for x in leaves)
    assert last_state.inner.data.act is None  # rebuilt as zeros for the env's step


def test_action_repeat_from_the_env_config(own):
    env = make_playground(ENV_ID, "episode_length=6,action_repeat=2")
    assert env.spec.max_episode_steps == 3
    actions = _actions(3, 1)
    steps, _ = _adapter_steps(env, actions)
    assert [bool(ts.truncated) for ts in steps] == [False, False, True]
    _, expected = _own_steps(own, actions, repeat=2)
    for ts, (state, reward) in zip(steps, expected, strict=True):
        np.testing.assert_allclose(np.asarray(ts.final_obs), np.asarray(state.obs), rtol=1e-6)
        np.testing.assert_allclose(float(ts.reward), reward, rtol=1e-5)


def test_env_config_travels_from_the_config_and_is_cached():
    cfg = PPOConfig(env_id=ENV_ID, env_config="episode_length=6")
    env = env_for(cfg)
    assert env.spec.max_episode_steps == 6
    assert env is make_env(ENV_ID, env_config="episode_length=6")
    assert hash(cfg) == hash(PPOConfig(env_id=ENV_ID, env_config="episode_length=6"))


def test_parse_env_config():
    assert parse_env_config("") == {}
    assert parse_env_config("impl=warp, episode_length=500,ctrl_dt=0.02,vision=false") == {
        "impl": "warp", "episode_length": 500, "ctrl_dt": 0.02, "vision": False}
    with pytest.raises(ConfigError, match="is not key=value"):
        parse_env_config("impl")


@pytest.mark.parametrize(("env_config", "message"), [
    ("episode_lenght=5", "env_config key 'episode_lenght' is not in playground/Cartpole"
                         "Swingup's config; its keys: action_repeat, ctrl_dt, "),
    ("impl=mjx", "env_config impl='mjx' is not one of jax, warp"),
    ("episode_length=abc", "env_config episode_length='abc' does not suit"),
    ("episode_length=0", "env_config episode_length=0, action_repeat=1: both must be >= 1"),
])
def test_bad_env_config_is_one_line(env_config, message):
    with pytest.raises(ConfigError, match="^" + message.replace("(", r"\(")) as err:
        make_env(ENV_ID, env_config=env_config)
    assert "\n" not in str(err.value)


def test_env_config_is_refused_for_other_envs():
    with pytest.raises(ConfigError, match="applies to playground envs only and CartPole-v1"):
        PPOConfig(env_config="impl=jax").validate()


def test_locomotion_ids_are_refused_with_the_reason():
    with pytest.raises(ConfigError, match="Menagerie") as err:
        check_env_id("playground/Go1JoystickFlatTerrain")
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="did you mean 'playground/CheetahRun'"):
        check_env_id("playground/CheetahRunn")


def test_missing_package_is_one_line(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "mujoco_playground" else real(name, *a))
    with pytest.raises(ConfigError, match=r"pip install 'ppox\[playground\]'$"):
        make_playground("playground/CheetahRun")


def test_ppox_envs_lists_and_describes_them(capsys):
    from ppox.cli.envs import cmd_envs

    assert cmd_envs([]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("playground"))
    assert "pip install 'ppox[playground]'" in line and "playground/CheetahRun" in line
    assert cmd_envs(["playground/CartpoleSwingup"]) == 0
    row = capsys.readouterr().out.splitlines()[1].split()
    assert row[:6] == ["playground/CartpoleSwingup", "(5,)", "Box(1,)", "in", "[-1,", "1]"]
    assert row[6] == "1000"


def test_first_state_auto_reset_restarts_from_the_first_state(own):
    # auto_reset="first_state": the same steps up to the limit, then the env's own first
    # state again (not a new draw); the kept first state is checkpointable too
    env = make_playground(ENV_ID, "episode_length=6", auto_reset="first_state")
    actions = _actions(7, 1)
    steps, last_state = _adapter_steps(env, actions)
    fresh, _ = _adapter_steps(own[0], actions)
    obs0, _ = jax.jit(env.reset)(jax.random.PRNGKey(0))
    for ts, want in zip(steps[:6], fresh[:6], strict=True):
        np.testing.assert_allclose(np.asarray(ts.final_obs), np.asarray(want.final_obs),
                                   rtol=1e-6)
        assert (bool(ts.terminated), bool(ts.truncated)) == (bool(want.terminated),
                                                              bool(want.truncated))
    assert bool(steps[5].truncated)
    np.testing.assert_array_equal(np.asarray(steps[5].obs), np.asarray(obs0))
    assert not np.allclose(np.asarray(fresh[5].obs), np.asarray(obs0))
    leaves = jax.tree.leaves(last_state)
    assert leaves and all(np.size(x) > 0 for x in leaves)
    assert int(last_state.steps) == 1  # the 7th step is the new episode's first
