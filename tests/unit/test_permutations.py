"""The minibatch shuffle: every row once per epoch, and every order about equally likely,
on both paths (packed single-array sort up to 4096 rows, key-value sort above)."""

import itertools

import jax
import numpy as np
import pytest

from ppox.algo.sgd import permutations


@pytest.mark.parametrize("n", [1, 2, 5, 512, 4096, 4097, 6000])
def test_each_epoch_is_a_permutation_of_the_rows(n):
    perm = np.asarray(permutations(jax.random.PRNGKey(0), 3, n))
    assert perm.shape == (3, n) and perm.dtype == np.int32
    for row in perm:
        np.testing.assert_array_equal(np.sort(row), np.arange(n))
    if n >= 512:  # two equal orders of 512 rows: p = 1 / 512!
        assert not np.array_equal(perm[0], perm[1])


def test_orders_are_uniform_and_epochs_independent():
    epochs = 24_000
    perm = np.asarray(permutations(jax.random.PRNGKey(1), epochs, 4))
    index = {p: i for i, p in enumerate(itertools.permutations(range(4)))}
    counts = np.bincount([index[tuple(r)] for r in perm.tolist()], minlength=24)
    expected = epochs / 24
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 60.0, (chi2, counts)  # 23 dof: p(chi2 > 60) ~ 4e-5 when uniform


def test_large_batches_use_every_position_for_every_row():
    perm = np.asarray(permutations(jax.random.PRNGKey(2), 400, 5000))
    first = np.bincount(perm[:, 0], minlength=5000)
    assert first.max() <= 4  # 400 draws over 5000 rows: a stuck row would repeat
    mean_position = np.argsort(perm, axis=1).mean(axis=0)
    assert abs(mean_position.mean() - 2499.5) < 1e-6
    assert np.abs(mean_position - 2499.5).max() < 600  # sd of a row's mean ~72
