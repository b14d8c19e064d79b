"""Log-probs and entropies against independent formulas."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ppox.distributions import Categorical, Gaussian, TanhGaussian, tanh_log_det_jacobian


def test_categorical_log_prob_matches_softmax_formula():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, 5)).astype(np.float32)
    actions = rng.integers(0, 5, size=6)
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    expected = np.log(probs[np.arange(6), actions])
    got = Categorical(jnp.asarray(logits)).log_prob(jnp.asarray(actions))
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5, atol=1e-6)


def test_categorical_samples_follow_probabilities():
    logits = jnp.log(jnp.array([0.2, 0.5, 0.3]))
    samples = Categorical(jnp.broadcast_to(logits, (20000, 3))).sample(jax.random.PRNGKey(0))
    freq = np.bincount(np.asarray(samples), minlength=3) / 20000
    np.testing.assert_allclose(freq, [0.2, 0.5, 0.3], atol=0.015)


def test_gaussian_log_prob_and_entropy_match_closed_forms():
    mean = np.array([[0.3, -1.0]], np.float32)
    log_std = np.array([[-0.5, 0.2]], np.float32)
    x = np.array([[1.0, 0.5]], np.float32)
    std = np.exp(log_std)
    expected = np.sum(-0.5 * ((x - mean) / std) ** 2 - np.log(std * math.sqrt(2 * math.pi)), -1)
    dist = Gaussian(jnp.asarray(mean), jnp.asarray(log_std))
    np.testing.assert_allclose(np.asarray(dist.log_prob(jnp.asarray(x))), expected, rtol=1e-6)
    ent = np.sum(0.5 * np.log(2 * math.pi * math.e * std**2), -1)
    np.testing.assert_allclose(np.asarray(dist.entropy()), ent, rtol=1e-6)


def test_tanh_gaussian_log_prob_matches_numerical_change_of_variables():
    # density of a = tanh(u): p_a(a) = p_u(u) / |da/du|, with da/du from finite differences
    mean, log_std = jnp.array([0.4]), jnp.array([-0.3])
    dist = TanhGaussian(mean, log_std)
    for u in [-2.5, -0.7, 0.0, 0.3, 1.9]:
        h = 1e-4
        dadu = (math.tanh(u + h) - math.tanh(u - h)) / (2 * h)
        std = math.exp(-0.3)
        log_pu = -0.5 * ((u - 0.4) / std) ** 2 - math.log(std * math.sqrt(2 * math.pi))
        expected = log_pu - math.log(dadu)
        got = float(dist.log_prob(jnp.array([u])))
        assert got == pytest.approx(expected, abs=1e-4), u


def test_tanh_gaussian_density_integrates_to_one():
    # integrate p_a over a in (-1, 1) numerically via the change of variables a = tanh(u)
    dist = TanhGaussian(jnp.array([0.5]), jnp.array([0.1]))
    a = np.linspace(-1 + 1e-6, 1 - 1e-6, 200001)
    logp = np.asarray(jax.vmap(lambda x: dist.log_prob_action(x[None]))(jnp.asarray(a)))
    total = np.trapezoid(np.exp(logp.astype(np.float64)), a)
    assert total == pytest.approx(1.0, abs=2e-3)


def test_tanh_gaussian_log_prob_is_finite_at_the_bounds():
    dist = TanhGaussian(jnp.array([0.0, 0.0]), jnp.array([0.0, 0.0]))
    for a in ([1.0, -1.0], [-1.0, 1.0], [1.0, 1.0]):
        assert np.isfinite(float(dist.log_prob_action(jnp.array(a))))
    # huge pre-tanh values (tanh rounds to exactly +-1 in float32) stay finite too
    assert np.isfinite(float(dist.log_prob(jnp.array([30.0, -30.0]))))
    assert np.isfinite(float(tanh_log_det_jacobian(jnp.array([1e4]))))
    # and the naive formula really would have failed there
    with np.errstate(divide="ignore"):
        assert not np.isfinite(np.log(1 - np.tanh(np.float32(30.0)) ** 2))


def test_tanh_gaussian_entropy_estimate_is_unbiased():
    # E[-log p(a)] estimated by Monte Carlo vs the one-sample estimator averaged over keys
    dist = TanhGaussian(jnp.array([0.2]), jnp.array([-0.4]))
    keys = jax.random.split(jax.random.PRNGKey(1), 40000)
    est = np.mean(np.asarray(jax.vmap(dist.entropy)(keys)))
    u = jax.vmap(dist.sample)(keys)
    mc = -np.mean(np.asarray(jax.vmap(dist.log_prob)(u)))
    assert est == pytest.approx(mc, abs=0.02)
    assert float(dist.entropy()) == pytest.approx(float(dist.base.entropy()))


@pytest.mark.parametrize("kind", ["categorical", "gaussian", "tanh_gaussian"])
def test_kl_matches_monte_carlo_and_is_zero_for_equal(kind):
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(7), 3)
    if kind == "categorical":
        p = Categorical(jax.random.normal(k1, (5,)))
        q = Categorical(jax.random.normal(k2, (5,)))
        exact = float(np.sum(np.exp(p._log_probs()) * (p._log_probs() - q._log_probs())))
    else:
        cls = Gaussian if kind == "gaussian" else TanhGaussian
        p = cls(jax.random.normal(k1, (3,)), 0.3 * jax.random.normal(k2, (3,)))
        q = cls(jnp.zeros(3), jnp.full(3, -0.2))
        exact = None
    samples = jax.vmap(p.sample)(jax.random.split(k3, 200_000))
    mc = float(jnp.mean(jax.vmap(p.log_prob)(samples) - jax.vmap(q.log_prob)(samples)))
    kl = float(p.kl(q))
    if exact is not None:
        np.testing.assert_allclose(kl, exact, rtol=1e-6)
    np.testing.assert_allclose(kl, mc, rtol=0.03, atol=3e-3)
    assert kl > 0
    np.testing.assert_allclose(float(p.kl(p)), 0.0, atol=1e-6)
