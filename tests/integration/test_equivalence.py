"""One program, many ways to run it: vmapped, chunked, resumed, sharded -- same numbers."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np

from ppox import HParams, PPOConfig, make_train, make_train_chunk
from ppox.host.run import train_runs
from ppox.trainer import build, init, update_step

SMALL = PPOConfig(num_envs=4, num_steps=32, total_timesteps=4 * 32 * 8, update_epochs=2,
                  num_minibatches=2)


def _close(a, b, rtol=1e-4, atol=1e-5):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


def test_vmap_over_keys_equals_single_runs():
    train = make_train(SMALL)
    keys = jnp.stack([jax.random.PRNGKey(s) for s in (0, 1, 2)])
    hp = HParams()
    states, metrics = jax.jit(jax.vmap(train, in_axes=(0, None)))(keys, hp)
    single = jax.jit(train)
    for i in range(3):
        s_i, m_i = single(keys[i], hp)
        _close(jax.tree.map(lambda x, i=i: x[i], states.params), s_i.params)
        _close({k: v[i] for k, v in metrics.items()}, m_i, rtol=1e-3, atol=1e-4)
    # and the runs really differ from each other (the check above is not vacuous)
    assert not np.allclose(np.asarray(metrics["loss"][0]), np.asarray(metrics["loss"][1]))


def test_vmap_over_hparams_equals_single_runs():
    train = make_train(SMALL)
    hps = [HParams(learning_rate=1e-3, clip_eps=0.1), HParams(learning_rate=3e-4, clip_eps=0.3)]
    batch = jax.tree.map(lambda *xs: jnp.array(xs, jnp.float32), *hps)
    keys = jnp.stack([jax.random.PRNGKey(7)] * 2)
    states, _ = jax.jit(jax.vmap(train))(keys, batch)
    for i, hp in enumerate(hps):
        s_i, _ = jax.jit(train)(keys[i], hp)
        _close(jax.tree.map(lambda x, i=i: x[i], states.params), s_i.params)
    assert not np.allclose(np.asarray(jax.tree.leaves(states.params)[0][0]),
                           np.asarray(jax.tree.leaves(states.params)[0][1]))


def test_new_hparam_values_do_not_retrace():
    traces = []
    setup = build(SMALL)

    def train(key, hp):
        traces.append(1)  # runs once per trace, never per call
        hp = hp.as_arrays()
        state = init(setup, hp, key)
        return jax.lax.scan(lambda s, _: update_step(setup, hp, s), state, None, 2)

    jitted = jax.jit(train)
    key = jax.random.PRNGKey(0)
    for lr, clip in [(1e-3, 0.2), (3e-4, 0.1), (5e-5, 0.3)]:
        jax.block_until_ready(jitted(key, HParams(learning_rate=lr, clip_eps=clip).as_arrays()))
    assert len(traces) == 1


def test_chunks_compose_to_the_fused_program():
    train = jax.jit(make_train(SMALL))
    key, hp = jax.random.PRNGKey(3), HParams()
    fused_state, fused_metrics = train(key, hp)
    chunk = jax.jit(make_train_chunk(SMALL, chunk_size=3))
    state = jax.jit(lambda k: init(build(SMALL), hp.as_arrays(), k))(key)
    rows = []
    for n in (3, 3, 2):  # 8 updates; the last chunk is shorter but the same executable
        state, m = chunk(state, hp, jnp.int32(n))
        rows.append({k: np.asarray(v)[:n] for k, v in m.items()})
    chunked = {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}
    _close(state.params, fused_state.params)
    _close(chunked, {k: np.asarray(v) for k, v in fused_metrics.items()}, rtol=1e-3, atol=1e-4)
    assert chunk._cache_size() == 1


def test_resume_equals_uninterrupted(tmp_path):
    hp = [HParams()]
    full = train_runs(SMALL, hp, [5], run_dir=tmp_path / "full", chunk_size=2)
    # first attempt stops after 2 chunks (a checkpoint after each), then resumes
    train_runs(SMALL, hp, [5], run_dir=tmp_path / "cut", chunk_size=2, checkpoint_every=1,
               stop_after_chunks=2)
    resumed = train_runs(SMALL, hp, [5], run_dir=tmp_path / "cut", chunk_size=2,
                         checkpoint_every=1, resume=True)
    _close(resumed.state.params, full.state.params, rtol=1e-6, atol=1e-7)
    for k in ("episode_return_sum", "episode_count", "loss"):
        np.testing.assert_allclose(resumed.metrics[k], full.metrics[k], rtol=1e-5, atol=1e-6)
    rows = [json.loads(x) for x in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert [r["update"] for r in rows] == list(range(1, SMALL.num_updates + 1))


MULTI_DEVICE_SCRIPT = textwrap.dedent("""
    import json, sys
    import jax, numpy as np
    from ppox import HParams, PPOConfig
    from ppox.host.run import train_runs
    cfg = PPOConfig(num_envs=4, num_steps=32, total_timesteps=4 * 32 * 8, update_epochs=2,
                    num_minibatches=2)
    r = train_runs(cfg, [HParams()] * 2, [0, 1], chunk_size=4)
    print(json.dumps({"devices": r.devices, "n_jax_devices": len(jax.devices()),
                      "params": [np.asarray(x).tolist() for x in jax.tree.leaves(r.state.params)],
                      "loss": r.metrics["loss"].tolist()}))
