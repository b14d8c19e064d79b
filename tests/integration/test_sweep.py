"""``ppox sweep``: one compile for every configuration x seed, and every run equal to the same
configuration trained alone; bad configurations rank last without touching the others."""

import contextlib
import csv
import io
import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

import ppox.host.run as run_module
from ppox import make_train
from ppox.cli import main, resolve_train_args
from ppox.host.metrics import episode_means, final_return
from ppox.sweep import parse_spec, run_sweep

UPDATES = 20
BASE_ARGS = ["--env", "CartPole-v1", "--total-timesteps", str(4 * 128 * UPDATES),
             "--num-envs", "4", "--num-steps", "128", "--progress-chunks", "4"]
SPEC = """
seeds = 2
seed = 3
[grid]
learning_rate = [2.5e-4, 1e-3]
clip_eps = [0.1, 0.2]
"""


@contextlib.contextmanager
def count_traces():
    """Counts Python traces of the training chunk and of init inside ``train_runs`` (a
    wrapper runs once per trace, never per call of the compiled program)."""
    counts = {"chunk": 0, "init": 0}
    make_chunk, make_init = run_module.make_train_chunk, run_module.make_init

    def counting_chunk(cfg, chunk_size):
        fn = make_chunk(cfg, chunk_size)

        def chunk(state, hp, n):
            counts["chunk"] += 1
            return fn(state, hp, n)

        return chunk

    def counting_init(cfg):
        fn = make_init(cfg)

        def init(key, hp):
            counts["init"] += 1
            return fn(key, hp)

        return init

    # programs that train_runs may have cached from earlier tests would not be traced again
    for obj in vars(run_module).values():
        if callable(getattr(obj, "cache_clear", None)):
            obj.cache_clear()
    run_module.make_train_chunk, run_module.make_init = counting_chunk, counting_init
    try:
        yield counts
    finally:
        run_module.make_train_chunk, run_module.make_init = make_chunk, make_init


_ALONE = {}


def train_alone(lr, clip, seed):
    """The configuration trained alone: one run, not vmapped with any other, with the
    settings ``ppox train`` resolves from the same flags. One compiled program serves every
    (hyperparameters, seed) -- they are traced values. Returns (final return, learning
    curve [U])."""
    _, cfg, hp = resolve_train_args(
        [*BASE_ARGS, "--learning-rate", repr(lr), "--clip-eps", repr(clip)])
    if cfg not in _ALONE:
        _ALONE[cfg] = jax.jit(make_train(cfg))
    _, metrics = _ALONE[cfg](jax.random.PRNGKey(seed), hp)
    metrics = {k: np.asarray(v) for k, v in metrics.items()}
    return final_return(metrics, min_episodes=cfg.num_envs), episode_means(metrics)


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def cli_sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    spec = root / "sweep.toml"
    spec.write_text(SPEC)
    out = root / "out"
    stdout = io.StringIO()
    with count_traces() as traces, contextlib.redirect_stdout(stdout):
        code = main(["sweep", "--spec", str(spec), "--out", str(out), *BASE_ARGS])
    assert code == 0
    return out, stdout.getvalue(), dict(traces)


def test_sweep_compiles_once(cli_sweep):
    out, text, traces = cli_sweep
    # 2 learning rates x 2 clip ranges x 2 seeds = 8 runs, one trace of the training chunk
    # (and of init) for the whole sweep -- no loop over configurations
    assert traces == {"chunk": 1, "init": 1}
    info = json.loads((out / "sweep.json").read_text())
    assert info["runs"] == 8 and info["batches"] == 1 and info["batch_size"] == 8
    assert info["compiles"] == 1 and info["chunk_traces"] == 1
    assert "static options: 1 combination -> 1 compile (8 runs vmapped in one program)" in text


