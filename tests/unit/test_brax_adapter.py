"""The brax adapter: time limits truncate, falls terminate, final_obs is pre-reset."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ppox.config import ConfigError
from ppox.envs import make_env
from ppox.envs.brax import brax_envs, make_brax


def _run(env, actions, key=0):
    step = jax.jit(env.step)
    _, state = jax.jit(env.reset)(jax.random.PRNGKey(key))
    out = []
    for t, a in enumerate(actions):
        state, ts = step(jax.random.PRNGKey(1000 + t), state, a)
        out.append(ts)
    return out


def test_time_limit_truncates_with_pre_reset_final_obs():
    env = make_brax("brax/inverted_pendulum", "spring", episode_length=12)
    base = brax_envs().get_environment("inverted_pendulum", backend="spring")
    actions = [jnp.zeros(1)] * 13
    steps = _run(env, actions)
    flags = [(bool(ts.terminated), bool(ts.truncated)) for ts in steps]
    assert flags[:11] == [(False, False)] * 11
    assert flags[11] == (False, True)  # the 12th step hits the limit: truncated, not terminated
    # final_obs is what brax itself reaches after 12 steps from the same initial state
    state = jax.jit(base.reset)(jax.random.PRNGKey(0))
    base_step = jax.jit(base.step)
    for _ in range(12):
        state = base_step(state, jnp.zeros(1))
    np.testing.assert_allclose(np.asarray(steps[11].final_obs), np.asarray(state.obs), atol=1e-5)
    # ... while obs is a fresh initial state (tiny random q, qd around 0)
    assert not np.allclose(np.asarray(steps[11].obs), np.asarray(steps[11].final_obs))
    assert np.abs(np.asarray(steps[11].obs)).max() <= 0.011
    # and the next step starts a new episode (no truncation right away)
    assert flags[12] == (False, False)


def test_fall_terminates_not_truncates():
    env = make_brax("brax/hopper", "spring", episode_length=1000)
    steps = _run(env, [jnp.ones(3)] * 60)
    ends = [(t, bool(ts.terminated), bool(ts.truncated)) for t, ts in enumerate(steps)
            if ts.terminated or ts.truncated]
    assert ends, "hopper pushed with full torque falls within 60 steps"
    t, term, trunc = ends[0]
    assert term and not trunc
    # the final observation is the unhealthy one, the new obs a reset
    assert not np.allclose(np.asarray(steps[t].final_obs), np.asarray(steps[t].obs))


def test_action_repeat_sums_rewards_and_counts_physics_steps():
    env = make_brax("brax/inverted_pendulum", "spring", episode_length=12, action_repeat=3)
    assert env.spec.max_episode_steps == 4
    steps = _run(env, [jnp.zeros(1)] * 4)
    assert [bool(ts.truncated) for ts in steps] == [False, False, False, True]
    # inverted_pendulum pays 1 per physics step while upright
    assert float(steps[0].reward) == pytest.approx(3.0)


def test_episode_stats_wrapper_on_brax():
    env = make_env("brax/inverted_pendulum", episode_length=5)
    steps = _run(env, [jnp.zeros(1)] * 5)
    last = steps[-1]
    assert bool(last.info["episode_done"])
    assert float(last.info["episode_return"]) == pytest.approx(5.0)
    assert int(last.info["episode_length"]) == 5


def test_unsupported_backend_is_a_config_error():
    with pytest.raises(ConfigError, match="cannot be built with backend='spring'"):
        make_env("brax/swimmer", backend="spring")


def _batched_trajectories(env, step_fn, num_envs=6, num_steps=14):
    """Steps ``num_envs`` envs (episode limits staggered by their starting step counts)
    with ``step_fn`` and returns every TimeStep and final state."""
    _, state = jax.vmap(env.reset)(jax.random.split(jax.random.PRNGKey(0), num_envs))
    state = state.replace(inner=state.inner.replace(steps=jnp.arange(num_envs, dtype=jnp.int32)))
    actions = jnp.linspace(-1.0, 1.0, num_envs * env.spec.action_dim).reshape(num_envs, -1)

    def body(st, key):
        st, ts = step_fn(jax.random.split(key, num_envs), st, actions)
        return st, ts

    return jax.jit(lambda st: jax.lax.scan(body, st, jax.random.split(jax.random.PRNGKey(1),
                                                                     num_steps)))(state)


@pytest.mark.parametrize("env_id", ["brax/inverted_pendulum", "brax/hopper"])
def test_batched_step_resets_only_when_needed_with_the_same_values(env_id):
    # step_batch skips the resets at steps where no env is done (a lax.cond), and must give
    # vmap(step)'s values: the staggered limits make some steps end 1 env, others none;
    # hopper also terminates on its own
    from ppox.envs.core import step_envs

    env = make_env(env_id, episode_length=8)
    assert hasattr(env, "step_batch") and hasattr(env.env, "step_batch")
    want = _batched_trajectories(env, jax.vmap(env.step))
    got = _batched_trajectories(env, lambda k, s, a: step_envs(env, k, s, a))
    dones = np.asarray(want[1].terminated | want[1].truncated)
    assert dones.any(axis=1).any() and not dones.any(axis=1).all()  # both branches taken
    for w, g in zip(jax.tree.leaves(want), jax.tree.leaves(got), strict=True):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-5, atol=1e-5)
    if env_id != "brax/inverted_pendulum":
        return  # the outer-vmap check is of the adapter, not the env: once, on the cheap env
    # and under an outer vmap (seeds) the cond stays a cond, on any env of any run being done
    outer = jax.vmap(lambda _: _batched_trajectories(env, lambda k, s, a: step_envs(env, k, s, a)))
    for w, g in zip(jax.tree.leaves(want), jax.tree.leaves(outer(jnp.arange(2))), strict=True):
        np.testing.assert_allclose(np.asarray(g)[1], np.asarray(w), rtol=1e-5, atol=1e-5)
    assert " cond[" in str(jax.make_jaxpr(outer)(jnp.arange(2)))


def test_any_in_every_batch_reduces_over_the_mapped_axes():
    from ppox.envs.brax import any_in_every_batch

    flags = jnp.array([[False, False], [False, True]])
    assert not bool(any_in_every_batch(flags[0])) and bool(any_in_every_batch(flags))
    # under vmap every member gets the whole batch's any: row 0 alone has none
    assert jax.jit(jax.vmap(any_in_every_batch))(flags).tolist() == [True, True]
    nested = jax.vmap(jax.vmap(any_in_every_batch))(flags[:, :, None])
    assert nested.tolist() == [[True, True], [True, True]]
    assert jax.vmap(any_in_every_batch)(flags[:1]).tolist() == [False]


def test_first_state_auto_reset_restarts_each_env_from_its_own_first_state():
    # auto_reset="first_state" (as brax's AutoResetWrapper does): a done env restarts from
    # the state reset() drew for it, with the same flags and pre-reset final_obs as "fresh"
    # (which draws a new start); step_batch (a select here, no cond) = vmap(step)
    from ppox.envs.core import step_envs

    fresh = make_env("brax/inverted_pendulum", episode_length=8)
    first = make_env("brax/inverted_pendulum", episode_length=8, auto_reset="first_state")
    first_obs, _ = jax.vmap(first.reset)(jax.random.split(jax.random.PRNGKey(0), 6))
    _, want = _batched_trajectories(fresh, lambda k, s, a: step_envs(fresh, k, s, a))
    _, got = _batched_trajectories(first, lambda k, s, a: step_envs(first, k, s, a))
    _, got_vmap = _batched_trajectories(first, jax.vmap(first.step))
    for g, v in zip(jax.tree.leaves(got), jax.tree.leaves(got_vmap), strict=True):
        np.testing.assert_allclose(np.asarray(g), np.asarray(v), rtol=1e-5, atol=1e-5)
    dones = np.asarray(want.terminated | want.truncated)
    limits_checked = 0
    for i in range(6):
        t0 = int(np.argmax(dones[:, i]))  # the first episode of env i ends at step t0
        assert dones[t0, i]
        for name in ("terminated", "truncated", "final_obs", "reward"):
            np.testing.assert_allclose(np.asarray(getattr(got, name))[: t0 + 1, i],
                                       np.asarray(getattr(want, name))[: t0 + 1, i],
                                       rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(np.asarray(got.obs)[t0, i], np.asarray(first_obs)[i],
                                   atol=1e-6)  # back to its own first state ...
        assert not np.allclose(np.asarray(want.obs)[t0, i], np.asarray(first_obs)[i])
        # ... with a new time limit: its next episode, if it ends by the limit within the
        # 14 steps, ends exactly 8 steps later
        got_term, got_trunc = np.asarray(got.terminated)[:, i], np.asarray(got.truncated)[:, i]
        later = np.flatnonzero(got_term[t0 + 1:] | got_trunc[t0 + 1:])
        if later.size and got_trunc[t0 + 1 + later[0]]:
            assert later[0] + 1 == 8, (i, t0, later[0])
            limits_checked += 1
    assert limits_checked  # the staggered limits bring some env to its second limit


def test_auto_reset_is_refused_off_brax_and_playground():
    from ppox.config import PPOConfig

    with pytest.raises(ConfigError, match="auto_reset='first_state' applies to brax and "
                                          "playground envs only"):
        PPOConfig(env_id="CartPole-v1", auto_reset="first_state").validate()
    PPOConfig(env_id="brax/inverted_pendulum", auto_reset="first_state").validate()


def test_the_observation_shape_comes_from_one_abstract_trace_kept_for_the_programs(
        monkeypatch):
    """brax's ``observation_size`` runs the reset op by op (seconds of small compiles on a
    fresh process); ``make_brax`` reads the shape from a trace instead, and the programs
    reuse that trace."""
    base = type(brax_envs().get_environment("inverted_pendulum", backend="spring"))

    def eager(self):
        raise AssertionError("observation_size runs the reset eagerly")

    monkeypatch.setattr(base, "observation_size", property(eager))
    env = make_brax("brax/inverted_pendulum", "spring")
    assert env.spec.obs_shape == (4,) and env.spec.action_space.low.shape == (1,)
    assert len(env._reset._cache) == 1  # the trace the shape came from
    obs, _ = jax.jit(jax.vmap(env.reset))(jax.random.split(jax.random.PRNGKey(0), 3))
    assert obs.shape == (3, 4) and len(env._reset._cache) == 1  # reused, not traced again
    assert make_brax("brax/humanoid", "spring").spec.obs_shape == (244,)


def test_evaluation_steps_without_resets_and_scores_the_same_first_episodes(monkeypatch):
    """``ppox.evaluate`` counts first episodes only, so a brax env steps there without its
    auto-reset (``advance_batch``): the program holds the initial reset and no other, and
    the returns and lengths are those of the evaluation that resets done envs."""
    from ppox.config import HParams, PPOConfig
    from ppox.envs.brax import BraxEnv
    from ppox.evaluate import make_evaluate
    from ppox.trainer import build, init

    # 8 episodes of IP (limit 40): an untrained policy drops the pole within it in some
    cfg = PPOConfig(env_id="brax/inverted_pendulum", num_envs=4, num_steps=8,
                    total_timesteps=32, num_minibatches=1, episode_length=40)
    state = init(build(cfg), HParams().as_arrays(), jax.random.PRNGKey(0))
    resets = []
    real_reset = BraxEnv.reset
    monkeypatch.setattr(BraxEnv, "reset", lambda self, key: (resets.append(1),
                                                             real_reset(self, key))[1])

    def run():
        resets.clear()
        ev = jax.jit(make_evaluate(cfg, 8, deterministic=False))
        ret, length, _ = ev(jax.random.PRNGKey(3), state.params, state.obs_stats)
        return np.asarray(ret), np.asarray(length), len(resets)

    ret, length, traced = run()
    assert traced == 1  # the initial reset (vmapped: traced once); none in the step
    monkeypatch.delattr(BraxEnv, "advance_batch")  # the env as it was: step_batch resets
    want_ret, want_length, want_traced = run()
    assert want_traced == 2  # and a fresh reset in the step's auto-reset
    assert (length < 40).any() and (length == want_length).all()
    np.testing.assert_allclose(ret, want_ret, rtol=1e-6)
