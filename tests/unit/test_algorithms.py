"""The PPO family's parts: the adaptive KL coefficient, TRPO's conjugate gradient, Fisher
products and line search, the clipped objective's KL early stop, the diagnostics measured in
the SGD steps, and the refusals."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ppox import HParams, PPOConfig, make_train
from ppox.algo.base import UpdateContext
from ppox.algo.ppo import Batch, objective, ppo_loss, whole_batch
from ppox.algo.ppo_kl import BETA_MAX, BETA_MIN, adapt_beta, with_behaviour
from ppox.algo.sgd import SGD, flat_params, permutations
from ppox.algo.trpo import PolicyObjective, conjugate_gradient, line_search, policy_step
from ppox.config import ConfigError
from ppox.losses import normalize_advantages
from ppox.parallel.layout import Layout
from ppox.parallel.split import split_parts
from ppox.trainer import build, init, update_step

TINY = PPOConfig(num_envs=2, num_steps=16, total_timesteps=2 * 16 * 2, update_epochs=2,
                 num_minibatches=2, actor_hidden=(4,), critic_hidden=(4,))


# ----------------------------------------------------------------------------- ppo_kl


@pytest.mark.parametrize(("kl", "expected"), [
    (0.001, 0.5),         # far below d_targ / 1.5: halve
    (0.01 / 1.5 - 1e-5, 0.5),
    (0.01 / 1.5, 1.0),    # on the bound: keep
    (0.01, 1.0),
    (0.015, 1.0),         # on 1.5 d_targ: keep
    (0.015 + 1e-5, 2.0),  # above: double
    (0.5, 2.0),
])
def test_beta_halves_and_doubles_by_the_papers_rule(kl, expected):
    beta = adapt_beta(jnp.float32(1.0), jnp.float32(kl), jnp.float32(0.01))
    assert float(beta) == pytest.approx(expected)
    # jitted, with a batch of coefficients: the same rule elementwise
    betas = jax.jit(adapt_beta)(jnp.array([0.25, 4.0]), jnp.float32(kl), 0.01)
    np.testing.assert_allclose(np.asarray(betas), np.array([0.25, 4.0]) * expected)


def test_beta_stays_within_its_bounds():
    # a long run of small KLs would underflow beta to 0, from which doubling never recovers
    beta = jnp.float32(1.0)
    for _ in range(200):
        beta = adapt_beta(beta, jnp.float32(0.0), 0.01)
    assert float(beta) == pytest.approx(BETA_MIN)
    assert float(adapt_beta(beta, jnp.float32(1.0), 0.01)) == pytest.approx(2 * BETA_MIN)
    assert float(adapt_beta(jnp.float32(BETA_MAX), jnp.float32(1.0), 0.01)) == BETA_MAX


def _one_update(cfg, hp):
    setup = build(cfg)
    state = init(setup, hp.as_arrays(), jax.random.PRNGKey(0))
    new, metrics = jax.jit(lambda s: update_step(setup, hp.as_arrays(), s))(state)
    return state, new, metrics


@pytest.mark.parametrize(("target", "factor"), [(1e-9, 2.0), (1e3, 0.5)])
def test_ppo_kl_update_adapts_beta_from_its_measured_kl(target, factor):
    hp = HParams(kl_coef=0.3, kl_penalty_target=target, learning_rate=1e-2)
    state, new, m = _one_update(TINY.replace(algo="ppo_kl"), hp)
    assert float(state.algo_state.beta) == pytest.approx(0.3)
    assert float(m["kl_beta"]) == pytest.approx(0.3)  # the coefficient this update used
    assert float(m["kl"]) > 0
    assert float(new.algo_state.beta) == pytest.approx(0.3 * factor)
    assert float(m["kl_beta_next"]) == pytest.approx(0.3 * factor)


# ----------------------------------------------------------------------------- trpo


def _policy_problem(cfg=TINY, advantages=None, seed=0):
    """A tiny CartPole policy and a batch of one rollout, as TRPO's objective sees it."""
    setup = build(cfg)
    hp = HParams().as_arrays()
    state = init(setup, hp, jax.random.PRNGKey(seed))
    ctx = UpdateContext(setup.algo_setup, hp, jnp.int32(0))
    t, b = cfg.num_steps, cfg.num_envs
    key_obs, key_act, key_adv = jax.random.split(jax.random.PRNGKey(seed + 1), 3)
    obs = jax.random.normal(key_obs, (t * b, *setup.env.spec.obs_shape))
    dist = setup.policy.dist(state.params, obs)
    action = dist.sample(key_act)
    adv = jax.random.normal(key_adv, (t * b,)) if advantages is None else advantages
    batch = Batch(obs=obs, action=action, log_prob=dist.log_prob(action),
                  value=jnp.zeros(t * b), advantages=adv, returns=jnp.zeros(t * b))
    batch = whole_batch(ctx, with_behaviour(ctx, batch, state.params, None))
    actor, critic = split_parts(state.params)
    flat, unravel = flat_params(actor)
    return ctx, batch, state.params, PolicyObjective(ctx=ctx, batch=batch, critic=critic,
                                                     unravel=unravel), flat


