"""One XLA CPU thread or XLA's pool of one per core: ``ppox train`` both ways, whole processes.

``ppox train`` starts JAX's CPU backend with a single intra-op thread for one small run of a
classic-control env (``ppox._platform.use_one_cpu_thread_for``: at most
``ONE_THREAD_MAX_ROWS`` minibatch rows). This script shows where that rule comes from: for
each ``ENV_ID:NUM_ENVS`` point it runs ``ppox train --no-compile-cache`` with
``PPOX_CPU_THREADS=1`` (one thread, whatever the size) and ``=0`` (XLA's pool), in turn
(one process at a time, the order alternating by round), and reads the ``run`` seconds and
env steps/s from the summary. Each point trains ``--updates`` updates of the env's defaults.

    python benchmarks/cpu_threads.py                       # CartPole-v1 at 4, 16, 32, 64 envs
    python benchmarks/cpu_threads.py --points Pendulum-v1:4 --rounds 3

Writes ``benchmarks/results/<machine>/cpu_threads.json``.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks._common import (
    REPO_ROOT,
    argv_string,
    machine_info,
    median,
    parse_point,
    results_dir,
    save_json,
)

DEFAULT_POINTS = ("CartPole-v1:4", "CartPole-v1:16", "CartPole-v1:32", "CartPole-v1:64")
MODES = {"one thread": "1", "XLA's pool": "0"}
_SUMMARY = re.compile(r"run ([0-9.]+) s, ([0-9,]+) env steps/s")


def train(env_id: str, num_envs: int, updates: int, threads: str) -> dict[str, Any]:
    """One ``ppox train`` process; its run seconds, env steps/s and device line."""
    from ppox.defaults import resolve

    cfg, _ = resolve(env_id)
    steps = num_envs * cfg.num_steps * updates
    with tempfile.TemporaryDirectory(prefix="ppox-cpu-threads-") as tmp:
        env = {**os.environ, "PPOX_CPU_THREADS": threads}
        proc = subprocess.run(
            [sys.executable, "-m", "ppox.cli", "train", "--env", env_id, "--num-envs",
             str(num_envs), "--total-timesteps", str(steps), "--no-compile-cache", "--quiet",
             "--run-dir", os.path.join(tmp, "run")],
            capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=1800)
    found = _SUMMARY.search(proc.stdout)
    if proc.returncode != 0 or found is None:
        return {"error": (proc.stderr.strip().splitlines() or ["no summary"])[-1]}
    device = next((line for line in proc.stdout.splitlines() if " device(s)" in line), "")
    return {"run_s": float(found.group(1)), "sps": int(found.group(2).replace(",", "")),
            "one_cpu_thread": "one CPU thread" in device}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--points", nargs="+", default=list(DEFAULT_POINTS),
                    help="ENV_ID:NUM_ENVS points (default: %(default)s)")
    ap.add_argument("--updates", type=int, default=120, help="updates per run")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args(argv)
    record: dict[str, Any] = {"command": argv_string(), "machine": machine_info(),
                              "updates": args.updates, "results": {}}
    print("| point | one thread (steps/s) | XLA's pool (steps/s) | one / pool |")
    print("|---|---|---|---|")
    for point in args.points:
        env_id, num_envs, _ = parse_point(point)
        runs: dict[str, list[dict[str, Any]]] = {m: [] for m in MODES}
        for r in range(args.rounds):
            order = list(MODES) if r % 2 == 0 else list(MODES)[::-1]
            for mode in order:
                runs[mode].append(train(env_id, num_envs, args.updates, MODES[mode]))
        record["results"][point] = runs
        med = {m: median([x.get("sps") for x in runs[m]]) for m in MODES}
        one, pool = med["one thread"], med["XLA's pool"]
        print(f"| {point} | {one:,.0f} | {pool:,.0f} | {one / pool:.2f}x |", flush=True)
    path = save_json(results_dir() / "cpu_threads.json", record)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