""")


def _run_script(devices: int, script: str = MULTI_DEVICE_SCRIPT) -> dict:
    """Runs ``script`` in a fresh process with ``devices`` XLA CPU devices; its last line of
    stdout, as JSON."""
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
               JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", script], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_two_cpu_devices_equal_one_device():
    one, two = _run_script(1), _run_script(2)
    assert one["devices"] == 1 and two["devices"] == 2 and two["n_jax_devices"] == 2
    for a, b in zip(one["params"], two["params"], strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(one["loss"]), np.asarray(two["loss"]),
                               rtol=1e-3, atol=1e-4)


DATA_PARALLEL_SCRIPT = textwrap.dedent("""
    import json
    import jax, numpy as np
    from ppox import HParams, PPOConfig
    from ppox.host.run import train_runs
    cfg = PPOConfig(num_envs=8, num_steps=64, total_timesteps=120_000)
    r = train_runs(cfg, [HParams(learning_rate=1e-3)], [0], data_parallel=True)
    leaves = [np.asarray(x) for x in jax.tree.leaves(r.state.params)]
    envs = np.asarray(jax.tree.leaves(r.state.env.obs)[0])
    print(json.dumps({"devices": r.devices, "final": float(r.final_return[0]),
                      "first": float(r.metrics["episode_return_sum"][0, :5].sum()
                                     / r.metrics["episode_count"][0, :5].sum()),
                      "in_sync": all(np.array_equal(x[0], x[1]) for x in leaves),
                      "local_envs": list(envs.shape[:2]),
                      "same_envs": bool(np.array_equal(envs[0], envs[1]))}))
""")


def test_data_parallel_keeps_replicas_in_sync_and_learns():
    out = _run_script(2, DATA_PARALLEL_SCRIPT)
    assert out["devices"] == 2
    assert out["local_envs"] == [2, 4]  # 8 envs: 4 on each device
    assert not out["same_envs"]  # each device steps its own envs (own keys)
    assert out["in_sync"]  # averaged gradients: bit-identical parameters everywhere
    assert out["first"] < 60.0 and out["final"] > 150.0, out


SPLIT_NETWORKS_SCRIPT = textwrap.dedent("""
    import json
    import jax, numpy as np
    from ppox import HParams, PPOConfig
    from ppox.host.run import train_runs
    out = {}
    # a discrete policy, and a continuous one (log_std is the actor's) whose actor and
    # critic differ in size (the two flat vectors are padded to one length)
    # and the per-network clip (no collective per step), which must differ from the global
    clip_runs = []
    cases = (("CartPole-v1", {}),
             ("Pendulum-v1", {"actor_hidden": (32, 32), "critic_hidden": (64, 64)}),
             ("CartPole-v1", {"grad_clip": "per_network"}))
    for env, extra in cases:
        cfg = PPOConfig(env_id=env, num_envs=4, num_steps=32, total_timesteps=4 * 32 * 10,
                        update_epochs=2, num_minibatches=2, **extra)
        hp = HParams(learning_rate=1e-3, max_grad_norm=0.1)  # the clip is active
        one = train_runs(cfg, [hp], [3])
        two = train_runs(cfg, [hp], [3], split_networks=True)
        if env == "CartPole-v1":
            clip_runs.append(one)
        p1 = [np.asarray(x)[0] for x in jax.tree.leaves(one.state.params)]
        p2 = [np.asarray(x) for x in jax.tree.leaves(two.state.params)]
        out[env + "/" + extra.get("grad_clip", "global")] = {
            "devices": two.devices,
            "max_diff": max(float(np.max(np.abs(a - b[0]))) for a, b in zip(p1, p2)),
            "replicas_equal": all(np.array_equal(b[0], b[1]) for b in p2),
            "loss": [np.asarray(one.metrics["loss"])[0].tolist(),
                     np.asarray(two.metrics["loss"])[0].tolist()],
            "update_norm": np.asarray(two.metrics["update_norm"])[0].tolist(),
        }
    out["clip_scopes_differ"] = max(
        float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in zip(
            *(jax.tree.leaves(r.state.params) for r in clip_runs))) > 1e-3
    # stopped after 2 of 5 chunks with a checkpoint each chunk, then resumed: the same state
    import tempfile
    cfg = PPOConfig(num_envs=4, num_steps=32, total_timesteps=4 * 32 * 10, update_epochs=2,
                    num_minibatches=2)
    with tempfile.TemporaryDirectory() as tmp:
        kw = dict(split_networks=True, run_dir=tmp, progress_chunks=5)
        whole = train_runs(cfg, [HParams()], [0], **kw)
        train_runs(cfg, [HParams()], [0], checkpoint_every=1, stop_after_chunks=2,
                   overwrite=True, **kw)  # the same run dir again, from update 0
        resumed = train_runs(cfg, [HParams()], [0], resume=True, **kw)
    out["resume_max_diff"] = max(
        float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))
        for a, b in zip(jax.tree.leaves(whole.state), jax.tree.leaves(resumed.state)))
    print(json.dumps(out))
