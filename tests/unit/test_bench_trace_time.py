"""``benchmarks/trace_time.py``'s child process on CartPole: it counts the env-step traces of
ppox's programs and reports its timings."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import trace_time  # noqa: E402


def test_measure_counts_one_step_trace_per_program():
    res = trace_time.measure(None, "CartPole-v1:4", timeout=300)
    assert "error" not in res, res
    assert res["step_traces"] == {"chunk": 1, "fused": 1}
    assert res["ppox"].startswith(str(ROOT / "src"))
    for key in ("build_s", "init_s", "chunk_s", "fused_s"):
        assert 0 < res[key] < 300


def test_measure_reports_a_failed_child(tmp_path):
    (tmp_path / "ppox").mkdir()
    (tmp_path / "ppox" / "__init__.py").write_text("raise ImportError('broken checkout')\n")
    res = trace_time.measure(str(tmp_path), "CartPole-v1:4", timeout=300)
    assert "broken checkout" in res["error"][0]
