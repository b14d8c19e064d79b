"""The benchmark harness (``benchmarks/``): timing order, peer flags, side by side with fake
workers, tables, plots, the workers' platform set-up, the scripts' command lines, and the
quick run end to end with the smallest point (CartPole-v1, 2 envs, ~0.05 s timed runs, no
peers), which measures in fresh worker processes."""

from __future__ import annotations

import json
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.harness import machine, peers, plots, tables, workers  # noqa: E402
from ppox import _platform  # noqa: E402
from ppox.config import HParams, PPOConfig  # noqa: E402

SCRIPTS = sorted(p.name for p in (ROOT / "benchmarks").glob("*.py") if not p.name.startswith("_"))


def test_ratio_and_interleaved_order():
    assert machine.ratio([2.0, 4.0, 6.0], [1.0, 2.0, 3.0]) == 2.0
    assert machine.ratio(1.0, 0.0) != machine.ratio(1.0, 0.0)  # NaN
    calls: list[str] = []
    times = machine.interleaved({"a": lambda: calls.append("a"),
                                 "b": lambda: calls.append("b")}, repeats=3)
    assert calls == ["a", "b", "b", "a", "a", "b"]
    assert [len(v) for v in times.values()] == [3, 3]


def test_peer_args_match_the_config():
    cfg = PPOConfig(num_envs=8, num_steps=16, total_timesteps=4096, num_minibatches=2)
    args = peers.peer_args("rejax", cfg, HParams(), repeats=2, seed=3)
    flags = dict(zip(args[::2], args[1::2], strict=True))
    assert flags["--num-envs"] == "8" and flags["--num-steps"] == "16"
    assert flags["--num-minibatches"] == "2" and flags["--hidden"] == "64,64"
    assert flags["--total-timesteps"] == "4096" and flags["--seed"] == "3"
    assert float(flags["--learning-rate"]) == pytest.approx(2.5e-4)
    brax_cfg = PPOConfig(env_id="brax/halfcheetah", critic_hidden=(256, 256))
    brax_flags = peers.peer_args("brax", brax_cfg, HParams())
    assert brax_flags[brax_flags.index("--env") + 1] == "halfcheetah"
    assert brax_flags[brax_flags.index("--critic-hidden") + 1] == "256,256"
    with pytest.raises(ValueError, match="same widths"):
        peers.peer_args("rejax", brax_cfg, HParams())


def test_side_by_side_with_fake_workers(tmp_path):
    def fake(sps: float, ret: float) -> list[str]:
        line = json.dumps({"compile_s": 1.0, "run_s": [1.0], "sps": [sps],
                           "final_return": ret})
        return [sys.executable, "-c", f"print('log line'); print({line!r})"]

    jobs = [peers.Job("ppox", fake(200.0, 500.0)), peers.Job("ppox-dp", fake(300.0, 500.0)),
            peers.Job("peer", fake(100.0, 480.0)), peers.Job("gone", None, skipped="no venv")]
    raw = peers.run_side_by_side(jobs, rounds=2)
    assert [r["round"] for r in raw["ppox"]["runs"]] == [0, 1]
    summary = peers.summarize_side_by_side(raw)
    assert summary["peer"]["sps_ratio"] == pytest.approx(2.0)
    assert summary["peer"]["compile_ratio"] == pytest.approx(1.0)
    assert summary["gone"] == {"skipped": "no venv"}
    # a variant of ppox is compared with every peer, not counted as one
    assert summary["ppox-dp"]["vs_peers"]["peer"]["sps_ratio"] == pytest.approx(3.0)
    assert summary["ppox-dp"]["vs_peers"]["ppox"]["sps_ratio"] == pytest.approx(1.5)
    assert "vs_peers" not in summary["peer"]
    table = tables.side_by_side_table(summary)
    assert "2.00x" in table and "skipped: no venv" in table
    assert "ppox-dp/peer: steps/s 3.00x" in table
    png = plots.plot_side_by_side({"fake": summary}, tmp_path / "s.png")
    assert png.stat().st_size > 0


