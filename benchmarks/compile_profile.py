"""Where XLA's compile of ppox's training program goes: its phases, from XLA's own trace.

For each ``ENV_ID:NUM_ENVS`` point, in a fresh process (the compile cache off), this traces
and lowers ``make_train_chunk`` (what ``ppox train`` compiles; ``num_steps`` the env's
default, 32 updates), then compiles it under ``jax.profiler`` and sums XLA's trace events:

* ``hlo_passes_s``: the HLO optimization pipelines (through and after layout assignment);
* ``fusion_emit_s``: the CPU fusion emitters turning each fusion into LLVM IR (CPU seconds:
  they run on XLA's codegen threads, one per core);
* ``llvm_codegen_s``: LLVM's optimization and machine-code generation (``JitCompiler``);
* ``thunk_emit_s``: the thunk emitter (the program's kernels and their order);
* ``compile_s`` (wall) and ``lower_s`` (JAX's trace and lowering, before XLA),
  ``fusions`` (how many the emitters compiled) and their summed ``ops``.

``--options '{"xla_...": value}'`` compiles with XLA options as well (one more process per
point), e.g. to see what a flag saves at compile time:

    python benchmarks/compile_profile.py
    python benchmarks/compile_profile.py --points brax/inverted_pendulum:256 \\
        --ppox-set auto_reset=first_state
    python benchmarks/compile_profile.py --options '{"xla_cpu_use_fusion_emitters": false}'

Writes ``benchmarks/results/<machine>/compile_profile.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks._common import (
    REPO_ROOT,
    argv_string,
    machine_info,
    parse_point,
    results_dir,
    save_json,
)
from benchmarks.side_by_side import ppox_settings

DEFAULT_POINTS = ("CartPole-v1:4", "brax/inverted_pendulum:256")
PHASES = {
    "hlo_passes_s": ("HLO passes through layout assignment", "HLO passes after layout"),
    "fusion_emit_s": ("FusionCompiler::Compile",),
    "llvm_codegen_s": ("JitCompiler::Compile",),
    "thunk_emit_s": ("ThunkEmitter::EmitEntryComputation",),
}

CHILD = r"""
import glob, gzip, json, sys, tempfile, time
import jax, jax.numpy as jnp
from ppox import _platform, trainer
from ppox.config import config_from_dict
from ppox.defaults import resolve
_platform.use_ppox_cpu_setup()
env_id, num_envs = sys.argv[1], int(sys.argv[2])
config, options, phases = (json.loads(a) for a in sys.argv[3:6])
_, hp = resolve(env_id)
cfg = config_from_dict({**config, "num_envs": num_envs,
                        "total_timesteps": num_envs * config["num_steps"] * 32})
trainer.build(cfg)
hpa, key = hp.as_arrays(), jax.random.PRNGKey(0)
state, n = jax.eval_shape(trainer.make_init(cfg), key, hpa), cfg.num_updates
t = time.perf_counter()
lowered = jax.jit(trainer.make_train_chunk(cfg, n), donate_argnums=0).lower(
    state, hpa, jnp.int32(n))
lower_s = time.perf_counter() - t
with tempfile.TemporaryDirectory() as d:
    jax.profiler.start_trace(d)
    t = time.perf_counter()
    lowered.compile(compiler_options=options or None)
    compile_s = time.perf_counter() - t
    jax.profiler.stop_trace()
    events = json.load(gzip.open(glob.glob(d + "/**/*.trace.json.gz", recursive=True)[0]))
spans = [e for e in events["traceEvents"] if e.get("ph") == "X"]
out = {"lower_s": lower_s, "compile_s": compile_s}
for key, names in phases.items():
    out[key] = sum(e["dur"] for e in spans if e["name"].startswith(tuple(names))) / 1e6
fusions = [e for e in spans if e["name"] == "FusionCompiler::Compile"]
out["fusions"] = len(fusions)
out["ops"] = sum(int(e.get("args", {}).get("op_count", 0)) for e in fusions)
print(json.dumps(out))
"""


def point_config(point: str, settings: list[str]) -> dict[str, Any]:
    """The env's defaults with ``settings`` (``FIELD=VALUE``, read and checked as
    ``side_by_side.py --ppox-set`` does: a bad one is one error line, exit status 2)."""
    from ppox.config import config_to_dict
    from ppox.defaults import resolve

    env_id, _, _ = parse_point(point)
    return config_to_dict(ppox_settings(resolve(env_id)[0], settings))


def measure(point: str, config: dict[str, Any], options: dict[str, Any],
            timeout: float) -> dict[str, Any]:
    """One point's compile, with ``config`` and XLA's ``options``, in a fresh process."""
    env_id, num_envs, _ = parse_point(point)
    env = {**os.environ, "PPOX_COMPILE_CACHE": "0"}
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, env_id, str(num_envs), json.dumps(config),
         json.dumps(options), json.dumps(PHASES)],
        capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT, env=env)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--points", nargs="+", default=list(DEFAULT_POINTS),
                    help="ENV_ID:NUM_ENVS points (default: %(default)s)")
    ap.add_argument("--ppox-set", nargs="*", default=[], metavar="FIELD=VALUE",
                    help="config fields for every point, e.g. auto_reset=first_state")
    ap.add_argument("--options", default=None,
                    help="XLA compiler options (JSON) to measure beside the defaults")
    ap.add_argument("--timeout", type=float, default=900.0)
    args = ap.parse_args(argv)
    settings = list(args.ppox_set)
    configs = {point: point_config(point, settings) for point in args.points}
    variants = {"defaults": {}}
    if args.options:
        variants["options"] = json.loads(args.options)
    record: dict[str, Any] = {"command": argv_string(), "machine": machine_info(),
                              "settings": settings, "variants": variants, "results": {}}
    cols = ("lower_s", "compile_s", *PHASES, "fusions", "ops")
    print("| point | variant | " + " | ".join(cols) + " |")
    print("|---|---|" + "---|" * len(cols))
    for point in args.points:
        record["results"][point] = {}
        for name, options in variants.items():
            res = measure(point, configs[point], options, args.timeout)
            record["results"][point][name] = res
            cells = ([res.get("error", "failed")] if "error" in res else
                     [f"{res[c]:.2f}" if isinstance(res[c], float) else f"{res[c]:,}"
                      for c in cols])
            print(f"| {point} | {name} | " + " | ".join(cells) + " |", flush=True)
    path = save_json(results_dir() / "compile_profile.json", record)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
