"""Run keys made on the host: the same bits as ``jax.random.PRNGKey``, with and without
x64, and JAX's own keys wherever the host's would differ."""

import jax
import numpy as np
import pytest

from ppox.host.run import host_prng_key, run_keys

SEEDS = (0, 1, 7, 42, 12345, 2**31 - 1, -1, -7, -(2**31))


@pytest.mark.parametrize("seed", SEEDS)
def test_host_keys_are_prngkeys_bits(seed):
    key = host_prng_key(seed)
    assert key is not None and key.dtype == np.uint32
    np.testing.assert_array_equal(key, np.asarray(jax.random.PRNGKey(seed)))


def test_run_keys_stack_them_and_keep_jaxs_outside_int32():
    keys = run_keys(list(SEEDS))
    np.testing.assert_array_equal(
        np.asarray(keys), np.stack([np.asarray(jax.random.PRNGKey(s)) for s in SEEDS]))
    assert host_prng_key(2**31) is None and host_prng_key(-(2**31) - 1) is None
    # there the batch is JAX's own keys
    np.testing.assert_array_equal(
        np.asarray(run_keys([1, 2**31])),
        np.stack([np.asarray(jax.random.PRNGKey(1)), np.asarray(jax.random.PRNGKey(2**31))]))


X64 = r"""
import jax, numpy as np
from ppox.host.run import host_prng_key
for seed in (0, 5, -5, 2**31, 2**40 + 3, -(2**40), 2**63 - 1, -(2**63)):
    np.testing.assert_array_equal(host_prng_key(seed), np.asarray(jax.random.PRNGKey(seed)))
assert host_prng_key(2**63) is None
print("ok")
"""


def test_host_keys_with_x64(passes_in_a_process):
    passes_in_a_process(X64, JAX_ENABLE_X64="1")


RBG = r"""
import jax, numpy as np
from ppox.host.run import host_prng_key, run_keys
assert host_prng_key(3) is None
np.testing.assert_array_equal(np.asarray(run_keys([3])), np.asarray(jax.random.PRNGKey(3))[None])
assert host_prng_key(2**63) is None
print("ok")
"""


def test_another_prng_implementation_keeps_jaxs_keys(passes_in_a_process):
    passes_in_a_process(RBG, JAX_DEFAULT_PRNG_IMPL="rbg")