def test_all_programs_compile_ratio_uses_the_compile_clock_where_both_report_it():
    def run(compile_s: float, total_s: float | None) -> dict:
        res = {"compile_s": compile_s, "run_s": [1.0], "sps": [1.0], "final_return": 0.0}
        return res if total_s is None else {**res, "jax_compile": {"total_s": total_s}}

    raw = {"ppox": {"runs": [run(3.0, 4.0), run(3.0, 6.0)]},
           "brax": {"runs": [run(2.0, 8.0), run(2.0, 12.0)]},
           "old": {"runs": [run(1.0, None)]}}
    summary = peers.summarize_side_by_side(raw)
    assert summary["ppox"]["all_compile_s_median"] == pytest.approx(5.0)
    assert summary["brax"]["compile_ratio"] == pytest.approx(1.5)
    assert summary["brax"]["all_compile_ratio"] == pytest.approx(0.5)
    ratio = summary["old"]["all_compile_ratio"]
    assert ratio != ratio  # NaN: a runner without the clock has no such ratio
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.strip("|").split("|")]
            for line in tables.side_by_side_table(summary).splitlines()[2:]}
    assert rows["brax"][6:8] == ["10.0", "0.50x"]
    assert rows["old"][5:8] == ["3.00x", "-", "-"]  # no clock on that side: no ratio


def test_compile_clock_counts_nested_and_overlapping_spans_once():
    import jax
    import jax.numpy as jnp

    from benchmarks.peers._compile_clock import CompileClock, union_seconds

    assert union_seconds([(0.0, 2.0), (1.0, 3.0), (5.0, 6.0), (1.5, 1.7)]) == 4.0
    assert union_seconds([]) == 0.0
    clock = CompileClock().start()
    try:
        @jax.jit
        def inner(x):
            return jnp.sin(x) * 3.0

        @jax.jit
        def clocked_program(x):
            return inner(x) + jnp.cos(x)

        x = jnp.arange(5.0)  # outside the window read below: an eager op compiles too
        before = clock.summary()["programs_compiled"]
        clocked_program(x).block_until_ready()
        after = clock.summary()
        clocked_program(x).block_until_ready()  # cached: nothing new
        assert clock.summary()["programs_compiled"] == after["programs_compiled"]
    finally:
        jax.monitoring.unregister_event_time_span_listener(clock._on_span)
    assert after["programs_compiled"] == before + 1  # inner is inlined, not compiled apart
    names = [name for name, _ in after["top_backend_compiles"]]
    assert "jit(clocked_program)" in names
    assert after["total_s"] >= after["backend_compile_s"] > 0


def test_rounds_alternate_their_order(tmp_path):
    log = tmp_path / "order.txt"

    def job(name: str) -> peers.Job:
        code = (f"open({str(log)!r}, 'a').write({name!r}); "
                "print('{\"compile_s\": 1, \"run_s\": [1], \"sps\": [1], \"final_return\": 0}')")
        return peers.Job(name, [sys.executable, "-c", code])

    peers.run_side_by_side([job("A"), job("B"), job("C")], rounds=3)
    assert log.read_text() == "ABCCBAABC"


def test_failed_worker_is_reported_not_raised():
    res = workers.run_json_process([sys.executable, "-c", "import sys; sys.exit(3)"])
    assert res["returncode"] == 3 and "error" in res


def test_scaling_table_rows():
    points = [{"env_id": "E", "num_envs": 4, "num_steps": 128,
               "trainer": {"sps_median": 12345.6, "compile_s": 7.25, "run_s": [1.0, 3.0]},
               "memory": {"peak_rss_delta_mb": 300.4}},
              {"env_id": "E", "num_envs": 8, "error": "boom"}]
    row, failed = tables.scaling_table(points).splitlines()[2:]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells == ["E", "4", "128", "12,346", "7.2", "2.00", "300"]
    assert "FAILED: boom" in failed


def test_benchmark_workers_set_up_like_ppox_train(fresh_backend):
    import os

    fresh_backend.delenv("PPOX_CPU_VECTOR_WIDTH", raising=False)
    fresh_backend.setattr(_platform, "cpu_has_avx512", lambda: True)
    workers.worker_platform("brax/halfcheetah")
    assert os.environ["XLA_FLAGS"].split() == [
        "--xla_force_host_platform_device_count=2",
        *_platform.ENV_CPU_XLA_FLAGS["brax/halfcheetah"], "--xla_cpu_prefer_vector_width=512"]
    # a worker of a run spread over devices gets one device per core, as `ppox train` does
    fresh_backend.setenv("XLA_FLAGS", "")
    fresh_backend.setenv("PPOX_CPU_DEVICES", "2")
    workers.worker_platform("CartPole-v1", multi_device=True)
    assert os.environ["XLA_FLAGS"].split() == ["--xla_force_host_platform_device_count=2",
                                               "--xla_cpu_prefer_vector_width=512"]


