"""Where the time goes: env alone, rollout alone, trainer, and useful FLOP/s vs the peak.

For each (env, num_envs) point, in its own fresh process, three programs are compiled
(timed apart) and run for about ``--target-s`` seconds each:

  * env alone: ``num_envs`` envs stepped with uniformly random actions in a ``lax.scan``
    of ``num_steps`` steps (keys split as in ppox's rollout), no policy;
  * rollout alone: ppox's ``ppox.rollout.collect`` with a fixed, freshly initialized
    policy (env + actor forward + sampling + writing the ``[T, B]`` records), no critic
    pass, no GAE, no update;
  * trainer: full updates through ppox's public chunked trainer (``make_train_chunk``).

The trainer's useful FLOP/s is its steps/s times the useful FLOPs per env step counted
from the layer shapes (``ppox.diagnostics.ppo_flops``: rollout = actor forward + critic forward
on every step (+ one bootstrap row per env); update = epochs x (forward + backward =
3 x forward) of actor and critic on every step; 2 x fan_in x fan_out per dense layer and
row), shown against the machine's dense-matmul peak: the best of 5 timed 2048^3 float32
matmuls, measured in a fresh process with this process's XLA flags and again with one
XLA device per core (``--xla_force_host_platform_device_count``, as ``ppox train`` sets
it). The analytic counts are cross-checked against XLA's ``cost_analysis()`` on loop-free
pieces (an actor forward, an actor+critic forward/backward on one minibatch).

num_envs: powers of four from 1 to 4096 for CartPole-v1 and Breakout-MinAtar; 1, 16, 256,
4096 for brax/inverted_pendulum (three ~30 s compiles per point on CPU). Quick mode:
CartPole-v1 at 4, 64 and 1024 envs.

    python benchmarks/roofline.py --quick         # ~1.5 min on a 2-core CPU
    python benchmarks/roofline.py                 # ~25 min

Writes ``benchmarks/results/<machine>/roofline.json`` and ``roofline.png``.
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
from benchmarks.harness.plans import override_plan, roofline_plan, run_points
from benchmarks.harness.plots import plot_roofline
from benchmarks.harness.tables import roofline_table
from benchmarks.harness.workers import PARTS, matmul_peaks
from ppox.diagnostics import point_config, xla_flop_check


@dataclasses.dataclass(frozen=True)
class Args(PointArgs):
    """Env alone / rollout alone / trainer steps/s and useful FLOP/s vs the matmul peak."""


def main(argv: list[str] | None = None) -> int:
    args = tyro.cli(Args, args=argv, description=__doc__.split("\n")[0])
    t0 = time.perf_counter()
    plan = override_plan(roofline_plan(args.quick), args.envs, args.num_envs, (4, 64, 1024))
    target_s, repeats = args.timing()

    peaks, peak = matmul_peaks()
    for name, p in peaks.items():
        print(f"matmul 2048^3 float32 ({name}, {p['num_devices']} device(s)): best "
              f"{p['peak_gflops']:,.0f} GFLOP/s, median {p['median_gflops']:,.0f}", flush=True)

    checks = {}
    for env_id in plan:
        cfg, _ = point_config(env_id, 64)
        checks[env_id] = xla_flop_check(cfg)
        c = checks[env_id]
        print(f"FLOP check {env_id} ({c['rows']} rows): XLA/analytic actor forward "
              f"{c['actor_forward']['xla_over_analytic'] or float('nan'):.3f}, "
              f"forward+backward {c['fwd_bwd']['xla_over_analytic'] or float('nan'):.3f}",
              flush=True)

    todo = [(env, n, PARTS) for env, ns in plan.items() for n in ns]
    print(f"roofline: {len(todo)} points x 3 programs, one fresh process per point", flush=True)
    points = run_points(todo, target_s=target_s, repeats=repeats,
                        log=lambda s: print(s, flush=True))
    table = roofline_table(points, peak)
    print(f"\nUseful FLOP/s against the measured matmul peak ({peak:,.0f} GFLOP/s)\n" + table)
    out = {"command": argv_string(), "machine": machine_info(), "quick": args.quick,
           "plan": plan, "target_s": target_s, "repeats": repeats,
           "matmul_peak": peaks, "peak_gflops": peak, "flop_check": checks,
           "points": points, "table": table, "wall_s": time.perf_counter() - t0}
    folder = results_dir(args.machine)
    path = save_json(folder / "roofline.json", out)
    png = plot_roofline(points, peak, folder / "roofline.png",
                        title=f"ppox roofline ({out['machine']['machine']}, matmul peak "
                              f"{peak:,.0f} GFLOP/s)")
    print(f"\nwrote {path} and {png} ({out['wall_s']:.0f} s in all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
