"""CartPole-v1 on this machine: compile time, run time, steps per second, final return.

Two settings (issue 2): 4 envs x 128 steps, 4 epochs, 4 minibatches, 500k steps; and
64 envs, 5M steps (otherwise the same). Each is trained in fresh processes through two
public entry points, interleaved over ``--rounds`` rounds:

  * ``train_runs``: ``ppox.host.run.train_runs`` -- exactly what ``ppox train`` runs
    (one compiled chunk called 20 times, metrics read on the host between chunks);
  * ``fused``: ``jax.jit(ppox.make_train(cfg))``, the whole run one program, compiled
    with ``.lower().compile()`` (timed), then called under ``jax.block_until_ready``.

The final return is the mean return of the episodes that ended in the last 5% of the
updates (``ppox.host.metrics.final_return``). Medians over rounds are printed.

    python benchmarks/cartpole.py --quick        # 100k and 500k steps, 1 round: ~1.5 min
    python benchmarks/cartpole.py                # 500k and 5M steps, 3 rounds: ~10 min

Writes ``benchmarks/results/<machine>/cartpole.json`` and ``cartpole.png``.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from typing import Literal

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import tyro

from benchmarks._common import argv_string, machine_info, results_dir, save_json
from benchmarks.harness.peers import (
    cartpole_comparison_config,
    ppox_job,
    run_side_by_side,
    summarize_side_by_side,
)
from benchmarks.harness.plots import plot_side_by_side
from benchmarks.harness.tables import fmt_num, format_table

SETTINGS = ((4, 500_000), (64, 5_000_000))
QUICK_SETTINGS = ((4, 100_000), (64, 500_000))


@dataclasses.dataclass(frozen=True)
class Args:
    """ppox on CartPole-v1: 4 envs / 500k steps and 64 envs / 5M steps."""

    quick: bool = False
    """smaller budgets (100k and 500k steps), one round"""
    rounds: int | None = None
    """fresh processes per entry point and setting (default 3; quick 1)"""
    apis: tuple[Literal["train_runs", "fused"], ...] = ("train_runs", "fused")
    """entry points to time"""
    seed: int = 0
    """seed of the first round (round r uses seed + r)"""
    machine: str | None = None
    """results folder name (default: this machine's name)"""


def main(argv: list[str] | None = None) -> int:
    args = tyro.cli(Args, args=argv, description=__doc__.split("\n")[0])
    t0 = time.perf_counter()
    rounds = args.rounds or (1 if args.quick else 3)
    out = {"command": argv_string(), "machine": machine_info(), "quick": args.quick,
           "rounds": rounds, "settings": {}}
    rows, summaries = [], {}
    for num_envs, steps in QUICK_SETTINGS if args.quick else SETTINGS:
        cfg, hp = cartpole_comparison_config(num_envs, steps)
        title = f"{num_envs} envs, {steps:,d} steps"
        print(f"\n== CartPole-v1 {title}: {cfg.num_updates} updates of {cfg.num_envs} x "
              f"{cfg.num_steps}, {rounds} round(s)", flush=True)
        jobs = [ppox_job(cfg, hp, repeats=1, seed=args.seed, api=api, name=api)
                for api in args.apis]
        raw = run_side_by_side(jobs, rounds, log=lambda s: print(s, flush=True))
        summary = summarize_side_by_side(raw, reference="-")
        summaries[title] = summary
        out["settings"][title] = {"num_envs": num_envs, "total_timesteps": steps,
                                  "raw": raw, "summary": summary}
        for api, s in summary.items():
            if "skipped" in s:
                rows.append([num_envs, steps, api, "FAILED", "", "", "", ""])
                continue
            rows.append([num_envs, fmt_num(s["total_timesteps"]), api,
                         fmt_num(s["compile_s_median"], 1), fmt_num(s["run_s_median"], 2),
                         fmt_num(s["sps_median"]), fmt_num(s["final_return_median"], 1),
                         " ".join(fmt_num(r, 0) for r in s["final_returns"])])
    table = format_table(["num_envs", "steps", "entry point", "compile s", "run s",
                          "steps/s", "final return (median)", "per round"], rows)
    print("\n" + table)
    out["table"] = table
    out["wall_s"] = time.perf_counter() - t0
    folder = results_dir(args.machine)
    path = save_json(folder / "cartpole.json", out)
    png = plot_side_by_side(summaries, folder / "cartpole.png",
                            title="ppox on CartPole-v1: train_runs vs fused jit")
    print(f"\nwrote {path} and {png} ({out['wall_s']:.0f} s in all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