def test_each_run_equals_the_configuration_trained_alone(cli_sweep):
    out, _, _ = cli_sweep
    rows = read_csv(out / "results.csv")
    curves = np.load(out / "curves.npz")
    assert curves["returns"].shape == (8, UPDATES)
    np.testing.assert_array_equal(curves["env_steps"][0], 512 * np.arange(1, UPDATES + 1))
    assert curves["seed"].tolist() == [3, 4] * 4
    assert curves["config"].tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    # A batched matmul rounds differently from a lone one: the parameters differ by ~1e-7
    # from the first update on. Over 20 updates that can flip one sampled action and send
    # an episode elsewhere (seen in one run of the 8, from its 18th update), so the curves
    # are compared over the first half; a run given another configuration's
    # hyperparameters or another seed differs from its second update on.
    compared = UPDATES // 2
    starts = []
    for r in range(8):
        row = rows[curves["config"][r]]
        lr, clip, seed = float(row["learning_rate"]), float(row["clip_eps"]), curves["seed"][r]
        _, alone_curve = train_alone(lr, clip, int(seed))
        np.testing.assert_allclose(curves["returns"][r][:compared], alone_curve[:compared],
                                   rtol=1e-4)
        starts.append(tuple(np.round(alone_curve[:compared], 4)))
    # the runs really differ over those updates (the comparison above is not vacuous)
    assert len(set(starts)) == 8
    # per-configuration mean and std across the two seeds
    for c, row in enumerate(rows):
        pair = curves["final_return"][2 * c:2 * c + 2]
        np.testing.assert_allclose(float(row["final_return_mean"]), pair.mean(), rtol=1e-9)
        np.testing.assert_allclose(float(row["final_return_std"]), pair.std(), rtol=1e-9)
        np.testing.assert_allclose(float(row["auc_mean"]), curves["auc"][2 * c:2 * c + 2].mean(),
                                   rtol=1e-9)


def test_a_sweep_run_equals_ppox_train_with_that_seed(cli_sweep, tmp_path, capsys):
    out, _, _ = cli_sweep
    curves = np.load(out / "curves.npz")
    rows = read_csv(out / "results.csv")
    r = 3  # config 1 (learning_rate 2.5e-4, clip_eps 0.2), seed 4
    row = rows[curves["config"][r]]
    code = main(["train", *BASE_ARGS, "--seed", str(curves["seed"][r]),
                 "--learning-rate", row["learning_rate"], "--clip-eps", row["clip_eps"],
                 "--run-dir", str(tmp_path / "run"), "--quiet"])
    capsys.readouterr()
    assert code == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    np.testing.assert_allclose(summary["final_return"][0], curves["final_return"][r], rtol=1e-4)
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    train_curve = np.array([np.nan if (v := json.loads(x)["episode_return"]) is None else v
                            for x in lines], float)
    np.testing.assert_allclose(train_curve, curves["returns"][r], rtol=1e-4)


def test_results_table_best_config_and_pictures(cli_sweep):
    out, text, _ = cli_sweep
    rows = read_csv(out / "results.csv")
    assert len(rows) == 4
    assert {"learning_rate", "clip_eps", "gamma", "ent_coef", "final_return_mean",
            "final_return_std", "auc_mean", "auc_std", "wall_time_s", "num_seeds"} <= set(rows[0])
    grid = [(float(r["learning_rate"]), float(r["clip_eps"])) for r in rows]
    assert grid == [(2.5e-4, 0.1), (2.5e-4, 0.2), (1e-3, 0.1), (1e-3, 0.2)]
    assert all(r["num_seeds"] == "2" and float(r["wall_time_s"]) > 0 for r in rows)
    means = [float(r["final_return_mean"]) for r in rows]
    best = max(range(4), key=lambda i: means[i])
    assert rows[best]["rank"] == "1"
    assert sorted(int(r["rank"]) for r in rows) == [1, 2, 3, 4]
    # best.toml trains that configuration with the sweep's seeds
    _, cfg, hp = resolve_train_args(["--config", str(out / "best.toml")])
    _, base_cfg, _ = resolve_train_args(BASE_ARGS)
    assert cfg == base_cfg
    assert (hp.learning_rate, hp.clip_eps) == grid[best]
    best_file = (out / "best.toml").read_text()
    assert "seed = 3" in best_file and "num_seeds = 2" in best_file
    assert f"-> {out / 'best.toml'}" in text and text.count("best config: ") == 1
    # progress: configs done / total and aggregate env steps per second
    progress = [line for line in text.splitlines() if line.startswith("[batch 1/1]")]
    assert len(progress) == 4
    assert "configs 0/4 done" in progress[0] and "configs 4/4 done" in progress[-1]
    assert all("env steps/s (8 runs)" in line for line in progress)
    import matplotlib.image

    for name in ("curves_top.png", "heatmap.png"):
        img = matplotlib.image.imread(out / name)
        assert img.shape[0] > 100 and img.std() > 0.01
    assert "learning_rate" in (out / "spec.toml").read_text()


