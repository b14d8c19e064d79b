"""The package's throughput diagnostics (``ppox.diagnostics``, ``ppox bench``): FLOP counts,
timing helpers, and ``ppox bench`` end to end with the smallest point (CartPole-v1, 2 envs,
~0.05 s timed runs)."""

from __future__ import annotations

import json

import pytest

from ppox import diagnostics
from ppox.config import PPOConfig


def test_mlp_forward_flops_cartpole_by_hand():
    # 4 -> 64 -> 64 -> 2: 2 * (4*64 + 64*64 + 64*2) = 2 * (256 + 4096 + 128) = 8960
    assert diagnostics.mlp_forward_flops(4, (64, 64), 2) == 8960
    # critic 4 -> 64 -> 64 -> 1: 2 * (256 + 4096 + 64) = 8832
    assert diagnostics.mlp_forward_flops(4, (64, 64), 1) == 8832


def test_ppo_flops_small_case_by_hand():
    # obs 3, one hidden layer of 5, 2 actor outputs; 2 envs x 3 steps, 2 epochs.
    # actor row a = 2*(3*5 + 5*2) = 50; critic row c = 2*(3*5 + 5*1) = 40; N = 6 rows.
    # input layers (3 -> 5, both networks): i = 2 * 2*3*5 = 60, their backward needs no
    # input gradient.
    # rollout = N*a + (N + B)*c = 6*50 + 8*40 = 620
    # update  = epochs * N * (3 * (a + c) - i) = 2 * 6 * (270 - 60) = 2520
    # executed extra = (N - B)*c (ppox's critic covers 2N rows) = 4*40 = 160 (PPO's
    # diagnostics come from the SGD steps: no pass of their own)
    fc = diagnostics.ppo_flops(3, 2, (5,), (5,), num_envs=2, num_steps=3, update_epochs=2)
    assert (fc.actor_row, fc.critic_row, fc.input_row, fc.env_steps) == (50, 40, 60, 6)
    assert fc.rollout == 620
    assert fc.update == 2520
    assert fc.useful == 3140
    assert fc.executed == 3140 + 160
    assert fc.useful_per_step == pytest.approx(3140 / 6)
    d = fc.as_dict()
    assert (d["useful"], d["executed"], d["rollout"]) == (3140, 3300, 620)


def test_flops_for_config_reads_the_env_spec():
    cfg = PPOConfig(num_envs=4, num_steps=128, update_epochs=4)
    fc = diagnostics.flops_for_config(cfg)
    assert (fc.actor_row, fc.critic_row, fc.input_row) == (8960, 8832, 2 * 2 * 4 * 64)
    # 512 rows: 512*8960 + 516*8832 + 4*512*(3*17792 - 1024)
    assert fc.useful == 512 * 8960 + 516 * 8832 + 4 * 512 * (3 * 17792 - 1024)


def test_cnn_and_gru_flops_by_hand():
    # Breakout-MinAtar: 10x10x4 frames, 3 actions. CNN: one 3x3 conv to 16 channels at
    # 8*8 output positions (2*36*16 each = 73,728), 1024 -> 128 dense (262,144), 128 -> 3
    # (768) for the actor, 128 -> 1 (256) for the critic.
    cnn = PPOConfig(env_id="Breakout-MinAtar", torso="cnn", cnn_channels=(16,),
                    cnn_dense=(128,), num_envs=4, num_steps=8, num_minibatches=2)
    fc = diagnostics.flops_for_config(cnn)
    assert (fc.actor_row, fc.critic_row) == (73728 + 262144 + 768, 73728 + 262144 + 256)
    assert fc.input_row == 2 * 73728
    # a GRU of 32 on CartPole's 4 -> 64 -> 64 MLP: three input gates 64 -> 32 and three
    # hidden gates 32 -> 32 per step, then 32 -> 2 (actor) / 32 -> 1 (critic).
    gru = PPOConfig(recurrent=True, gru_size=32, num_envs=4, num_steps=8, num_minibatches=2)
    fc = diagnostics.flops_for_config(gru)
    mlp = 2 * (4 * 64 + 64 * 64)
    gates = 3 * 2 * 64 * 32 + 3 * 2 * 32 * 32
    assert (fc.actor_row, fc.critic_row) == (mlp + gates + 2 * 32 * 2, mlp + gates + 2 * 32)
    assert fc.input_row == 2 * 2 * 4 * 64