def test_worker_commands_name_the_script():
    cmd = workers.train_command(PPOConfig(num_envs=2), HParams(), repeats=2, seed=5)
    assert cmd[:3] == [sys.executable, str(ROOT / "benchmarks" / "worker.py"), "train"]
    spec = json.loads(cmd[3])
    assert (spec["repeats"], spec["seed"], spec["api"]) == (2, 5, "fused")
    assert spec["config"]["num_envs"] == 2
    assert workers.shown_command(cmd).startswith("python benchmarks/worker.py train ")


@pytest.mark.parametrize("api", ["fused", "train_runs"])
def test_train_worker_reports_what_the_peer_runners_report(api):
    # 2 envs x 16 steps, 4 updates: the smallest run; one fresh worker process.
    cfg = PPOConfig(num_envs=2, num_steps=16, num_minibatches=2, update_epochs=1,
                    total_timesteps=128)
    cmd = workers.train_command(cfg, HParams(), repeats=2, seed=1, api=api, eval_episodes=2)
    res = workers.run_json_process(cmd, timeout=600, env=workers.worker_env())
    assert "error" not in res, res.get("stderr_tail")
    assert res["peer"] == "ppox" and res["config"]["api"] == api
    assert res["config"]["total_timesteps_run"] == 128 and res["config"]["num_updates"] == 4
    assert len(res["run_s"]) == len(res["sps"]) == 2
    assert res["sps"] == pytest.approx([128 / t for t in res["run_s"]])
    assert res["compile_s"] > 0 and res["setup_s"] > 0
    assert len(res["eval_return_per_repeat"]) == 2
    assert res["eval_return"] == pytest.approx(sum(res["eval_return_per_repeat"]) / 2)
    assert res["host"]["executable"] == sys.executable
    # JAX's clock of every program: the training program's compile and the evaluation's
    clock = res["jax_compile"]
    assert clock["programs_compiled"] >= 2 and clock["backend_compile_s"] > 0
    assert clock["total_s"] >= max(clock["trace_s"], clock["lower_s"],
                                   clock["backend_compile_s"])
    assert clock["total_s"] <= res["process_wall_s"]


def test_machine_name_override_and_json(tmp_path, monkeypatch):
    import numpy as np

    monkeypatch.setenv("PPOX_BENCH_MACHINE", "My Box (TM) 2")
    assert machine.machine_name() == "my-box-2"
    monkeypatch.delenv("PPOX_BENCH_MACHINE")
    monkeypatch.setattr(machine, "_cpu_model", lambda: "AMD EPYC")
    monkeypatch.setattr(machine, "_cpu_count", lambda: 2)
    from ppox import _platform

    for avx512, name in ((False, "cpu-2core-amd-epyc"), (True, "cpu-2core-amd-epyc-avx512")):
        monkeypatch.setattr(_platform, "cpu_has_avx512", lambda a=avx512: a)
        assert machine.machine_name() == name
    path = machine.save_json(tmp_path / "a" / "r.json",
                             {"x": np.float32(1.5), "v": np.arange(2), "p": tmp_path})
    assert json.loads(path.read_text()) == {"x": 1.5, "v": [0, 1], "p": str(tmp_path)}


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_script_has_a_command_line(script, monkeypatch, capsys):
    path = ROOT / "benchmarks" / script
    monkeypatch.setattr(sys, "argv", [str(path), "--help"])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_path(str(path), run_name="__main__")
    assert exit_.value.code in (0, None)
    assert "usage" in capsys.readouterr().out.lower()


def test_quick_run_end_to_end_minimal(tmp_path, capsys):
    from benchmarks import run

    code = run.main(["--skip-peers", "--envs", "CartPole-v1", "--num-envs", "2",
                     "--target-s", "0.05", "--out", str(tmp_path)])
    assert code == 0
    text = capsys.readouterr().out
    assert "Scaling" in text and "Roofline" in text
    data = json.loads((tmp_path / "bench.json").read_text())
    (point,) = data["points"]
    assert "error" not in point, point.get("stderr_tail")
    assert point["num_envs"] == 2 and point["env_id"] == "CartPole-v1"
    assert point["command"].startswith("python benchmarks/worker.py point ")
    for part in ("trainer", "env", "rollout"):
        assert point[part]["compile_s"] > 0
        assert point[part]["sps_median"] > 0
        assert point[part]["env_steps"] % (2 * 128) == 0
    assert point["trainer"]["useful_gflops"] > 0
    assert point["memory"]["peak_rss_after_run_mb"] >= point["memory"]["rss_before_mb"]
    assert data["matmul_peak"]["peak_gflops"] > 0
    assert data["machine"]["jax"]
    assert (tmp_path / "bench_scaling.png").stat().st_size > 0
    assert (tmp_path / "bench_roofline.png").stat().st_size > 0


