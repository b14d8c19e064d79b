"""Torsos: the CNN and the GRU against numpy references, their initialization, the torso
choice, hidden-state resets, and the update's replay of a recurrent rollout."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ppox.algo.base import AlgoSetup
from ppox.algo.ppo import make_batch, ppo_loss
from ppox.algo.sgd import minibatches, permutations
from ppox.config import ConfigError, HParams, PPOConfig
from ppox.initializers import orthogonal_kernels
from ppox.losses import gae
from ppox.nets import CNNTorso, GRUTorso, MLPTorso, Network, make_policy, make_torso
from ppox.parallel.layout import SINGLE
from ppox.rollout import RolloutContext, collect, init_env_carry, to_rollout
from ppox.trainer import build, env_for


def _orthonormal(w, gain):
    w = np.asarray(w, np.float64) / gain
    gram = w.T @ w if w.shape[0] >= w.shape[1] else w @ w.T
    np.testing.assert_allclose(gram, np.eye(min(w.shape)), atol=1e-5)


# --------------------------------------------------------------------------------------
# CNN


@pytest.mark.parametrize("batch", [(), (5,), (3, 2)])
def test_cnn_output_shapes(batch):
    torso = CNNTorso((10, 10, 4), channels=(16, 8), dense=(64, 32))
    assert torso.feature_map == (6, 6, 8) and torso.out_dim == 32
    net = Network(torso, 3, 0.01)
    params = net.init(jax.random.PRNGKey(0))
    x = jnp.ones((*batch, 10, 10, 4))
    features, carry = torso.apply(params, x)
    assert features.shape == (*batch, 32) and carry == ()
    assert net.apply(params, x)[0].shape == (*batch, 3)


def _conv_reference(x, kernel, bias):
    """``VALID`` 3x3 convolution as patch @ matrix, the patch flattened as (kh, kw, cin)."""
    kh, kw, cin, cout = kernel.shape
    h, w = x.shape[1] - kh + 1, x.shape[2] - kw + 1
    out = np.zeros((x.shape[0], h, w, cout))
    matrix = kernel.reshape(kh * kw * cin, cout)
    for i in range(h):
        for j in range(w):
            out[:, i, j] = x[:, i:i + kh, j:j + kw].reshape(x.shape[0], -1) @ matrix + bias
    return out


def test_cnn_matches_a_numpy_convolution_and_dense():
    torso = CNNTorso((7, 6, 3), channels=(5,), dense=(4,), activation="relu")
    rng = np.random.default_rng(0)
    params = torso.build(orthogonal_kernels(jax.random.PRNGKey(1), torso.matrices(),
                                            torso.gains()))
    params = jax.tree.map(lambda p: p + rng.normal(size=p.shape).astype(np.float32), params)
    x = rng.normal(size=(2, 7, 6, 3)).astype(np.float32)
    p = jax.tree.map(np.asarray, params)
    h = np.maximum(_conv_reference(x, p["Conv_0"]["kernel"], p["Conv_0"]["bias"]), 0.0)
    ref = np.maximum(h.reshape(2, -1) @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"], 0.0)
    out, _ = torso.apply(params, jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(out), ref, rtol=1e-4, atol=1e-4)


def test_conv_as_patch_matmul_equals_flax_conv_also_under_vmap():
    import flax.linen as nn

    from ppox.nets.cnn import conv

    key_k, key_x = jax.random.split(jax.random.PRNGKey(4))
    params = {"kernel": jax.random.normal(key_k, (2, 3, 3, 5, 7)),
              "bias": jnp.arange(14.0).reshape(2, 7)}
    x = jax.random.normal(key_x, (2, 4, 9, 8, 5))
    ref = jax.vmap(lambda p, v: nn.Conv(7, (3, 3), padding="VALID").apply({"params": p}, v))
    np.testing.assert_allclose(np.asarray(jax.vmap(conv)(params, x)),
                               np.asarray(ref(params, x)), rtol=1e-4, atol=1e-4)


def test_cnn_init_orthogonal_patch_matrices_from_one_draw_and_zero_biases():
    torso = CNNTorso((10, 10, 4), channels=(16, 32), dense=(128,))
    net = Network(torso, 6, 0.01)
    key = jax.random.PRNGKey(3)
    params = net.init(key)
    assert torso.matrices() == [(36, 16), (144, 32), (6 * 6 * 32, 128)]
    expected = orthogonal_kernels(key, [*torso.matrices(), (128, 6)], net.gains())
    for i, (name, cin) in enumerate([("Conv_0", 4), ("Conv_1", 16)]):
        kernel = params[name]["kernel"]
        assert kernel.shape == (3, 3, cin, expected[i].shape[1])
        matrix = np.asarray(kernel).reshape(9 * cin, -1)
        np.testing.assert_array_equal(matrix, np.asarray(expected[i]))
        _orthonormal(matrix, np.sqrt(2.0))
    _orthonormal(params["Dense_0"]["kernel"], np.sqrt(2.0))
    _orthonormal(params["Dense_1"]["kernel"], 0.01)
    for layer in params.values():
        np.testing.assert_array_equal(np.asarray(layer["bias"]), 0.0)


# --------------------------------------------------------------------------------------
# GRU


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _gru_reference(p, x, h):
    """One GRU step (flax's GRUCell equations) in numpy."""
    def lin(name, v):
        return v @ p[name]["kernel"] + p[name].get("bias", 0.0)
    r = _sigmoid(lin("ir", x) + lin("hr", h))
    z = _sigmoid(lin("iz", x) + lin("hz", h))
    n = np.tanh(lin("in", x) + r * lin("hn", h))
    return (1.0 - z) * n + z * h


def _gru(size=8, obs=5, hidden=(6,)):
    torso = GRUTorso(MLPTorso((obs,), hidden), size)
    params = Network(torso, 2, 0.01).init(jax.random.PRNGKey(0))
    return torso, params


def test_gru_step_matches_a_numpy_gru_after_the_mlp():
    torso, params = _gru()
    rng = np.random.default_rng(1)
    params = jax.tree.map(lambda p: p + 0.3 * rng.normal(size=p.shape).astype(np.float32),
                          params)
    x = rng.normal(size=(4, 5)).astype(np.float32)
    h = rng.normal(size=(4, 8)).astype(np.float32)
    p = jax.tree.map(np.asarray, params)
    features = np.tanh(x @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"])
    ref = _gru_reference(p["GRUCell_0"], features, h)
    out, carry = torso.apply(params, jnp.asarray(x), jnp.asarray(h))
    np.testing.assert_allclose(np.asarray(carry), ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(carry))


def test_gru_init_orthogonal_and_zero_biases():
    torso, params = _gru(size=8, obs=5, hidden=(6,))
    gru = params["GRUCell_0"]
    for name in ("ir", "iz", "in"):
        assert gru[name]["kernel"].shape == (6, 8)
        _orthonormal(gru[name]["kernel"], 1.0)
        np.testing.assert_array_equal(np.asarray(gru[name]["bias"]), 0.0)
    for name in ("hr", "hz", "hn"):
        assert gru[name]["kernel"].shape == (8, 8)
        _orthonormal(gru[name]["kernel"], 1.0)
    assert set(gru["hr"]) == {"kernel"} and set(gru["hn"]) == {"kernel", "bias"}
    assert torso.head_name == "Dense_1" and params["Dense_1"]["kernel"].shape == (8, 2)


def test_a_state_after_a_reset_equals_the_initial_state():
    torso, params = _gru()
    initial = torso.initial_carry((3,))
    np.testing.assert_array_equal(np.asarray(initial), 0.0)
    carry = jnp.asarray(np.random.default_rng(2).normal(size=(3, 8)), jnp.float32)
    reset = jnp.array([True, False, True])
    np.testing.assert_array_equal(np.asarray(torso.reset_carry(carry, reset)),
                                  np.asarray(jnp.where(reset[:, None], initial, carry)))
    x = jnp.ones((3, 5))
    _, after_reset = torso.apply(params, x, carry, reset)
    _, from_initial = torso.apply(params, x, initial, None)
    _, from_carry = torso.apply(params, x, carry, None)
    np.testing.assert_array_equal(np.asarray(after_reset[0]), np.asarray(from_initial[0]))
    np.testing.assert_array_equal(np.asarray(after_reset[2]), np.asarray(from_initial[2]))
    np.testing.assert_array_equal(np.asarray(after_reset[1]), np.asarray(from_carry[1]))


# --------------------------------------------------------------------------------------
# Choosing the torso


def test_auto_is_cnn_for_images_and_mlp_for_vectors():
    cfg = PPOConfig(env_id="Breakout-MinAtar")
    spec = env_for(cfg).spec
    assert spec.obs_shape == (10, 10, 4)  # the adapter keeps the frame's shape
    assert isinstance(make_torso(cfg, spec, cfg.actor_hidden), CNNTorso)
    assert isinstance(make_torso(cfg.replace(torso="mlp"), spec, (64,)), MLPTorso)
    flat = PPOConfig()
    assert isinstance(make_torso(flat, env_for(flat).spec, (64,)), MLPTorso)
    gru = make_torso(cfg.replace(recurrent=True, gru_size=32), spec, (64,))
    assert isinstance(gru, GRUTorso) and isinstance(gru.inner, CNNTorso) and gru.out_dim == 32


def test_cnn_on_a_flat_observation_is_one_line_before_any_compile():
    with pytest.raises(ConfigError) as err:
        build(PPOConfig(env_id="CartPole-v1", torso="cnn"))
    msg = str(err.value)
    assert "\n" not in msg and "torso='cnn'" in msg and "(4,)" in msg and "--torso mlp" in msg
    with pytest.raises(ConfigError, match="at least 11x11"):
        build(PPOConfig(env_id="Breakout-MinAtar", cnn_channels=(8, 8, 8, 8, 8)))


def test_recurrent_minibatches_must_divide_the_envs():
    with pytest.raises(ConfigError) as err:
        build(PPOConfig(recurrent=True, num_envs=6, num_minibatches=4))
    assert "\n" not in str(err.value) and "divides 6" in str(err.value)
    build(PPOConfig(recurrent=True, num_envs=8, num_minibatches=4))


# --------------------------------------------------------------------------------------
# A recurrent rollout and its replay in the update


def _recurrent_rollout(num_envs=4, num_steps=48, seed=0, env_id="CartPole-v1"):
    cfg = PPOConfig(env_id=env_id, recurrent=True, gru_size=16, actor_hidden=(16,),
                    critic_hidden=(16,), num_envs=num_envs, num_steps=num_steps, num_minibatches=2)
    env = env_for(cfg)
    policy = make_policy(cfg, env.spec)
    key_params, key_reset, key_roll = jax.random.split(jax.random.PRNGKey(seed), 3)
    params = policy.init(key_params)
    obs, env_state = jax.vmap(env.reset)(jax.random.split(key_reset, num_envs))
    start = init_env_carry(policy, obs, env_state)
    # a carry that is not the initial state, so the stored start carry matters
    start = start.replace(
        policy_carry=jax.tree.map(lambda c: c + 0.5, start.policy_carry),
        reset=jnp.zeros(num_envs, bool))
    ctx = RolloutContext(env=env, policy=policy, params=params, obs_stats=None, obs_clip=10.0)
    end, rec, _ = jax.jit(lambda s, k: collect(ctx, s, k, num_steps))(start, key_roll)
    rollout, _ = to_rollout(ctx, rec, rec.reward, start, end)
    return cfg, policy, params, rollout, end


def test_rollout_records_resets_where_episodes_start():
    _, _, _, rollout, end = _recurrent_rollout()
    done = np.asarray(rollout.terminated | rollout.truncated)
    reset = np.asarray(rollout.reset)
    assert done.any()  # CartPole episodes of a random policy end within 48 steps
    np.testing.assert_array_equal(reset[1:], done[:-1])
    np.testing.assert_array_equal(reset[0], False)
    np.testing.assert_array_equal(np.asarray(end.reset), done[-1])


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])  # discrete, continuous
def test_replay_reproduces_the_rollout_log_probs_and_values_before_the_first_step(env_id):
    cfg, policy, params, rollout, _ = _recurrent_rollout(env_id=env_id)
    dist = policy.dist(params, rollout.obs, rollout.carry, rollout.reset)
    np.testing.assert_allclose(np.asarray(dist.log_prob(rollout.action)),
                               np.asarray(rollout.log_prob), rtol=0, atol=1e-6)
    value = policy.value(params, rollout.obs, rollout.carry, rollout.reset)
    np.testing.assert_allclose(np.asarray(value), np.asarray(rollout.value), atol=1e-6)
    # without the stored start carry (or without the resets) the replay would differ
    fresh = policy.initial_carry((cfg.num_envs,))
    wrong = policy.dist(params, rollout.obs, fresh, rollout.reset).log_prob(rollout.action)
    assert np.abs(np.asarray(wrong) - np.asarray(rollout.log_prob)).max() > 1e-4
    if not bool(rollout.reset.any()):
        return  # Pendulum's 200-step episodes do not end within the rollout
    no_reset = policy.dist(params, rollout.obs, rollout.carry, jnp.zeros_like(rollout.reset))
    assert np.abs(np.asarray(no_reset.log_prob(rollout.action))
                  - np.asarray(rollout.log_prob)).max() > 1e-4


