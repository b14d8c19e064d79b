"""Absolute figures on a GPU in one short run: CartPole at 4,096 and 16,384 envs, brax/ant and
a Playground task at 4,096 envs, a 64-configuration CartPole sweep, and the peers whose venvs
exist, each with its compile and run time apart, each in a fresh process under its own time
limit (a step that fails or runs out of time is recorded, and the next one runs).

    python benchmarks/gpu_check.py            # on a GPU, 7 minutes at most (--budget-s)
    python benchmarks/gpu_check.py --smoke    # the same steps at tiny sizes, on the CPU
    python benchmarks/gpu_check.py --steps cartpole,sweep --smoke --out /tmp/check

``benchmarks/gpu_check.sh`` installs the carried wheels first and runs this (README, "GPU
check"). ``--smoke`` under jax 0.11 (the GPU image's) needs ``PPOX_ROLLED_THREEFRY=1``: there
the unrolled threefry lowering that ppox registers for the CPU compiles for minutes.
Steps, in order (the full sizes; ``--smoke`` shrinks each):

``device``          jax.devices(), versions (against pyproject.toml's pins), nvidia-smi, a
                    float32 matmul peak, whether the env packages import
``cartpole``        CartPole-v1, 4,096 envs: the trainer (``ppox.diagnostics.measure_point``)
``cartpole_large``  CartPole-v1, 16,384 envs
``brax``            brax/ant, 4,096 envs (ppox's brax defaults: 32 steps, 4 x 8 minibatches;
                    --smoke: brax/inverted_pendulum)
``playground``      playground/CartpoleBalance, 4,096 envs (Playground's PPO settings: 480
                    steps, 16 epochs x 32 minibatches; impl=jax)
``sweep``           64 CartPole configurations (8 learning rates x 8 clip eps, 4 envs x 128
                    steps, 512,000 env steps each) in one ``run_sweep`` call, against one
                    sequential ``train_runs`` call extrapolated to 64
                    (``benchmarks/sweep_throughput.py``'s measurement)
``peers``           Brax's PPO trainer on the brax and playground steps' envs and rejax
                    (PureJaxRL-style) on CartPole, 4,096 envs, 20 updates, where
                    ``.venvs/peer-<name>`` exists; else skipped, saying so
``profile``         CartPole-v1, 4,096 envs: 2 updates traced with ``jax.profiler``
                    (``train_runs(profile_updates=2)``) and the trace's top kernels by their
                    own time (``ppox.host.profiling.kernel_table``): where a GPU update's
                    time goes. Last, with the time the others left; the trace itself is not
                    kept, its table is in ``profile.json``

Writes one JSON per step, ``summary.json`` and ``summary.md`` into ``--out`` (default
``benchmarks/results/<machine>/gpu_check/``; with ``--smoke`` a temporary folder). Every
step's JSON has ``status`` (ok, failed, timed out, skipped), ``compile_s``, ``run_s`` (one
timed call), ``env_steps`` (of that call), ``sps`` (steps/s of that call, median), ``wall_s``
(the process) and the worker's whole ``result``. Exit status 1 when a step failed.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness.machine import jsonable, save_json
from benchmarks.harness.workers import (
    point_in_process,
    run_json_process,
    shown_command,
    worker_env,
)

ROOT = Path(__file__).resolve().parent.parent
THIS = Path(__file__).resolve()
#: Distributions whose versions the device step records (and compares with the pins).
DISTS = ("jax", "jaxlib", "jax-cuda13-plugin", "jax-cuda13-pjrt", "jax-cuda12-plugin",
         "flax", "optax", "chex", "orbax-checkpoint", "numpy", "scipy", "gymnax", "gymnasium",
         "brax", "mujoco", "mujoco-mjx", "playground", "warp-lang", "tyro", "ml-collections")
#: Modules the steps need beyond jax; the device step tries each.
MODULES = ("gymnax", "brax", "mujoco", "mujoco.mjx", "mujoco_playground", "tyro")
#: The peers step's peers: Brax's PPO trainer on the brax step's env, rejax on CartPole,
#: Brax's PPO on Playground's env where the harness has that runner.
PEERS = ("brax", "rejax", "playground")


@dataclasses.dataclass(frozen=True)
class Sizes:
    """What each step measures; ``FULL`` on a GPU, ``SMOKE`` on a CPU in a minute or two."""

    brax_env: str
    playground_env: str
    cartpole_envs: int
    cartpole_large_envs: int
    brax_envs: int
    playground_envs: int
    sweep_configs: int
    sweep_steps: int  # env steps per configuration
    sweep_sequential: int  # sequential calls timed (then extrapolated)
    matmul_n: int
    profile_envs: int
    target_s: float  # seconds per timed call
    repeats: int
    budgets: Mapping[str, float]  # step -> its time limit, seconds
    brax_overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    playground_overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)


FULL = Sizes(brax_env="brax/ant", playground_env="playground/CartpoleBalance",
             cartpole_envs=4096, cartpole_large_envs=16384, brax_envs=4096,
             playground_envs=4096, sweep_configs=64, sweep_steps=4 * 128 * 1000,
             sweep_sequential=1, matmul_n=8192, profile_envs=4096, target_s=3.0, repeats=3,
             budgets={"device": 45, "cartpole": 45, "cartpole_large": 50, "brax": 110,
                      "playground": 90, "sweep": 120, "peers": 120, "profile": 60})
# brax/ant compiles for ~70 s on a busy 2-core CPU; inverted_pendulum takes the same path.
SMOKE = Sizes(brax_env="brax/inverted_pendulum", playground_env="playground/CartpoleBalance",
              cartpole_envs=16, cartpole_large_envs=64, brax_envs=16, playground_envs=16,
              sweep_configs=4, sweep_steps=4 * 128 * 4, sweep_sequential=2, matmul_n=256,
              profile_envs=16, target_s=0.3, repeats=1,
              budgets={"device": 60, "cartpole": 90, "cartpole_large": 90, "sweep": 120,
                       "brax": 240, "playground": 240, "peers": 120, "profile": 90},
              brax_overrides={"num_steps": 8},
              playground_overrides={"num_steps": 16, "update_epochs": 1, "num_minibatches": 4})
STEPS = ("device", "cartpole", "cartpole_large", "brax", "playground", "sweep", "peers",
         "profile")


# --- Child processes: what runs inside each step's fresh process --------------------------------


def device_child(spec: Mapping[str, Any]) -> dict[str, Any]:
    """In a fresh process: the devices, versions against the pins, nvidia-smi, a float32
    matmul peak and whether each env package imports."""
    import jax

    from benchmarks.harness.machine import dist_version, machine_info, machine_name
    from ppox.diagnostics import matmul_peak

    versions = {d: dist_version(d) for d in DISTS}
    pins = pinned_versions()
    differ = {d: {"pinned": pins[d], "installed": versions.get(d) or dist_version(d)}
              for d in pins if (versions.get(d) or dist_version(d)) not in (pins[d], None)}
    n = int(spec["matmul_n"]) if jax.default_backend() != "cpu" else min(int(spec["matmul_n"]),
                                                                          1024)
    t0 = time.perf_counter()
    peak = matmul_peak(n, 5)
    peak["wall_s"] = time.perf_counter() - t0
    peak["precision"] = str(jax.config.jax_default_matmul_precision)
    return {"machine": machine_name(), "devices": [str(d) for d in jax.devices()],
            "backend": jax.default_backend(), "machine_info": machine_info(),
            "versions": versions, "pins_that_differ": differ, "nvidia_smi": nvidia_smi(),
            "matmul": peak, "imports": {m: try_import(m) for m in MODULES}}


def sweep_child(spec: Mapping[str, Any]) -> dict[str, Any]:
    """In a fresh process: ``benchmarks/sweep_throughput.py``'s measurement (one
    ``run_sweep`` call over the grid, then a few sequential ``train_runs`` calls)."""
    from benchmarks.harness.machine import machine_name
    from benchmarks.sweep_throughput import child

    args = argparse.Namespace(configs=int(spec["configs"]),
                              total_timesteps=int(spec["total_timesteps"]),
                              sequential=int(spec["sequential"]), progress_chunks=4)
    return {**child(args), "machine": machine_name()}


def profile_child(spec: Mapping[str, Any]) -> dict[str, Any]:
    """In a fresh process: ``spec["updates"]`` updates of the env's trainer traced with
    ``jax.profiler`` right after its first chunk, and the trace's top kernels."""
    from benchmarks.harness.machine import machine_name
    from ppox.diagnostics import point_config
    from ppox.host.profiling import kernel_table
    from ppox.host.run import train_runs

    updates = int(spec["updates"])
    cfg, hp = point_config(spec["env_id"], int(spec["num_envs"]))
    cfg = cfg.replace(total_timesteps=cfg.batch_size * 3 * updates)  # first, traced, last
    with tempfile.TemporaryDirectory() as tmp:
        res = train_runs(cfg, [hp], [0], chunk_size=updates, profile_updates=updates,
                         profile_dir=tmp)
        info = res.extra["profile"]
        table = (kernel_table(info["trace"], top=int(spec["top"]))
                 if "error" not in info and info.get("trace") else None)
    return {"machine": machine_name(), "compile_s": res.compile_s, "profile": info,
            "table": table, "env_steps_traced": updates * cfg.batch_size,
            "config": {"num_envs": cfg.num_envs, "num_steps": cfg.num_steps,
                       "update_epochs": cfg.update_epochs,
                       "num_minibatches": cfg.num_minibatches}}


