"""The minibatch shuffle: every row once per epoch, on both paths (one packed sort below
``FEISTEL_MIN_ROWS`` rows, the Feistel index shuffle from there, with cycle walking when the
row count is not a power of two), and orders that look uniform: every order of a few rows
about equally likely (the sort), and for the Feistel path each row's position, which rows
share a minibatch (rows whose indices differ in one bit included, the pairs a weak cipher
would keep together) and consecutive epochs statistically indistinguishable from uniform
at these sample sizes."""

import itertools

import jax
import numpy as np
import pytest

from ppox.algo.sgd import FEISTEL_MIN_ROWS, feistel_permutations, permutations


@pytest.mark.parametrize("n", [1, 2, 5, 255, 256, 300, 512, 4097, 6000, 65_537])
def test_each_epoch_is_a_permutation_of_the_rows(n):
    perm = np.asarray(permutations(jax.random.PRNGKey(0), 3, n))
    assert perm.shape == (3, n) and perm.dtype == np.int32
    for row in perm:
        np.testing.assert_array_equal(np.sort(row), np.arange(n))
    if n >= 256:  # two equal orders of 256 rows: p ~ 1 / 256!
        assert not np.array_equal(perm[0], perm[1])


def test_the_feistel_path_starts_at_its_threshold():
    key = jax.random.PRNGKey(3)
    n = FEISTEL_MIN_ROWS
    np.testing.assert_array_equal(permutations(key, 2, n), feistel_permutations(key, 2, n))
    assert not np.array_equal(permutations(key, 2, n - 1), feistel_permutations(key, 2, n - 1))


def test_a_vmapped_shuffle_is_each_run_s_own():
    # sweeps vmap the shuffle: the cycle walking's while loop then runs until every run's
    # rows are in range, and each run must still get the order of its own key
    keys = jax.random.split(jax.random.PRNGKey(8), 5)
    batched = np.asarray(jax.vmap(lambda k: permutations(k, 2, 1000))(keys))
    for k, got in zip(keys, batched, strict=True):
        np.testing.assert_array_equal(got, permutations(k, 2, 1000))


def test_small_batches_make_every_order_equally_likely():
    epochs = 24_000
    perm = np.asarray(permutations(jax.random.PRNGKey(1), epochs, 4))
    index = {p: i for i, p in enumerate(itertools.permutations(range(4)))}
    counts = np.bincount([index[tuple(r)] for r in perm.tolist()], minlength=24)
    expected = epochs / 24
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 60.0, (chi2, counts)  # 23 dof: p(chi2 > 60) ~ 4e-5 when uniform


def _chi2_independence(table: np.ndarray) -> tuple[float, int]:
    expected = np.outer(table.sum(1), table.sum(0)) / table.sum()
    return float(((table - expected) ** 2 / expected).sum()), \
        (table.shape[0] - 1) * (table.shape[1] - 1)


@pytest.mark.parametrize("n", [256, 384])  # a power of two, and cycle walking
def test_every_row_takes_every_position_bin_equally_often(n):
    epochs, bins = 40_000, 16
    perm = np.asarray(feistel_permutations(jax.random.PRNGKey(2), epochs, n))
    position = np.argsort(perm, axis=1)  # [epoch, row]
    table = np.zeros((n, bins))
    for row in range(n):
        table[row] = np.bincount(position[:, row] * bins // n, minlength=bins)
    chi2, dof = _chi2_independence(table)
    assert abs(chi2 - dof) < 6 * np.sqrt(2 * dof), (chi2, dof)


def test_rows_one_bit_apart_share_a_minibatch_as_often_as_any_pair():
    n, minibatches, epochs = 512, 4, 4_000
    perm = np.asarray(feistel_permutations(jax.random.PRNGKey(5), epochs, n))
    batch = np.argsort(perm, axis=1) * minibatches // n  # [epoch, row] -> its minibatch
    size = n // minibatches
    p = (size - 1) / (n - 1)
    rows = np.arange(n)
    for bit in range(9):
        together = np.mean(batch[:, rows] == batch[:, rows ^ (1 << bit)])
        se = np.sqrt(p * (1 - p) / (n * epochs))
        assert abs(together - p) < 6 * se, (bit, together, p)


def test_consecutive_epochs_are_independent():
    n, epochs, bins = 1024, 2_000, 8
    perm = np.asarray(feistel_permutations(jax.random.PRNGKey(6), epochs, n))
    position = np.argsort(perm, axis=1) * bins // n
    table = np.zeros((bins, bins))
    np.add.at(table, (position[:-1].ravel(), position[1:].ravel()), 1)
    chi2, _ = _chi2_independence(table)  # 49 dof: p(chi2 > 100) ~ 3e-5
    assert chi2 < 100.0, chi2


def test_neighbours_in_a_large_order_rise_half_the_time():
    perm = np.asarray(permutations(jax.random.PRNGKey(7), 4, 131_072))
    assert abs(float(np.mean(np.diff(perm, axis=1) > 0)) - 0.5) < 0.005
    # and the first minibatch draws from the whole batch, not a block of it
    counts = np.bincount(perm[:, :32_768].ravel() // 8_192, minlength=16)
    assert counts.min() > 0.9 * counts.mean()