def test_sequence_minibatches_replay_from_their_stored_carries():
    from ppox.algo.base import UpdateContext
    from ppox.packing import unpack

    cfg, policy, params, rollout, _ = _recurrent_rollout()
    adv, ret = gae(rollout.reward, rollout.value, rollout.bootstrap_value, rollout.terminated,
                   rollout.truncated, 0.99, 0.95)
    batch = make_batch(rollout, adv, ret)
    assert batch.obs.shape[:2] == (cfg.num_steps, cfg.num_envs)  # sequences, not rows
    perm = permutations(jax.random.PRNGKey(5), 1, cfg.num_envs)[0]
    packed, carries = minibatches(cfg, batch, rollout.carry, perm)
    template = jax.tree.map(lambda x: x[:, :1], batch)
    ctx = UpdateContext(AlgoSetup(cfg, policy, SINGLE), HParams().as_arrays(), jnp.int32(0))
    for m in range(cfg.num_minibatches):
        mb = unpack(packed[m], template, batch_ndim=2).replace(
            carry=jax.tree.map(lambda c, m=m: c[m], carries))
        envs = np.asarray(perm).reshape(cfg.num_minibatches, -1)[m]
        np.testing.assert_array_equal(np.asarray(mb.log_prob),
                                      np.asarray(rollout.log_prob)[:, envs])
        replay = policy.dist(params, mb.obs, mb.carry, mb.reset).log_prob(mb.action)
        np.testing.assert_allclose(np.asarray(replay), np.asarray(mb.log_prob), atol=1e-6)
        _, aux = ppo_loss(ctx, params, mb, None)  # the first SGD step sees ratio 1
        assert abs(float(aux["approx_kl"])) < 1e-6 and float(aux["clip_frac"]) == 0.0


