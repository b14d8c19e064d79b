"""One measurement in a fresh Python process, which prints one JSON line.

``python benchmarks/worker.py point|train|matmul '<json spec>'`` runs :func:`main` below:
``point`` times one (env, num_envs) point (``ppox.diagnostics.measure_point``), ``train``
trains as a peer runner does and reports the same fields (:func:`train_worker`),
``matmul`` times the dense-matmul peak. A fresh process per measurement keeps compile
caches and memory of one from the next. JAX is imported only after :func:`worker_platform`
has set up the platform the way ``ppox train`` does.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

#: The worker script (``benchmarks/worker.py``) and the checkout it belongs to.
WORKER = Path(__file__).resolve().parent.parent / "worker.py"
REPO_ROOT = WORKER.parent.parent
#: The ``train`` worker's APIs that spread one run over several devices.
MULTI_DEVICE_APIS = ("data_parallel", "split_networks")
PARTS = ("trainer", "env", "rollout")  # = ppox.diagnostics.PARTS, without importing JAX


def worker_env() -> dict[str, str]:
    """The environment of a worker process: ours, with this ppox importable first."""
    import ppox

    env = dict(os.environ)
    src = str(Path(ppox.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def worker_command(kind: str, spec: Mapping[str, Any]) -> list[str]:
    """``[python, benchmarks/worker.py, kind, json]``."""
    return [sys.executable, str(WORKER), kind, json.dumps(spec)]


def shown_command(cmd: Sequence[str]) -> str:
    """A worker command as one would type it in the checkout (``python benchmarks/...``)."""
    args = list(cmd)
    if args and args[0] == sys.executable:
        args[0] = "python"
    if len(args) > 1 and args[1] == str(WORKER):
        args[1] = os.path.relpath(WORKER, REPO_ROOT)
    return shlex.join(args)


def worker_platform(env_id: str, multi_device: bool = False) -> None:
    """In a worker process, before JAX starts: what ``ppox train`` sets up for ``env_id``
    (its per-env XLA CPU flags, ``ppox._platform.apply_env_cpu_xla_flags``; the unrolled
    threefry lowering; 512-bit vectors on an AVX-512 CPU) and, for a run spread over devices,
    one XLA CPU device per core (``ppox._platform.use_every_cpu_core``)."""
    from ppox._platform import (
        apply_env_cpu_xla_flags,
        use_every_cpu_core,
        use_ppox_cpu_setup,
    )

    apply_env_cpu_xla_flags(env_id)
    if multi_device:
        use_every_cpu_core()
    use_ppox_cpu_setup()


def run_json_process(cmd: Sequence[str], *, timeout: float | None = None,
                     env: Mapping[str, str] | None = None,
                     cwd: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Runs ``cmd`` in a fresh process; returns the last JSON object line of its stdout.

    On failure returns ``{"error": ..., "returncode": ..., "stderr_tail": ...}``. The
    process's own wall time is added as ``process_wall_s``.
    """
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout,
                              env=dict(env) if env is not None else None, cwd=cwd)
    except subprocess.TimeoutExpired as err:
        stderr = err.stderr if isinstance(err.stderr, str) else ""
        return {"error": f"timed out after {timeout} s", "returncode": None,
                "stderr_tail": stderr[-2000:]}
    wall = time.perf_counter() - t0
    for line in reversed(proc.stdout.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                out = json.loads(line)
            except json.JSONDecodeError:
                continue
            out["process_wall_s"] = wall
            return out
    return {"error": f"no JSON line on stdout (exit status {proc.returncode})",
            "returncode": proc.returncode, "stderr_tail": proc.stderr[-3000:],
            "stdout_tail": proc.stdout[-1000:], "process_wall_s": wall}


def point_in_process(env_id: str, num_envs: int, parts: Sequence[str] = PARTS, *,
                     target_s: float = 2.0, repeats: int = 1, seed: int = 0,
                     timeout: float | None = 1800.0,
                     overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``ppox.diagnostics.measure_point`` in a fresh process (clean caches and memory);
    ``overrides``: ``PPOConfig`` fields over the env's defaults (e.g. the torso)."""
    spec = {"env_id": env_id, "num_envs": num_envs, "parts": list(parts),
            "target_s": target_s, "repeats": repeats, "seed": seed,
            **({"overrides": dict(overrides)} if overrides else {})}
    cmd = worker_command("point", spec)
    out = run_json_process(cmd, timeout=timeout, env=worker_env())
    out.setdefault("env_id", env_id)
    out.setdefault("num_envs", num_envs)
    out["command"] = shown_command(cmd)
    return out


def matmul_peak_in_process(device_count: int | None = None, n: int = 2048,
                           repeats: int = 5) -> dict[str, Any]:
    """``ppox.diagnostics.matmul_peak`` in a fresh process; ``device_count`` sets
    ``--xla_force_host_platform_device_count`` there (None: this process's XLA_FLAGS)."""
    env = worker_env()
    if device_count is not None:
        flags = re.sub(r"--xla_force_host_platform_device_count=\d+", "",
                       env.get("XLA_FLAGS", ""))
        env["XLA_FLAGS"] = (f"{flags} --xla_force_host_platform_device_count={device_count}"
                            .strip())
    cmd = worker_command("matmul", {"n": n, "repeats": repeats})
    return run_json_process(cmd, timeout=600, env=env)


def train_command(cfg: Any, hp: Any, *, repeats: int = 1, seed: int = 0,
                  api: str = "fused", eval_episodes: int = 0,
                  compile_split: bool = False) -> list[str]:
    """The command of a fresh ppox process that trains ``(cfg, hp)`` like a peer runner."""
    from ppox.config import config_to_dict

    return worker_command("train", {
        "config": config_to_dict(cfg), "hparams": {k: float(v) for k, v in
                                                   hp.to_dict().items()},
        "repeats": repeats, "seed": seed, "api": api, "eval_episodes": eval_episodes,
        **({"compile_split": True} if compile_split else {})})


def _train_fused(cfg: Any, hp: Any, seeds: Sequence[int]) -> dict[str, Any]:
    """``jax.jit(make_train(cfg)).lower(key, hp).compile()`` (timed as the compile), then
    the compiled program once per seed under ``jax.block_until_ready``."""
    import jax
    import numpy as np

    from ppox import make_train
    from ppox.host.metrics import final_return

    hp_arr = hp.as_arrays()
    t0 = time.perf_counter()
    compiled = jax.jit(make_train(cfg)).lower(jax.random.PRNGKey(seeds[0]), hp_arr).compile()
    out: dict[str, Any] = {"compile_s": [time.perf_counter() - t0], "run_s": [],
                           "returns": [], "states": []}
    for seed in seeds:
        t0 = time.perf_counter()
        state, metrics = jax.block_until_ready(compiled(jax.random.PRNGKey(seed), hp_arr))
        out["run_s"].append(time.perf_counter() - t0)
        host = {k: np.asarray(v) for k, v in metrics.items()}
        out["returns"].append(float(final_return(host, min_episodes=cfg.num_envs)))
        out["states"].append(state)
    return out


def compile_split(cfg: Any, hp: Any, seed: int = 0) -> dict[str, float]:
    """Seconds to trace, lower and compile ``make_init`` and, apart from it, the training
    program without the init (``make_train_chunk`` over every update: collection and
    update, what Brax's runner counts as its compile, its reset being compiled apart).
    Run after the timed fused compile, so the env's cached traces are warm here."""
    import jax
    import jax.numpy as jnp

    from ppox.trainer import make_init, make_train_chunk

    hp_arr, key = hp.as_arrays(), jax.random.PRNGKey(seed)
    init = make_init(cfg)
    t0 = time.perf_counter()
    jax.jit(init).lower(key, hp_arr).compile()
    init_s = time.perf_counter() - t0
    state, n = jax.eval_shape(init, key, hp_arr), cfg.num_updates
    t0 = time.perf_counter()
    jax.jit(make_train_chunk(cfg, n)).lower(state, hp_arr, jnp.int32(n)).compile()
    return {"init_s": init_s, "train_s": time.perf_counter() - t0}


def _train_with_train_runs(cfg: Any, hp: Any, seeds: Sequence[int],
                           api: str) -> dict[str, Any]:
    """``ppox.host.run.train_runs`` (what ``ppox train`` runs) once per seed; a multi-device
    API passes ``{api: True}`` and runs the whole training as one chunk."""
    import jax
    import numpy as np

    from ppox.host.run import train_runs

    kwargs = {api: True, "progress_chunks": 1} if api in MULTI_DEVICE_APIS else {}
    out: dict[str, Any] = {"compile_s": [], "run_s": [], "returns": [], "states": []}
    for seed in seeds:
        res = train_runs(cfg, [hp], [seed], **kwargs)
        out["compile_s"].append(res.compile_s)
        out["run_s"].append(res.run_s)
        out["returns"].append(float(res.final_return[0]))
        # on the host: indexing the device arrays would compile a program per leaf shape,
        # which the compile clock would count against ppox
        out["states"].append(jax.tree.map(lambda x: np.asarray(x)[0], res.state))
    return out


def _evaluate(cfg: Any, states: Sequence[Any], episodes: int) -> dict[str, Any]:
    """A deterministic evaluation (``ppox.evaluate``) of each trained state, untimed."""
    import jax
    import numpy as np

    from ppox.evaluate import jit_evaluate

    evaluate = jit_evaluate(cfg, episodes, deterministic=True)  # as ppox eval compiles it
    evals = []
    for r, st in enumerate(states):
        ret, _, _ = evaluate(jax.random.PRNGKey(10_000 + r), st.params, st.obs_stats)
        evals.append(float(np.mean(np.asarray(ret))))
    return {"eval_return": float(np.mean(evals)), "eval_return_per_repeat": evals,
            "eval_return_kind": f"ppox.evaluate: {episodes} episodes, deterministic "
                                "policy, untimed, mean over repeats"}


def _train_fields(cfg: Any, hp: Any, spec: Mapping[str, Any],
                  runs: Mapping[str, Any]) -> dict[str, Any]:
    """The peer runners' JSON fields of ``runs`` (see :func:`train_worker`)."""
    import platform

    import jax
    import numpy as np

    from benchmarks.harness.machine import dist_version
    from ppox.config import config_to_dict

    total, returns = cfg.num_updates * cfg.batch_size, runs["returns"]
    return {
        "peer": "ppox",
        "versions": {"python": platform.python_version(),
                     **{d: dist_version(d) for d in
                        ("ppox", "jax", "jaxlib", "flax", "optax", "gymnax", "brax")}},
        "config": {**config_to_dict(cfg), **{k: float(v) for k, v in hp.to_dict().items()},
                   "total_timesteps_run": total, "num_updates": cfg.num_updates,
                   "api": spec.get("api", "fused"), "seed": int(spec.get("seed", 0)),
                   "repeats": int(spec.get("repeats", 1)), "adam_eps": 1e-5,
                   "init": "orthogonal"},
        "compile_s": runs["compile_s"][0],
        "compile_s_per_repeat": runs["compile_s"],
        "run_s": runs["run_s"],
        "sps": [total / t for t in runs["run_s"]],
        "final_return": float(np.nanmean(returns)) if np.isfinite(returns).any()
        else float("nan"),
        "return_kind": "train: mean return of the episodes that ended in the last 5% of "
                       "the updates (>= num_envs episodes), mean over repeats",
        "final_return_per_repeat": returns,
        "jax_devices": [str(d) for d in jax.devices()],
    }


def train_worker(spec: Mapping[str, Any]) -> dict[str, Any]:
    """Trains as a peer runner does and returns the same JSON fields.

    ``build(cfg)`` (validation and the env, whose first use imports gymnax or brax) is
    timed as ``setup_s``, apart from ``compile_s``, as the peers' runners leave their env
    construction out of their compile time. ``api``: ``fused`` (one jitted ``make_train``,
    compiled once, called ``repeats`` times with seeds seed, seed+1, ... -- the way the rejax
    runner times rejax), ``train_runs`` (what ``ppox train`` runs, once per repeat),
    ``data_parallel`` / ``split_networks`` (``train_runs`` with one run spread over the
    devices, the worker exposing one XLA CPU device per core, the training one chunk).
    ``final_return``: mean episodic return of the last 5% of the updates (at least
    ``num_envs`` episodes), mean over repeats. ``eval_episodes > 0`` adds a deterministic
    evaluation, untimed. ``compile_split`` adds ``compile_split_s`` (:func:`compile_split`).
    ``jax_compile``: JAX's own clock of every program the process built, the evaluation's
    included (``benchmarks/peers/_compile_clock.py``, as the brax runner reports it), read
    before ``compile_split``'s extra compiles.
    """
    from benchmarks.peers._compile_clock import CompileClock
    from ppox.config import HParams, config_from_dict
    from ppox.trainer import build

    clock = CompileClock().start()  # as the brax runner's: every program, evaluation too
    cfg = config_from_dict(dict(spec["config"]))
    hp = HParams(**spec.get("hparams", {}))
    repeats, seed = int(spec.get("repeats", 1)), int(spec.get("seed", 0))
    api, eval_episodes = spec.get("api", "fused"), int(spec.get("eval_episodes", 0))
    seeds = [seed + r for r in range(repeats)]
    t0 = time.perf_counter()
    build(cfg)  # validation and the env (the first gymnax/brax import), before any timing
    setup_s = time.perf_counter() - t0
    if api == "fused":
        runs = _train_fused(cfg, hp, seeds)
    elif api in ("train_runs", *MULTI_DEVICE_APIS):
        runs = _train_with_train_runs(cfg, hp, seeds, api)
    else:
        raise ValueError(f"unknown api {api!r}: fused, train_runs, data_parallel or "
                         "split_networks")
    out = {**_train_fields(cfg, hp, spec, runs), "setup_s": setup_s}
    if eval_episodes > 0:
        out.update(_evaluate(cfg, runs["states"], eval_episodes))
    out["jax_compile"] = clock.summary()
    if spec.get("compile_split"):  # after the clock's reading: its compiles are extra
        out["compile_split_s"] = compile_split(cfg, hp, seed)
    return out


def main(argv: Sequence[str]) -> int:
    """``point|train|matmul '<json spec>'``: one measurement, one JSON line on stdout."""
    usage = "usage: python benchmarks/worker.py point|train|matmul '<json spec>'"
    if list(argv) in (["-h"], ["--help"]):
        print(f"{usage}\n\n{__doc__}")
        return 0
    if len(argv) != 2 or argv[0] not in ("point", "train", "matmul"):
        print(usage, file=sys.stderr)
        return 2
    kind, spec = argv[0], json.loads(argv[1])
    if kind == "point":
        worker_platform(spec["env_id"])
        from benchmarks.harness.machine import machine_name
        from ppox.diagnostics import measure_point

        res = measure_point(spec["env_id"], int(spec["num_envs"]),
                            tuple(spec.get("parts", PARTS)),
                            target_s=float(spec.get("target_s", 2.0)),
                            repeats=int(spec.get("repeats", 1)), seed=int(spec.get("seed", 0)),
                            overrides=spec.get("overrides"))
        res["machine"] = machine_name()
    elif kind == "matmul":
        from ppox.diagnostics import matmul_peak

        res = matmul_peak(int(spec.get("n", 2048)), int(spec.get("repeats", 5)))
    else:
        spread = spec.get("api") in MULTI_DEVICE_APIS
        worker_platform(spec["config"]["env_id"], spread)
        if not spread:  # one run at a time: one CPU thread where ppox train takes one
            from ppox._platform import use_one_cpu_thread_for
            from ppox.config import config_from_dict

            use_one_cpu_thread_for(config_from_dict(dict(spec["config"])))
        res = train_worker(spec)
    from ppox._platform import one_cpu_thread_note

    res["host"] = {"cpu_count": os.cpu_count(), "executable": sys.executable,
                   "xla_flags": os.environ.get("XLA_FLAGS", ""),
                   "one_cpu_thread": bool(one_cpu_thread_note())}
    from benchmarks.harness.machine import jsonable

    sys.stdout.write(json.dumps(res, default=jsonable) + "\n")
    sys.stdout.flush()
    return 0


def matmul_peaks() -> tuple[dict[str, dict[str, Any]], float]:
    """The matmul peak in two fresh processes, with this process's XLA flags and with one
    XLA CPU device per core (as ``ppox train`` sets it), and the higher of the two peaks.
    Raises ``SystemExit`` with the worker's stderr if one fails."""
    peaks = {"this_process_flags": matmul_peak_in_process(None),
             "one_device_per_core": matmul_peak_in_process(len(os.sched_getaffinity(0)))}
    for name, p in peaks.items():
        if "error" in p:
            raise SystemExit(f"matmul peak ({name}) failed: {p['error']}\n"
                             f"{p.get('stderr_tail', '')}")
    return peaks, max(p["peak_gflops"] for p in peaks.values())
