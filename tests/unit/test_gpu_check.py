"""``benchmarks/gpu_check.py``: every step's JSON from fake workers, a failed, a timed-out
and a skipped step recorded without stopping the rest, the archive for the device tool's
``$OUT``, and (slow) the smoke mode for real in a fresh process: CartPole and the sweep."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import gpu_check  # noqa: E402

MEASURED = ("cartpole", "cartpole_large", "sweep", "brax", "playground")


def fake_point(env_id, num_envs, parts, *, target_s, repeats, timeout, overrides):
    if env_id.startswith("playground/"):
        return {"error": f"timed out after {timeout} s", "returncode": None,
                "stderr_tail": "compiling..."}
    return {"env_id": env_id, "num_envs": num_envs, "process_wall_s": 9.0,
            "config": {"num_envs": num_envs, "num_steps": 128},
            "memory": {"device": {"peak_bytes_in_use": 123}},
            "trainer": {"compile_s": 4.0, "run_s": [1.0, 2.0, 3.0], "env_steps": 1000 * num_envs,
                        "sps": [1.0, 2.0, 3.0], "sps_median": 500.0 * num_envs, "iters": 7,
                        "useful_gflops": 1.5},
            "command": f"python benchmarks/worker.py point {env_id}"}


def fake_child(kind, spec, timeout):
    if kind == "device":
        return {"machine": "nvidia-fake", "backend": "gpu", "devices": ["cuda:0"],
                "versions": {"jax": "0.11.2"},
                "pins_that_differ": {"jax": {"pinned": "0.10.2", "installed": "0.11.2"}},
                "matmul": {"n": 64, "peak_gflops": 1000.0},
                "imports": {"brax": {"ok": True}, "mujoco_playground": {"ok": False}},
                "process_wall_s": 2.0}
    if kind == "profile":
        rows = [{"name": "fusion.1", "count": 256, "total_us": 3000.0, "share": 0.75},
                {"name": "gemm", "count": 32, "total_us": 1000.0, "share": 0.25}]
        return {"machine": "nvidia-fake", "compile_s": 6.0, "env_steps_traced": 2 * 524_288,
                "profile": {"traced_s": 0.01, "first_update": 3, "last_update": 4,
                            "trace": "/tmp/x"},
                "table": {"source": "device", "events": 288, "busy_us": 4000.0,
                          "rows": rows}, "process_wall_s": 15.0}
    sweep = {"compile_s": 5.0, "run_s": 10.0, "env_steps": 64_000, "sps_run": 6400.0,
             "sps_wall": 4000.0, "best_final_return": 500.0}
    return {"sweep": sweep, "sequential": {"sps_run": 640.0, "calls_timed": 2},
            "process_wall_s": 20.0}


def test_every_step_writes_its_fields_and_failures_do_not_stop_the_rest(
        tmp_path, monkeypatch, capsys):
    from benchmarks.harness import peers

    monkeypatch.setattr(gpu_check, "point_in_process", fake_point)
    monkeypatch.setattr(gpu_check, "child_in_process", fake_child)
    monkeypatch.setattr(peers, "peer_job", lambda peer, cfg, hp: peers.Job(
        peer, None, skipped=f"no venv at .venvs/peer-{peer}"))  # whatever this checkout has
    monkeypatch.setenv("OUT", str(tmp_path / "out"))
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("PPOX_COMPILE_CACHE", raising=False)  # main() sets it; restored after
    res_dir = tmp_path / "res"
    rc = gpu_check.main(["--out", str(res_dir)])

    assert rc == 1  # the playground step timed out
    assert os.environ["PPOX_COMPILE_CACHE"] == "0"  # workers compile cold
    assert "JAX_COMPILATION_CACHE_DIR" not in os.environ
    steps = {s: json.loads((res_dir / f"{s}.json").read_text()) for s in gpu_check.STEPS}
    for name in ("cartpole", "cartpole_large", "sweep", "brax"):
        s = steps[name]
        assert s["status"] == "ok"
        assert s["compile_s"] > 0 and s["run_s"] > 0 and s["sps"] > 0 and s["env_steps"] > 0
        assert s["machine"] == "nvidia-fake" and s["jax_devices"] == ["cuda:0"]
    assert steps["cartpole"]["what"] == "CartPole-v1, 4,096 envs, trainer"
    assert steps["cartpole"]["run_s"] == 2.0  # median of the timed calls
    assert steps["cartpole_large"]["sps"] == 500.0 * 16384
    assert steps["brax"]["what"].startswith("brax/ant, 4,096 envs")
    assert steps["sweep"]["note"].startswith("10.0x the sequential")
    assert steps["playground"]["status"] == "timed out"
    assert steps["peers"]["status"] == "skipped" and "no venv at" in steps["peers"]["note"]
    assert steps["device"]["pins_that_differ"]["jax"]["installed"] == "0.11.2"
    prof = steps["profile"]
    assert prof["status"] == "ok" and prof["run_s"] == 0.01
    assert prof["note"].endswith("device kernels busy 40% of it; top by own time: "
                                 "fusion.1 75% (x256); gemm 25% (x32)")
    assert prof["kernels"]["rows"][0]["name"] == "fusion.1"

    summary = json.loads((res_dir / "summary.json").read_text())
    assert [s["step"] for s in summary["steps"]] == list(gpu_check.STEPS)
    md = (res_dir / "summary.md").read_text()
    assert "jax 0.11.2 (pinned 0.10.2)" in md and "| timed out |" in md
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["gpu_check.tar.gz", "summary.json",
                                                     "summary.md"]
    with tarfile.open(out / "gpu_check.tar.gz") as tar:
        names = tar.getnames()
    assert f"{res_dir.name}/brax.json" in names and f"{res_dir.name}/summary.md" in names
    printed = capsys.readouterr().out
    assert "[playground] timed out" in printed and "compiling..." in printed


def test_a_step_that_raises_is_recorded_and_no_gpu_runs_nothing(tmp_path, monkeypatch,
                                                                capsys):
    def boom(*args, **kwargs):
        raise RuntimeError("worker crashed")

    def cpu_device(kind, spec, timeout):
        return {**fake_child("device", spec, timeout), "backend": "cpu", "devices": ["cpu:0"]}

    monkeypatch.setattr(gpu_check, "point_in_process", boom)
    monkeypatch.setattr(gpu_check, "child_in_process", fake_child)
    monkeypatch.delenv("OUT", raising=False)
    monkeypatch.delenv("PPOX_COMPILE_CACHE", raising=False)
    assert gpu_check.main(["--out", str(tmp_path / "a"), "--steps", "cartpole"]) == 1
    step = json.loads((tmp_path / "a" / "cartpole.json").read_text())
    assert step["status"] == "failed" and "worker crashed" in step["error"]

    monkeypatch.setattr(gpu_check, "child_in_process", cpu_device)
    assert gpu_check.main(["--out", str(tmp_path / "b")]) == 0
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["device.json", "summary.json",
                                                                  "summary.md"]
    assert "no GPU" in capsys.readouterr().out


def test_the_budget_caps_each_time_limit_and_skips_what_does_not_fit():
    ctx = gpu_check.Context(gpu_check.FULL, deadline=gpu_check.time.monotonic() + 30)
    assert 29 < ctx.timeout("brax") <= 30  # its own limit is longer
    assert ctx.timeout("device") == pytest.approx(30, abs=1)
    ctx = gpu_check.Context(gpu_check.FULL, deadline=gpu_check.time.monotonic() - 1)
    assert gpu_check.run_step(ctx, "cartpole")["status"] == "skipped"
    # the measurements fit in 8 minutes; peers and profile, last, take what is left
    assert sum(gpu_check.FULL.budgets[s] for s in gpu_check.STEPS
               if s not in ("peers", "profile")) <= 480


def test_pins_are_read_from_pyproject():
    pins = gpu_check.pinned_versions()
    assert pins["jax"] and pins["brax"] and pins["playground"]


@pytest.mark.slow
def test_smoke_mode_for_real(tmp_path):
    """The driver in a fresh process, ``--smoke``: the device step, CartPole, the sweep and
    the profile at their tiny sizes on the CPU; every measured step has positive figures,
    and the profile's table holds the traced updates' kernels."""
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("OUT", None)
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--smoke",
                           "--steps", "cartpole,sweep,profile", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    device = json.loads((tmp_path / "device.json").read_text())
    assert device["status"] == "ok" and device["result"]["backend"] == "cpu"
    assert device["result"]["imports"]["gymnax"]["ok"]
    for name in ("cartpole", "sweep"):
        step = json.loads((tmp_path / f"{name}.json").read_text())
        assert step["status"] == "ok", step
        assert step["compile_s"] > 0 and step["run_s"] > 0 and step["sps"] > 0
        assert step["mode"].startswith("smoke")
    assert "| cartpole |" in (tmp_path / "summary.md").read_text()
    prof = json.loads((tmp_path / "profile.json").read_text())
    assert prof["status"] == "ok", prof
    table = prof["kernels"]
    assert table["source"] == "cpu threads" and table["busy_us"] > 0
    # CartPole's 128 rollout steps of each of the 2 traced updates
    assert any(r["count"] == 2 * 128 for r in table["rows"]), table["rows"]


def test_peers_run_where_their_venvs_exist(monkeypatch):
    from benchmarks.harness import peers

    def job(peer, cfg, hp):
        if peer == "rejax":
            return peers.Job(peer, None, skipped="no venv at .venvs/peer-rejax")
        assert cfg.num_envs == 4096 and cfg.total_timesteps == 20 * cfg.batch_size
        return peers.Job(peer, ["python", f"run_{peer}.py"])

    def side_by_side(jobs, rounds, *, timeout):
        (j,) = jobs
        run = {"sps": [100.0 if j.name == "brax" else 50.0], "compile_s": 2.0,
               "run_s": [1.0], "final_return": 1.0, "config": {}}
        if j.name == "playground":
            run = {"error": "no JSON line on stdout (exit status 1)"}
        return {j.name: {"command": "x", "runs": [run], "skipped": None, "note": ""}}

    monkeypatch.setattr(peers, "peer_job", job)
    monkeypatch.setattr(peers, "run_side_by_side", side_by_side)
    monkeypatch.setattr(peers, "PEER_RUNNERS", {**peers.PEER_RUNNERS, "playground": "x.py"})
    ctx = gpu_check.Context(gpu_check.FULL, deadline=gpu_check.time.monotonic() + 100)
    out = gpu_check.step_peers(ctx)
    assert out["status"] == "failed"  # the playground peer ran and failed
    assert out["sps"] == 100.0 and out["compile_s"] == 2.0 and out["run_s"] == 1.0
    assert out["result"]["rejax (CartPole-v1)"]["status"] == "skipped"
    assert "brax (brax/ant): ok" in out["note"]

    monkeypatch.setattr(peers, "PEER_RUNNERS", {"brax": "b.py", "rejax": "r.py"})
    out = gpu_check.step_peers(ctx)
    assert out["result"]["playground (playground/CartpoleBalance)"]["status"] == "skipped"
