"""Training throughput versus ``num_envs``: env steps per second, compile time, peak memory.

For CartPole-v1, a brax task (brax/inverted_pendulum, spring backend) and a larger-
observation env (Breakout-MinAtar, 400-dim observations), each point (env, num_envs) is
trained by ppox's public chunked trainer (``make_init`` + ``make_train_chunk``, what
``ppox train`` runs) in its own fresh process: compile time is timed apart (lower +
compile), then a calibrated number of updates (about ``--target-s`` seconds; at least 2)
is timed ``--repeats`` times. Settings per point: the env's ppox defaults
(``ppox.defaults``) with ``num_envs`` replaced -- rollout length 128 (gymnax) or 32
(brax), 4 epochs, 4 minibatches (the brax defaults' count), so one update is
``num_envs x num_steps`` steps. Peak memory: the worker's peak RSS growth over its RSS
before compiling (``ru_maxrss``), and the device's own peak where it reports one (GPU).

num_envs: every power of two from 1 to 4096 for CartPole and MinAtar; powers of four for
the brax task (its programs take ~30 s each to compile on a 2-core CPU). Quick mode:
CartPole at 4, 64, 1024 envs, MinAtar at 64, inverted_pendulum at 256.

    python benchmarks/scaling.py --quick          # ~2 min on a 2-core CPU
    python benchmarks/scaling.py                  # ~20 min
    python benchmarks/scaling.py --envs CartPole-v1 --num-envs 1 16 256

Writes ``benchmarks/results/<machine>/scaling.json`` (every raw timing, the commands,
``machine_info()``) and ``scaling.png`` (steps/s vs num_envs, log-log, one line per env).
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import tyro

from benchmarks._common import (
    PointArgs,
    argv_string,
    machine_info,
    results_dir,
    save_json,
)
from benchmarks.harness.plans import override_plan, run_points, scaling_plan
from benchmarks.harness.plots import plot_scaling
from benchmarks.harness.tables import scaling_table


@dataclasses.dataclass(frozen=True)
class Args(PointArgs):
    """Training throughput of ppox versus num_envs (fresh process per point)."""


def plan_from(args: Args) -> dict[str, tuple[int, ...]]:
    """The env -> num_envs plan, with ``--envs`` / ``--num-envs`` applied."""
    return override_plan(scaling_plan(args.quick), args.envs, args.num_envs, (64,))


def main(argv: list[str] | None = None) -> int:
    args = tyro.cli(Args, args=argv, description=__doc__.split("\n")[0])
    t0 = time.perf_counter()
    plan = plan_from(args)
    target_s, repeats = args.timing()
    todo = [(env, n, ("trainer",)) for env, ns in plan.items() for n in ns]
    print(f"scaling: {len(todo)} points, one fresh process each", flush=True)
    points = run_points(todo, target_s=target_s, repeats=repeats,
                        log=lambda s: print(s, flush=True))
    table = scaling_table(points)
    print("\n" + table)
    out = {"command": argv_string(), "machine": machine_info(), "quick": args.quick,
           "plan": plan, "target_s": target_s, "repeats": repeats, "points": points,
           "table": table, "wall_s": time.perf_counter() - t0}
    folder = results_dir(args.machine)
    path = save_json(folder / "scaling.json", out)
    png = plot_scaling(points, folder / "scaling.png",
                       title=f"ppox training throughput ({out['machine']['machine']})")
    print(f"\nwrote {path} and {png} ({out['wall_s']:.0f} s in all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