def test_conjugate_gradient_matches_numpy_solve_on_the_explicit_fisher():
    _, batch, _, obj, flat = _policy_problem()
    damping = 0.1
    n = flat.size
    fisher = np.asarray(jax.hessian(obj.kl)(flat), np.float64)  # the KL's Hessian at pi_old
    matrix = fisher + damping * np.eye(n)
    # the Fisher-vector product equals the explicit matrix times a vector
    v = np.asarray(jax.random.normal(jax.random.PRNGKey(5), (n,)))
    fvp = obj.fisher_product(flat, damping)
    np.testing.assert_allclose(np.asarray(fvp(jnp.asarray(v))), matrix @ v, rtol=1e-4,
                               atol=1e-5)
    g = np.asarray(jax.grad(obj.surrogate)(flat), np.float64)
    x = jax.jit(lambda b: conjugate_gradient(fvp, b, 2 * n))(jnp.asarray(g, jnp.float32))
    expected = np.linalg.solve(matrix, g)
    np.testing.assert_allclose(np.asarray(x), expected, rtol=2e-3,
                               atol=2e-3 * np.abs(expected).max())
    assert n > 20  # a real network (both layers and the head), not a toy vector
    assert batch.behaviour.logits.shape == (TINY.batch_size, 2)  # pi_old per row


def test_the_kl_hessian_is_the_fisher_information():
    # E_s sum_a pi(a|s) grad log pi(a|s) grad log pi(a|s)^T, by hand for a Categorical
    *_, obj, flat = _policy_problem()
    log_probs = lambda f: jax.nn.log_softmax(obj.dist(f).logits, axis=-1)  # [N, A]
    jac = np.asarray(jax.jacobian(log_probs)(flat), np.float64)  # [N, A, P]
    probs = np.exp(np.asarray(log_probs(flat), np.float64))
    fisher = np.einsum("na,nap,naq->pq", probs, jac, jac) / probs.shape[0]
    np.testing.assert_allclose(np.asarray(jax.hessian(obj.kl)(flat)), fisher, rtol=1e-3,
                               atol=1e-5)


def test_cg_on_a_converged_residual_stays_finite():
    a = jnp.diag(jnp.array([1.0, 2.0, 4.0]))
    x = conjugate_gradient(lambda v: a @ v, jnp.array([1.0, 0.0, 0.0]), 10)
    np.testing.assert_allclose(np.asarray(x), [1.0, 0.0, 0.0], atol=1e-6)


def test_accepted_step_keeps_the_kl_within_delta_and_improves_the_surrogate():
    delta = 0.005
    ctx, batch, params, obj, flat = _policy_problem()
    ctx = UpdateContext(ctx.setup, HParams(trpo_max_kl=delta).as_arrays(), ctx.update_idx)
    obj = PolicyObjective(ctx=ctx, batch=batch, critic=obj.critic, unravel=obj.unravel)
    actor, m = jax.jit(lambda p: policy_step(ctx, batch, p))(params)
    assert float(m["step_accepted"]) == 1.0
    new_flat = flat_params(actor)[0]
    kl = float(obj.kl(new_flat))
    assert 0 < kl <= delta
    assert float(m["kl"]) == pytest.approx(kl, rel=1e-4)
    assert float(obj.surrogate(new_flat)) > float(obj.surrogate(flat))
    assert float(m["surrogate_improvement"]) > 0
    assert 0 <= float(m["line_search_step"]) < ctx.cfg.max_backtracks


