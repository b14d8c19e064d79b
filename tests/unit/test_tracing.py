"""``trace_once``, and the trainer tracing the env step and the update one time each."""

import jax
import jax.numpy as jnp
import numpy as np

import ppox.rollout
import ppox.trainer
from ppox.config import HParams, PPOConfig
from ppox.tracing import CachedTrace, trace_once

TINY = PPOConfig(num_envs=2, num_steps=8, total_timesteps=2 * 8 * 2, update_epochs=1,
                 num_minibatches=1)


def test_trace_once_runs_the_python_once_and_gives_shapes_and_values():
    calls = []

    def body(carry, x, scale):
        calls.append(1)
        new = carry * scale + x
        return new, {"sum": jnp.sum(new), "first": new[0].astype(jnp.int32)}

    def program(carry, xs, scale):
        fn, shapes = trace_once(lambda c, x: body(c, x, scale), carry, xs[0])
        assert shapes[1]["sum"].shape == () and shapes[1]["first"].dtype == jnp.int32
        return jax.lax.scan(fn, carry, xs)

    carry, xs, scale = jnp.ones(3), jnp.arange(12.0).reshape(4, 3), jnp.float32(2.0)
    got = jax.jit(program)(carry, xs, scale)
    assert len(calls) == 1  # the scan evaluated the traced jaxpr, no second Python trace
    calls.clear()
    want = jax.lax.scan(lambda c, x: body(c, x, scale), carry, xs)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_array_equal(np.asarray(g), np.asarray(w))
    # under vmap the closed-over traced ``scale`` is per batch member
    scales = jnp.array([1.0, 3.0])
    batched = jax.jit(jax.vmap(program, in_axes=(None, None, 0)))(carry, xs, scales)
    for i, s in enumerate(scales):
        one = jax.lax.scan(lambda c, x, s=s: body(c, x, s), carry, xs)
        np.testing.assert_allclose(np.asarray(batched[0][i]), np.asarray(one[0]))


def _count_calls(monkeypatch, module, name: str) -> list[int]:
    """Wraps ``module.name`` to record each call (each trace, inside a jit)."""
    calls: list[int] = []
    real = getattr(module, name)

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, counting)
    return calls


def test_chunk_and_fused_program_trace_the_env_step_and_update_once(monkeypatch):
    """A second trace of the env step (brax, Playground) costs seconds: each program traces
    it once, and the chunk traces the update once."""
    steps = _count_calls(monkeypatch, ppox.rollout, "step_envs")
    updates = _count_calls(monkeypatch, ppox.trainer, "update_step")
    hp, key = HParams().as_arrays(), jax.random.PRNGKey(0)
    state = jax.eval_shape(ppox.trainer.make_init(TINY), key, hp)
    jax.jit(ppox.trainer.make_train_chunk(TINY, 2)).trace(state, hp, jnp.int32(2))
    assert (len(steps), len(updates)) == (1, 1)
    steps.clear()
    updates.clear()
    jax.jit(ppox.trainer.make_train(TINY)).trace(key, hp)
    assert (len(steps), len(updates)) == (1, 1)


def test_cached_trace_traces_once_across_programs_and_matches():
    calls = []

    def reset(key):
        calls.append(1)
        a, b = jax.random.split(key)
        return {"q": jax.random.uniform(a, (3,)), "n": jax.random.randint(b, (), 0, 9)}

    cached = CachedTrace(reset)
    keys = jax.random.split(jax.random.PRNGKey(3), 4)
    shape = jax.eval_shape(cached, keys[0])
    assert shape["q"].shape == (3,) and len(calls) == 1
    batched = jax.jit(jax.vmap(cached))(keys)
    one = jax.jit(lambda k: cached(k)["q"] * 2.0)(keys[1])
    assert len(calls) == 1  # eval_shape, vmap under jit and another jit: one trace
    np.testing.assert_array_equal(np.asarray(batched["q"]), np.asarray(jax.vmap(reset)(keys)["q"]))
    np.testing.assert_array_equal(np.asarray(one), np.asarray(reset(keys[1])["q"] * 2.0))


def test_cached_trace_of_a_closure_over_a_tracer_is_not_cached():
    def program(x):
        cached = CachedTrace(lambda y: y * x)  # closes over the traced x
        return cached(jnp.ones(2)) + cached(jnp.ones(2))

    assert np.asarray(jax.jit(program)(3.0)).tolist() == [6.0, 6.0]
    assert np.asarray(jax.jit(program)(5.0)).tolist() == [10.0, 10.0]
