"""Train a larger brax task with ppox's per-env defaults; commit its learning curve.

    python benchmarks/brax_learning.py                        # brax/halfcheetah, defaults
    python benchmarks/brax_learning.py --env brax/hopper --total-timesteps 5000000

Trains one run through the public driver (``train_runs``, the same path as ``ppox train``),
splitting the envs across every local device (``--data-parallel``; on CPU each core is
exposed as a device), then runs a deterministic evaluation (the policy's mean action) with
the training observation statistics. Writes ``benchmarks/results/<machine>/
brax_learning_<env>.json`` (the curve: mean return of the episodes ending in each update,
the eval returns, timings, the config) and a PNG of the learning curve.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks._common import argv_string, machine_info, results_dir, save_json


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="brax/halfcheetah")
    parser.add_argument("--total-timesteps", type=int, default=None,
                        help="default: the per-env default of ppox.defaults")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-episodes", type=int, default=16)
    parser.add_argument("--no-data-parallel", action="store_true")
    args = parser.parse_args(argv)

    from benchmarks.harness.workers import worker_platform
    from ppox.defaults import resolve
    from ppox.host.evaluation import evaluate_run
    from ppox.host.metrics import episode_means
    from ppox.host.plots import plot_learning_curves
    from ppox.host.run import print_reporter, train_runs

    # as `ppox train` does, before jax starts its backends: the env's CPU flags, the
    # unrolled threefry on CPU, and one XLA device per core when the run is split
    worker_platform(args.env, multi_device=not args.no_data_parallel)
    cfg, hp = resolve(args.env)
    if args.total_timesteps:
        cfg = cfg.replace(total_timesteps=args.total_timesteps)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        result = train_runs(cfg, [hp], [args.seed], run_dir=tmp, progress_chunks=40,
                            reporter=print_reporter(), data_parallel=not args.no_data_parallel)
        wall = time.perf_counter() - t0
        ev = evaluate_run(tmp, episodes=args.eval_episodes, seed=args.seed + 1000)

    curve = episode_means(result.metrics)[0]
    steps = (np.arange(curve.shape[0]) + 1) * cfg.batch_size
    name = args.env.replace("/", "_")
    out = results_dir()
    png = out / f"brax_learning_{name}.png"
    from ppox.host.plots import forward_fill

    plot_learning_curves({f"{args.env} (seed {args.seed})": (steps, forward_fill(curve)[None])},
                         png, band="none",
                         title=f"ppox on {args.env} ({cfg.backend} backend, "
                               f"{result.devices} device(s))")
    record = {
        "command": argv_string(),
        "machine": machine_info(),
        "env": args.env,
        "config": {k: (list(v) if isinstance(v, tuple) else v)
                   for k, v in cfg.__dict__.items()},
        "hparams": {k: float(v) for k, v in hp.to_dict().items()},
        "devices": result.devices,
        "compile_s": result.compile_s,
        "run_s": result.run_s,
        "wall_s": wall,
        "steps_per_second": result.steps_per_second,
        "env_steps": result.env_steps,
        "final_train_return": float(result.final_return[0]),
        "eval_return_mean": float(ev.returns.mean()),
        "eval_return_std": float(ev.returns.std()),
        "eval_returns": ev.returns.tolist(),
        "curve_env_steps": steps.tolist(),
        "curve_episode_return": [None if not np.isfinite(x) else float(x) for x in curve],
    }
    save_json(out / f"brax_learning_{name}.json", record)
    print(f"{args.env}: {result.env_steps:,d} steps in {result.run_s:.0f} s "
          f"({result.steps_per_second:,.0f} steps/s on {result.devices} device(s), compile "
          f"{result.compile_s:.0f} s); final training return {result.final_return[0]:.1f}; "
          f"eval return {ev.returns.mean():.1f} ± {ev.returns.std():.1f} over "
          f"{len(ev.returns)} episodes")
    print(f"wrote {png} and {png.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
