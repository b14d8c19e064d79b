"""Turn a finished ``ppox train`` run directory into a results record: curve, timings, eval.

    ppox train --env playground/CheetahRun ... --num-seeds 2 --run-dir runs/cheetah
    python benchmarks/record_run.py runs/cheetah --name playground_cheetah_run \\
        --command "ppox train --env playground/CheetahRun ..."

Reads the run's ``config.toml``, ``summary.json`` (compile and training seconds, steps/s)
and ``metrics.jsonl`` (per update and seed: env steps, the mean return of the episodes that
ended in it), plays ``--eval-episodes`` deterministic episodes of every seed's saved policy
(``ppox.host.evaluation.evaluate_run``, as ``ppox eval`` does), and writes
``benchmarks/results/<machine>/<name>.json`` and ``<name>.png`` (the training curve, mean
and min..max over seeds). ``--command`` is kept verbatim in the record: the run directory
does not store the command line that made it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks._common import argv_string, machine_info, results_dir, save_json


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--name", required=True, help="the record's file name, no suffix")
    parser.add_argument("--command", required=True, help="the ppox train command that ran")
    parser.add_argument("--eval-episodes", type=int, default=8)
    parser.add_argument("--note", default="", help="kept in the record")
    args = parser.parse_args(argv)
    summary_path = args.run_dir / "summary.json"
    if not summary_path.is_file():
        parser.error(f"{args.run_dir} has no summary.json: not a finished ppox train run")

    from ppox.host.evaluation import evaluate_run, load_config
    from ppox.host.metrics import load_metrics
    from ppox.host.plots import forward_fill, plot_learning_curves

    summary = json.loads(summary_path.read_text())
    cfg, _, num_runs = load_config(args.run_dir)
    names, metrics = load_metrics(args.run_dir / "metrics.jsonl")
    steps = metrics["env_steps"][0]
    curve = metrics["episode_return"]
    evals = {}
    for i, name in enumerate(names[:num_runs]):
        ev = evaluate_run(args.run_dir, episodes=args.eval_episodes, seed=1000 + i,
                          run_index=i)
        evals[name] = [round(float(x), 2) for x in ev.returns]
        print(f"{name}: deterministic eval {ev.returns.mean():.1f} over {len(ev.returns)} "
              "episodes")
    out = results_dir()
    png = plot_learning_curves({cfg.env_id: (steps, forward_fill(curve))},
                               out / f"{args.name}.png",
                               title=f"ppox on {cfg.env_id}, {num_runs} seed(s)")
    record = {
        "command": args.command,
        "recorded_by": argv_string(),
        "machine": machine_info(),
        "env": cfg.env_id,
        "config": {k: (list(v) if isinstance(v, tuple) else v)
                   for k, v in cfg.__dict__.items()},
        "summary": summary,
        "deterministic_eval": evals,
        "deterministic_eval_mean": {k: float(np.mean(v)) for k, v in evals.items()},
        "curve_kind": "[env steps per seed, mean return of the episodes ending in that "
                      "update] for each seed (null: none ended)",
        "curve": {name: [[int(s), None if not np.isfinite(y) else float(y)]
                         for s, y in zip(steps, curve[i], strict=True)]
                  for i, name in enumerate(names)},
        "note": args.note,
    }
    path = save_json(out / f"{args.name}.json", record)
    print(f"wrote {path} and {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
