"""Markdown tables of the benchmarks' results (they also read as plain text).

``format_table``, ``fmt_num`` and ``roofline_table`` are ppox's own (``ppox bench`` prints
the roofline table too); the scaling and side-by-side tables are the harness's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ppox.diagnostics import fmt_num, format_table, median, roofline_table

__all__ = ["fmt_num", "format_table", "roofline_table", "scaling_table", "side_by_side_table"]


def scaling_table(points: Sequence[Mapping[str, Any]]) -> str:
    """One row per point: env, envs, steps/s, compile and run time, peak memory."""
    rows = []
    for p in points:
        if "error" in p:
            rows.append([p["env_id"], p["num_envs"], "FAILED: " + str(p["error"])[:40],
                         "", "", "", ""])
            continue
        t, mem = p["trainer"], p.get("memory", {})
        rows.append([p["env_id"], p["num_envs"], p["num_steps"], fmt_num(t["sps_median"]),
                     fmt_num(t["compile_s"], 1), fmt_num(median(t["run_s"]), 2),
                     fmt_num(mem.get("peak_rss_delta_mb"), 0)])
    return format_table(["env", "num_envs", "num_steps", "train steps/s", "compile s",
                         "run s", "peak RSS Δ MiB"], rows)


def _times(r: Any) -> str:
    """``1.23x``; ``-`` where there is no ratio (None or NaN: a figure missing on a side)."""
    text = fmt_num(r, 2)
    return text if text == "-" else text + "x"


def _side_by_side_row(name: str, s: Mapping[str, Any], peer: bool) -> list[Any]:
    if "skipped" in s:
        return [name, "skipped: " + str(s["skipped"])[:60], "", "", "", "", "", "", "", ""]
    ret = fmt_num(s["final_return_median"], 1)
    if s.get("eval_return_median") == s.get("eval_return_median"):  # not NaN
        ret += f" (eval {fmt_num(s['eval_return_median'], 1)})"
    return [name, fmt_num(s["total_timesteps"]), fmt_num(s["sps_median"]),
            _times(s.get("sps_ratio")) if peer else "",
            fmt_num(s["compile_s_median"], 1),
            _times(s.get("compile_ratio")) if peer else "",
            fmt_num(s.get("all_compile_s_median"), 1),
            _times(s.get("all_compile_ratio")) if peer else "", ret, s["runs"]]


def side_by_side_table(summary: Mapping[str, Mapping[str, Any]],
                       reference: str = "ppox") -> str:
    """One row per implementation: medians, ratios reference/peer, final returns; then a
    line per variant of the reference and peer with the variant's own ratios."""
    rows = [_side_by_side_row(name, s, not name.startswith(reference))
            for name, s in summary.items()]
    table = format_table(["impl", "steps", "steps/s (median)", f"{reference}/peer steps/s",
                          "compile s", f"{reference}/peer compile", "all programs s",
                          f"{reference}/peer all", "final return", "runs"], rows)
    lines = [f"  {name}/{peer}: steps/s {_times(r['sps_ratio'])}, compile "
             f"{_times(r['compile_ratio'])}, all programs {_times(r.get('all_compile_ratio'))}"
             for name, s in summary.items() for peer, r in s.get("vs_peers", {}).items()]
    return "\n".join([table, *lines])