def test_bad_configuration_is_the_worst_row_and_a_nan_run_poisons_nothing(tmp_path):
    _, cfg, hp = resolve_train_args(BASE_ARGS)
    # learning rate 10 trains badly; 1e38 overflows the first update to NaN parameters
    spec = parse_spec({"seeds": 2, "seed": 3,
                       "grid": {"learning_rate": [2.5e-4, 1e38, 10.0, 1e-3]}})
    text = io.StringIO()
    result = run_sweep(spec, cfg, hp, tmp_path, out=text)
    rows = read_csv(tmp_path / "results.csv")
    by_lr = {float(r["learning_rate"]): r for r in rows}
    assert by_lr[1e38]["diverged"] == "2" and by_lr[1e38]["rank"] == "4"
    assert by_lr[10.0]["diverged"] == "0" and by_lr[10.0]["rank"] == "3"
    assert {by_lr[2.5e-4]["rank"], by_lr[1e-3]["rank"]} == {"1", "2"}
    assert "[2 diverged]" in text.getvalue()
    assert result.diverged.tolist() == [[False, False], [True, True], [False, False],
                                        [False, False]]
    # the good configurations equal their lone runs (clip_eps is the base 0.2)
    for c, lr in ((0, 2.5e-4), (3, 1e-3)):
        for j, seed in enumerate(result.seeds):
            alone_final, alone_curve = train_alone(lr, hp.clip_eps, seed)
            np.testing.assert_allclose(result.final_return[c, j], alone_final, rtol=1e-4)
            np.testing.assert_allclose(result.curves[c, j], alone_curve, rtol=1e-4)
    # the NaN run still has its episode returns; best.toml is a good configuration
    assert np.isfinite(result.final_return).all()
    assert result.best.hparams.learning_rate in (2.5e-4, 1e-3)
    assert not (tmp_path / "heatmap.png").exists()  # one swept parameter: no heatmap


def test_static_options_loop_one_compile_each(tmp_path):
    _, cfg, hp = resolve_train_args(["--total-timesteps", "512", "--num-steps", "32",
                                     "--num-envs", "4", "--update-epochs", "1"])
    spec = parse_spec({"static": {"num_envs": [2, 4]}, "grid": {"clip_eps": [0.1, 0.3]}})
    text = io.StringIO()
    with count_traces() as traces:
        result = run_sweep(spec, cfg, hp, tmp_path, out=text, plots=False)
    assert "static options: 2 combinations -> 2 compiles" in text.getvalue()
    assert traces["chunk"] == 2 and result.traces == 2 and result.groups == 2
    rows = read_csv(tmp_path / "results.csv")
    assert [(r["num_envs"], r["clip_eps"]) for r in rows] == [
        ("2", "0.1"), ("2", "0.3"), ("4", "0.1"), ("4", "0.3")]
    # 512 steps: 8 updates of 2 x 32, 4 updates of 4 x 32 (NaN-padded to 8)
    curves = np.load(tmp_path / "curves.npz")
    assert curves["returns"].shape == (4, 8)
    assert np.isnan(curves["env_steps"][2:, 4:]).all()
    np.testing.assert_array_equal(curves["env_steps"][0], 64 * np.arange(1, 9))
    np.testing.assert_array_equal(curves["env_steps"][3, :4], 128 * np.arange(1, 5))


TWO_DEVICES = textwrap.dedent("""
    import json, sys
    import jax
    from ppox.cli import main
    code = main(["sweep", "--spec", sys.argv[1], "--out", sys.argv[2], "--batch-size", "2",
                 *sys.argv[3:]])
    print(json.dumps({"code": code, "devices": len(jax.local_devices())}))
""")


def test_batches_with_padding_on_two_devices(tmp_path):
    """3 runs, at most 2 per call, 2 XLA CPU devices: 2 calls of 2 runs (1 per device), the
    last padded with a repeat whose result is dropped; every run equals its lone run."""
    spec = tmp_path / "s.toml"
    spec.write_text("seed = 5\n[grid]\nlearning_rate = [2.5e-4, 1e-3, 5e-4]\n")
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
               JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", TWO_DEVICES, str(spec), str(tmp_path / "o"),
                           *BASE_ARGS], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = json.loads(proc.stdout.strip().splitlines()[-1])
    assert last == {"code": 0, "devices": 2}
    assert ("batches: 2 vmapped call(s) of 2 runs (--batch-size; 1 padding run(s)), sharded "
            "across 2 cpu device(s)") in proc.stdout
    info = json.loads((tmp_path / "o" / "sweep.json").read_text())
    assert (info["batches"], info["batch_size"], info["devices"]) == (2, 2, 2)
    curves = np.load(tmp_path / "o" / "curves.npz")
    assert curves["returns"].shape == (3, UPDATES)
    for r, lr in enumerate((2.5e-4, 1e-3, 5e-4)):
        alone_final, alone_curve = train_alone(lr, 0.2, 5)
        np.testing.assert_allclose(curves["final_return"][r], alone_final, rtol=1e-4)
        np.testing.assert_allclose(curves["returns"][r], alone_curve, rtol=1e-4)
    # equal batches reuse one compiled program (train_runs caches it): one compile in all
    assert info["chunk_traces"] == 1 and info["compiles"] == 1
