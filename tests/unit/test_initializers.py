"""The LAPACK-free orthogonal initializer equals jax's, and is orthogonal."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ppox.initializers import orthogonal, orthogonal_kernels


@pytest.mark.parametrize("shape", [(4, 64), (64, 64), (64, 2), (64, 1), (17, 256), (3, 5, 7)])
@pytest.mark.parametrize("scale", [1.0, 0.01, 2**0.5])
def test_matches_jax_orthogonal(shape, scale):
    key = jax.random.PRNGKey(3)
    ours = np.asarray(orthogonal(scale)(key, shape, jnp.float32))
    ref = np.asarray(jax.nn.initializers.orthogonal(scale)(key, shape, jnp.float32))
    assert ours.shape == shape
    np.testing.assert_allclose(ours, ref, atol=2e-5 * scale, rtol=1e-4)


def _assert_orthogonal(w, scale=1.0):
    """``w / scale`` has orthonormal columns (tall) or rows (wide)."""
    w = np.asarray(w, np.float64) / scale
    gram = w.T @ w if w.shape[0] >= w.shape[1] else w @ w.T
    np.testing.assert_allclose(gram, np.eye(min(w.shape)), atol=1e-5)


def test_is_orthogonal():
    _assert_orthogonal(orthogonal()(jax.random.PRNGKey(0), (128, 64)))
    _assert_orthogonal(orthogonal()(jax.random.PRNGKey(0), (8, 64)))


def test_no_lapack_custom_call_in_the_program():
    hlo = jax.jit(lambda k: orthogonal()(k, (64, 64))).lower(jax.random.PRNGKey(0)).as_text()
    assert "lapack" not in hlo and "custom_call" not in hlo
    ref = jax.jit(lambda k: jax.nn.initializers.orthogonal()(k, (64, 64))).lower(
        jax.random.PRNGKey(0)).as_text()
    assert "lapack" in ref or "custom_call" in ref  # what we avoid is really there in jax's


@pytest.mark.parametrize("shapes", [[(4, 64), (64, 64), (64, 2)], [(17, 256), (256, 1)],
                                    [(3, 3)], [(8, 5), (5, 8), (1, 1)]])
def test_orthogonal_kernels_are_the_q_of_their_own_gaussian_block(shapes):
    key = jax.random.PRNGKey(7)
    scales = [0.5 + i for i in range(len(shapes))]
    ws = orthogonal_kernels(key, shapes, scales)
    dims = [(max(s), min(s)) for s in shapes]
    rows, cols = max(m for m, _ in dims), max(n for _, n in dims)
    blocks = np.asarray(jax.random.normal(key, (len(shapes), rows, cols)), np.float64)
    for i, (w, shape, (m, n), scale) in enumerate(zip(ws, shapes, dims, scales, strict=True)):
        assert w.shape == shape
        q, r = np.linalg.qr(blocks[i, :m, :n])
        q = q * np.sign(np.diag(r))  # the QR with R's diagonal positive
        expected = scale * (q.T if shape[0] < shape[1] else q)
        np.testing.assert_allclose(np.asarray(w), expected, atol=2e-5 * scale, rtol=1e-4)
        _assert_orthogonal(w, scale)


def test_policy_init_has_flax_tree_and_gains():
    from ppox.config import PPOConfig
    from ppox.envs import make_env
    from ppox.nets import make_policy

    env = make_env("Pendulum-v1")
    policy = make_policy(PPOConfig(env_id="Pendulum-v1", actor_hidden=(32, 16)), env.spec)
    params = policy.init(jax.random.PRNGKey(0), -0.5)
    dummy = jnp.zeros((1, *env.spec.obs_shape))
    widths = {"actor": (32, 16, env.spec.action_dim), "critic": (64, 64, 1)}
    for name, net in (("actor", policy.actor), ("critic", policy.critic)):
        # the tree flax's nn.Dense stack of the same widths would have
        flax_mlp = nn.Sequential([nn.Dense(w) for w in widths[name]])
        flax_tree = jax.eval_shape(flax_mlp.init, jax.random.PRNGKey(0), dummy)["params"]
        flax_tree = {k.replace("layers_", "Dense_"): v for k, v in flax_tree.items()}
        assert jax.tree.map(lambda x: x.shape, params[name]) == jax.tree.map(
            lambda x: x.shape, flax_tree)
        for i, gain in enumerate(net.gains()):
            _assert_orthogonal(params[name][f"Dense_{i}"]["kernel"], gain)
            assert not np.asarray(params[name][f"Dense_{i}"]["bias"]).any()
    assert policy.actor.gains()[-1] == 0.01 and policy.critic.gains()[-1] == 1.0
    np.testing.assert_array_equal(np.asarray(params["log_std"]), -0.5)
    # the actor and critic get different draws
    assert not np.allclose(np.asarray(params["actor"]["Dense_0"]["kernel"])[:, :16],
                           np.asarray(params["critic"]["Dense_0"]["kernel"])[:, :16])
