"""GAE against a plain numpy loop, with terminations and truncations mid-rollout."""

import jax.numpy as jnp
import numpy as np
import pytest

from ppox.losses import gae


def gae_reference(reward, value, bootstrap, terminated, truncated, gamma, lam):
    """Textbook backward loop, one env at a time, written independently of ppox."""
    T, B = reward.shape
    adv = np.zeros((T, B))
    for b in range(B):
        running = 0.0
        for t in reversed(range(T)):
            next_v = 0.0 if terminated[t, b] else bootstrap[t, b]
            delta = reward[t, b] + gamma * next_v - value[t, b]
            if terminated[t, b] or truncated[t, b]:
                running = delta  # the episode ends here: nothing flows back from t+1
            else:
                running = delta + gamma * lam * running
            adv[t, b] = running
    return adv, adv + value


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gae_matches_numpy_loop_with_terminations_and_truncations(seed):
    rng = np.random.default_rng(seed)
    T, B = 37, 5
    reward = rng.normal(size=(T, B)).astype(np.float32)
    value = rng.normal(size=(T, B)).astype(np.float32)
    bootstrap = rng.normal(size=(T, B)).astype(np.float32)
    terminated = rng.random((T, B)) < 0.1
    truncated = rng.random((T, B)) < 0.1
    # make sure both kinds (and both at once) occur in the middle of the rollout
    terminated[10, 0] = True
    truncated[10, 1] = True
    terminated[20, 2] = truncated[20, 2] = True
    assert terminated[1:-1].any() and truncated[1:-1].any()
    gamma, lam = 0.97, 0.9
    adv, ret = gae(jnp.asarray(reward), jnp.asarray(value), jnp.asarray(bootstrap),
                   jnp.asarray(terminated), jnp.asarray(truncated), gamma, lam)
    ref_adv, ref_ret = gae_reference(reward, value, bootstrap, terminated, truncated, gamma, lam)
    np.testing.assert_allclose(np.asarray(adv), ref_adv, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(ret), ref_ret, rtol=1e-5, atol=1e-5)


def test_gae_hand_computed():
    # One env, 3 steps, gamma = 0.5, lambda = 0.5 (so gamma * lambda = 0.25).
    # step 0: r=1, V=0.5, continues, bootstrap V(s1)=1.0
    #   delta0 = 1 + 0.5*1.0 - 0.5 = 1.0
    # step 1: r=0, V=1.0, truncated, bootstrap V(final_obs)=2.0
    #   delta1 = 0 + 0.5*2.0 - 1.0 = 0.0 ; A1 = delta1 = 0.0 (episode cut: no flow from t=2)
    # step 2: r=2, V=0.0, terminated (bootstrap 9.0 ignored)
    #   delta2 = 2 + 0 - 0 = 2.0 ; A2 = 2.0
    # A0 = delta0 + 0.25 * A1 = 1.0
    reward = jnp.array([[1.0], [0.0], [2.0]])
    value = jnp.array([[0.5], [1.0], [0.0]])
    bootstrap = jnp.array([[1.0], [2.0], [9.0]])
    terminated = jnp.array([[False], [False], [True]])
    truncated = jnp.array([[False], [True], [False]])
    adv, ret = gae(reward, value, bootstrap, terminated, truncated, 0.5, 0.5)
    np.testing.assert_allclose(np.asarray(adv)[:, 0], [1.0, 0.0, 2.0], atol=1e-7)
    np.testing.assert_allclose(np.asarray(ret)[:, 0], [1.5, 1.0, 2.0], atol=1e-7)


def test_truncation_bootstraps_but_termination_does_not():
    # Same transition, once truncated and once terminated: only the bootstrap differs.
    reward, value, boot = jnp.array([[1.0]]), jnp.array([[0.0]]), jnp.array([[10.0]])
    adv_trunc, _ = gae(reward, value, boot, jnp.array([[False]]), jnp.array([[True]]), 0.9, 1.0)
    adv_term, _ = gae(reward, value, boot, jnp.array([[True]]), jnp.array([[False]]), 0.9, 1.0)
    assert float(adv_trunc[0, 0]) == pytest.approx(1.0 + 0.9 * 10.0)
    assert float(adv_term[0, 0]) == pytest.approx(1.0)
