"""Every benchmark from one command.

    python -m benchmarks.run            # quick scaling + roofline + rejax side by side,
                                        #   < 5 min on a 2-core CPU
    python -m benchmarks.run --all      # every script's full run, one after the other:
                                        #   scaling, roofline, cartpole, side_by_side
                                        #   (cartpole suite, then brax suite); ~1.5 h
    python -m benchmarks.run --all --only scaling roofline
    python -m benchmarks.run --full     # the quick run's plans at full size (~30+ min)
    python -m benchmarks.run --report   # Markdown of the saved results (tables, machine,
                                        #   date, the command of each) for the README

Each point and each training run is measured in its own fresh process
(``benchmarks/worker.py``). Results go to ``benchmarks/results/<machine>/`` (one JSON and
one PNG per script; the quick run writes ``bench.json`` and ``bench_*.png``). Run nothing
else heavy meanwhile: on a 2-core machine any other process shows up in the timings.
(``ppox bench`` is the installed package's own, smaller diagnostic: one env, in-process.)
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import _common

FULL = ("scaling", "roofline", "cartpole", "side_by_side", "side_by_side_brax")


def run_full(only: list[str]) -> int:
    """Each script's full run in turn (in this process; each point/run is its own child)."""
    from benchmarks import cartpole, roofline, scaling, side_by_side

    steps = {
        "scaling": lambda: scaling.main([]),
        "roofline": lambda: roofline.main([]),
        "cartpole": lambda: cartpole.main([]),
        "side_by_side": lambda: side_by_side.main(["--suite", "cartpole"]),
        "side_by_side_brax": lambda: side_by_side.main(["--suite", "brax"]),
    }
    status = 0
    for name in only or FULL:
        if name not in steps:
            print(f"error: unknown benchmark {name!r}; choose from {', '.join(FULL)}",
                  file=sys.stderr)
            return 2
        t0 = time.perf_counter()
        print(f"\n######## {name} ########", flush=True)
        status |= steps[name]()
        print(f"######## {name}: {time.perf_counter() - t0:.0f} s", flush=True)
    return status


def report(machine: str | None = None) -> str:
    """Markdown of every saved result of one machine: its description and date, then per
    benchmark the command that made it, its table and its plot."""
    import json

    from benchmarks._common import results_dir
    from benchmarks.harness.tables import side_by_side_table

    folder = results_dir(machine)
    lines: list[str] = []
    first = True
    for name in ("bench", "scaling", "roofline", "cartpole", "side_by_side_cartpole",
                 "side_by_side_brax"):
        path = folder / f"{name}.json"
        if not path.exists():
            continue
        data = json.loads(path.read_text())
        m = data.get("machine", {})
        if first:
            lines += [f"Machine `{m.get('machine')}`: {m.get('cpu_model')}, "
                      f"{m.get('cpu_cores')} cores, {m.get('memory_gb')} GB; jax "
                      f"{m.get('jax')}; results in `{folder.relative_to(_common.REPO_ROOT)}`.",
                      ""]
            first = False
        lines += [f"### {name}", "", f"`{data.get('command')}` ({m.get('date')}, "
                  f"load average {m.get('loadavg')})", ""]
        if "table" in data:
            lines += [data["table"], ""]
        for title, comp in data.get("comparisons", {}).items():
            lines += [f"{title}:", "", side_by_side_table(comp["summary"]), ""]
        if "side_by_side" in data:
            lines += [side_by_side_table(data["side_by_side"]["summary"]), ""]
        for png in sorted(folder.glob(f"{name}*.png")):
            lines += [f"![{png.stem}]({png.relative_to(_common.REPO_ROOT)})", ""]
    return "\n".join(lines) if lines else f"no results under {folder}"


@dataclasses.dataclass(frozen=True)
class QuickArgs:
    """The quick run: scaling over num_envs, the roofline (env alone / rollout alone /
    trainer, useful FLOP/s against the matmul peak) and ppox side by side with rejax on
    CartPole, each measurement in its own fresh process. Also: --all [--only NAME ...]
    (every script's full run), --report (Markdown of the saved results)."""

    full: bool = False
    """full-size plans (every power of two, peers at 500k steps, 5 rounds); takes ~30+ min"""
    skip_peers: bool = False
    """leave out the side-by-side comparison with the peers"""
    skip_scaling: bool = False
    """leave out the scaling and roofline points"""
    target_s: float | None = None
    """seconds each timed run aims at (default: 1 quick, 2 full)"""
    repeats: int | None = None
    """timed runs per program and point (default: 1 quick, 3 full)"""
    rounds: int | None = None
    """side-by-side rounds, each implementation once per round (default: 1 quick, 5 full)"""
    peer_steps: int | None = None
    """CartPole steps of the side-by-side runs (default: 100k quick, 500k full)"""
    out: Path | None = None
    """results folder (default: benchmarks/results/<machine>)"""
    envs: tuple[str, ...] | None = None
    """measure only these env ids (all three programs at each point)"""
    num_envs: tuple[int, ...] | None = None
    """measure only these num_envs values (all three programs at each point)"""