# A stand-in for PureJaxRL's ppo.py with its interface: make_train(config) writes
# NUM_UPDATES into the config and returns train(rng) -> {"metrics": [U, T, E] arrays}.
FAKE_PPO = '''
import jax.numpy as jnp

def make_train(config):
    config["NUM_UPDATES"] = int(config["TOTAL_TIMESTEPS"] // config["NUM_STEPS"]
                                // config["NUM_ENVS"])
    shape = (config["NUM_UPDATES"], config["NUM_STEPS"], config["NUM_ENVS"])

    def train(rng):
        done = jnp.zeros(shape, bool).at[-1, -1, 0].set(True)
        returns = jnp.full(shape, 7.0).at[-1, -1, 0].set(42.0)
        return {"metrics": {"returned_episode": done, "returned_episode_returns": returns}}

    return train
'''


def test_purejaxrl_runs_in_the_rejax_venv_and_is_skipped_without_a_clone(tmp_path,
                                                                         monkeypatch):
    cmd, why = peers.peer_command("purejaxrl")
    if cmd is None:
        assert "peer-rejax" in why and "build_venv.sh rejax" in why
    else:
        assert cmd[0].endswith("peer-rejax/bin/python") and cmd[1].endswith("run_purejaxrl.py")
    sbs = runpy.run_path(str(ROOT / "benchmarks" / "side_by_side.py"), run_name="sbs")
    cfg, hp = peers.cartpole_comparison_config(4, 1024)
    job = sbs["purejaxrl_job"](sbs["Args"](), cfg, hp, 2)
    assert job.cmd is None and "--purejaxrl" in job.skipped
    clone = tmp_path / "clone" / "purejaxrl"
    clone.mkdir(parents=True)
    for name in ("ppo.py", "wrappers.py"):
        (clone / name).write_text(FAKE_PPO if name == "ppo.py" else "")
    monkeypatch.setattr(peers, "peer_command", lambda peer: (["py", f"run_{peer}.py"], None))
    job = sbs["purejaxrl_job"](sbs["Args"](purejaxrl=tmp_path / "clone"), cfg, hp, 2)
    assert job.cmd[:2] == ["py", "run_purejaxrl.py"] and "--timed" in job.cmd
    folder = Path(job.cmd[job.cmd.index("--script-dir") + 1])
    assert (folder / "ppo.py").read_text() == FAKE_PPO  # read from the clone
    flags = dict(zip(job.cmd[2::2], job.cmd[3::2], strict=False))
    assert flags["--num-envs"] == "4" and flags["--total-timesteps"] == "1024"


def test_purejaxrl_runner_times_the_compile_apart(tmp_path):
    (tmp_path / "ppo.py").write_text(FAKE_PPO)
    runner = ROOT / "benchmarks" / "peers" / "run_purejaxrl.py"
    proc = subprocess.run(
        [sys.executable, str(runner), "--script-dir", str(tmp_path), "--timed",
         "--num-envs", "2", "--num-steps", "8", "--total-timesteps", "70", "--repeats", "2"],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["peer"] == "purejaxrl" and out["compile_s"] > 0
    assert out["config"]["total_timesteps"] == 64  # 4 updates of 2 x 8: what was trained
    assert len(out["run_s"]) == len(out["sps"]) == 2
    assert out["sps"] == pytest.approx([64 / t for t in out["run_s"]])
    assert out["final_return"] == 42.0 and out["final_return_per_repeat"] == [42.0, 42.0]
    refused = subprocess.run([sys.executable, str(runner), "--script-dir", str(tmp_path),
                              "--timed", "--hidden", "32"], capture_output=True, text=True,
                             timeout=300)
    assert refused.returncode != 0 and "two layers of 64" in refused.stderr
