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

A same-XLA control for a peer's program: ``--brax-dump TASK:NUM_ENVS`` runs Brax's own PPO
trainer (its venv, ``.venvs/peer-brax``: jax 0.6.2) once on the settings
``side_by_side.py --suite brax --quick`` gives it, with XLA dumping its training epoch's HLO
before optimization (``--xla_dump_hlo_as_proto``); ``--hlo-module FILE`` takes such a dump
directly. Each module is then compiled, in a fresh process, by this interpreter's XLA
(ppox's jax; phases as above, ``lower_s`` empty: nothing is traced) and, with
``--hlo-python PY`` (the Brax dump adds its venv's), by that interpreter's XLA (the phases
its profiler names as above; jax 0.6.2's has no fusion emitters), so that ppox's chunk and
Brax's epoch are compiled by the same XLA, and the same epoch by both XLAs:

    python benchmarks/compile_profile.py --points brax/inverted_pendulum:256 \\
        --ppox-set auto_reset=first_state --brax-dump inverted_pendulum:256 --rounds 3

``--rounds N`` measures everything N times in turn and reports medians.

Writes ``benchmarks/results/<machine>/compile_profile.json``.
"""

from __future__ import annotations

import argparse
import glob
import importlib.metadata
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
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
from benchmarks.harness.peers import peer_args, peer_command
from benchmarks.side_by_side import BRAX_EVAL_EPISODES, BRAX_STEPS, _round_to, ppox_settings

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


# Compiles a dumped HLO module (an HloProto or HloModuleProto file) with this interpreter's
# jax, alone: no ppox, so that a peer's venv (another jax) can run it too. Phases where the
# profiler writes a trace this jax can be read from (else wall time only).
MODULE_CHILD = r"""
import glob, gzip, json, sys, tempfile, time
import jax
from jax._src.lib import xla_client as xc
try:
    from jax._src.lib import _jax
    mlir = _jax.mlir
except (ImportError, AttributeError):
    mlir = xc._xla.mlir
blob = open(sys.argv[1], "rb").read()
phases = json.loads(sys.argv[2])

def inner(b):
    # HloProto wraps the module in its field 1 (length-delimited)
    assert b[0] == 0x0A, "not an HloProto"
    n, i, shift = 0, 1, 0
    while True:
        c = b[i]; i += 1; n |= (c & 0x7F) << shift; shift += 7
        if c < 0x80:
            return b[i:i + n]

try:
    module = mlir.hlo_to_stablehlo(blob)
except Exception:
    module = mlir.hlo_to_stablehlo(inner(blob))
client = jax.devices()[0].client
devices = xc.DeviceList(tuple(jax.devices()[:1]))
out = {"jax": jax.__version__}
with tempfile.TemporaryDirectory() as d:
    jax.profiler.start_trace(d)
    t = time.perf_counter()
    client.compile_and_load(module, devices, xc.CompileOptions())
    out["compile_s"] = time.perf_counter() - t
    jax.profiler.stop_trace()
    traces = glob.glob(d + "/**/*.trace.json.gz", recursive=True)
    if traces:
        events = json.load(gzip.open(traces[0]))
        spans = [e for e in events["traceEvents"] if e.get("ph") == "X"]
        for key, names in phases.items():  # None: this XLA has no such phase (by name)
            hits = [e["dur"] for e in spans if e["name"].startswith(tuple(names))]
            out[key] = sum(hits) / 1e6 if hits else None
        fusions = [e for e in spans if e["name"] == "FusionCompiler::Compile"]
        out["fusions"] = len(fusions) if fusions else None
        out["ops"] = sum(int(e.get("args", {}).get("op_count", 0)) for e in fusions) or None
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


def measure_module(path: Path, python: str, timeout: float) -> dict[str, Any]:
    """A dumped HLO module's compile by ``python``'s jax, in a fresh process."""
    proc = subprocess.run([python, "-c", MODULE_CHILD, str(path), json.dumps(PHASES)],
                          capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT,
                          env={**os.environ, "JAX_PLATFORMS": "cpu"})
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def brax_dump(task_envs: str, folder: Path, timeout: float) -> tuple[Path, dict[str, Any]]:
    """Runs Brax's PPO trainer (its venv) once on the settings ``side_by_side.py --suite brax
    --quick`` gives ``TASK:NUM_ENVS``, XLA dumping its training epoch before optimization;
    returns the dumped module and what the run reported (its own compile figure)."""
    from ppox.defaults import resolve

    task, _, envs = task_envs.partition(":")
    cmd, why = peer_command("brax")
    if cmd is None:
        print(f"error: --brax-dump needs Brax's venv: {why}", file=sys.stderr)
        raise SystemExit(2)
    cfg, hp = resolve(f"brax/{task}")
    cfg = cfg.replace(num_envs=int(envs or 256))
    steps = _round_to(BRAX_STEPS.get((task, cfg.num_envs), 500_000) // 4, 2 * cfg.batch_size)
    cfg = cfg.replace(total_timesteps=steps)
    extra = ["--num-evals", "3", "--num-eval-envs", str(BRAX_EVAL_EPISODES.get(task, 16))]
    flags = (f"--xla_dump_to={folder} --xla_dump_hlo_as_proto --xla_dump_hlo_pass_re=^$ "
             "--xla_dump_hlo_module_re=.*training_epoch.*")
    proc = subprocess.run([*cmd, *peer_args("brax", cfg, hp, extra=extra)],
                          capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT,
                          env={**os.environ, "XLA_FLAGS": flags})
    dumps = sorted(glob.glob(str(folder / "*training_epoch*before_optimizations.hlo.pb")))
    if proc.returncode != 0 or not dumps:
        tail = (proc.stderr.strip().splitlines() or ["no dump"])[-1]
        print(f"error: Brax's trainer wrote no training_epoch dump: {tail}", file=sys.stderr)
        raise SystemExit(1)
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    return Path(dumps[-1]), {"config": report.get("config"), "versions": report.get("versions"),
                             "compile_s": report.get("compile_s"), "sps": report.get("sps")}


def _cells(res: dict[str, Any], cols: tuple[str, ...]) -> list[str]:
    if "error" in res:
        return [res["error"]]
    return [("" if res.get(c) is None else
             f"{res[c]:.2f}" if isinstance(res[c], float) else f"{res[c]:,}") for c in cols]


def _median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return runs[-1]
    out: dict[str, Any] = {}
    for key in ok[0]:
        values = [r[key] for r in ok if key in r]
        if values and all(isinstance(v, int) for v in values):
            out[key] = int(median(values))
        elif values and all(isinstance(v, (int, float)) for v in values):
            out[key] = median(values)
        else:
            out[key] = values[0] if values else None
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--points", nargs="*", default=list(DEFAULT_POINTS),
                    help="ENV_ID:NUM_ENVS points (default: %(default)s)")
    ap.add_argument("--ppox-set", nargs="*", default=[], metavar="FIELD=VALUE",
                    help="config fields for every point, e.g. auto_reset=first_state")
    ap.add_argument("--options", default=None,
                    help="XLA compiler options (JSON) to measure beside the defaults")
    ap.add_argument("--hlo-module", nargs="*", default=[], type=Path, metavar="FILE",
                    help="dumped HLO modules (--xla_dump_hlo_as_proto) to compile as well")
    ap.add_argument("--hlo-python", nargs="*", default=[], metavar="PY",
                    help="other interpreters (other jax versions) to compile them with too")
    ap.add_argument("--brax-dump", default=None, metavar="TASK:NUM_ENVS",
                    help="dump Brax's training epoch (its venv) and compile it too")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=900.0)
    args = ap.parse_args(argv)
    if args.rounds < 1:
        ap.error(f"--rounds {args.rounds}: measure at least one round")
    if args.brax_dump is not None:
        task, sep, envs = args.brax_dump.partition(":")
        if not task or (sep and not envs.isdigit()):
            ap.error(f"--brax-dump {args.brax_dump!r}: expected TASK[:NUM_ENVS], e.g. "
                     "inverted_pendulum:256")
    for module in args.hlo_module:
        if not module.is_file():
            ap.error(f"--hlo-module {module}: no such file")
    settings = list(args.ppox_set)
    configs = {point: point_config(point, settings) for point in args.points}
    variants = {"defaults": {}}
    if args.options:
        variants["options"] = json.loads(args.options)
    record: dict[str, Any] = {"command": argv_string(), "machine": machine_info(),
                              "settings": settings, "variants": variants, "results": {},
                              "modules": {}}
    pythons = [sys.executable, *args.hlo_python]
    modules = {str(m): m for m in args.hlo_module}
    with tempfile.TemporaryDirectory(prefix="ppox-brax-dump-") as folder:
        if args.brax_dump:
            path, report = brax_dump(args.brax_dump, Path(folder), args.timeout)
            label = f"Brax training_epoch ({args.brax_dump})"
            modules[label] = path
            record["brax_dump"] = report
            pythons.append(peer_command("brax")[0][0])
            print(f"Brax's trainer ({report['versions']}): its compile figure "
                  f"{report['compile_s']:.2f} s (trace and compile of its training epoch)")
        runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for _ in range(args.rounds):
            for point in args.points:
                for name, options in variants.items():
                    runs.setdefault((point, name), []).append(
                        measure(point, configs[point], options, args.timeout))
            for label, path in modules.items():
                for python in dict.fromkeys(pythons):
                    runs.setdefault((label, python), []).append(
                        measure_module(path, python, args.timeout))
    cols = ("lower_s", "compile_s", *PHASES, "fusions", "ops")
    print("| program | compiled by | " + " | ".join(cols) + " |")
    print("|---|---|" + "---|" * len(cols))
    for (what, how), results in runs.items():
        res = _median_of(results)
        if what in configs:
            record["results"].setdefault(what, {})[how] = {**res, "rounds": results}
            by = f"jax {importlib.metadata.version('jax')} ({how})"
        else:
            record["modules"].setdefault(what, {})[how] = {**res, "rounds": results}
            by = f"jax {res.get('jax', '?')} ({Path(how).parent.parent.name or how})"
        print(f"| {what} | {by} | " + " | ".join(_cells(res, cols)) + " |", flush=True)
    path = save_json(results_dir() / "compile_profile.json", record)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
