"""Every benchmark from one command.

    python -m benchmarks.run            # = `ppox bench`: quick scaling + roofline + rejax
                                        #   side by side, < 5 min on a 2-core CPU
    python -m benchmarks.run --all      # every script's full run, one after the other:
                                        #   scaling, roofline, cartpole, side_by_side
                                        #   (cartpole suite, then brax suite); ~1.5 h
    python -m benchmarks.run --all --only scaling roofline
    python -m benchmarks.run --full     # = `ppox bench --full` (full plans, one process)
    python -m benchmarks.run --report   # Markdown of the saved results (tables, machine,
                                        #   date, the command of each) for the README

Results go to ``benchmarks/results/<machine>/`` (one JSON and one PNG per script; the
quick run writes ``bench.json`` and ``bench_*.png``). Run nothing else heavy meanwhile:
on a 2-core machine any other process shows up in the timings.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import _common  # puts src/ on sys.path when ppox is not installed

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
    from ppox.bench import side_by_side_table

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


def main(argv: list[str] | None = None) -> int:
    """``--all [--only NAME ...]`` runs the full scripts; anything else goes to
    ``ppox bench`` (quick by default; see ``ppox bench --help``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--report" in argv:
        print(report())
        return 0
    if "--all" in argv and "--help" not in argv and "-h" not in argv:
        only = argv[argv.index("--only") + 1:] if "--only" in argv else []
        return run_full(only)
    from ppox.bench import cmd_bench

    return cmd_bench(argv)


if __name__ == "__main__":
    sys.exit(main())
