"""Python-side cost of ppox's programs: how long tracing and lowering take, and how many times
the env step is traced, per env.

For brax and Playground envs a trace of the env step runs the whole physics step's Python
(and, inside the auto-reset, the reset's); each extra trace is seconds of start-up before XLA
even starts compiling. Each env is measured in a fresh process (the first trace in a process
pays for warming Python's caches, so every row starts equal):

* ``build_s``: ``ppox.trainer.build`` (validation, the env's construction and import);
* ``init_s``, ``chunk_s``, ``fused_s``: ``jax.jit(f).trace(...).lower()`` of ``make_init``,
  ``make_train_chunk`` (what ``ppox train`` compiles) and ``make_train`` (one fused program);
* ``step_traces``: how often ``ppox.rollout.step_envs`` ran while tracing the chunk / the fused
  program (counted by wrapping it).

``--src DIR`` (repeatable) also measures other checkouts' ``src`` (``PYTHONPATH``), one
process each, in turn within each round -- a before/after in one run:

    git worktree add /tmp/before <commit>
    python benchmarks/trace_time.py --src /tmp/before/src --rounds 2

Writes ``benchmarks/results/<machine>/trace_time.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks._common import REPO_ROOT, argv_string, machine_info, results_dir, save_json
from ppox.diagnostics import median

DEFAULT_ENVS = ("brax/inverted_pendulum:256", "playground/CheetahRun:32")

CHILD = r"""
import json, sys, time
import jax, jax.numpy as jnp
import ppox, ppox.rollout
from ppox import trainer
from ppox.defaults import resolve
ppox.use_unrolled_threefry_on_cpu()  # as ppox train does
env_id, num_envs = sys.argv[1], int(sys.argv[2])
cfg, hp = resolve(env_id)
cfg = cfg.replace(num_envs=num_envs, total_timesteps=num_envs * cfg.num_steps * 4)
steps = []
real = ppox.rollout.step_envs
def counting(*a, **k):
    steps.append(1)
    return real(*a, **k)
ppox.rollout.step_envs = counting
hpa, key = hp.as_arrays(), jax.random.PRNGKey(0)
t = time.perf_counter(); trainer.build(cfg); build_s = time.perf_counter() - t
init, chunk, fused = (trainer.make_init(cfg), trainer.make_train_chunk(cfg, 4),
                      trainer.make_train(cfg))
def timed(f, *args):
    t = time.perf_counter(); jax.jit(f).trace(*args).lower(); return time.perf_counter() - t
init_s = timed(init, key, hpa)
state = jax.eval_shape(init, key, hpa)
steps.clear(); chunk_s = timed(chunk, state, hpa, jnp.int32(4)); chunk_steps = len(steps)
steps.clear(); fused_s = timed(fused, key, hpa); fused_steps = len(steps)
print(json.dumps({"ppox": ppox.__file__, "build_s": build_s, "init_s": init_s,
                  "chunk_s": chunk_s, "fused_s": fused_s,
                  "step_traces": {"chunk": chunk_steps, "fused": fused_steps}}))
"""


def measure(src: str | None, env: str, timeout: float) -> dict[str, Any]:
    env_id, num_envs = env.rsplit(":", 1)
    child_env = {**os.environ, "PPOX_COMPILE_CACHE": "0"}
    if src is not None:
        child_env["PYTHONPATH"] = os.pathsep.join(
            p for p in (src, child_env.get("PYTHONPATH")) if p)
    proc = subprocess.run([sys.executable, "-c", CHILD, env_id, num_envs], env=child_env,
                          capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1:] or ["failed"]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--envs", nargs="+", default=list(DEFAULT_ENVS),
                    help="ENV_ID:NUM_ENVS pairs (default: %(default)s)")
    ap.add_argument("--src", action="append", default=[],
                    help="another checkout's src directory to measure too (repeatable)")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=900.0)
    args = ap.parse_args(argv)
    versions: list[str | None] = [None, *args.src]
    record: dict[str, Any] = {"command": argv_string(), "machine": machine_info(),
                              "results": {}}
    for env in args.envs:
        rows = record["results"][env] = {v or "this checkout": [] for v in versions}
        for r in range(args.rounds):
            for v in versions:
                res = measure(v, env, args.timeout)
                rows[v or "this checkout"].append(res)
                shown = {k: (round(x, 2) if isinstance(x, float) else x)
                         for k, x in res.items() if k != "ppox"}
                print(f"{env} round {r + 1} [{v or 'this checkout'}]: {shown}", flush=True)
        for name, runs in rows.items():
            ok = [x for x in runs if "error" not in x]
            if ok:
                print(f"  {env} [{name}] medians: " + ", ".join(
                    f"{k} {median([x[k] for x in ok]):.2f} s"
                    for k in ("build_s", "init_s", "chunk_s", "fused_s")))
    path = save_json(results_dir() / "trace_time.json", record)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
