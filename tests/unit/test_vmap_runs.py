"""``ppox.parallel.vmap_runs``: one run goes through the function unbatched (no size-1 vmap)
and gives what the vmap gives, batch axis included; several runs are the plain vmap."""

import jax
import jax.numpy as jnp
import numpy as np

from ppox.parallel import vmap_runs


def _fn(x, w, n):
    return {"y": jnp.tanh(x @ w) * n, "s": (x.sum(), x)}


def test_one_run_equals_the_vmap_and_keeps_the_batch_axis():
    x = jax.random.normal(jax.random.PRNGKey(0), (1, 5, 3))
    w = jax.random.normal(jax.random.PRNGKey(1), (3, 4))
    vmapped = jax.vmap(_fn, in_axes=(0, None, None))(x, w, 2.0)
    one = vmap_runs(_fn, (0, None, None), 1)(x, w, 2.0)
    assert jax.tree.structure(one) == jax.tree.structure(vmapped)
    for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(vmapped), strict=True):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=1e-6)
    # the one run's function saw unbatched arguments: no batch dimension in its program
    jaxpr = jax.make_jaxpr(vmap_runs(_fn, (0, None, None), 1))(x, w, 2.0)
    dots = [e for e in jaxpr.eqns if e.primitive.name == "dot_general"]
    assert len(dots) == 1 and dots[0].outvars[0].aval.shape == (5, 4)


def test_a_batch_axis_other_than_the_first_is_sliced_where_it_is():
    x = jnp.arange(6.0).reshape(3, 1, 2)  # the batch of one on axis 1
    out = vmap_runs(lambda a: a * 2, (1,), 1)(x)
    np.testing.assert_array_equal(out, jax.vmap(lambda a: a * 2, in_axes=(1,))(x))


def test_several_runs_are_the_vmap():
    x = jax.random.normal(jax.random.PRNGKey(2), (3, 5, 3))
    w = jnp.ones((3, 4))
    got = vmap_runs(_fn, (0, None, None), 3)(x, w, 1.0)
    want = jax.vmap(_fn, in_axes=(0, None, None))(x, w, 1.0)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_array_equal(a, b)


def test_the_function_keeps_its_name():
    def chunk(x):
        return x

    assert vmap_runs(chunk, (0,), 1).__name__ == "chunk"
