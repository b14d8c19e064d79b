"""``Policy.values``: the critic's values of a rollout and the values each step bootstraps
from. From ``ppox.nets.TRUNCATED_PASS_ROWS`` rollout rows on they come without a second pass
over every final observation; each test runs both ways (the threshold patched)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ppox.nets
from ppox import HParams, PPOConfig
from ppox.host.run import compiled_programs, train_runs
from ppox.trainer import build


@pytest.fixture(params=["truncated_pass", "two_passes"])
def path(request, monkeypatch):
    """Both ways of computing the bootstrap values, whatever the rollout's size."""
    monkeypatch.setattr(ppox.nets, "TRUNCATED_PASS_ROWS",
                        0 if request.param == "truncated_pass" else 10**12)
    return request.param


def _rollout(key, t: int, b: int, dim: int, truncated_rows: int):
    """Observations where ``final_obs_t`` is the next observation unless the step was
    truncated (then a pre-reset observation of its own), with ``truncated_rows`` of the
    ``t * b`` steps truncated."""
    k_obs, k_next, k_final, k_pick = jax.random.split(key, 4)
    obs = jax.random.normal(k_obs, (t, b, dim))
    next_obs = jax.random.normal(k_next, (b, dim))
    following = jnp.concatenate([obs[1:], next_obs[None]])
    picked = jax.random.choice(k_pick, t * b, (truncated_rows,), replace=False)
    truncated = jnp.zeros(t * b, bool).at[picked].set(True).reshape(t, b)
    own = jax.random.normal(k_final, (t, b, dim))
    final_obs = jnp.where(truncated[..., None], own, following)
    return obs, next_obs, final_obs, truncated


@pytest.mark.parametrize("truncated_rows", [0, 3, 4, 9, 64])
def test_bootstrap_values_are_the_final_observations_values(truncated_rows, path):
    """Against the plain definition, V(final_obs_t) at every step that is not terminated:
    no truncation, fewer truncated rows than envs (one block), exactly one block, several
    blocks, and every step truncated."""
    policy = build(PPOConfig(env_id="CartPole-v1", num_envs=4, num_steps=16)).policy
    params = policy.init(jax.random.PRNGKey(0))
    t, b = 16, 4
    obs, next_obs, final_obs, truncated = _rollout(jax.random.PRNGKey(truncated_rows), t, b,
                                                   4, truncated_rows)
    values = jax.jit(lambda *a: policy.values(params, *a)[:2])
    value, bootstrap = values(obs, final_obs, policy.initial_carry((b,)), None, next_obs,
                              truncated)
    np.testing.assert_allclose(value, policy.value(params, obs), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(bootstrap, policy.value(params, final_obs), rtol=1e-6,
                               atol=1e-6)
    assert int(truncated.sum()) == truncated_rows


def test_bootstrap_values_under_vmap_over_runs(path):
    """Runs vmapped (seeds, sweeps) with different numbers of truncated rows each: every run
    gets its own final observations' values."""
    policy = build(PPOConfig(env_id="CartPole-v1", num_envs=4, num_steps=8)).policy
    params = policy.init(jax.random.PRNGKey(1))
    runs = [_rollout(jax.random.PRNGKey(10 + i), 8, 4, 4, n) for i, n in enumerate((0, 5, 13))]
    obs, next_obs, final_obs, truncated = (jnp.stack(x) for x in zip(*runs, strict=True))
    carry = policy.initial_carry((4,))
    _, bootstrap, _ = jax.jit(jax.vmap(
        lambda o, f, n, tr: policy.values(params, o, f, carry, None, n, tr)))(
        obs, final_obs, next_obs, truncated)
    np.testing.assert_allclose(bootstrap, policy.value(params, final_obs), rtol=1e-6,
                               atol=1e-6)


def test_training_is_the_same_both_ways(monkeypatch):
    """Pendulum's 200-step time limit truncates every env inside these 5 rollouts of 64
    steps: the run's parameters and metrics agree whichever way the bootstrap values came."""
    cfg = PPOConfig(env_id="Pendulum-v1", num_envs=4, num_steps=64, total_timesteps=4 * 64 * 5,
                    update_epochs=2, num_minibatches=2)
    out = {}
    for name, rows in (("truncated_pass", 0), ("two_passes", 10**12)):
        monkeypatch.setattr(ppox.nets, "TRUNCATED_PASS_ROWS", rows)
        compiled_programs.cache_clear()  # traced anew with this threshold
        out[name] = train_runs(cfg, [HParams()], [7], chunk_size=5)
    a, b = out["truncated_pass"], out["two_passes"]
    for x, y in zip(jax.tree.leaves(a.state.params), jax.tree.leaves(b.state.params),
                    strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(a.metrics["loss"], b.metrics["loss"], rtol=1e-4, atol=1e-5)
    assert a.metrics["episode_count"].sum() >= 4  # the time limit ended episodes