@pytest.mark.parametrize(("rows", "shape", "matmul"), [
    ((4,), (4, 64), False), ((4,), (64, 2), False), ((2, 4), (64, 1), False),  # few, thin
    ((4,), (64, 64), True), ((16,), (4, 64), True), ((128,), (64, 2), True)])  # wide or many
def test_dense_of_a_few_rows_through_a_thin_layer_is_a_sum_of_products(rows, shape, matmul):
    from ppox.nets.torso import dense

    k_x, k_w, k_b = jax.random.split(jax.random.PRNGKey(0), 3)
    params = {"kernel": jax.random.normal(k_w, shape), "bias": jax.random.normal(k_b, shape[1:])}
    x = jax.random.normal(k_x, (*rows, shape[0]))
    out = dense(params, x)
    want = np.asarray(x, np.float64) @ np.asarray(params["kernel"], np.float64) + np.asarray(
        params["bias"], np.float64)
    np.testing.assert_allclose(np.asarray(out), want, rtol=1e-5, atol=1e-5)
    prims = {e.primitive.name for e in jax.make_jaxpr(dense)(params, x).jaxpr.eqns}
    assert ("dot_general" in prims) == matmul, prims


@pytest.mark.parametrize("rows", [(128,), (3, 16), (64,)])
def test_dense_as_a_matmul_is_flax_dense_op_for_op(rows):
    """``dense`` writes flax's ``nn.Dense`` out (no module is built while tracing): the same
    equations, so the same program and the same bits."""
    import flax.linen as nn

    from ppox.nets.torso import dense

    k_x, k_w, k_b = jax.random.split(jax.random.PRNGKey(1), 3)
    params = {"kernel": jax.random.normal(k_w, (64, 32)), "bias": jax.random.normal(k_b, (32,))}
    x = jax.random.normal(k_x, (*rows, 64))

    def flax_dense(p, v):
        return nn.Dense(32).apply({"params": p}, v)

    def eqns(f):
        return [(e.primitive.name, tuple(map(str, e.outvars[0].aval.shape)))
                for e in jax.make_jaxpr(f)(params, x).jaxpr.eqns]

    assert eqns(dense) == eqns(flax_dense)
    np.testing.assert_array_equal(np.asarray(jax.jit(dense)(params, x)),
                                  np.asarray(jax.jit(flax_dense)(params, x)))