def pinned_versions() -> dict[str, str]:
    """``{distribution: version}`` of pyproject.toml's ``==`` pins (dependencies and the
    playground extra)."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [*project["dependencies"], *project["optional-dependencies"].get("playground", [])]
    return {r.split("==")[0].strip().lower(): r.split("==")[1].strip()
            for r in reqs if "==" in r}


def nvidia_smi() -> str | None:
    """``nvidia-smi``'s one-line description of each GPU (read only), None without one."""
    if shutil.which("nvidia-smi") is None:
        return None
    query = ("name,driver_version,memory.total,memory.used,clocks.sm,clocks.max.sm,"
             "power.draw,temperature.gpu,utilization.gpu")
    try:
        proc = subprocess.run(["nvidia-smi", f"--query-gpu={query}", "--format=csv"],
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"nvidia-smi failed: {err}"
    return proc.stdout.strip() or proc.stderr.strip()


def try_import(module: str) -> dict[str, Any]:
    """Imports ``module``: its import seconds, or the error."""
    import importlib

    t0 = time.perf_counter()
    try:
        importlib.import_module(module)
    except Exception as err:  # any import failure is the finding
        return {"ok": False, "error": f"{type(err).__name__}: {err}"[:500]}
    return {"ok": True, "import_s": time.perf_counter() - t0}


CHILDREN: dict[str, Callable[[Mapping[str, Any]], dict[str, Any]]] = {
    "device": device_child, "sweep": sweep_child, "profile": profile_child}


def child_main(kind: str, spec_json: str) -> int:
    """``--child KIND SPEC``: one child's measurement, one JSON line on stdout."""
    res = CHILDREN[kind](json.loads(spec_json))
    sys.stdout.write(json.dumps(res, default=jsonable) + "\n")
    sys.stdout.flush()
    return 0


def child_in_process(kind: str, spec: Mapping[str, Any], timeout: float) -> dict[str, Any]:
    """``--child kind spec`` in a fresh process (``run_json_process``)."""
    cmd = [sys.executable, str(THIS), "--child", kind, json.dumps(spec)]
    out = run_json_process(cmd, timeout=timeout, env=worker_env(), cwd=ROOT)
    out["command"] = shown_command(cmd).replace(str(THIS), os.path.relpath(THIS, ROOT))
    return out


def cold_compiles() -> None:
    """Every worker inherits this process's environment: no persistent compilation cache,
    so that every compile is timed cold."""
    os.environ["PPOX_COMPILE_CACHE"] = "0"
    os.environ.pop("JAX_COMPILATION_CACHE_DIR", None)


# --- The steps: each one measurement in a fresh process, reduced to the common fields -----------


@dataclasses.dataclass
class Context:
    """What every step reads: the sizes, the time left and the machine found."""

    sizes: Sizes
    deadline: float  # time.monotonic() by which every step must be done
    timeout_override: float | None = None
    machine: str | None = None
    backend: str | None = None  # jax.default_backend() in the device step
    jax_devices: list[str] = dataclasses.field(default_factory=list)

    def timeout(self, step: str) -> float:
        budget = self.timeout_override or self.sizes.budgets[step]
        return max(0.0, min(budget, self.deadline - time.monotonic()))


def run_point(ctx: Context, step: str, env_id: str, num_envs: int,
              overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The trainer of one (env, num_envs) point in a fresh ``benchmarks/worker.py``."""
    res = point_in_process(env_id, num_envs, ("trainer",), target_s=ctx.sizes.target_s,
                           repeats=ctx.sizes.repeats, timeout=ctx.timeout(step),
                           overrides=dict(overrides) if overrides else None)
    what = f"{env_id}, {num_envs:,} envs, trainer"
    if "error" in res:
        return _failed(res, what)
    t = res["trainer"]
    calls = len(t["run_s"])
    return {"what": what, "status": "ok", "compile_s": t["compile_s"],
            "run_s": _median(t["run_s"]), "env_steps": t["env_steps"], "sps": t["sps_median"],
            "updates_per_call": t["iters"], "timed_calls": calls,
            "useful_gflops": t.get("useful_gflops"),
            "device_peak_bytes": ((res.get("memory") or {}).get("device") or {})
            .get("peak_bytes_in_use"),
            "config": {k: res["config"].get(k) for k in
                       ("num_envs", "num_steps", "update_epochs", "num_minibatches",
                        "actor_hidden", "critic_hidden", "policy", "backend", "env_config")},
            "command": res.get("command"), "wall_s": res.get("process_wall_s"), "result": res}


def step_device(ctx: Context) -> dict[str, Any]:
    res = child_in_process("device", {"matmul_n": ctx.sizes.matmul_n}, ctx.timeout("device"))
    if "error" in res:
        return _failed(res, "devices, versions, matmul peak")
    ctx.machine, ctx.backend, ctx.jax_devices = res["machine"], res["backend"], res["devices"]
    mm = res["matmul"]
    bad = [m for m, r in res["imports"].items() if not r["ok"]]
    note = f"{', '.join(res['devices'])}; {mm['n']}^3 float32 matmul peak " \
           f"{mm['peak_gflops']:,.0f} GFLOP/s"
    if bad:
        note += f"; cannot import {', '.join(bad)}"
    return {"what": "devices, versions, matmul peak", "status": "ok", "note": note,
            "matmul_peak_gflops": mm["peak_gflops"], "wall_s": res.get("process_wall_s"),
            "command": res.get("command"), "result": res}


def step_cartpole(ctx: Context) -> dict[str, Any]:
    return run_point(ctx, "cartpole", "CartPole-v1", ctx.sizes.cartpole_envs)


def step_cartpole_large(ctx: Context) -> dict[str, Any]:
    return run_point(ctx, "cartpole_large", "CartPole-v1", ctx.sizes.cartpole_large_envs)


def step_brax(ctx: Context) -> dict[str, Any]:
    return run_point(ctx, "brax", ctx.sizes.brax_env, ctx.sizes.brax_envs,
                     ctx.sizes.brax_overrides)


def step_playground(ctx: Context) -> dict[str, Any]:
    return run_point(ctx, "playground", ctx.sizes.playground_env, ctx.sizes.playground_envs,
                     ctx.sizes.playground_overrides)


def step_sweep(ctx: Context) -> dict[str, Any]:
    s = ctx.sizes
    spec = {"configs": s.sweep_configs, "total_timesteps": s.sweep_steps,
            "sequential": s.sweep_sequential}
    res = child_in_process("sweep", spec, ctx.timeout("sweep"))
    what = (f"CartPole-v1, {s.sweep_configs} configurations x {s.sweep_steps:,} env steps "
            "(4 envs x 128 steps), one run_sweep call")
    if "error" in res:
        return _failed(res, what)
    sw, seq = res["sweep"], res["sequential"]
    return {"what": what, "status": "ok", "compile_s": sw["compile_s"], "run_s": sw["run_s"],
            "env_steps": sw["env_steps"], "sps": sw["sps_run"],
            "sps_wall": sw["sps_wall"],
            "sequential_sps": seq["sps_run"], "sequential_calls_timed": seq["calls_timed"],
            "note": f"{sw['sps_run'] / seq['sps_run']:.1f}x the sequential calls' steps/s "
                    f"(train time; {seq['calls_timed']} timed, x{s.sweep_configs})",
            "best_final_return": sw["best_final_return"], "wall_s": res.get("process_wall_s"),
            "command": res.get("command"), "result": res}


def step_peers(ctx: Context) -> dict[str, Any]:
    """Each peer of ``PEERS`` at the brax or CartPole point's size where its venv exists;
    the rest skipped with the reason. The step's own figures are the first peer's that ran."""
    envs = {"brax": ctx.sizes.brax_env, "rejax": "CartPole-v1",
            "playground": ctx.sizes.playground_env}
    runs = {f"{peer} ({envs[peer]})": run_peer_or_why(ctx, peer, envs[peer]) for peer in PEERS}
    note = "; ".join(f"{k}: {v['status']}" + (f" ({_short(v['why'])})" if v.get("why") else "")
                     for k, v in runs.items())
    ok = [v for v in runs.values() if v["status"] == "ok"]
    status = ("failed" if any(v["status"] == "failed" for v in runs.values()) else
              "ok" if ok else "skipped")
    out: dict[str, Any] = {"what": f"peers: Brax's PPO on {envs['brax']} and "
                                   f"{envs['playground']}, rejax on CartPole",
                           "status": status, "note": note, "result": runs}
    if ok:
        out.update(compile_s=ok[0]["compile_s_median"], run_s=ok[0]["run_s_median"],
                   sps=ok[0]["sps_median"])
    return out


def step_profile(ctx: Context) -> dict[str, Any]:
    n, updates = ctx.sizes.profile_envs, 2
    spec = {"env_id": "CartPole-v1", "num_envs": n, "updates": updates, "top": 15}
    res = child_in_process("profile", spec, ctx.timeout("profile"))
    what = f"CartPole-v1, {n:,} envs: {updates} updates traced with jax.profiler"
    if "error" in res:
        return _failed(res, what)
    info, table = res["profile"], res["table"]
    common = {"what": what, "compile_s": res["compile_s"], "wall_s": res.get("process_wall_s"),
              "command": res.get("command"), "result": res}
    if table is None:
        return {**common, "status": "failed", "error": info.get("error", "no trace written")}
    top = "; ".join(f"{r['name']} {r['share']:.0%} (x{r['count']})" for r in table["rows"][:3])
    busy = table["busy_us"] / 1e6 / info["traced_s"] if info["traced_s"] else 0.0
    return {**common, "status": "ok", "run_s": info["traced_s"],
            "env_steps": res["env_steps_traced"], "kernels": table,
            "note": f"the traced call (slower than untraced); {table['source']} kernels busy "
                    f"{busy:.0%} of it; top by own time: {top}"}


def _short(why: str) -> str:
    return why.split(";")[0].replace(f"{ROOT}{os.sep}", "")


def run_peer_or_why(ctx: Context, peer: str, env_id: str) -> dict[str, Any]:
    """:func:`run_peer`, an exception (a setting the peer's runner refuses) recorded as
    its failure."""
    try:
        return run_peer(ctx, peer, env_id)
    except Exception as err:  # one peer must not stop the others
        return {"status": "failed", "why": f"{type(err).__name__}: {err}"}


def run_peer(ctx: Context, peer: str, env_id: str) -> dict[str, Any]:
    """One peer in a fresh process (``benchmarks.harness.peers``), 20 updates at the
    point's size, or why it is skipped."""
    from benchmarks.harness.peers import (
        PEER_RUNNERS,
        peer_job,
        run_side_by_side,
        summarize_side_by_side,
    )
    from ppox.diagnostics import point_config

    if peer not in PEER_RUNNERS:
        return {"status": "skipped", "why": "no runner for it in benchmarks/harness/peers.py"}
    kind = env_id.split("/")[0] if "/" in env_id else "cartpole"
    num_envs = {"brax": ctx.sizes.brax_envs, "playground": ctx.sizes.playground_envs}
    overrides = {"brax": ctx.sizes.brax_overrides, "playground": ctx.sizes.playground_overrides}
    cfg, hp = point_config(env_id, num_envs.get(kind, ctx.sizes.cartpole_envs),
                           overrides=overrides.get(kind))
    job = peer_job(peer, cfg.replace(total_timesteps=cfg.batch_size * 20), hp)
    if job.skipped:
        return {"status": "skipped", "why": job.skipped}
    raw = run_side_by_side([job], 1, timeout=ctx.timeout("peers"))
    summary = summarize_side_by_side(raw, reference="ppox")[peer]
    if "skipped" in summary:  # it ran and failed
        return {"status": "failed", "why": summary["skipped"], "raw": raw}
    return {"status": "ok", **summary, "raw": raw}


STEP_FUNCTIONS: dict[str, Callable[[Context], dict[str, Any]]] = {
    "device": step_device, "cartpole": step_cartpole, "cartpole_large": step_cartpole_large,
    "sweep": step_sweep, "brax": step_brax, "playground": step_playground,
    "peers": step_peers, "profile": step_profile}


def _median(xs: Sequence[float]) -> float:
    from ppox.diagnostics import median

    return median(xs)


def _failed(res: Mapping[str, Any], what: str) -> dict[str, Any]:
    """A failed step's fields from a worker's error reply."""
    timed_out = str(res.get("error", "")).startswith("timed out")
    return {"what": what, "status": "timed out" if timed_out else "failed",
            "error": res.get("error"), "stderr_tail": res.get("stderr_tail"),
            "command": res.get("command"), "wall_s": res.get("process_wall_s"),
            "result": dict(res)}


def run_step(ctx: Context, step: str) -> dict[str, Any]:
    """One step under its time limit; an exception is recorded as its failure."""
    t0 = time.perf_counter()
    budget = ctx.timeout(step)
    if budget <= 1.0:
        out: dict[str, Any] = {"status": "skipped", "note": "no time left in --budget-s"}
    else:
        try:
            out = STEP_FUNCTIONS[step](ctx)
        except Exception as err:  # a broken step must not stop the others
            out = {"status": "failed", "error": f"{type(err).__name__}: {err}"}
    return {"step": step, **out, "timeout_s": budget,
            "step_wall_s": time.perf_counter() - t0}


# --- Output: one JSON per step, summary.json, summary.md ----------------------------------------


def summary_rows(results: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    from ppox.diagnostics import fmt_num

    rows = []
    for r in results:
        note = r.get("note") or r.get("error") or ""
        rows.append([r["step"], r.get("what", ""), r["status"], fmt_num(r.get("compile_s"), 1),
                     fmt_num(r.get("run_s"), 2), fmt_num(r.get("env_steps")),
                     fmt_num(r.get("sps")), fmt_num(r.get("step_wall_s"), 0),
                     str(note).replace("|", "/").replace("\n", " ")[:400]])
    return rows


def summary_markdown(results: Sequence[Mapping[str, Any]], header: Mapping[str, Any]) -> str:
    from ppox.diagnostics import format_table

    table = format_table(["step", "what", "status", "compile s", "run s (one call)",
                          "env steps (one call)", "steps/s", "wall s", "note"],
                         summary_rows(results))
    lines = [f"# GPU check, {header['date']}", "",
             f"`{header['command']}` on {header['machine']} "
             f"({', '.join(header['jax_devices']) or 'devices unknown'}); mode "
             f"{header['mode']}; {header['wall_s']:.0f} s in all.", "",
             "compile s: jit lowering + XLA compile of the init and the training chunk "
             "(no persistent cache); run s: one timed call (trainer steps: the median of "
             "the timed calls; sweep: the whole sweep after its compile); steps/s: env steps "
             "of that call over its run time.", ""]
    if header.get("pins_that_differ"):
        lines += ["Installed versions that differ from pyproject.toml's pins: " + ", ".join(
            f"{d} {v['installed']} (pinned {v['pinned']})"
            for d, v in header["pins_that_differ"].items()) + ".", ""]
    return "\n".join([*lines, table, ""])


def write_results(out_dir: Path, results: Sequence[Mapping[str, Any]],
                  header: Mapping[str, Any]) -> Path:
    """``<step>.json`` for each step, ``summary.json`` and ``summary.md``; returns the
    Markdown's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for r in results:
        save_json(out_dir / f"{r['step']}.json", {**header, **r})
    save_json(out_dir / "summary.json", {
        **header, "steps": [{k: v for k, v in r.items() if k not in ("result", "stderr_tail")}
                            for r in results]})
    md = out_dir / "summary.md"
    md.write_text(summary_markdown(results, header))
    return md


def default_out_dir(smoke: bool, machine: str | None) -> Path:
    if smoke:
        return Path(tempfile.gettempdir()) / "ppox_gpu_check_smoke"
    return ROOT / "benchmarks" / "results" / (machine or "unknown-machine") / "gpu_check"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true",
                   help="tiny sizes on the CPU (JAX_PLATFORMS=cpu), to test the script")
    p.add_argument("--steps", default=",".join(STEPS),
                   help=f"comma-separated steps (default: all: {','.join(STEPS)}); device "
                        "always runs first")
    p.add_argument("--budget-s", type=float, default=None,
                   help="seconds for all steps together (default 420; smoke 600)")
    p.add_argument("--timeout-s", type=float, default=None,
                   help="one time limit for every step instead of each step's own")
    p.add_argument("--out", type=Path, default=None, help="results folder (see above)")
    p.add_argument("--brax-env", default=None,
                   help="the brax step's env (default brax/ant; smoke brax/inverted_pendulum)")
    p.add_argument("--playground-env", default=None,
                   help="the playground step's env (default playground/CartpoleBalance)")
    p.add_argument("--allow-cpu", action="store_true",
                   help="run the full sizes even if JAX finds no GPU")
    p.add_argument("--child", nargs=2, metavar=("KIND", "SPEC"), help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        return child_main(*args.child)
    steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    unknown = [s for s in steps if s not in STEPS]
    if unknown:
        raise SystemExit(f"unknown steps {unknown}; choose from {', '.join(STEPS)}")
    if args.smoke:
        os.environ["JAX_PLATFORMS"] = "cpu"
    cold_compiles()
    sizes = SMOKE if args.smoke else FULL
    sizes = dataclasses.replace(sizes, brax_env=args.brax_env or sizes.brax_env,
                                playground_env=args.playground_env or sizes.playground_env)
    t_start = time.monotonic()
    ctx = Context(sizes, t_start + (args.budget_s or (600.0 if args.smoke else 420.0)),
                  args.timeout_s)
    results = [report(run_step(ctx, "device"))]
    if not args.smoke and not args.allow_cpu and ctx.backend == "cpu":
        print(f"no GPU: jax.devices() = {ctx.jax_devices}; the full sizes need one (--smoke "
              "runs the tiny sizes on the CPU, --allow-cpu the full ones)", flush=True)
        steps = []
    out_dir = args.out or default_out_dir(args.smoke, ctx.machine)
    for step in [s for s in STEPS if s in steps and s != "device"] + [None]:
        # Everything so far is written before each step: a run killed from outside keeps it.
        header = run_header(args, ctx, results, time.monotonic() - t_start)
        md = write_results(out_dir, results, header)
        if os.environ.get("OUT"):
            copy_to_out(out_dir, Path(os.environ["OUT"]))
        if step is not None:
            results.append(report(run_step(ctx, step)))
    print(f"\nwrote {out_dir}/ (one JSON per step, summary.json, summary.md)"
          + (f" and {os.environ['OUT']}/gpu_check.tar.gz" if os.environ.get("OUT") else "")
          + "\n")
    print(md.read_text())
    return 1 if any(r["status"] in ("failed", "timed out") for r in results) else 0


def copy_to_out(out_dir: Path, dest: Path) -> None:
    """``summary.md``, ``summary.json`` and ``gpu_check.tar.gz`` (the results folder, named
    from the repository root when it lies inside it: unpack it there) into ``dest``; the
    device tool brings back at most 8 files."""
    import tarfile

    dest.mkdir(parents=True, exist_ok=True)
    for name in ("summary.md", "summary.json"):
        shutil.copyfile(out_dir / name, dest / name)
    resolved = out_dir.resolve()
    arcname = (str(resolved.relative_to(ROOT)) if resolved.is_relative_to(ROOT)
               else resolved.name)
    tmp = dest / "gpu_check.tar.gz.tmp"
    with tarfile.open(tmp, "w:gz") as tar:
        tar.add(resolved, arcname=arcname)
    tmp.replace(dest / "gpu_check.tar.gz")


def run_header(args: argparse.Namespace, ctx: Context, results: Sequence[Mapping[str, Any]],
               wall_s: float) -> dict[str, Any]:
    """What every output file starts with: the command, the machine, the versions."""
    device = next((r for r in results if r["step"] == "device"), {})
    res = device.get("result") or {}
    cmd = ["python", os.path.relpath(THIS, ROOT), *(sys.argv[1:] if args.child is None else [])]
    return {"command": " ".join(cmd), "mode": "smoke (CPU, tiny sizes)" if args.smoke
            else "full", "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "machine": ctx.machine or "unknown", "jax_devices": ctx.jax_devices,
            "versions": res.get("versions"), "pins_that_differ": res.get("pins_that_differ"),
            "sizes": dataclasses.asdict(ctx.sizes), "wall_s": wall_s}


def report(result: dict[str, Any]) -> dict[str, Any]:
    """Prints one line per finished step (the log shows progress) and returns it."""
    from ppox.diagnostics import fmt_num

    figures = (f"compile {fmt_num(result.get('compile_s'), 1)} s, run "
               f"{fmt_num(result.get('run_s'), 2)} s, {fmt_num(result.get('sps'))} steps/s"
               if result["status"] == "ok" and result.get("sps") is not None else "")
    extra = result.get("note") or result.get("error") or ""
    print(f"[{result['step']}] {result['status']} in {result['step_wall_s']:.0f} s"
          f"{': ' + figures if figures else ''}{' - ' + str(extra)[:300] if extra else ''}",
          flush=True)
    if result["status"] in ("failed", "timed out") and result.get("stderr_tail"):
        print("    " + "\n    ".join(str(result["stderr_tail"]).splitlines()[-8:]), flush=True)
    return result


if __name__ == "__main__":
    sys.exit(main())
