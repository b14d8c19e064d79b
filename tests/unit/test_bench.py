"""The benchmark plumbing (``ppox.bench``): FLOP counts, timing helpers, tables, workers.

The end-to-end test runs ``ppox bench`` with the smallest point (CartPole-v1, 2 envs,
~0.05 s timed runs, no peers) and checks what it writes.
"""

from __future__ import annotations

import json
import sys

import pytest

from ppox import bench
from ppox.config import HParams, PPOConfig


def test_mlp_forward_flops_cartpole_by_hand():
    # 4 -> 64 -> 64 -> 2: 2 * (4*64 + 64*64 + 64*2) = 2 * (256 + 4096 + 128) = 8960
    assert bench.mlp_forward_flops(4, (64, 64), 2) == 8960
    # critic 4 -> 64 -> 64 -> 1: 2 * (256 + 4096 + 64) = 8832
    assert bench.mlp_forward_flops(4, (64, 64), 1) == 8832


def test_ppo_flops_small_case_by_hand():
    # obs 3, one hidden layer of 5, 2 actor outputs; 2 envs x 3 steps, 2 epochs.
    # actor row a = 2*(3*5 + 5*2) = 50; critic row c = 2*(3*5 + 5*1) = 40; N = 6 rows.
    # rollout = N*a + (N + B)*c = 6*50 + 8*40 = 620
    # update  = epochs * N * 3 * (a + c) = 2 * 6 * 3 * 90 = 3240
    # executed extra = (N - B)*c (ppox's critic covers 2N rows) + N*(a + c) (diagnostics)
    #                = 4*40 + 6*90 = 700
    fc = bench.ppo_flops(3, 2, (5,), (5,), num_envs=2, num_steps=3, update_epochs=2)
    assert (fc.actor_row, fc.critic_row, fc.env_steps) == (50, 40, 6)
    assert fc.rollout == 620
    assert fc.update == 3240
    assert fc.useful == 3860
    assert fc.executed == 3860 + 700
    assert fc.useful_per_step == pytest.approx(3860 / 6)


def test_flops_for_config_reads_the_env_spec():
    cfg = PPOConfig(num_envs=4, num_steps=128, update_epochs=4)
    fc = bench.flops_for_config(cfg)
    assert (fc.actor_row, fc.critic_row) == (8960, 8832)
    # 512 rows: 512*8960 + 516*8832 + 4*512*3*17792
    assert fc.useful == 512 * 8960 + 516 * 8832 + 4 * 512 * 3 * 17792


def test_xla_cost_analysis_agrees_with_the_analytic_count():
    check = bench.xla_flop_check(PPOConfig(num_envs=4, num_steps=8, num_minibatches=2), rows=16)
    for part in ("actor_forward", "fwd_bwd"):
        r = check[part]["xla_over_analytic"]
        if r is None:  # no cost analysis on this backend
            pytest.skip("XLA cost analysis unavailable")
        # XLA also counts element-wise ops (bias adds, tanh): a few percent more at most.
        assert 0.95 <= r <= 1.10, (part, check[part])


def test_median_ratio_and_interleaved_order():
    assert bench.median([3.0, 1.0, 2.0]) == 2.0
    assert bench.ratio([2.0, 4.0, 6.0], [1.0, 2.0, 3.0]) == 2.0
    assert bench.ratio(1.0, 0.0) != bench.ratio(1.0, 0.0)  # NaN
    calls: list[str] = []
    times = bench.interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
                              repeats=3)
    assert calls == ["a", "b", "b", "a", "a", "b"]
    assert [len(v) for v in times.values()] == [3, 3]


def test_peer_args_match_the_config():
    cfg = PPOConfig(num_envs=8, num_steps=16, total_timesteps=4096, num_minibatches=2)
    args = bench.peer_args("rejax", cfg, HParams(), repeats=2, seed=3)
    flags = dict(zip(args[::2], args[1::2], strict=True))
    assert flags["--num-envs"] == "8" and flags["--num-steps"] == "16"
    assert flags["--num-minibatches"] == "2" and flags["--hidden"] == "64,64"
    assert flags["--total-timesteps"] == "4096" and flags["--seed"] == "3"
    assert float(flags["--learning-rate"]) == pytest.approx(2.5e-4)
    brax_cfg = PPOConfig(env_id="brax/halfcheetah", critic_hidden=(256, 256))
    brax_flags = bench.peer_args("brax", brax_cfg, HParams())
    assert brax_flags[brax_flags.index("--env") + 1] == "halfcheetah"
    assert brax_flags[brax_flags.index("--critic-hidden") + 1] == "256,256"


def test_side_by_side_with_fake_workers(tmp_path):
    def fake(sps: float, ret: float) -> list[str]:
        line = json.dumps({"compile_s": 1.0, "run_s": [1.0], "sps": [sps],
                           "final_return": ret})
        return [sys.executable, "-c", f"print('log line'); print({line!r})"]

    jobs = [bench.Job("ppox", fake(200.0, 500.0)), bench.Job("ppox-dp", fake(300.0, 500.0)),
            bench.Job("peer", fake(100.0, 480.0)), bench.Job("gone", None, skipped="no venv")]
    raw = bench.run_side_by_side(jobs, rounds=2)
    assert [r["round"] for r in raw["ppox"]["runs"]] == [0, 1]
    summary = bench.summarize_side_by_side(raw)
    assert summary["peer"]["sps_ratio"] == pytest.approx(2.0)
    assert summary["peer"]["compile_ratio"] == pytest.approx(1.0)
    assert summary["gone"] == {"skipped": "no venv"}
    # a variant of ppox is compared with every peer, not counted as one
    assert summary["ppox-dp"]["vs_peers"]["peer"]["sps_ratio"] == pytest.approx(3.0)
    assert "vs_peers" not in summary["peer"]
    table = bench.side_by_side_table(summary)
    assert "2.00x" in table and "skipped: no venv" in table
    assert "ppox-dp/peer: steps/s 3.00x" in table
    png = bench.plot_side_by_side({"fake": summary}, tmp_path / "s.png")
    assert png.stat().st_size > 0


def test_failed_worker_is_reported_not_raised():
    res = bench.run_json_process([sys.executable, "-c", "import sys; sys.exit(3)"])
    assert res["returncode"] == 3 and "error" in res


def test_ppox_bench_end_to_end_minimal(tmp_path, capsys):
    from ppox.cli import main

    code = main(["bench", "--skip-peers", "--envs", "CartPole-v1", "--num-envs", "2",
                 "--target-s", "0.05", "--out", str(tmp_path)])
    assert code == 0
    text = capsys.readouterr().out
    assert "Scaling" in text and "Roofline" in text
    data = json.loads((tmp_path / "bench.json").read_text())
    (point,) = data["points"]
    assert "error" not in point, point.get("stderr_tail")
    assert point["num_envs"] == 2 and point["env_id"] == "CartPole-v1"
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
