"""The minibatch shuffle: every row once per epoch, and every order about equally likely,
on every path (one packed single-array sort up to 4096 rows, several rounds of them above,
a key-value sort past 4 rounds)."""

import itertools

import jax
import numpy as np
import pytest

from ppox.algo.sgd import _packed_rounds, permutations


@pytest.mark.parametrize("n", [1, 2, 5, 512, 4096, 4097, 6000])
def test_each_epoch_is_a_permutation_of_the_rows(n):
    perm = np.asarray(permutations(jax.random.PRNGKey(0), 3, n))
    assert perm.shape == (3, n) and perm.dtype == np.int32
    for row in perm:
        np.testing.assert_array_equal(np.sort(row), np.arange(n))
    if n >= 512:  # two equal orders of 512 rows: p = 1 / 512!
        assert not np.array_equal(perm[0], perm[1])


@pytest.mark.parametrize("rounds", [0, 1, 2, 3])
def test_every_path_is_a_permutation(rounds):
    perm = np.asarray(permutations(jax.random.PRNGKey(4), 5, 1000, rounds=rounds))
    for row in perm:
        np.testing.assert_array_equal(np.sort(row), np.arange(1000))


def test_rounds_grow_with_the_rows_until_the_key_value_sort():
    assert [_packed_rounds(n) for n in (1, 512, 4096, 4097, 131_072, 131_073, 2**22, 2**23)] \
        == [1, 1, 1, 2, 2, 3, 4, 0]


@pytest.mark.parametrize("rounds", [None, 0, 2, 3])
def test_orders_are_uniform_and_epochs_independent(rounds):
    epochs = 24_000
    perm = np.asarray(permutations(jax.random.PRNGKey(1), epochs, 4, rounds=rounds))
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


def test_rounds_leave_no_visible_ties():
    # 131,072 rows leave 15 random bits per packed key: one round ties ~4 rows per key,
    # kept in index order, so most neighbours in the order increase; two rounds (the
    # default here) order by 30 random bits and neighbours increase half the time
    n = 131_072
    rising = lambda p: float(np.mean(np.diff(p[0]) > 0))
    assert rising(np.asarray(permutations(jax.random.PRNGKey(7), 1, n, rounds=1))) > 0.7
    assert abs(rising(np.asarray(permutations(jax.random.PRNGKey(7), 1, n))) - 0.5) < 0.01
