"""Clipped surrogate, value loss, entropy and advantage normalization on hand-computed cases."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from ppox.distributions import Categorical
from ppox.losses import explained_variance, normalize_advantages, ppo_clip_loss, value_loss


def test_clip_loss_hand_values():
    # ratios r = exp(logp - old) = [1.5, 0.5, 1.0, 1.1], eps = 0.2
    # A = [1, 1, -2, -1]
    # row0: min(1.5*1, 1.2*1) = 1.2      (clipped, counts as clipped)
    # row1: min(0.5*1, 0.8*1) = 0.5      (unclipped term is smaller; |r-1|>eps)
    # row2: min(1.0*-2, 1.0*-2) = -2.0
    # row3: min(1.1*-1, 1.1*-1) = -1.1
    # loss = -mean([1.2, 0.5, -2.0, -1.1]) = -(-1.4/4) = 0.35 ; clip_frac = 2/4
    old = jnp.zeros(4)
    logp = jnp.log(jnp.array([1.5, 0.5, 1.0, 1.1]))
    adv = jnp.array([1.0, 1.0, -2.0, -1.0])
    loss, (kl, clip_frac) = ppo_clip_loss(logp, old, adv, 0.2)
    assert float(loss) == pytest.approx(0.35, abs=1e-6)
    assert float(clip_frac) == pytest.approx(0.5)
    # approx KL = mean((r - 1) - log r)
    r = np.array([1.5, 0.5, 1.0, 1.1])
    assert float(kl) == pytest.approx(np.mean((r - 1) - np.log(r)), abs=1e-6)


def test_value_loss_clipped_and_unclipped():
    # V = [2.0, 0.0], old = [1.0, 0.0], R = [3.0, 1.0], eps = 0.5
    # clipped V = old + clip(V - old, -0.5, 0.5) = [1.5, 0.0]
    # row0: max((2-3)^2, (1.5-3)^2) = max(1, 2.25) = 2.25
    # row1: max((0-1)^2, (0-1)^2) = 1
    # clipped loss = 0.5 * mean([2.25, 1]) = 0.8125 ; unclipped = 0.5 * mean([1, 1]) = 0.5
    v, old, ret = jnp.array([2.0, 0.0]), jnp.array([1.0, 0.0]), jnp.array([3.0, 1.0])
    assert float(value_loss(v, old, ret, 0.5, clip=True)) == pytest.approx(0.8125)
    assert float(value_loss(v, old, ret, 0.5, clip=False)) == pytest.approx(0.5)


def test_categorical_entropy_hand_value():
    # uniform over 4 actions: entropy = log 4; a one-hot-ish distribution: ~0
    ent = Categorical(jnp.zeros((1, 4))).entropy()
    assert float(ent[0]) == pytest.approx(math.log(4.0), abs=1e-6)
    # p = [0.5, 0.25, 0.25]: H = 0.5 ln2 + 2 * 0.25 ln4 = 1.5 ln 2
    logits = jnp.log(jnp.array([0.5, 0.25, 0.25]))
    assert float(Categorical(logits).entropy()) == pytest.approx(1.5 * math.log(2.0), abs=1e-6)


def test_advantage_normalization_is_safe_for_one_element():
    out = normalize_advantages(jnp.array([3.7]))
    assert np.isfinite(np.asarray(out)).all()
    assert float(out[0]) == 0.0
    x = jnp.array([1.0, 2.0, 3.0, 4.0])
    y = np.asarray(normalize_advantages(x))
    assert y.mean() == pytest.approx(0.0, abs=1e-6)
    assert y.std() == pytest.approx(1.0, abs=1e-5)


def test_explained_variance():
    t = jnp.array([1.0, 2.0, 3.0, 4.0])
    assert float(explained_variance(t, t)) == pytest.approx(1.0)
    assert float(explained_variance(jnp.full(4, 2.5), t)) == pytest.approx(0.0, abs=1e-6)
    assert float(explained_variance(t, jnp.ones(4))) == 0.0  # no variance: 0, not NaN
