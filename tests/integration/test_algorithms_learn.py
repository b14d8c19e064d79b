"""ppo_kl and trpo in the one trainer: vmapped seeds equal single runs, a resumed run equals
an uninterrupted one (beta and the critic's optimizer state are checkpointed), and with
their defaults both solve CartPole."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ppox import HParams, PPOConfig, make_train
from ppox.defaults import resolve
from ppox.host.run import train_runs

ALGOS = ("ppo_kl", "trpo")
SMALL = PPOConfig(num_envs=4, num_steps=32, total_timesteps=4 * 32 * 6, update_epochs=2,
                  num_minibatches=2)
# a learning rate high enough that ppo_kl's beta moves both ways within a few updates
HP = HParams(learning_rate=3e-3, kl_penalty_target=0.003)


def _close(a, b, rtol=1e-4, atol=1e-5):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


@pytest.mark.parametrize("algo", ALGOS)
def test_vmap_over_seeds_equals_single_runs(algo):
    train = make_train(SMALL.replace(algo=algo))
    keys = jnp.stack([jax.random.PRNGKey(s) for s in (0, 1, 2)])
    states, metrics = jax.jit(jax.vmap(train, in_axes=(0, None)))(keys, HP)
    single = jax.jit(train)
    for i in range(3):
        s_i, m_i = single(keys[i], HP)
        _close(jax.tree.map(lambda x, i=i: x[i], (states.params, states.algo_state)),
               (s_i.params, s_i.algo_state))
        _close({k: v[i] for k, v in metrics.items()}, m_i, rtol=1e-3, atol=1e-4)
    assert not np.allclose(np.asarray(metrics["loss"][0]), np.asarray(metrics["loss"][1]))
    if algo == "ppo_kl":  # beta adapted, differently per seed
        assert len(np.unique(np.asarray(metrics["kl_beta"]))) > 1
    else:  # the line search accepted steps
        assert np.asarray(metrics["step_accepted"]).mean() > 0.5


@pytest.mark.parametrize("algo", ALGOS)
def test_resume_equals_uninterrupted(algo, tmp_path):
    cfg, hp = SMALL.replace(algo=algo), [HP]
    full = train_runs(cfg, hp, [5], run_dir=tmp_path / "full", chunk_size=2)
    train_runs(cfg, hp, [5], run_dir=tmp_path / "cut", chunk_size=2, checkpoint_every=1,
               stop_after_chunks=2)
    resumed = train_runs(cfg, hp, [5], run_dir=tmp_path / "cut", chunk_size=2,
                         checkpoint_every=1, resume=True)
    assert resumed.start_update == 4
    _close((resumed.state.params, resumed.state.algo_state),
           (full.state.params, full.state.algo_state), rtol=1e-6, atol=1e-7)
    names = ["loss", "episode_return_sum", "update_norm"]
    names += ["kl_beta", "kl"] if algo == "ppo_kl" else ["line_search_step", "kl"]
    for k in names:
        np.testing.assert_allclose(resumed.metrics[k], full.metrics[k], rtol=1e-5, atol=1e-6,
                                   err_msg=k)


DATA_PARALLEL_SCRIPT = textwrap.dedent("""
    import json
    import jax, numpy as np
    from ppox import HParams, PPOConfig
    from ppox.host.run import train_runs
    out = {}
    for name, extra in (("ppo_kl", {"algo": "ppo_kl"}), ("trpo", {"algo": "trpo"}),
                        ("ppo_target_kl", {"target_kl": 0.004})):
        cfg = PPOConfig(num_envs=4, num_steps=32, total_timesteps=4 * 32 * 4, update_epochs=4,
                        num_minibatches=2, **extra)
        r = train_runs(cfg, [HParams(learning_rate=3e-3, kl_penalty_target=0.003)], [0],
                       data_parallel=True)
        leaves = [np.asarray(x) for x in jax.tree.leaves((r.state.params, r.state.algo_state))]
        out[name] = {"devices": r.devices,
                     "in_sync": all(np.array_equal(x[0], x[1]) for x in leaves),
                     "moved": float(np.asarray(r.metrics["update_norm"]).min()),
                     "epochs_run": np.ravel(r.metrics.get("epochs_run", [])).tolist()}
    # network splitting (actor on one device, critic on the other) equals one device
    for name, extra in (("ppo_kl_split", {"algo": "ppo_kl"}),
                        ("ppo_target_kl_split", {"target_kl": 0.004})):
        cfg = PPOConfig(num_envs=4, num_steps=32, total_timesteps=4 * 32 * 4, update_epochs=4,
                        num_minibatches=2, **extra)
        hp = [HParams(learning_rate=3e-3, kl_penalty_target=0.003)]
        one, two = train_runs(cfg, hp, [0]), train_runs(cfg, hp, [0], split_networks=True)
        p1 = [np.asarray(x)[0] for x in jax.tree.leaves(one.state.params)]
        p2 = [np.asarray(x)[0] for x in jax.tree.leaves(two.state.params)]
        m = "kl_beta" if "algo" in extra else "epochs_run"
        out[name] = {"devices": two.devices, "in_sync": True, "moved": 1.0,
                     "max_diff": max(float(np.max(np.abs(a - b))) for a, b in zip(p1, p2)),
                     "single": np.ravel(one.metrics[m]).tolist(),
                     "split": np.ravel(two.metrics[m]).tolist()}
    print(json.dumps(out))
""")


def test_data_parallel_replicas_stay_in_sync_and_split_networks_equal_one_device():
    """Under data parallelism every device takes the same step: TRPO's gradient, Fisher
    products and line search, ppo_kl's beta and the KL stop's decision are averaged over
    the devices, so parameters and algorithm states stay bit-identical. Under network
    splitting ppo_kl and the KL stop (measured on the actor's device) give one device's
    result."""
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
               JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", DATA_PARALLEL_SCRIPT], env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    for name, r in out.items():
        assert r["devices"] == 2 and r["in_sync"] and r["moved"] > 0, (name, r)
    assert min(out["ppo_target_kl"]["epochs_run"]) < 4  # the stop fired, on both alike
    for name in ("ppo_kl_split", "ppo_target_kl_split"):
        r = out[name]
        assert r["max_diff"] < 1e-4, (name, r)
        assert r["single"] == r["split"], (name, r)  # the same betas / epochs run
    assert min(out["ppo_target_kl_split"]["split"]) < 4


@pytest.mark.slow
@pytest.mark.parametrize("algo", ALGOS)
def test_solves_cartpole_with_its_defaults(algo):
    cfg, hp = resolve("CartPole-v1", algo)
    assert cfg.algo == algo and cfg.total_timesteps <= 500_000
    result = train_runs(cfg, [hp], seeds=[0])
    assert result.final_return[0] >= 475.0, result.final_return
    first = (result.metrics["episode_return_sum"][:, :5].sum()
             / result.metrics["episode_count"][:, :5].sum())
    assert first < 100.0  # it learned: the first updates are far from solved