def test_a_rejected_search_leaves_the_parameters_unchanged():
    ctx, batch, params, obj, flat = _policy_problem()
    # zero advantages: no step can improve the surrogate
    flat_batch = batch.replace(advantages=jnp.zeros_like(batch.advantages))
    actor, m = jax.jit(lambda p: policy_step(ctx, flat_batch, p))(params)
    assert float(m["step_accepted"]) == 0.0 and float(m["line_search_step"]) == -1.0
    for a, b in zip(jax.tree.leaves(actor), jax.tree.leaves(split_parts(params)[0]),
                    strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # a step far outside the trust region, with too few halvings to get back inside it
    huge = 100.0 * jax.random.normal(jax.random.PRNGKey(2), flat.shape)
    hp = HParams(backtrack_coef=0.5).as_arrays()
    found = line_search(obj, flat, huge, obj.surrogate(flat), hp, max_backtracks=3)
    assert not bool(found.accepted) and int(found.i) == 3
    np.testing.assert_array_equal(np.asarray(found.flat), np.asarray(flat))


# ----------------------------------------------------------------------------- target-kl


SHORT = PPOConfig(num_envs=4, num_steps=32, total_timesteps=4 * 32 * 3, update_epochs=4,
                  num_minibatches=2)


def test_huge_target_kl_equals_plain_ppo_bit_for_bit():
    hp, key = HParams(learning_rate=1e-3), jax.random.PRNGKey(1)
    plain_state, plain = jax.jit(make_train(SHORT))(key, hp)
    stop_state, stop = jax.jit(make_train(SHORT.replace(target_kl=1e9)))(key, hp)
    for a, b in zip(jax.tree.leaves(plain_state.params), jax.tree.leaves(stop_state.params),
                    strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for name in plain:
        np.testing.assert_array_equal(np.asarray(plain[name]), np.asarray(stop[name]), name)
    assert np.all(np.asarray(stop["epochs_run"]) == SHORT.update_epochs)


def test_tiny_target_kl_runs_fewer_epochs():
    hp, key = HParams(learning_rate=1e-3), jax.random.PRNGKey(1)
    _, plain = jax.jit(make_train(SHORT))(key, hp)
    _, stop = jax.jit(make_train(SHORT.replace(target_kl=1e-7)))(key, hp)
    epochs = np.asarray(stop["epochs_run"])
    assert np.all(epochs >= 1) and np.all(epochs < SHORT.update_epochs), epochs
    # fewer epochs, a smaller step: the first update's KL and parameter change shrink
    assert float(stop["update_norm"][0]) < float(plain["update_norm"][0])
    assert float(stop["approx_kl"][0]) < float(plain["approx_kl"][0])


# ----------------------------------------------------------------------------- diagnostics


def _reference_sgd(ctx, batch, params, opt_state, perms, tx, stop_kl=None):
    """The SGD loop written out step by step: per epoch the shuffled rows in
    ``num_minibatches`` slices (advantages normalized per slice), each slice's loss aux
    taken before its step. Returns the parameters, each epoch's aux means, epochs run."""
    m = ctx.cfg.num_minibatches
    flat, unravel = flat_params(params)
    epochs = []
    for perm in np.asarray(perms):
        rows = jax.tree.map(lambda x, p=perm: x[p], batch)
        seen = []
        for part in range(m):
            mb = jax.tree.map(lambda x, i=part: jnp.split(x, m)[i], rows)
            mb = mb.replace(advantages=normalize_advantages(mb.advantages))
            grads, aux = jax.grad(lambda f, mb=mb: ppo_loss(ctx, unravel(f), mb, None),
                                  has_aux=True)(flat)
            seen.append(aux)
            updates, opt_state = tx.update(grads, opt_state, flat)
            flat = flat + updates
        epochs.append({k: float(np.mean([a[k] for a in seen])) for k in seen[0]})
        if stop_kl is not None and epochs[-1]["approx_kl"] > stop_kl:
            break
    return unravel(flat), epochs


@pytest.mark.parametrize("stop_kl", [None, 1e-9])
def test_measured_diagnostics_are_the_last_epochs_minibatches_before_each_step(stop_kl):
    cfg = PPOConfig(num_envs=4, num_steps=8, total_timesteps=4 * 8, update_epochs=3,
                    num_minibatches=2)
    ctx, batch, params, _, _ = _policy_problem(cfg, seed=2)
    batch = batch.replace(behaviour=None, returns=jax.random.normal(jax.random.PRNGKey(9),
                                                                    (32,)))
    sgd = SGD(ctx.setup)
    hp = HParams(learning_rate=3e-3).as_arrays()
    ctx = UpdateContext(ctx.setup, hp, jnp.int32(0))
    opt_state = sgd.init(params, hp)
    perms = permutations(jax.random.PRNGKey(4), cfg.update_epochs, 32)
    new, _, aux, ran = jax.jit(lambda p, o: sgd.run_measured(
        hp, objective(ctx), batch, None, p, o, perms, None, stop_kl=stop_kl))(params, opt_state)
    want, epochs = _reference_sgd(ctx, batch, params, opt_state, perms,
                                  sgd.optimizer(hp, params), stop_kl)
    assert int(ran) == len(epochs) == (1 if stop_kl else 3)
    for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    assert set(aux) == set(epochs[-1]) == {"loss", "pg_loss", "v_loss", "entropy",
                                           "approx_kl", "clip_frac"}
    for k, v in epochs[-1].items():
        assert float(aux[k]) == pytest.approx(v, rel=1e-4, abs=1e-6), k
    if stop_kl is None:  # the last epoch's, not the first's: the policy has moved by then
        assert epochs[0]["approx_kl"] < epochs[-1]["approx_kl"]


# ----------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(("changes", "layout", "match"), [
    ({"algo": "trpo"}, Layout("split_networks", 2), "algo=trpo with split_networks"),
    ({"algo": "trpo", "target_kl": 0.02}, Layout(), "target_kl=0.02"),
    ({"algo": "ppo_kl", "target_kl": 0.02}, Layout(), "target_kl=0.02"),
])
def test_combinations_that_cannot_work_are_one_line_before_any_compile(changes, layout,
                                                                       match):
    with pytest.raises(ConfigError, match=match) as err:
        build(TINY.replace(**changes), layout)
    assert "\n" not in str(err.value)