""")


def test_split_networks_equals_one_device():
    """Actor and critic updated on two devices at once: the same parameters and losses as
    one device (up to float summation order), with the gradient-norm clip active, so a
    clip that missed the other device's norm would show; both devices hold every
    parameter after each update; a resumed run continues exactly."""
    out = _run_script(2, SPLIT_NETWORKS_SCRIPT)
    assert out.pop("resume_max_diff") == 0.0  # resumed from a checkpoint: bit-identical
    assert out.pop("clip_scopes_differ")  # the clip was active: the two scopes train apart
    for env_id, r in out.items():
        assert r["devices"] == 2, env_id
        assert r["replicas_equal"], env_id
        assert min(r["update_norm"]) > 0, env_id  # every update moved the parameters
        assert r["max_diff"] < 1e-4, (env_id, r["max_diff"])
        np.testing.assert_allclose(r["loss"][0], r["loss"][1], rtol=1e-3, atol=1e-4)


def test_split_networks_needs_two_devices_and_one_seed():
    import pytest

    from ppox.config import ConfigError

    hp = HParams()
    with pytest.raises(ConfigError, match="2 local devices"):
        train_runs(SMALL, [hp], [0], split_networks=True)  # the tests run on one device
    with pytest.raises(ConfigError, match="use one seed"):
        train_runs(SMALL, [hp, hp], [0, 1], split_networks=True)
    with pytest.raises(ConfigError, match="cannot be combined"):
        train_runs(SMALL, [hp], [0], split_networks=True, data_parallel=True)


LOWERING_SCRIPT = textwrap.dedent("""
    import json
    import jax
    from ppox import HParams, PPOConfig
    from ppox.host.run import TrainOptions, _Batch, _steps, program_inputs
    cfg = PPOConfig(num_envs=4, num_steps=32, total_timesteps=4 * 32 * 8, update_epochs=2,
                    num_minibatches=2)
    out = {}
    for name, runs, opts in (("seeds", 2, TrainOptions()),
                             ("data_parallel", 1, TrainOptions(data_parallel=True)),
                             ("split_networks", 1, TrainOptions(split_networks=True))):
        b = _Batch.build(cfg, [HParams()] * runs, list(range(runs)), opts)
        init_fn, chunk_fn, keys, hp, shapes = program_inputs(cfg, b.chunk_size, runs,
                                                             b.layout, b.mesh)
        state = init_fn(keys, hp)  # a real state, placed by the init
        steps = _steps(b.chunk_size, b.mesh)
        real = chunk_fn.lower(state, hp, steps).as_text()
        out[name] = {"same_hlo": chunk_fn.lower(shapes, hp, steps).as_text() == real,
                     "shardings": sorted({str(x.sharding.spec) for x in jax.tree.leaves(state)}),
                     "devices": len(b.mesh)}
    print(json.dumps(out))
""")


def test_the_chunk_lowered_from_the_init_shapes_is_the_real_states_on_two_devices():
    # compiled_programs lowers the chunk from program_inputs' shape structs while the init
    # compiles in a thread: the HLO (and so the compilation-cache key) must be the one a
    # real, placed state gives, on every layout that spans the two devices
    out = _run_script(2, LOWERING_SCRIPT)
    assert set(out) == {"seeds", "data_parallel", "split_networks"}
    for name, got in out.items():
        assert got["same_hlo"], name
        assert got["shardings"] == (["P('runs',)"] if name == "seeds"
                                    else ["P('data',)"]), (name, got)