def _points(args: QuickArgs, quick: bool, target_s: float, repeats: int, peak: float,
            out_dir: Path) -> dict[str, Any]:
    """The scaling and roofline points (each once, in a fresh process), tables and plots."""
    from benchmarks.harness import plans, plots, tables

    scaling, roofline = plans.scaling_plan(quick), plans.roofline_plan(quick)
    if args.envs or args.num_envs:
        scaling = roofline = plans.override_plan(scaling, args.envs, args.num_envs, (64,))
    points = plans.run_points(plans.merged_points(scaling, roofline), target_s=target_s,
                              repeats=repeats, log=lambda s: print(s, flush=True))
    sc = [p for p in points if p["num_envs"] in scaling.get(p["env_id"], ())]
    rf = [p for p in points if p["num_envs"] in roofline.get(p["env_id"], ())]
    table = ("Scaling (training throughput vs num_envs)\n\n" + tables.scaling_table(sc) +
             f"\n\nRoofline (useful FLOP/s against the matmul peak of {peak:,.0f} GFLOP/s)"
             "\n\n" + tables.roofline_table(rf, peak))
    print("\n" + table)
    plots.plot_scaling(sc, out_dir / "bench_scaling.png")
    plots.plot_roofline(rf, peak, out_dir / "bench_roofline.png")
    return {"points": points, "table": table}


def _peers(quick: bool, rounds: int, peer_steps: int, out_dir: Path) -> dict[str, Any]:
    """ppox (and ppox-split on a multi-core host) side by side with rejax (and SB3 in the
    full run) on CartPole at 4 envs: ``benchmarks/side_by_side.py``'s comparison."""
    from benchmarks import side_by_side
    from benchmarks.harness import peers, plots, tables

    sbs = side_by_side.Args(quick=quick, repeats=2 if quick else 1, steps=peer_steps,
                            sb3_steps=min(peer_steps, 100_000), ppox_dp=False,
                            peers=("rejax",) if quick else ("rejax", "sb3"))
    title, jobs = side_by_side.cartpole_jobs(sbs, 4)
    print(f"\nSide by side: {title}, {rounds} round(s) of fresh processes", flush=True)
    raw = peers.run_side_by_side(jobs, rounds, log=lambda s: print(s, flush=True))
    summary = peers.summarize_side_by_side(raw)
    print(tables.side_by_side_table(summary))
    if any("skipped" not in s for name, s in summary.items() if name != "ppox"):
        plots.plot_side_by_side({title: summary}, out_dir / "bench_side_by_side.png")
    return {"config": {"env": "CartPole-v1", "num_envs": 4, "total_timesteps": peer_steps,
                       "rounds": rounds}, "raw": raw, "summary": summary}


def quick_run(argv: list[str]) -> int:
    """The quick (or ``--full``) run: prints tables, writes ``bench.json`` and PNGs."""
    import tyro

    from benchmarks.harness.machine import argv_string, machine_info, save_json
    from benchmarks.harness.workers import matmul_peak_in_process

    args = tyro.cli(QuickArgs, args=argv, prog="python -m benchmarks.run")
    quick = not args.full
    target_s = args.target_s or (1.0 if quick else 2.0)
    repeats = args.repeats or (1 if quick else 3)
    out_dir = Path(args.out) if args.out else _common.results_dir()
    t_start = time.perf_counter()
    result: dict[str, Any] = {"command": argv_string(["python", "-m", "benchmarks.run",
                                                      *argv]),
                              "machine": machine_info(), "quick": quick,
                              "target_s": target_s, "repeats": repeats}
    print(f"benchmarks ({'quick' if quick else 'full'}) on {result['machine']['machine']}; "
          f"results -> {out_dir}", flush=True)
    peak = matmul_peak_in_process(len(os.sched_getaffinity(0)))
    if "error" in peak:
        raise SystemExit(f"matmul peak failed: {peak['error']}\n{peak.get('stderr_tail')}")
    result["matmul_peak"] = peak
    print(f"dense matmul 2048^3 float32, one XLA device per core: {peak['peak_gflops']:,.0f} "
          f"GFLOP/s (best of {len(peak['gflops'])}; median {peak['median_gflops']:,.0f})",
          flush=True)
    if not args.skip_scaling:
        result.update(_points(args, quick, target_s, repeats, peak["peak_gflops"], out_dir))
    if not args.skip_peers:
        result["side_by_side"] = _peers(quick, args.rounds or (1 if quick else 5),
                                        args.peer_steps or (100_000 if quick else 500_000),
                                        out_dir)
    result["wall_s"] = time.perf_counter() - t_start
    path = save_json(out_dir / "bench.json", result)
    print(f"\nwrote {path} ({result['wall_s']:.0f} s in all)")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``--report``; ``--all [--only NAME ...]`` runs the full scripts; anything else is
    the quick run's options (see ``--help``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--report" in argv:
        print(report())
        return 0
    if "--all" in argv and "--help" not in argv and "-h" not in argv:
        only = argv[argv.index("--only") + 1:] if "--only" in argv else []
        return run_full(only)
    return quick_run(argv)


if __name__ == "__main__":
    sys.exit(main())