def test_the_family_builds_with_split_and_data_parallel_layouts_where_it_can():
    build(TINY.replace(algo="ppo_kl"), Layout("split_networks", 2))  # separable: fine
    build(TINY.replace(target_kl=0.02), Layout("split_networks", 2))
    build(TINY.replace(algo="trpo"), Layout("data_parallel", 2))


@pytest.mark.parametrize(("algo", "values"), [
    ("ppo_kl", [{"kl_coef": 1.0, "kl_penalty_target": 0.01},
                {"kl_coef": 0.1, "kl_penalty_target": 0.003}]),
    ("trpo", [{"trpo_max_kl": 0.01, "cg_damping": 0.1, "backtrack_coef": 0.8},
              {"trpo_max_kl": 0.05, "cg_damping": 0.01, "backtrack_coef": 0.5}]),
])
def test_new_values_of_their_hyperparameters_do_not_retrace(algo, values):
    traces = []
    setup = build(TINY.replace(algo=algo))

    def one_update(key, hp):
        traces.append(1)  # runs once per trace, never per call
        return update_step(setup, hp, init(setup, hp, key))

    jitted = jax.jit(one_update)
    outs = [jitted(jax.random.PRNGKey(0), HParams(**v).as_arrays())[1]["kl"] for v in values]
    assert len(traces) == 1
    assert float(outs[0]) != float(outs[1])  # the values reached the program


@pytest.mark.parametrize("algo", ["ppo_kl", "trpo"])
@pytest.mark.parametrize("changes", [
    {"env_id": "Pendulum-v1", "policy": "tanh_gaussian", "normalize_obs": True,
     "normalize_reward": True},
    {"recurrent": True, "gru_size": 8},  # whole env sequences with their start carries
], ids=["tanh_gaussian", "recurrent"])
def test_runs_with_continuous_and_recurrent_policies(algo, changes):
    hp = HParams(learning_rate=1e-3)
    *_, m = _one_update(TINY.replace(algo=algo, **changes), hp)
    assert all(np.isfinite(float(v)) for v in m.values()), m
    assert float(m["update_norm"]) > 0
    if algo == "trpo":
        assert float(m["step_accepted"]) == 1.0 and 0 < float(m["kl"]) <= hp.trpo_max_kl
    else:
        assert float(m["kl"]) > 0
