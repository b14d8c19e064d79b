"""Sweep specs (parsing, one-line errors), expansion, batch planning, ranking, plots.

Nothing here trains: every check runs on the host, before anything would compile.
"""

import itertools

import jax
import numpy as np
import pytest

from ppox.cli import main
from ppox.config import ConfigError, HParams, PPOConfig
from ppox.host.plots import forward_fill, plot_heatmap, plot_learning_curves
from ppox.sweep import (
    Distribution,
    estimate_run_bytes,
    expand,
    load_spec,
    parse_spec,
    plan_batches,
    rank_configs,
    seed_stats,
)

GOOD = """
seeds = 3
[grid]
learning_rate = [2.5e-4, 1e-3]
clip_eps = [0.1, 0.2]
[random]
samples = 16
ent_coef = { log_uniform = [1e-4, 1e-1] }
"""


def _write(tmp_path, text, name="sweep.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_issue_example_parses_and_crosses_grid_with_random(tmp_path):
    spec = load_spec(_write(tmp_path, GOOD))
    assert spec.seeds == 3 and spec.samples == 16
    assert spec.grid == {"learning_rate": (2.5e-4, 1e-3), "clip_eps": (0.1, 0.2)}
    assert spec.random == {"ent_coef": Distribution("log_uniform", 1e-4, 1e-1)}
    points = spec.hparam_points()
    assert len(points) == 2 * 2 * 16  # grid x samples
    # the grid varies its last name fastest, and every grid point gets the same 16 draws
    assert [(p["learning_rate"], p["clip_eps"]) for p in points[::16]] == list(
        itertools.product((2.5e-4, 1e-3), (0.1, 0.2)))
    draws = [p["ent_coef"] for p in points[:16]]
    for g in range(4):
        assert [p["ent_coef"] for p in points[16 * g:16 * (g + 1)]] == draws
    assert len(set(draws)) == 16
    assert all(1e-4 <= d <= 1e-1 for d in draws)


def test_random_search_is_seeded_and_log_uniform():
    spec = parse_spec({"random": {"samples": 4000, "ent_coef": {"log_uniform": [1e-4, 1e-1]},
                                  "clip_eps": {"uniform": [0.1, 0.3]}}})
    again = parse_spec({"random": {"samples": 4000,
                                   "ent_coef": {"log_uniform": [1e-4, 1e-1]},
                                   "clip_eps": {"uniform": [0.1, 0.3]}}})
    other = parse_spec({"random_seed": 1,
                        "random": {"samples": 4000, "ent_coef": {"log_uniform": [1e-4, 1e-1]},
                                   "clip_eps": {"uniform": [0.1, 0.3]}}})
    ent = np.array([p["ent_coef"] for p in spec.hparam_points()])
    clip = np.array([p["clip_eps"] for p in spec.hparam_points()])
    assert ent.tolist() == [p["ent_coef"] for p in again.hparam_points()]
    assert ent.tolist() != [p["ent_coef"] for p in other.hparam_points()]
    # log-uniform over 3 decades: each decade holds about a third of the samples
    # (a uniform draw would put ~90% in the top decade [1e-2, 1e-1])
    decade = np.floor(np.log10(ent)).astype(int)
    for d in (-4, -3, -2):
        assert 0.30 < np.mean(decade == d) < 0.37
    assert abs(np.mean(clip) - 0.2) < 0.005 and clip.min() >= 0.1 and clip.max() <= 0.3


def test_expand_applies_spec_on_top_of_the_base_and_static_combinations():
    spec = parse_spec({"seeds": 2, "grid": {"learning_rate": [1e-3, 3e-4]},
                       "static": {"num_envs": [4, 8], "actor_hidden": [[32], [64, 64]]}})
    base_cfg = PPOConfig(total_timesteps=4096, num_steps=64)
    base_hp = HParams(clip_eps=0.3)
    configs = expand(spec, base_cfg, base_hp)
    assert len(configs) == 2 * 2 * 2  # static combinations x grid
    assert [c.index for c in configs] == list(range(8))
    assert [c.group for c in configs] == [0, 0, 1, 1, 2, 2, 3, 3]
    assert configs[0].cfg == base_cfg.replace(num_envs=4, actor_hidden=(32,))
    assert configs[7].cfg == base_cfg.replace(num_envs=8, actor_hidden=(64, 64))
    assert configs[1].hparams == HParams(clip_eps=0.3, learning_rate=3e-4)
    assert configs[7].label() == "num_envs=8 actor_hidden=64x64 learning_rate=0.0003"


@pytest.mark.parametrize(("text", "expected"), [
    # unknown hyperparameter name
    ("[grid]\nlearning_rat = [1e-3]\n",
     "[grid]: unknown hyperparameter 'learning_rat' (did you mean 'learning_rate'?); "
     "valid names: learning_rate, clip_eps"),
    ("[random]\nsamples = 2\nentropy = { uniform = [0.0, 0.1] }\n",
     "[random]: unknown hyperparameter 'entropy'"),
    # empty list
    ("[grid]\nclip_eps = []\n",
     "[grid] clip_eps: is an empty list; give at least one value, e.g. clip_eps = [0.2], "
     "or remove the line"),
    ("[static]\nnum_envs = []\n", "[static] num_envs: is an empty list"),
    # negative (and zero) lower bound of a log-uniform range
    ("[random]\nsamples = 4\nent_coef = { log_uniform = [-1e-4, 1e-1] }\n",
     "[random] ent_coef: log_uniform needs 0 < low <= high, got low=-0.0001; use a positive "
     "lower bound"),
    ("[random]\nsamples = 4\nent_coef = { log_uniform = [0, 1e-1] }\n",
     "[random] ent_coef: log_uniform needs 0 < low <= high, got low=0"),
    # a static option listed as vmappable
    ("[grid]\nnum_envs = [4, 8]\n",
     "[grid] num_envs: is a static option (a PPOConfig field: it changes shapes or the "
     "compiled program) and cannot be vmapped; move it to a [static] table"),
    ("[random]\nsamples = 2\nnum_steps = { uniform = [64, 128] }\n",
     "[random] num_steps: is a static option"),
    # and the other mistakes, one line each
    ("[static]\nlearning_rate = [1e-3]\n",
     "[static] learning_rate: is a hyperparameter (traced: every value shares one compile); "
     "put it under [grid] or [random]"),
    ("[static]\nenv_id = ['Acrobot-v1']\n", "[static] env_id: cannot be swept; choose the "
     "environment with --env"),
    ("[static]\nnum_envz = [4]\n", "[static]: unknown option 'num_envz' (did you mean "
     "'num_envs'?)"),
    ("[static]\nactor_hidden = [64, 128]\n", "[static] actor_hidden: must be a list of "
     "layer-width lists, e.g. actor_hidden = [[64, 64], [128, 128]]"),
    ("[static]\nactivation = ['tanh', 'swish']\n", "[static] activation: 'swish' is not one "
     "of 'tanh', 'relu', 'elu', 'silu', 'gelu'"),
    ("[static]\nnum_envs = ['4']\n", "[static] num_envs: '4' must be an integer"),
    ("grids = 1\n", "unknown key 'grids' (did you mean 'grid'?); top-level keys are seeds"),
    ("seeds = 0\n", "seeds: seeds=0 must be an integer >= 1"),
    ("[grid]\nlearning_rate = 1e-3\n", "[grid] learning_rate: must be a list of values, "
     "e.g. learning_rate = [0.001]"),
    ("[grid]\ngamma = [0.9, 1.5]\n", "[grid] gamma: gamma=1.5 is invalid: the discount must "
     "lie in [0, 1]"),
    ("[grid]\nclip_eps = [0.1, 'x']\n", "[grid] clip_eps: 'x' is not a number"),
    ("[grid]\nclip_eps = [0.1]\n[random]\nsamples = 2\nclip_eps = { uniform = [0.1, 0.3] }\n",
     "clip_eps is in both [grid] and [random]; sweep each hyperparameter in one of them"),
    ("[random]\nent_coef = { uniform = [0.0, 0.1] }\n", "[random]: needs samples = N"),
    ("[random]\nsamples = 0\nent_coef = { uniform = [0.0, 0.1] }\n",
     "[random] samples: samples=0 must be an integer >= 1"),
    ("[random]\nsamples = 3\n", "[random]: has samples but no ranges"),
    ("[random]\nsamples = 3\nclip_eps = { uniform = [0.3, 0.1] }\n",
     "[random] clip_eps: uniform needs low <= high, got [0.3, 0.1]; swap the bounds"),
    ("[random]\nsamples = 3\nclip_eps = { normal = [0.2, 0.1] }\n",
     "[random] clip_eps: must be a table with one key, uniform or log_uniform"),
    ("[random]\nsamples = 3\nclip_eps = [0.1, 0.2]\n",
     "[random] clip_eps: must be a table with one key, uniform or log_uniform"),
    ("[random]\nsamples = 3\ngamma = { uniform = [0.9, 1.1] }\n",
     "[random] gamma: gamma=1.1 is invalid"),
    ("[grid\n", "is not valid TOML"),
])
def test_bad_spec_is_one_clear_line(tmp_path, text, expected):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_spec(path)
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith(f"sweep spec {str(path)!r}")
    assert expected in msg


def test_static_combination_that_does_not_fit_the_base_fails_before_compiling():
    # 8 envs x 6 steps = 48 rows split into 4 minibatches of 12; 3 envs x 6 steps = 18 rows
    # do not. The error names the spec, the combination and the reason.
    spec = parse_spec({"static": {"num_envs": [8, 3]}}, source="s.toml")
    with pytest.raises(ConfigError, match=r"^sweep spec 's.toml': \[static\] combination "
                       r"\{num_envs=3\}: num_minibatches=4 does not divide the batch"):
        expand(spec, PPOConfig(num_steps=6, total_timesteps=1000))


COMPILES: list[str] = []


def _listener(event, duration, **kwargs):
    name = str(kwargs.get("fun_name", ""))
    if event.endswith("backend_compile_duration") and any(
            w in name for w in ("chunk", "train", "init", "vmap", "lambda", "shard")):
        COMPILES.append(name)


jax.monitoring.register_event_duration_secs_listener(_listener)


@pytest.mark.parametrize(("text", "expected"), [
    ("[grid]\nlearning_rate = []\n", "[grid] learning_rate: is an empty list"),
    ("[grid]\nnum_envs = [4, 8]\n", "[grid] num_envs: is a static option"),
    ("[static]\nnum_minibatches = [3]\n", "[static] combination {num_minibatches=3}: "
     "num_minibatches=3 does not divide the batch"),
])
def test_cli_bad_spec_exits_2_with_one_line_before_any_compile(tmp_path, capsys, text,
                                                                  expected):
    COMPILES.clear()
    spec = _write(tmp_path, text)
    code = main(["sweep", "--spec", str(spec), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2
    assert lines == [lines[0]] and lines[0].startswith("error: sweep spec ")
    assert expected in lines[0]
    assert COMPILES == []
    assert not (tmp_path / "out").exists()


def test_cli_missing_spec_file(tmp_path, capsys):
    code = main(["sweep", "--spec", str(tmp_path / "nope.toml"), "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("error: sweep spec ") and "does not exist" in err


@pytest.mark.parametrize(("runs", "max_batch", "devices", "size", "batches", "padding"), [
    (8, None, 1, 8, 1, 0),  # everything fits: one call
    (8, None, 2, 8, 1, 0),
    (3, None, 2, 4, 1, 1),  # padded to shard evenly across 2 devices
    (10, 8, 2, 6, 2, 2),  # ceil(10/8) = 2 batches of ceil(10/2) = 5 -> 6 (2 devices)
    (10, 4, 1, 4, 3, 2),  # 3 batches of ceil(10/3) = 4
    (64, 64, 2, 64, 1, 0),
    (5, 3, 2, 2, 3, 1),  # max 3 rounds down to 2 (a multiple of 2 devices)
    (5, 1, 2, 2, 3, 1),  # at least one run per device
])
def test_plan_batches(runs, max_batch, devices, size, batches, padding):
    plan = plan_batches(runs, max_batch, devices)
    assert (plan.batch_size, plan.num_batches, plan.padding) == (size, batches, padding)
    assert plan.batch_size % devices == 0
    parts = plan.batches()
    assert all(len(p) == size for p in parts)
    flat = [r for p in parts for r in p]
    # every run exactly once, then the padding repeats the last real run of the last batch
    assert flat[:runs] == list(range(runs))
    assert flat[runs:] == [runs - 1] * padding


def test_estimate_run_bytes_grows_with_envs_and_width():
    small = estimate_run_bytes(PPOConfig(num_envs=4, num_steps=128, total_timesteps=1024))
    wide = estimate_run_bytes(PPOConfig(num_envs=4, num_steps=128, total_timesteps=1024,
                                        actor_hidden=(256, 256), critic_hidden=(256, 256)))
    many = estimate_run_bytes(PPOConfig(num_envs=64, num_steps=128, total_timesteps=8192))
    # CartPole, 64x64 MLPs: ~9k params x (param + 2 Adam moments) x 4 bytes ~ 110 kB, plus
    # a 512-step rollout of 4-dim observations ~ 57 kB; x3 -> ~0.5 MB
    assert 200_000 < small < 2_000_000
    assert wide > 3 * small and many > 4 * small


def test_rank_configs_nan_and_diverged_last():
    # config:        0     1     2       3     4
    final = np.array([50.0, 80.0, np.nan, 80.0, 90.0])
    diverged = np.array([False, False, False, False, True])
    auc = np.array([10.0, 20.0, 30.0, 25.0, 99.0])
    # 4 diverged -> last; 2 has no final return -> after every finite one; 1 and 3 tie on
    # final return -> 3 (higher AUC) first
    assert rank_configs(final, diverged, auc).tolist() == [3, 1, 0, 2, 4]


def test_seed_stats_hand_computed():
    x = np.array([[1.0, 3.0], [2.0, np.nan], [5.0, 5.0]])
    mean, std = seed_stats(x)
    # [1, 3]: mean 2, population std 1; a NaN seed makes the mean NaN; [5, 5]: std 0
    np.testing.assert_allclose(mean, [2.0, np.nan, 5.0])
    np.testing.assert_allclose(std, [1.0, np.nan, 0.0])


def test_forward_fill():
    y = np.array([[np.nan, 1.0, np.nan, 3.0, np.nan], [2.0, np.nan, np.nan, np.nan, 4.0]])
    np.testing.assert_array_equal(forward_fill(y), [[np.nan, 1, 1, 3, 3], [2, 2, 2, 2, 4]])


def test_plots_write_pngs(tmp_path):
    import matplotlib.image

    x = np.arange(1, 11) * 512.0
    runs = np.stack([np.linspace(10, 100, 10), np.linspace(20, 120, 10)])
    runs[0, 3] = np.nan
    p1 = plot_learning_curves({"a": (x, runs), "b (1 run)": (x, runs[:1] / 2)},
                              tmp_path / "c.png", title="t")
    p2 = plot_heatmap(np.array([[1.0, np.nan, 3.0], [4.0, 5.0, 6.0]]), ["x1", "x2", "x3"],
                      ["y1", "y2"], tmp_path / "h.png", xlabel="x", ylabel="y")
    for p in (p1, p2):
        img = matplotlib.image.imread(p)
        assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
        assert img.std() > 0.01  # not a blank canvas
    with pytest.raises(ValueError, match="do not match labels"):
        plot_heatmap(np.zeros((2, 2)), ["a"], ["b", "c"], tmp_path / "bad.png")


def test_spec_round_trips_through_toml(tmp_path):
    import tomli_w

    spec = parse_spec({"seeds": 2, "seed": 7, "random_seed": 3,
                       "grid": {"learning_rate": [1e-3, 3e-4]},
                       "random": {"samples": 5, "ent_coef": {"log_uniform": [1e-4, 1e-2]}},
                       "static": {"actor_hidden": [[32, 32], [64]], "anneal_lr": [True]}},
                      source="x")
    path = _write(tmp_path, tomli_w.dumps(spec.to_dict()))
    again = load_spec(path)
    assert again == parse_spec(spec.to_dict(), source=str(path))
    assert (again.grid, again.random, again.static, again.samples) == (
        spec.grid, spec.random, spec.static, spec.samples)
    assert (again.seeds, again.seed, again.random_seed) == (2, 7, 3)
    assert again.hparam_points() == spec.hparam_points()


# --------------------------------------------------------------------------------------
# The sweep directory (no training: records, protection, a resumed batch's metrics)


def _record(**plan):
    from ppox.host.configfile import run_file_dict
    from ppox.sweep.store import SweepRecord

    spec = parse_spec({"seeds": 2, "grid": {"learning_rate": [1e-3, 3e-4]}})
    return SweepRecord(base=run_file_dict(PPOConfig(), HParams(), 0, 2), spec=spec.to_dict(),
                       plan={"batch_size": None, "progress_chunks": 4, "checkpoint_every": 1,
                             "devices": 1, "groups": [[4, 1, 4]], **plan})


def test_sweep_dir_record_round_trips_and_resume_names_each_difference(tmp_path):
    from ppox.host.configfile import run_file_dict
    from ppox.sweep.store import SweepDir, SweepRecord

    store = SweepDir(tmp_path / "d")
    record = _record()
    store.create(record, overwrite=False)
    stored = store.read_record()
    assert (stored.base["env"], stored.spec["grid"], stored.plan) == (
        "CartPole-v1", {"learning_rate": [1e-3, 3e-4]}, record.plan)
    assert stored.plans() == [plan_batches(4, 4, 1)]
    store.check_resume(stored, record)  # the same settings
    store.check_resume(stored, _record(checkpoint_every=5))  # changes no number
    changed = SweepRecord(
        base=run_file_dict(PPOConfig(num_envs=8), HParams(gamma=0.9), 0, 2),
        spec=parse_spec({"seeds": 2, "grid": {"learning_rate": [1e-3]}}).to_dict(),
        plan={**record.plan, "batch_size": 2})
    with pytest.raises(ConfigError) as info:
        store.check_resume(stored, changed)
    msg = str(info.value)
    assert "\n" not in msg
    for part in ("[config] num_envs: 8 here, 4 in the sweep",
                 "[hparams] gamma: 0.9 here, 0.99 in the sweep",
                 "[grid] learning_rate: [0.001] here, [0.001, 0.0003] in the sweep",
                 "batch_size: 2 here, none in the sweep"):
        assert part in msg
    # a sweep recorded before a setting existed resumes with that setting's default
    old = SweepRecord(base={**stored.base, "config": {
        k: v for k, v in stored.base["config"].items() if k != "num_envs"}},
        spec=stored.spec, plan=stored.plan)
    store.check_resume(old, record)


def test_sweep_dir_protection(tmp_path):
    from ppox.sweep.store import SweepDir

    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is a file, not a directory"):
        SweepDir(tmp_path / "file").create(_record(), overwrite=False)
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    for overwrite, match in ((False, "already holds files; pass --resume"),
                             (True, "--overwrite clears only a sweep directory")):
        with pytest.raises(ConfigError, match=match):
            SweepDir(other).create(_record(), overwrite=overwrite)
    assert (other / "keep.txt").read_text() == "mine"
    with pytest.raises(ConfigError, match="holds no sweep to resume"):
        SweepDir(other).read_record()
    sweep = SweepDir(tmp_path / "sweep")
    sweep.create(_record(), overwrite=False)
    (sweep.path / "batches").mkdir()
    (sweep.path / "batches" / "0-0.npz").write_text("old")
    with pytest.raises(ConfigError, match="already holds a sweep"):
        sweep.create(_record(), overwrite=False)
    sweep.create(_record(), overwrite=True)
    assert sorted(p.name for p in sweep.path.iterdir()) == ["base.toml", "plan.json",
                                                              "spec.toml"]


def test_batch_records_are_written_whole_and_read_back_equal(tmp_path):
    from ppox.sweep.plan import Batch
    from ppox.sweep.store import BatchRecord, SweepDir

    store = SweepDir(tmp_path)
    batch = Batch(group=0, number=1, runs=[3, 4, 4])
    assert store.load_batch(batch) is None and not store.is_finished(batch)
    rec = BatchRecord(final_return=np.array([1.5, np.nan]), auc=np.array([0.25, 2.0]),
                      curves=np.array([[np.nan, 1.0], [2.0, 3.0]], np.float32),
                      diverged=np.array([False, True]), wall_s=1.25, compile_s=0.5,
                      run_s=0.75, env_steps=1024)
    store.save_batch(batch, rec)
    again = store.load_batch(batch)
    for name in ("final_return", "auc", "curves", "diverged"):
        np.testing.assert_array_equal(getattr(again, name), getattr(rec, name))
    assert (again.wall_s, again.compile_s, again.run_s, again.env_steps) == (1.25, 0.5, 0.75,
                                                                            1024)
    assert sorted(p.name for p in (tmp_path / "batches").iterdir()) == ["0-1.npz"]


def test_resumed_batch_metrics_tell_runs_of_the_same_seed_apart(tmp_path):
    """Two configurations with seed 0 in one batch: rows of one update come in run order,
    so the k-th row of an update is run k, whatever the runs are called."""
    import json

    from ppox.sweep.store import read_batch_metrics

    rows = []
    for start, n in ((0, 2), (2, 1)):  # two chunks, as train_runs writes them
        for r, name in enumerate(["seed0", "seed0", "seed1"]):
            for u in range(start, start + n):
                rows.append({"run": name, "update": u + 1, "episode_count": float(r),
                             "episode_return_sum": 10.0 * r + u,
                             "loss": "nan" if (r, u) == (1, 2) else 0.5, "other": None})
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in rows))
    m = read_batch_metrics(tmp_path, num_runs=3, num_updates=3)
    np.testing.assert_array_equal(m["episode_return_sum"], [[0, 1, 2], [10, 11, 12],
                                                            [20, 21, 22]])
    np.testing.assert_array_equal(m["episode_count"], [[0] * 3, [1] * 3, [2] * 3])
    assert np.isnan(m["loss"][1, 2]) and np.isfinite(np.delete(m["loss"].ravel(), 5)).all()
    assert set(m) == {"episode_count", "episode_return_sum", "loss"}
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in rows[:-1]))
    with pytest.raises(RuntimeError, match="holds 2 of 3 runs' rows"):
        read_batch_metrics(tmp_path, num_runs=3, num_updates=3)


def test_a_swept_hparam_the_algorithm_does_not_read_is_refused():
    from ppox.config import ConfigError, HParams, PPOConfig
    from ppox.sweep import expand

    with pytest.raises(ConfigError, match=r"kl_coef=0.1 is read by algo ppo_kl only"):
        expand(parse_spec({"grid": {"kl_coef": [0.1, 0.2]}}), PPOConfig(), HParams())
    configs = expand(parse_spec({"grid": {"kl_coef": [0.1, 0.2]}}),
                     PPOConfig(algo="ppo_kl"), HParams())
    assert [c.swept["kl_coef"] for c in configs] == [0.1, 0.2]


def test_cpu_device_hint_only_where_one_process_leaves_cores_idle(monkeypatch):
    from ppox.sweep.report import cpu_device_hint

    monkeypatch.delenv("PPOX_CPU_DEVICES", raising=False)
    monkeypatch.setenv("XLA_FLAGS", "")
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1, 2, 3})
    hint = cpu_device_hint("cpu", 1, 1)
    assert hint is not None and "PPOX_CPU_DEVICES=4" in hint and "4 cores" in hint
    assert cpu_device_hint("cpu", 1, 2) is None  # jax.distributed: each process its own cores
    assert cpu_device_hint("cpu", 4, 1) is None
    assert cpu_device_hint("gpu", 1, 1) is None
    monkeypatch.setenv("PPOX_CPU_DEVICES", "1")  # the user asked for one device
    assert cpu_device_hint("cpu", 1, 1) is None
    monkeypatch.delenv("PPOX_CPU_DEVICES")
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=1")
    assert cpu_device_hint("cpu", 1, 1) is None
