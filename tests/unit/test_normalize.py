"""Running statistics against numpy."""

import jax.numpy as jnp
import numpy as np
import pytest

from ppox.normalize import RewardScaler, RunningMeanStd


def test_running_mean_std_matches_numpy_over_batches():
    rng = np.random.default_rng(0)
    batches = [rng.normal(loc=3.0, scale=2.0, size=(n, 3)).astype(np.float32)
               for n in (5, 17, 1, 40)]
    stats = RunningMeanStd.create((3,))
    for b in batches:
        stats = stats.update(jnp.asarray(b))
    allx = np.concatenate(batches)
    # the 1e-4 prior count (mean 0, var 1) shifts the result by ~1e-4 relative
    np.testing.assert_allclose(np.asarray(stats.mean), allx.mean(0), rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(np.asarray(stats.var), allx.var(0), rtol=1e-3, atol=1e-3)
    assert float(stats.count) == pytest.approx(len(allx), abs=1e-3)
    z = np.asarray(stats.normalize(jnp.asarray(allx)))
    np.testing.assert_allclose(z.mean(0), 0.0, atol=1e-2)
    np.testing.assert_allclose(z.std(0), 1.0, atol=1e-2)


def test_normalize_clips():
    stats = RunningMeanStd(jnp.zeros(1), jnp.ones(1), jnp.float32(1.0))
    assert float(stats.normalize(jnp.array([100.0]), 5.0)[0]) == 5.0


def test_reward_scaler_matches_numpy_loop():
    rng = np.random.default_rng(1)
    T, B, gamma = 20, 3, 0.9
    reward = rng.normal(size=(T, B)).astype(np.float32)
    done = rng.random((T, B)) < 0.2
    scaler = RewardScaler.create(B)
    scaler, scaled = scaler.update_and_scale(jnp.asarray(reward), jnp.asarray(done), gamma)
    g = np.zeros(B)
    returns = []
    for t in range(T):
        g = g * gamma + reward[t]
        returns.append(g.copy())
        g = np.where(done[t], 0.0, g)
    returns = np.array(returns)
    np.testing.assert_allclose(np.asarray(scaler.ret), g, rtol=1e-5, atol=1e-6)
    var = returns.var()
    np.testing.assert_allclose(float(scaler.stats.var), var, rtol=1e-3)
    np.testing.assert_allclose(np.asarray(scaled), np.clip(reward / np.sqrt(var + 1e-8), -10, 10),
                               rtol=1e-3)
