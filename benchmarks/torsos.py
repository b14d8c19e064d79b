"""Steps/s, useful FLOP/s and memory of each torso: MLP, CNN, GRU(MLP), GRU(CNN).

For every (torso, num_envs) point, in its own fresh process, ppox's chunked trainer for the
env's defaults (``ppox.defaults``; Breakout-MinAtar: 64 steps, 4 epochs x 8 minibatches,
relu) with the torso replaced is compiled (timed) and run for about ``--target-s`` seconds
(``ppox.diagnostics.measure_point``, the trainer part only).

Figures per point:

  * trainer env steps/s, and its ratio to the MLP's at the same num_envs;
  * useful GFLOP/s: steps/s x the FLOPs per env step counted from the torsos' shapes
    (``ppox.diagnostics.flops_for_config``: dense layers, each convolution at every output
    position, a GRU's six gate matmuls per step; checked against XLA's cost analysis in
    tests/unit/test_diagnostics.py), and its share of the measured matmul peak;
  * memory: XLA's buffers of the compiled training chunk (arguments + outputs +
    temporaries - donated, ``ppox.diagnostics.compiled_memory``) and, per env, the growth of
    that figure from the smallest to the largest num_envs divided by the extra envs (what
    one more env costs; the parameters and optimizer state do not grow with the envs);
    the process's peak RSS growth while compiling and running.

    python benchmarks/torsos.py              # Breakout-MinAtar at 64 and 1024 envs, ~10 min
    python benchmarks/torsos.py --quick      # 64 envs only, shorter timed runs

Writes ``benchmarks/results/<machine>/torsos.json`` and ``torsos.md``.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import tyro

from benchmarks._common import argv_string, machine_info, results_dir, save_json
from benchmarks.harness import workers
from ppox.diagnostics import fmt_num, format_table

TORSOS: dict[str, dict[str, Any]] = {
    "mlp": {"torso": "mlp", "recurrent": False},
    "cnn": {"torso": "cnn", "recurrent": False},
    "gru(mlp)": {"torso": "mlp", "recurrent": True},
    "gru(cnn)": {"torso": "cnn", "recurrent": True},
}


@dataclasses.dataclass(frozen=True)
class Args:
    """Steps/s, useful FLOP/s and memory of each torso, side by side."""

    quick: bool = False
    """64 envs only, 1 s timed runs, 1 repeat"""
    env: str = "Breakout-MinAtar"
    """an env with image observations (for the CNN)"""
    num_envs: tuple[int, ...] = (64, 1024)
    """num_envs values (the per-env memory compares the smallest and the largest)"""
    torsos: tuple[str, ...] = tuple(TORSOS)
    """torsos to measure: mlp cnn gru(mlp) gru(cnn)"""
    target_s: float | None = None
    """seconds each timed run aims at (default 2; quick 1)"""
    repeats: int | None = None
    """timed runs per point (default 3; quick 1)"""
    machine: str | None = None
    """results folder name (default: this machine's name)"""


def _row(point: Mapping[str, Any]) -> dict[str, Any]:
    """The figures of one measured point (``None`` where it failed)."""
    tr, mem = point.get("trainer") or {}, point.get("memory") or {}
    xla = mem.get("xla") or {}
    return {"sps": tr.get("sps_median"), "compile_s": tr.get("compile_s"),
            "useful_gflops": tr.get("useful_gflops"),
            "flops_per_step": (point.get("flops") or {}).get("useful_per_step"),
            "xla_peak_bytes": xla.get("peak_bytes"),
            "rss_delta_mb": mem.get("peak_rss_delta_mb"), "error": point.get("error")}


def summarize(points: Mapping[tuple[str, int], Mapping[str, Any]],
              peak_gflops: float | None) -> dict[str, dict[str, Any]]:
    """``{"torso@num_envs": figures}``, with the ratio to the MLP at the same num_envs, the
    share of the matmul peak, and each torso's marginal XLA bytes per env (smallest to
    largest num_envs)."""
    rows = {key: _row(p) for key, p in points.items()}
    counts = sorted({n for _, n in rows})
    out: dict[str, dict[str, Any]] = {}
    for (torso, n), r in rows.items():
        mlp = rows.get(("mlp", n), {}).get("sps")
        r["vs_mlp"] = r["sps"] / mlp if r["sps"] and mlp else None
        gf = r["useful_gflops"]
        r["pct_of_peak"] = 100 * gf / peak_gflops if gf and peak_gflops else None
        lo, hi = rows.get((torso, counts[0]), {}), rows.get((torso, counts[-1]), {})
        grow = (None if len(counts) < 2 or not lo.get("xla_peak_bytes")
                or not hi.get("xla_peak_bytes")
                else (hi["xla_peak_bytes"] - lo["xla_peak_bytes"]) / (counts[-1] - counts[0]))
        r["xla_bytes_per_env"] = grow
        out[f"{torso}@{n}"] = {"torso": torso, "num_envs": n, **r}
    return out


def table(summary: Mapping[str, Mapping[str, Any]]) -> str:
    """A Markdown table of :func:`summarize`'s figures."""
    rows = []
    for r in summary.values():
        kib = r["xla_bytes_per_env"] / 1024 if r["xla_bytes_per_env"] is not None else None
        mib = r["xla_peak_bytes"] / 2**20 if r["xla_peak_bytes"] is not None else None
        mflop = r["flops_per_step"] / 1e6 if r["flops_per_step"] is not None else None
        rows.append([r["torso"], r["num_envs"], fmt_num(r["sps"]), fmt_num(r["vs_mlp"], 2),
                     fmt_num(r["compile_s"], 1), fmt_num(mflop, 2),
                     fmt_num(r["useful_gflops"], 1), fmt_num(r["pct_of_peak"], 1),
                     fmt_num(mib, 1), fmt_num(kib, 1), fmt_num(r["rss_delta_mb"])])
    return format_table(["torso", "num_envs", "trainer steps/s", "x MLP", "compile s",
                         "useful MFLOP / env step", "useful GFLOP/s", "% of matmul peak",
                         "XLA buffers MiB", "XLA KiB per extra env", "peak RSS growth MiB"],
                        rows)


def measure(env: str, num_envs: Sequence[int], torsos: Sequence[str], target_s: float,
            repeats: int) -> dict[tuple[str, int], dict[str, Any]]:
    """Each point in its own fresh process, one after the other (torsos interleaved)."""
    points: dict[tuple[str, int], dict[str, Any]] = {}
    for n in num_envs:
        for torso in torsos:
            t0 = time.perf_counter()
            res = workers.point_in_process(env, n, ("trainer",), target_s=target_s,
                                           repeats=repeats, overrides=TORSOS[torso])
            r = _row(res)
            print(f"{torso:>9} @ {n:>5} envs: "
                  + (f"error {r['error']}" if r["error"] else
                     f"{fmt_num(r['sps'])} steps/s, compile {fmt_num(r['compile_s'], 1)} s")
                  + f" ({time.perf_counter() - t0:.0f} s)", flush=True)
            points[(torso, n)] = res
    return points


def main(argv: list[str] | None = None) -> int:
    args = tyro.cli(Args, args=argv, description=__doc__.split("\n")[0])
    unknown = [t for t in args.torsos if t not in TORSOS]
    if unknown:
        print(f"error: --torsos {unknown[0]!r}: choose from {', '.join(TORSOS)}",
              file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    num_envs = (64,) if args.quick else tuple(sorted(args.num_envs))
    target_s = args.target_s or (1.0 if args.quick else 2.0)
    repeats = args.repeats or (1 if args.quick else 3)
    peaks, peak = workers.matmul_peaks()
    print(f"matmul peak {peak:,.0f} GFLOP/s", flush=True)
    points = measure(args.env, num_envs, args.torsos, target_s, repeats)
    summary = summarize(points, peak)
    text = table(summary)
    print("\n" + text)
    out = {"command": argv_string(), "machine": machine_info(), "env": args.env,
           "num_envs": num_envs, "target_s": target_s, "repeats": repeats,
           "matmul_peak": peaks, "peak_gflops": peak, "summary": summary,
           "points": {f"{t}@{n}": p for (t, n), p in points.items()}, "table": text,
           "wall_s": time.perf_counter() - t0}
    folder = results_dir(args.machine)
    path = save_json(folder / "torsos.json", out)
    md = folder / "torsos.md"
    md.write_text(f"# Torsos on {args.env} ({out['machine']['machine']})\n\n"
                  f"`{out['command']}`, matmul peak {peak:,.0f} GFLOP/s\n\n{text}\n")
    print(f"\nwrote {path} and {md} ({out['wall_s']:.0f} s in all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