@pytest.mark.parametrize("cfg", [
    PPOConfig(num_envs=4, num_steps=8, num_minibatches=2),
    PPOConfig(env_id="Breakout-MinAtar", torso="cnn", num_envs=4, num_steps=8,
              num_minibatches=2),
    PPOConfig(env_id="Breakout-MinAtar", torso="cnn", recurrent=True, num_envs=4, num_steps=8,
              num_minibatches=2),
    PPOConfig(recurrent=True, num_envs=4, num_steps=8, num_minibatches=2),
], ids=["mlp", "cnn", "gru(cnn)", "gru(mlp)"])
def test_xla_cost_analysis_agrees_with_the_analytic_count(cfg):
    check = diagnostics.xla_flop_check(cfg, rows=16)
    fc = diagnostics.flops_for_config(cfg)
    assert check["actor_forward"]["analytic"] == 16 * fc.actor_row
    assert check["fwd_bwd"]["analytic"] == \
        16 * (3 * (fc.actor_row + fc.critic_row) - fc.input_row)
    for part in ("actor_forward", "fwd_bwd"):
        r = check[part]["xla_over_analytic"]
        if r is None:  # no cost analysis on this backend
            pytest.skip("XLA cost analysis unavailable")
        # XLA also counts element-wise ops (bias adds, tanh, gates): a few percent more at most.
        assert 0.95 <= r <= 1.10, (part, check[part])


def test_median_skips_none_and_is_nan_when_empty():
    assert diagnostics.median([3.0, 1.0, 2.0]) == 2.0
    assert diagnostics.median([4.0, None, 1.0]) == 2.5
    m = diagnostics.median([])
    assert m != m  # NaN


def test_peak_rss_is_never_below_an_rss_read_before(monkeypatch):
    # the kernel's ru_maxrss lags its RSS counters by a few hundred KiB: a peak read after a
    # run once came out 0.18 MiB below the RSS read before it (CI, stop 27)
    import resource
    import types

    if diagnostics._statm_rss_mb() is None:
        pytest.skip("no /proc/self/statm here")
    before = diagnostics.current_rss_mb()
    monkeypatch.setattr(resource, "getrusage", lambda _who: types.SimpleNamespace(ru_maxrss=1))
    assert diagnostics.peak_rss_mb() >= before > 1.0
    assert diagnostics.peak_rss_mb() >= diagnostics.current_rss_mb()


def test_calibrated_runs_sizes_the_timed_call_to_the_target(monkeypatch):
    # A fake clock: call(n) takes n * 10 ms. Calibration doubles n (1, 2, 4, 8, 16) until a
    # call takes >= 10% of the 1 s target (16 -> 0.16 s), so 10 ms per iteration and 100
    # iterations for the timed calls, each 1.0 s.
    clock = {"t": 0.0}
    calls: list[int] = []
    monkeypatch.setattr(diagnostics.time, "perf_counter", lambda: clock["t"])

    def call(n: int) -> None:
        calls.append(n)
        clock["t"] += 0.01 * n

    out = diagnostics._calibrated_runs(call, target_s=1.0, min_iters=1, max_iters=1000,
                                       repeats=2)
    assert calls == [1, 1, 2, 4, 8, 16, 100, 100]
    assert out["iters"] == 100 and out["calibration_iters"] == 16
    assert out["run_s"] == pytest.approx([1.0, 1.0])
    capped = diagnostics._calibrated_runs(call, target_s=1.0, min_iters=1, max_iters=50,
                                          repeats=1)
    assert capped["iters"] == 50  # never above max_iters
    floor = diagnostics._calibrated_runs(call, target_s=0.001, min_iters=7, max_iters=50,
                                         repeats=1)
    assert floor["iters"] == 7  # never below min_iters


