"""Using a finished run: ppox.load_policy, ppox plot, ppox eval --video."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ppox
from ppox.cli import main
from ppox.host.evaluation import evaluate_run
from ppox.trainer import env_for

TINY = ["--total-timesteps", "2048", "--num-envs", "4", "--num-steps", "64",
        "--update-epochs", "1", "--num-minibatches", "2", "--quiet"]


@pytest.fixture(scope="module")
def cartpole_runs(tmp_path_factory):
    """Two CartPole run dirs (2 seeds and 1 seed), trained for a few updates."""
    root = tmp_path_factory.mktemp("runs")
    assert main(["train", *TINY, "--num-seeds", "2", "--run-dir", str(root / "a")]) == 0
    assert main(["train", *TINY, "--seed", "7", "--normalize-obs",
                 "--run-dir", str(root / "b")]) == 0
    return root / "a", root / "b"


@pytest.fixture(scope="module")
def recurrent_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "gru"
    assert main(["train", *TINY, "--recurrent", "--gru-size", "16", "--run-dir", str(run)]) == 0
    return run


def _episodes_with(policy, cfg, episodes: int, seed: int) -> np.ndarray:
    """The returns of ``ppox eval``'s episodes (same keys, same stepping), acting with
    ``policy`` on the host side, one batched call per step."""
    env = env_for(cfg)
    key_reset, key_steps = jax.random.split(jax.random.PRNGKey(seed))
    obs, state = jax.vmap(env.reset)(jax.random.split(key_reset, episodes))
    step = jax.jit(jax.vmap(env.step))
    alive = np.ones(episodes, bool)
    total = np.zeros(episodes, np.float32)
    carry = None  # a recurrent policy's state: None starts every episode afresh
    for key in jax.random.split(key_steps, env.spec.max_episode_steps):
        if not alive.any():
            break
        _, key_env = jax.random.split(key)
        if policy.is_recurrent:
            action, carry = policy(obs, state=carry)
        else:
            action = policy(obs)
        state, ts = step(jax.random.split(key_env, episodes), state, action)
        total += np.where(alive, np.asarray(ts.reward), 0.0)
        alive &= ~np.asarray(ts.done)
        obs = ts.obs
    return total


@pytest.mark.parametrize("which", [0, 1])
def test_load_policy_reproduces_ppox_eval(cartpole_runs, which):
    run = cartpole_runs[which]
    policy = ppox.load_policy(run)
    assert policy.env_id == "CartPole-v1" and policy.config.num_envs == 4
    assert policy.config.normalize_obs == (which == 1)
    out = evaluate_run(run, episodes=6, seed=3)
    np.testing.assert_allclose(_episodes_with(policy, policy.config, 6, seed=3), out.returns)
    # one observation or a batch; sampling takes a key
    obs = jnp.asarray(np.random.default_rng(0).normal(size=(5, 4)), jnp.float32)
    batch = policy(obs)
    assert batch.shape == (5,) and batch.dtype == jnp.int32
    assert int(policy(obs[2])) == int(batch[2])
    sampled = policy(obs, jax.random.PRNGKey(1))
    assert sampled.shape == (5,) and set(np.asarray(sampled).tolist()) <= {0, 1}
    with pytest.raises(ValueError, match="does not fit CartPole-v1"):
        policy(jnp.zeros((3,)))


def test_recurrent_policy_takes_and_returns_its_state(recurrent_run):
    policy = ppox.load_policy(recurrent_run)
    assert policy.is_recurrent and policy.config.recurrent
    out = evaluate_run(recurrent_run, episodes=4, seed=2)
    np.testing.assert_allclose(_episodes_with(policy, policy.config, 4, seed=2), out.returns,
                               rtol=1e-6)
    obs = jnp.ones((3, 4), jnp.float32)
    action, state = policy(obs)
    assert action.shape == (3,)
    again, _ = policy(obs, state=state)  # the state carries the episode's history
    assert again.shape == (3,)


def test_plot_writes_a_png_from_two_runs(cartpole_runs, tmp_path):
    import imageio.v3 as iio

    from ppox.cli.plot import cmd_plot, run_curve, spread_over_chunks
    from ppox.host.metrics import load_metrics

    a, b = cartpole_runs
    for x in ("env_steps", "wall"):
        out = tmp_path / f"curves_{x}.png"
        assert cmd_plot([str(a), str(b), "--x", x, "--out", str(out)]) == 0
        image = iio.imread(out)
        assert image.ndim == 3 and image.shape[0] > 200 and image.std() > 0
    # the curve is the run's own metrics: x = env steps, y = the seeds' returns carried forward
    xs, y, seeds = run_curve(a, "episode_return", "env_steps")
    _, cols = load_metrics(a / "metrics.jsonl")
    assert seeds == 2 and y.shape == (2, 8)
    np.testing.assert_array_equal(xs, 256 * np.arange(1, 9))
    finite = np.isfinite(cols["episode_return"])
    np.testing.assert_array_equal(y[finite], cols["episode_return"][finite])
    # wall_s holds one time per chunk; the plot spreads a chunk's updates evenly
    np.testing.assert_array_equal(spread_over_chunks(np.array([2.0, 2, 4, 4, 5])),
                                  [1, 2, 3, 4, 5])
    with pytest.raises(ppox.ConfigError, match=r"has no metric 'nope'; it has: .*loss"):
        cmd_plot([str(a), "--metric", "nope"])


@pytest.mark.parametrize("env", ["CartPole-v1", "Breakout-MinAtar"])
def test_eval_video_writes_a_decodable_gif(cartpole_runs, tmp_path, env):
    import imageio.v3 as iio

    from ppox.host.video import record_video

    if env == "CartPole-v1":
        run = cartpole_runs[1]
    else:
        run = tmp_path / "breakout"
        assert main(["train", "--env", env, "--total-timesteps", "256", "--num-envs", "4",
                     "--num-steps", "32", "--update-epochs", "1", "--num-minibatches", "2",
                     "--run-dir", str(run), "--quiet"]) == 0
    out = record_video(run, tmp_path / "episode.gif", seed=1)
    assert out.path == tmp_path / "episode.gif" and out.path.stat().st_size > 0
    assert out.frames == min(out.episode_length, 1000) and out.frames >= 2
    frames = iio.imread(out.path, index=None)
    assert frames.ndim == 4 and frames.shape[-1] in (3, 4) and 2 <= len(frames) <= out.frames
    assert frames.std() > 0 and not np.array_equal(frames[0], frames[-1])


def test_periodic_eval_logs_at_the_right_updates_and_keeps_the_best(cartpole_runs, tmp_path):
    from types import SimpleNamespace

    from ppox.host.evaluation import load_policy as load_arrays
    from ppox.host.periodic_eval import PeriodicEval

    run = cartpole_runs[0]
    parts = [load_arrays(run, i) for i in range(2)]

    def state(order):  # a batched state holding the two runs' policies in this order
        def stack(get):
            return jax.tree.map(lambda *xs: jnp.stack(xs), *[get(parts[i]) for i in order])
        return SimpleNamespace(params=stack(lambda p: p.params),
                               obs_stats=stack(lambda p: p.obs_stats),
                               reward_scaler=SimpleNamespace(stats=stack(lambda p: p.reward_stats)))

    single = [evaluate_run(run, episodes=4, seed=0, run_index=i).returns.mean() for i in (0, 1)]
    pe = PeriodicEval(parts[0].cfg, 2, every=3, episodes=4, seed=0, best_dir=tmp_path / "best",
                      config_file=run / "config.toml")
    evals = {}
    for done, order in ((2, (0, 1)), (4, (0, 1)), (6, (1, 0)), (8, (0, 1))):  # chunks of 2
        if pe.due(done):
            evals[done] = pe.evaluate(state(order), done)
    assert list(evals) == [4, 6, 8]  # past 3, past 6, and the end of training
    np.testing.assert_allclose(evals[4], single, rtol=1e-5)
    np.testing.assert_allclose(evals[6], single[::-1], rtol=1e-5)
    np.testing.assert_allclose(pe.best, max(single), rtol=1e-5)
    col = pe.column(2, 4)  # updates 3..6: evaluations after updates 4 and 6
    assert np.isnan(col[:, [0, 2]]).all()
    np.testing.assert_allclose(col[:, 1], evals[4])
    np.testing.assert_allclose(col[:, 3], evals[6])
    for i in (0, 1):  # the best dir is a run dir: ppox eval / load_policy read it
        best = evaluate_run(tmp_path / "best", episodes=4, seed=0, run_index=i)
        np.testing.assert_allclose(best.returns.mean(), pe.best[i], rtol=1e-5)
    # compiled ahead in a thread (as the training loop starts it on one device): the same
    # program, the same returns
    ahead = PeriodicEval(parts[0].cfg, 2, every=3, episodes=4, seed=0)
    s = state((1, 0))
    ahead.start_compile(SimpleNamespace(params=jax.eval_shape(lambda: s.params),
                                        obs_stats=jax.eval_shape(lambda: s.obs_stats)))
    np.testing.assert_allclose(ahead.evaluate(s, 6), evals[6], rtol=1e-6)
    assert ahead._compiled.done() and ahead._compiled.exception() is None


def test_train_logs_evals_and_keeps_the_best_then_plot_and_video(tmp_path, capsys):
    event_accumulator = pytest.importorskip(
        "tensorboard.backend.event_processing.event_accumulator")
    from ppox.host.metrics import read_rows

    run = tmp_path / "r"
    assert main(["train", *TINY, "--num-seeds", "2", "--run-dir", str(run), "--tensorboard",
                 "--eval-every", "3", "--eval-episodes", "2", "--save-best",
                 "--progress-chunks", "4"]) == 0  # chunks of 2 of the 8 updates
    capsys.readouterr()
    for name in ("metrics.jsonl", "metrics.csv", "learning_curve.png", "best/config.toml"):
        assert (run / name).is_file(), name
    rows = read_rows(run / "metrics.jsonl")
    evals = {(r["run"], r["update"]): r["eval_return"] for r in rows
             if np.isfinite(r["eval_return"])}
    # past update 3, past 6, and at the end; each seed's own policy
    assert sorted(evals) == [(s, u) for s in ("seed0", "seed1") for u in (4, 6, 8)]
    for a, b in zip(read_rows(run / "metrics.csv"), rows, strict=True):  # the same table
        assert a.keys() == b.keys()
        assert all(a[k] == b[k] or (np.isnan(a[k]) and np.isnan(b[k])) for k in a)
    acc = event_accumulator.EventAccumulator(str(run / "tensorboard" / "seed1"))
    acc.Reload()
    assert [e.step for e in acc.Scalars("eval_return")] == [4 * 256, 6 * 256, 8 * 256]
    np.testing.assert_allclose([e.value for e in acc.Scalars("eval_return")],
                               [evals["seed1", u] for u in (4, 6, 8)], rtol=1e-6)
    for i, seed in enumerate(("seed0", "seed1")):  # RUN_DIR/best holds each seed's best
        best = max(evals[seed, u] for u in (4, 6, 8))
        out = evaluate_run(run / "best", episodes=2, seed=0, run_index=i)
        np.testing.assert_allclose(out.returns.mean(), best, rtol=1e-5)

    assert main(["plot", str(run), "--out", str(tmp_path / "c.png"), "--metric",
                 "eval_return"]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {tmp_path / 'c.png'}"
    assert main(["eval", str(run), "--episodes", "2", "--video", str(tmp_path / "v.gif")]) == 0
    out = capsys.readouterr().out
    assert f"wrote {tmp_path / 'v.gif'} (" in out and "classic-control renderer" in out
    assert (tmp_path / "v.gif").stat().st_size > 0


@pytest.mark.parametrize("flags, message", [
    (["--save-best"], "--save-best keeps the best-evaluated policy: add --eval-every N"),
    (["--wandb-mode", "offline"], "--wandb-project and --wandb-mode set up --wandb"),
])
def test_watch_flags_refused_before_anything_runs(tmp_path, capsys, flags, message):
    assert main(["train", *TINY, "--run-dir", str(tmp_path / "r"), *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert not (tmp_path / "r" / "metrics.jsonl").exists()
