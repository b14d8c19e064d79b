"""``benchmarks/torsos.py``: the per-torso figures (ratio to the MLP, share of the matmul
peak, marginal XLA bytes per env) from fake worker results, the script end to end with
fake workers, and one real point in a fresh worker process (a GRU(CNN) at 4 envs)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import torsos  # noqa: E402
from benchmarks.harness import workers  # noqa: E402


def fake_point(sps: float, gflops: float, peak_bytes: int) -> dict:
    return {"trainer": {"sps_median": sps, "compile_s": 2.0, "useful_gflops": gflops},
            "flops": {"useful_per_step": 1e6},
            "memory": {"xla": {"peak_bytes": peak_bytes}, "peak_rss_delta_mb": 100.0}}


def test_summary_ratios_share_of_peak_and_bytes_per_env():
    points = {("mlp", 64): fake_point(1000.0, 5.0, 10_000),
              ("cnn", 64): fake_point(250.0, 20.0, 50_000),
              ("mlp", 1024): fake_point(2000.0, 10.0, 10_000 + 960 * 100),
              ("cnn", 1024): fake_point(400.0, 40.0, 50_000 + 960 * 1000)}
    s = torsos.summarize(points, peak_gflops=80.0)
    assert s["cnn@64"]["vs_mlp"] == pytest.approx(0.25)
    assert s["cnn@1024"]["vs_mlp"] == pytest.approx(0.2)
    assert s["mlp@64"]["vs_mlp"] == pytest.approx(1.0)
    assert s["cnn@1024"]["pct_of_peak"] == pytest.approx(50.0)
    assert s["mlp@64"]["xla_bytes_per_env"] == pytest.approx(100.0)
    assert s["cnn@1024"]["xla_bytes_per_env"] == pytest.approx(1000.0)
    text = torsos.table(s)
    assert " cnn |" in text and "0.25" in text and "50.0" in text


def test_a_failed_point_leaves_dashes_not_a_crash():
    points = {("mlp", 64): fake_point(1000.0, 5.0, 10_000),
              ("gru(cnn)", 64): {"error": "no JSON line on stdout (exit status 1)"}}
    s = torsos.summarize(points, peak_gflops=None)
    assert s["gru(cnn)@64"]["sps"] is None and s["gru(cnn)@64"]["vs_mlp"] is None
    assert "gru(cnn)" in torsos.table(s)


def test_script_end_to_end_with_fake_workers(tmp_path, monkeypatch, capsys):
    seen = []

    def point(env, n, parts, *, target_s, repeats, overrides):
        seen.append((env, n, tuple(parts), overrides["torso"], overrides["recurrent"]))
        return fake_point(1000.0 if overrides["torso"] == "mlp" else 100.0, 5.0, 1000 * n)

    monkeypatch.setattr(workers, "point_in_process", point)
    monkeypatch.setattr(workers, "matmul_peaks", lambda: ({"x": {}}, 50.0))
    monkeypatch.setattr(torsos, "results_dir", lambda name=None: tmp_path)
    assert torsos.main(["--num-envs", "8", "32", "--torsos", "mlp", "gru(cnn)"]) == 0
    assert seen == [("Breakout-MinAtar", 8, ("trainer",), "mlp", False),
                    ("Breakout-MinAtar", 8, ("trainer",), "cnn", True),
                    ("Breakout-MinAtar", 32, ("trainer",), "mlp", False),
                    ("Breakout-MinAtar", 32, ("trainer",), "cnn", True)]
    out = json.loads((tmp_path / "torsos.json").read_text())
    assert out["summary"]["gru(cnn)@32"]["vs_mlp"] == pytest.approx(0.1)
    assert out["summary"]["gru(cnn)@8"]["xla_bytes_per_env"] == pytest.approx(1000.0)
    assert " gru(cnn) |" in (tmp_path / "torsos.md").read_text()
    assert torsos.main(["--torsos", "lstm"]) == 2
    assert "error: --torsos 'lstm'" in capsys.readouterr().err


def test_one_real_point_reports_steps_flops_and_xla_memory():
    res = workers.point_in_process("Breakout-MinAtar", 4, ("trainer",), target_s=0.05,
                                   overrides={**torsos.TORSOS["gru(cnn)"], "num_steps": 8})
    assert "error" not in res, res
    assert res["config"]["recurrent"] is True and res["config"]["torso"] == "cnn"
    assert res["trainer"]["sps_median"] > 0
    assert res["flops"]["actor_row"] > res["flops"]["input_row"] > 0
    xla = res["memory"]["xla"]
    assert xla["peak_bytes"] == xla["argument"] + xla["output"] + xla["temp"] - xla["alias"]
    assert xla["peak_bytes"] > 0
