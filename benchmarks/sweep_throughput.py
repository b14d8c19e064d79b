"""Aggregate env steps/s of a 64-configuration CartPole sweep in ONE call vs sequential calls.

The sweep: an 8 x 8 grid (learning_rate x clip_eps), 1 seed each, 4 envs x 128 steps per
update, ``--total-timesteps`` env steps per run, trained by ``ppox.sweep.run_sweep`` (one
vmapped program, one compile). The alternative: one ``train_runs`` call per configuration
(what ``ppox train`` does, without its file output), timed for the first ``--sequential``
configurations and extrapolated to all 64 (the calls are identical in size, so the time of
each is the same up to noise; the script says when it extrapolates).

Each device count runs in its own subprocess with
``XLA_FLAGS=--xla_force_host_platform_device_count=N`` (the flag must be set before JAX
starts). Reported per setting: compile seconds, training seconds, aggregate env steps/s of
training (compile excluded) and of the wall clock (compile included).

    python benchmarks/sweep_throughput.py                     # 1 and 2 devices, 100k steps
    python benchmarks/sweep_throughput.py --devices 2 --total-timesteps 204800

Writes ``benchmarks/results/<machine>/sweep_throughput.json`` and ``.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `benchmarks._common` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import argv_string, machine_info, results_dir, save_json

TARGET_SPS = 500_000  # the target for the one-call sweep on CartPole


def _grid(n: int) -> tuple[list[float], list[float]]:
    """An ``a x b = n`` grid (as square as possible) of learning rates and clip ranges."""
    import numpy as np

    a = max(d for d in range(1, int(n ** 0.5) + 1) if n % d == 0)
    lrs = [float(f"{x:.3g}") for x in np.geomspace(1e-4, 3e-3, n // a)]
    clips = [float(f"{x:.3g}") for x in np.linspace(0.1, 0.3, a)]
    return lrs, clips


def child(args: argparse.Namespace) -> dict[str, Any]:
    """Runs in a subprocess whose XLA_FLAGS fix the device count; returns the measurements."""
    import jax

    from ppox._platform import use_ppox_cpu_setup
    from ppox.config import HParams, PPOConfig
    from ppox.host.run import train_runs

    use_ppox_cpu_setup()  # as ppox sweep does
    from ppox.sweep import parse_spec, run_sweep

    cfg = PPOConfig(env_id="CartPole-v1", num_envs=4, num_steps=128,
                    total_timesteps=args.total_timesteps)
    lrs, clips = _grid(args.configs)
    spec = parse_spec({"seeds": 1, "seed": 0,
                       "grid": {"learning_rate": lrs, "clip_eps": clips}})
    steps_per_run = cfg.num_updates * cfg.batch_size
    out: dict[str, Any] = {"devices": len(jax.local_devices()), "configs": args.configs,
                           "env_steps_per_run": steps_per_run}

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        res = run_sweep(spec, cfg, HParams(), Path(tmp) / "sweep", plots=False, out=None,
                        progress_chunks=args.progress_chunks)
        wall = time.perf_counter() - t0
    out["sweep"] = {
        "calls": res.batches, "batch_size": res.batch_size, "devices": res.devices,
        "compile_s": res.compile_s, "run_s": res.run_s, "wall_s": wall,
        "env_steps": res.env_steps_total,
        "sps_run": res.steps_per_second,
        "sps_wall": res.env_steps_total / wall,
        "best_final_return": float(res.final_return[res.order[0]].mean()),
    }

    hps = [c.hparams for c in res.configs]
    calls = []
    for hp in hps[:args.sequential]:
        t0 = time.perf_counter()
        r = train_runs(cfg, [hp], [0], progress_chunks=args.progress_chunks)
        calls.append({"compile_s": r.compile_s, "run_s": r.run_s,
                      "wall_s": time.perf_counter() - t0, "env_steps": r.env_steps})
    n = len(calls)
    scale = args.configs / n
    # train_runs reuses its compiled program for equal settings: the first call compiles,
    # the later ones (different hyperparameters, same shapes) do not; extrapolate each part
    # from the calls it covers.
    def extrapolate(key: str) -> float:
        rest = calls[1:] or calls
        return calls[0][key] + (args.configs - 1) * sum(c[key] for c in rest) / len(rest)

    compile_s = extrapolate("compile_s")
    run_s = sum(c["run_s"] for c in calls) * scale
    wall_s = extrapolate("wall_s")
    steps = steps_per_run * args.configs
    out["sequential"] = {
        "calls_timed": n, "extrapolated_to": args.configs, "per_call": calls,
        "compile_s": compile_s, "run_s": run_s, "wall_s": wall_s, "env_steps": steps,
        "sps_run": steps / run_s, "sps_wall": steps / wall_s,
    }
    return out


def run_child(devices: int, args: argparse.Namespace) -> dict[str, Any]:
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    cmd = [sys.executable, __file__, "--child", "--configs", str(args.configs),
           "--total-timesteps", str(args.total_timesteps), "--sequential",
           str(args.sequential), "--progress-chunks", str(args.progress_chunks)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"child with {devices} device(s) failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def print_table(results: list[dict[str, Any]]) -> None:
    print(f"{'setting':<34s} {'compile s':>10s} {'train s':>9s} {'wall s':>9s} "
          f"{'steps/s (train)':>16s} {'steps/s (wall)':>15s}")
    for r in results:
        for kind in ("sweep", "sequential"):
            m = r[kind]
            what = (f"sweep, 1 call x {r['configs']} runs" if kind == "sweep" else
                    f"{r['configs']} sequential calls" + (
                        f" (timed {m['calls_timed']}, x{r['configs'] / m['calls_timed']:.0f})"
                        if m["calls_timed"] < r["configs"] else ""))
            label = f"{r['devices']} dev: {what}"
            print(f"{label:<34s} {m['compile_s']:>10.1f} {m['run_s']:>9.1f} {m['wall_s']:>9.1f} "
                  f"{m['sps_run']:>16,.0f} {m['sps_wall']:>15,.0f}")
    for r in results:
        s, q = r["sweep"], r["sequential"]
        print(f"{r['devices']} device(s): one-call sweep is {s['sps_run'] / q['sps_run']:.1f}x "
              f"the sequential throughput (train time), {s['sps_wall'] / q['sps_wall']:.1f}x "
              "(wall clock incl. compile)")
    if len(results) > 1:
        one = next((r for r in results if r["devices"] == 1), None)
        for r in results:
            if one is not None and r is not one:
                print(f"sweep on {r['devices']} devices vs 1: "
                      f"{r['sweep']['sps_run'] / one['sweep']['sps_run']:.2f}x (train time)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--configs", type=int, default=64, help="configurations in the sweep")
    p.add_argument("--total-timesteps", type=int, default=4 * 128 * 200,
                   help="env steps per run (default: 200 updates of 4 envs x 128 steps)")
    p.add_argument("--sequential", type=int, default=4,
                   help="sequential calls to time (extrapolated to --configs)")
    p.add_argument("--devices", default="1,2", help="XLA CPU device counts to measure")
    p.add_argument("--progress-chunks", type=int, default=4)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return
    results = [run_child(int(d), args) for d in args.devices.split(",")]
    print_table(results)
    out_dir = results_dir()
    path = save_json(out_dir / "sweep_throughput.json", {
        "command": argv_string(), "target_sps": TARGET_SPS,
        "machine": machine_info(), "results": results})
    from ppox.host.plots import plot_bars

    bars = {}
    for r in results:
        bars[f"sweep\n{r['devices']} dev"] = r["sweep"]["sps_run"]
        bars[f"sequential\n{r['devices']} dev"] = r["sequential"]["sps_run"]
    png = plot_bars(bars, out_dir / "sweep_throughput.png", target=TARGET_SPS,
                    target_label=f"target {TARGET_SPS:,}",
                    ylabel="aggregate env steps/s (train time)",
                    title=f"CartPole, {args.configs} configurations x "
                          f"{results[0]['env_steps_per_run']:,} env steps, 4 envs x 128 steps")
    print(f"wrote {path} and {png}")


if __name__ == "__main__":
    main()