def test_point_config_uses_the_env_defaults_with_a_dividing_minibatch_count():
    cfg, _ = diagnostics.point_config("CartPole-v1", 3, num_steps=5, num_minibatches=4)
    assert (cfg.num_envs, cfg.num_steps) == (3, 5)
    assert cfg.batch_size % cfg.num_minibatches == 0  # 15 rows: 4 is not a divisor
    assert cfg.total_timesteps >= cfg.batch_size


def test_roofline_table_rows_and_failures():
    points = [{"env_id": "E", "num_envs": 4, "env": {"sps_median": 4000.0},
               "rollout": {"sps_median": 2000.0},
               "trainer": {"sps_median": 500.0, "useful_gflops": 5.0}},
              {"env_id": "E", "num_envs": 8, "error": "boom"}]
    def cells(row: str) -> list[str]:
        return [c.strip() for c in row.strip("|").split("|")]

    row, failed = diagnostics.roofline_table(points, peak_gflops=50.0).splitlines()[2:]
    # 75% of the trainer's time is outside the rollout; 5 of 50 GFLOP/s is 10%
    assert cells(row) == ["E", "4", "4,000", "2,000", "500", "75", "5.0", "10.0"]
    assert cells(failed)[:3] == ["E", "8", "FAILED"]
    no_peak = diagnostics.roofline_table(points[:1], None).splitlines()[2]
    assert cells(no_peak)[-1] == "-"


def test_ppox_bench_end_to_end_minimal(tmp_path, capsys):
    from ppox.cli import main

    out = tmp_path / "bench.json"
    code = main(["bench", "--env", "CartPole-v1", "--num-envs", "2", "--target-s", "0.05",
                 "--out", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert "useful GFLOP/s" in text and "% of peak" in text and "CartPole-v1 x 2" in text
    data = json.loads(out.read_text())
    (point,) = data["points"]
    assert point["num_envs"] == 2 and point["env_id"] == "CartPole-v1"
    for part in ("trainer", "env", "rollout"):
        assert point[part]["compile_s"] > 0
        assert point[part]["sps_median"] > 0
        assert point[part]["env_steps"] % (2 * 128) == 0
    assert point["trainer"]["useful_gflops"] > 0
    assert point["memory"]["peak_rss_after_run_mb"] >= point["memory"]["rss_before_mb"]
    assert data["matmul_peak"]["peak_gflops"] > 0
    assert data["jax"] and data["backend"] == "cpu"
    assert data["table"] in text


@pytest.mark.parametrize("argv, message", [
    (["--env", "Nope"], "unknown environment 'Nope'"),
    (["--num-envs", "0"], "num_envs=0"),
    (["--num-envs"], "at least one value"),
])
def test_ppox_bench_refuses_bad_settings_before_measuring(argv, message, capsys):
    from ppox.cli import main

    assert main(["bench", "--no-matmul", *argv]) == 2
    out, err = capsys.readouterr()
    assert message in err and err.startswith("error: ")
    assert "ppox bench:" not in out  # nothing was measured


def test_vmapped_runs_count_every_run_steps_and_keep_runs_apart():
    import jax

    from ppox.config import HParams
    from ppox.diagnostics import measure_rollout_only, measure_trainer, vmapped_program

    cfg = PPOConfig(env_id="CartPole-v1", num_envs=2, num_steps=8, num_minibatches=2,
                    update_epochs=1, total_timesteps=64)
    one = measure_rollout_only(cfg, HParams(), target_s=0.01, repeats=1)
    two = measure_rollout_only(cfg, HParams(), target_s=0.01, repeats=1, runs=2)
    assert one["env_steps"] == one["iters"] * cfg.batch_size
    assert two["env_steps"] == two["iters"] * cfg.batch_size * 2
    trained = measure_trainer(cfg, HParams(), target_s=0.01, repeats=1, runs=3,
                              max_updates=4)
    assert trained["env_steps"] == trained["iters"] * cfg.batch_size * 3

    init, block = vmapped_program((lambda k: jax.random.normal(k, (2,)),
                                   lambda i, c, k: c + jax.random.normal(k, (2,))), 3)
    carry = block(0, init(jax.random.PRNGKey(0)), jax.random.PRNGKey(1))
    assert carry.shape == (3, 2)
    assert len({tuple(row.tolist()) for row in carry}) == 3  # each run its own keys
