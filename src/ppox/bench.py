"""``ppox bench``: throughput measurements (scaling, roofline, side by side with peers).

The measurement logic lives here so that ``ppox bench`` works from an installed package;
the scripts under ``benchmarks/`` (in the repository) import it and add the full-size
sweeps, tables, JSON and plots.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import itertools
import json
import math
import os
import platform
import re
import resource
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

# ---------------------------------------------------------------------------------------
# Small helpers: machine identity, JSON, timing
# ---------------------------------------------------------------------------------------


def _cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux) or platform (elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _slug(text: str) -> str:
    s = re.sub(r"\(r\)|\(tm\)|cpu @.*$|processor", "", text.lower())
    return re.sub(r"[^a-z0-9]+", "-", s).strip("-") or "unknown"


def machine_name() -> str:
    """A short, file-name-safe name of this machine's compute.

    ``<gpu-name>`` (e.g. ``nvidia-h100-80gb-hbm3``) when JAX's default backend is a GPU/TPU,
    otherwise ``cpu-<n>core-<model slug>`` (e.g. ``cpu-2core-amd-epyc``), ``n`` being the
    cores this process may run on. ``PPOX_BENCH_MACHINE`` overrides it.
    """
    override = os.environ.get("PPOX_BENCH_MACHINE")
    if override:
        return _slug(override)
    try:
        import jax

        dev = jax.devices()[0]
        if dev.platform != "cpu":
            return _slug(getattr(dev, "device_kind", dev.platform))
    except Exception:  # no backend: fall back to the CPU description
        pass
    return f"cpu-{_cpu_count()}core-{_slug(_cpu_model())}"


def _memory_total_gb() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2**20, 2)
    except OSError:
        pass
    return None


def machine_info() -> dict[str, Any]:
    """What a result depends on: CPU model, cores, memory, versions, devices, date, flags."""
    import importlib.metadata as md

    import jax

    def version(dist: str) -> str | None:
        try:
            return md.version(dist)
        except md.PackageNotFoundError:
            return None

    devices = jax.devices()
    return {
        "machine": machine_name(),
        "cpu_model": _cpu_model(),
        "cpu_cores": _cpu_count(),
        "cpu_count_os": os.cpu_count(),
        "memory_gb": _memory_total_gb(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jaxlib": version("jaxlib"),
        "ppox": version("ppox"),
        "flax": version("flax"),
        "optax": version("optax"),
        "gymnax": version("gymnax"),
        "brax": version("brax"),
        "backend": jax.default_backend(),
        "devices": [str(d) for d in devices],
        "device_kind": devices[0].device_kind if devices else None,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }


def argv_string(argv: Sequence[str] | None = None) -> str:
    """The command line that made a result, shell-quoted (``python benchmarks/x.py ...``)."""
    args = list(sys.argv if argv is None else argv)
    if args and args[0].endswith(".py"):
        with contextlib.suppress(ValueError):
            args[0] = os.path.relpath(args[0])
        return "python " + shlex.join(args)
    return shlex.join(args)


def _jsonable(x: Any) -> Any:
    try:
        import numpy as np

        if isinstance(x, np.generic):
            return x.item()
        if isinstance(x, np.ndarray):
            return x.tolist()
    except ImportError:
        pass
    if isinstance(x, Path):
        return str(x)
    if isinstance(x, (set, tuple)):
        return list(x)
    if hasattr(x, "__dataclass_fields__"):
        import dataclasses

        return dataclasses.asdict(x)
    return str(x)


def save_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Writes ``obj`` as indented JSON (numpy scalars/arrays, paths, tuples converted)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=_jsonable) + "\n")
    tmp.replace(path)
    return path


def median(xs: Sequence[float]) -> float:
    """Median of the values (NaN for an empty list)."""
    vals = [float(x) for x in xs if x is not None]
    return statistics.median(vals) if vals else float("nan")


def ratio(a: float | Sequence[float], b: float | Sequence[float]) -> float:
    """``a / b`` where lists are first reduced to their medians; NaN when ``b`` is 0/NaN."""
    num = median(a) if isinstance(a, (list, tuple)) else float(a)
    den = median(b) if isinstance(b, (list, tuple)) else float(b)
    if den == 0 or den != den:
        return float("nan")
    return num / den


def interleaved(fns: Mapping[str, Callable[[], Any]], repeats: int, *,
                warmup: bool = False) -> dict[str, list[float]]:
    """Times each function ``repeats`` times in interleaved order: A B A B ... (seconds).

    The order alternates every round (A B, then B A, ...) so a slow drift in the machine's
    load (other processes, thermal) hits every function alike. The functions must block
    until their work is done (e.g. end with ``jax.block_until_ready``). ``warmup`` calls
    each once first, untimed.
    """
    names = list(fns)
    if warmup:
        for name in names:
            fns[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            t0 = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - t0)
    return times


def peak_rss_mb() -> float:
    """This process's peak resident set size so far, in MiB (``ru_maxrss``)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


def current_rss_mb() -> float:
    """This process's resident set size now, in MiB (``/proc/self/statm``; else peak)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError):
        return peak_rss_mb()


def time_compiled(fn: Callable[..., Any], *args: Any, repeats: int = 1,
                  static_argnums: Sequence[int] = ()) -> dict[str, Any]:
    """Compiles ``jax.jit(fn)`` for ``args`` (timed) and times ``repeats`` calls.

    Returns ``{"compile_s": lower+compile seconds, "run_s": [seconds per call], "out": last
    output, "compiled": the compiled executable}``. Each call is waited on with
    ``jax.block_until_ready``; the compiled executable is called directly, so no tracing
    or cache lookup is timed.
    """
    import jax

    t0 = time.perf_counter()
    compiled = jax.jit(fn, static_argnums=tuple(static_argnums)).lower(*args).compile()
    compile_s = time.perf_counter() - t0
    dyn_args = [a for i, a in enumerate(args) if i not in set(static_argnums)]
    run_s: list[float] = []
    out = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = jax.block_until_ready(compiled(*dyn_args))
        run_s.append(time.perf_counter() - t0)
    return {"compile_s": compile_s, "run_s": run_s, "out": out, "compiled": compiled}



# ---------------------------------------------------------------------------------------
# Useful FLOPs, counted from the network shapes
# ---------------------------------------------------------------------------------------


def mlp_forward_flops(in_dim: int, hidden: Sequence[int], out_dim: int) -> int:
    """FLOPs of one row through a dense MLP: ``2 * fan_in * fan_out`` per layer.

    Multiply-adds only (a multiply and an add per weight); biases and activations are not
    counted (they are O(width), not O(width^2)).
    """
    dims = [int(in_dim), *(int(h) for h in hidden), int(out_dim)]
    return sum(2 * a * b for a, b in itertools.pairwise(dims))


@dataclasses.dataclass(frozen=True)
class FlopCount:
    """FLOPs of one PPO update (one rollout of ``N = T * B`` steps plus its SGD epochs).

    Convention (``useful``, what any PPO must compute; backward = 2 x forward):
      * rollout: actor forward on the ``N`` rows acted on, critic forward on the same ``N``
        rows plus ``B`` rows for the bootstrap value of the last observation;
      * update: ``epochs`` passes over the ``N`` rows (``num_minibatches`` minibatches of
        ``N / num_minibatches``), each row forward and backward through actor and critic:
        ``epochs * N * 3 * (actor + critic)``.
    ``executed`` is what ppox runs in addition: the critic pass covers ``2 N`` rows (obs and
    final obs, see ``ppox.rollout``) instead of ``N + B``, and a diagnostics pass (actor and
    critic forward on ``N`` rows) after the update.

    Attributes:
        actor_row: forward FLOPs of the actor for one row.
        critic_row: forward FLOPs of the critic for one row.
        env_steps: ``N``, env steps per update.
        rollout: useful rollout FLOPs per update.
        update: useful SGD FLOPs per update.
        executed_extra: FLOPs ppox executes beyond ``useful`` per update.
    """

    actor_row: int
    critic_row: int
    env_steps: int
    rollout: int
    update: int
    executed_extra: int

    @property
    def useful(self) -> int:
        """Useful FLOPs per update (rollout + update)."""
        return self.rollout + self.update

    @property
    def executed(self) -> int:
        """FLOPs ppox executes per update (useful + its extra critic rows + diagnostics)."""
        return self.useful + self.executed_extra

    @property
    def useful_per_step(self) -> float:
        """Useful FLOPs per environment step."""
        return self.useful / self.env_steps

    def as_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out.update(useful=self.useful, executed=self.executed,
                   useful_per_step=self.useful_per_step)
        return out


def ppo_flops(obs_dim: int, num_outputs: int, actor_hidden: Sequence[int],
              critic_hidden: Sequence[int], num_envs: int, num_steps: int,
              update_epochs: int) -> FlopCount:
    """The :class:`FlopCount` of one update, from the layer shapes.

    ``num_outputs``: actor outputs (logits for discrete actions, means for continuous; a
    state-independent log-std costs no matmul). The minibatch count does not change the
    total (every row is used once per epoch).
    """
    a = mlp_forward_flops(obs_dim, actor_hidden, num_outputs)
    c = mlp_forward_flops(obs_dim, critic_hidden, 1)
    n = num_envs * num_steps
    rollout = n * a + (n + num_envs) * c
    update = update_epochs * n * 3 * (a + c)
    extra = (n - num_envs) * c + n * (a + c)
    return FlopCount(actor_row=a, critic_row=c, env_steps=n, rollout=rollout, update=update,
                     executed_extra=extra)


def flops_for_config(cfg: Any) -> FlopCount:
    """:func:`ppo_flops` for a ``PPOConfig`` (builds the env to read its spec)."""
    from ppox.envs import make_env

    spec = make_env(cfg).spec
    obs_dim = math.prod(spec.obs_shape)
    return ppo_flops(obs_dim, spec.action_dim, cfg.actor_hidden, cfg.critic_hidden,
                     cfg.num_envs, cfg.num_steps, cfg.update_epochs)


def xla_flops(fn: Callable[..., Any], *args: Any) -> float | None:
    """FLOPs XLA's cost analysis reports for ``jax.jit(fn)(*args)`` (None if unavailable).

    XLA counts a loop body once (not times its trip count), so use it on loop-free pieces.
    """
    import jax

    try:
        cost = jax.jit(fn).lower(*args).compile().cost_analysis()
    except Exception:  # backends without cost analysis
        return None
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else None
    if not cost or "flops" not in cost:
        return None
    return float(cost["flops"])


def xla_flop_check(cfg: Any, rows: int | None = None) -> dict[str, Any]:
    """Cross-checks the analytic counts with XLA's cost analysis on loop-free pieces.

    ``actor_forward``: the actor on ``rows`` rows (default: one minibatch);
    ``fwd_bwd``: gradient of ``sum(actor) + sum(critic)`` with respect to the parameters on
    ``rows`` rows, whose analytic count is ``3 x`` the forward FLOPs. XLA also counts
    element-wise ops (tanh, bias adds), so its numbers run a few percent higher.
    """
    import jax
    import jax.numpy as jnp

    from ppox.trainer import build

    setup = build(cfg)
    policy = setup.policy
    fc = flops_for_config(cfg)
    rows = rows or cfg.minibatch_size
    params = policy.init(jax.random.PRNGKey(0))
    obs = jnp.ones((rows, *setup.env.spec.obs_shape), jnp.float32)

    def actor(p: Any, x: jax.Array) -> jax.Array:
        return policy.actor.apply({"params": p["actor"]}, x)

    def both(p: Any, x: jax.Array) -> jax.Array:
        return jnp.sum(actor(p, x)) + jnp.sum(policy.value(p, x))

    fwd_xla = xla_flops(actor, params, obs)
    bwd_xla = xla_flops(jax.grad(both), params, obs)
    fwd = rows * fc.actor_row
    fb = 3 * rows * (fc.actor_row + fc.critic_row)
    return {
        "rows": rows,
        "actor_forward": {"analytic": fwd, "xla": fwd_xla,
                          "xla_over_analytic": None if fwd_xla is None else fwd_xla / fwd},
        "fwd_bwd": {"analytic": fb, "xla": bwd_xla,
                    "xla_over_analytic": None if bwd_xla is None else bwd_xla / fb},
    }


# ---------------------------------------------------------------------------------------
# The machine's dense-matmul peak
# ---------------------------------------------------------------------------------------


def matmul_peak(n: int = 2048, repeats: int = 5, dtype: str = "float32") -> dict[str, Any]:
    """Times an ``n x n @ n x n`` matmul (compiled once) ``repeats`` times.

    Returns GFLOP/s per repeat (``2 n^3 / t``), their best (the peak) and median, and the
    device it ran on (XLA's default device under the current ``XLA_FLAGS``).
    """
    import jax
    import jax.numpy as jnp

    key_a, key_b = jax.random.split(jax.random.PRNGKey(0))
    a = jax.random.normal(key_a, (n, n), dtype)
    b = jax.random.normal(key_b, (n, n), dtype)
    timed = time_compiled(jnp.matmul, a, b, repeats=repeats + 1)
    secs = timed["run_s"][1:]  # the first call also touches fresh output memory
    gflops = [2 * n**3 / t / 1e9 for t in secs]
    return {"n": n, "dtype": dtype, "run_s": secs, "gflops": gflops,
            "peak_gflops": max(gflops), "median_gflops": median(gflops),
            "device": str(jax.devices()[0]), "num_devices": len(jax.devices()),
            "xla_flags": os.environ.get("XLA_FLAGS", "")}


# ---------------------------------------------------------------------------------------
# The three programs of the roofline: env alone, rollout alone, the trainer
# ---------------------------------------------------------------------------------------


def random_actions(spec: Any, key: Any, num: int) -> Any:
    """``num`` uniformly random actions for an env spec (ints, or floats in the box)."""
    import jax
    import jax.numpy as jnp

    from ppox.envs.core import Box

    if spec.is_discrete:
        return jax.random.randint(key, (num,), 0, spec.action_space.n, jnp.int32)
    box = spec.action_space
    assert isinstance(box, Box)
    return jax.random.uniform(key, (num, *box.shape), jnp.float32,
                              jnp.asarray(box.low), jnp.asarray(box.high))


def _env_only_step(env: Any, carry: tuple[Any, Any], keys: Any) -> tuple[tuple[Any, Any], None]:
    """One step of all envs with random actions; ``keys: [B + 1]`` as in ``collect``."""
    import jax

    env_state, reward_sum = carry
    action = random_actions(env.spec, keys[0], keys.shape[0] - 1)
    env_state, ts = jax.vmap(env.step)(keys[1:], env_state, action)
    return (env_state, reward_sum + ts.reward.sum()), None


def make_env_only(cfg: Any) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """``(init(key) -> carry, run(carry, key, n) -> carry)``: ``n`` x ``num_steps`` steps of
    ``num_envs`` envs with random actions, each block of ``num_steps`` one ``lax.scan`` (as
    in ``ppox.rollout.collect``, keys split the same way). No policy, no learning."""
    import jax
    import jax.numpy as jnp
    from jax import lax

    from ppox.envs import make_env

    env = make_env(cfg)
    num_envs, num_steps = cfg.num_envs, cfg.num_steps

    def init(key: Any) -> Any:
        _, env_state = jax.vmap(env.reset)(jax.random.split(key, num_envs))
        return env_state, jnp.float32(0.0)

    def block(i: Any, carry: Any, key: Any) -> Any:
        keys = jax.random.split(jax.random.fold_in(key, i), num_steps * (num_envs + 1))
        keys = keys.reshape(num_steps, num_envs + 1, *key.shape)
        carry, _ = lax.scan(lambda c, k: _env_only_step(env, c, k), carry, keys)
        return carry

    def run(carry: Any, key: Any, n: Any) -> Any:
        return lax.fori_loop(0, n, lambda i, c: block(i, c, key), carry)

    return init, run


def make_rollout_only(cfg: Any, hp: Any) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """``(init(key) -> carry, run(carry, key, n) -> carry)``: ``n`` rollouts of ppox's
    ``collect`` (env + actor forward + sampling, the ``[T, B]`` records written) with a
    fixed, freshly initialized policy. No critic pass, no GAE, no update."""
    import jax
    import jax.numpy as jnp
    from jax import lax

    from ppox.normalize import RunningMeanStd
    from ppox.rollout import EnvCarry, RolloutContext, collect
    from ppox.trainer import build

    setup = build(cfg)
    num_envs, num_steps = cfg.num_envs, cfg.num_steps

    def init(key: Any) -> Any:
        key_params, key_env = jax.random.split(key)
        params = setup.policy.init(key_params, hp.init_log_std)
        obs, env_state = jax.vmap(setup.env.reset)(jax.random.split(key_env, num_envs))
        return params, EnvCarry(env_state=env_state, obs=obs), jnp.float32(0.0)

    def block(i: Any, carry: Any, key: Any) -> Any:
        params, env, total = carry
        ctx = RolloutContext(
            env=setup.env, policy=setup.policy, params=params,
            obs_stats=RunningMeanStd.create(setup.env.spec.obs_shape)
            if cfg.normalize_obs else None, obs_clip=cfg.obs_clip)
        env, rec, episodes = collect(ctx, env, jax.random.fold_in(key, i), num_steps)
        # Reduce every record so nothing of the rollout is dead code.
        total = total + sum(jnp.sum(x.astype(jnp.float32)) for x in jax.tree.leaves(rec))
        return params, env, total + episodes.count

    def run(carry: Any, key: Any, n: Any) -> Any:
        return lax.fori_loop(0, n, lambda i, c: block(i, c, key), carry)

    return init, run


def _calibrated_runs(call: Callable[[int], Any], target_s: float, min_iters: int,
                     max_iters: int, repeats: int) -> dict[str, Any]:
    """Times ``call(n)`` (which runs ``n`` iterations and blocks) for a calibrated ``n``.

    ``n`` doubles from 1 until one call takes >= 10% of ``target_s`` (the first call, also
    paying one-time costs, is not used for the estimate), then is set so one call takes
    about ``target_s``, within ``[min_iters, max_iters]``; that call is timed ``repeats``
    times.
    """
    call(1)
    n, elapsed = 1, 0.0
    while n < max_iters:
        t0 = time.perf_counter()
        call(n)
        elapsed = time.perf_counter() - t0
        if elapsed >= 0.1 * target_s:
            break
        n = min(2 * n, max_iters)
    per_iter = elapsed / n if elapsed > 0 else 1e-3
    n_final = int(min(max(math.ceil(target_s / per_iter), min_iters), max_iters))
    run_s = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        call(n_final)
        run_s.append(time.perf_counter() - t0)
    return {"iters": n_final, "run_s": run_s, "calibration_iters": n,
            "calibration_s": elapsed}


def _compiled_loop(init: Callable[..., Any], run: Callable[..., Any],
                   key: Any) -> tuple[float, Callable[[int], Any]]:
    """Compiles ``init`` and ``run`` (timed together); returns (compile_s, call(n))."""
    import jax
    import jax.numpy as jnp

    t0 = time.perf_counter()
    init_c = jax.jit(init).lower(key).compile()
    carry = jax.block_until_ready(init_c(key))
    run_c = jax.jit(run, donate_argnums=(0,)).lower(carry, key, jnp.int32(1)).compile()
    compile_s = time.perf_counter() - t0
    state = {"carry": carry}

    def call(n: int) -> Any:
        state["carry"] = jax.block_until_ready(run_c(state["carry"], key, jnp.int32(n)))
        return state["carry"]

    return compile_s, call


def _measure_program(make: Callable[[], tuple[Callable[..., Any], Callable[..., Any]]],
                     batch_size: int, target_s: float, repeats: int,
                     seed: int) -> dict[str, Any]:
    """Compiles the ``(init, run)`` loop that ``make()`` returns and times it."""
    import jax

    init, run = make()
    compile_s, call = _compiled_loop(init, run, jax.random.PRNGKey(seed))
    timed = _calibrated_runs(call, target_s, 1, 1 << 20, repeats)
    steps = timed["iters"] * batch_size
    return {"compile_s": compile_s, **timed, "env_steps": steps,
            "sps": [steps / t for t in timed["run_s"]]}


def measure_env_only(cfg: Any, *, target_s: float = 2.0, repeats: int = 1,
                     seed: int = 0) -> dict[str, Any]:
    """Env steps/s of the env alone (random actions, ``lax.scan``); see :func:`make_env_only`."""
    return _measure_program(lambda: make_env_only(cfg), cfg.batch_size, target_s, repeats,
                            seed)


def measure_rollout_only(cfg: Any, hp: Any, *, target_s: float = 2.0, repeats: int = 1,
                         seed: int = 0) -> dict[str, Any]:
    """Env steps/s of ppox's ``collect`` with a fixed policy; see :func:`make_rollout_only`."""
    return _measure_program(lambda: make_rollout_only(cfg, hp), cfg.batch_size, target_s,
                            repeats, seed)


def measure_trainer(cfg: Any, hp: Any, *, target_s: float = 3.0, repeats: int = 1,
                    seed: int = 0, max_updates: int = 4096, min_updates: int = 2,
                    ) -> dict[str, Any]:
    """Env steps/s of full training updates through the public chunked trainer.

    ``make_init`` + ``make_train_chunk`` (what ``ppox train`` / ``train_runs`` run), with
    the number of updates per chunk traced: one compile, then a calibrated number of
    updates (about ``target_s`` seconds) timed ``repeats`` times, training on from where
    the previous call stopped. ``cfg.total_timesteps`` only sets the learning-rate
    schedule here.
    """
    import jax
    import jax.numpy as jnp

    from ppox.trainer import make_init, make_train_chunk

    cfg = cfg.replace(total_timesteps=max(cfg.total_timesteps, max_updates * cfg.batch_size))
    key = jax.random.PRNGKey(seed)
    hp = hp.as_arrays()
    init_fn = jax.jit(make_init(cfg))
    chunk_fn = jax.jit(make_train_chunk(cfg, max_updates), donate_argnums=(0,))
    t0 = time.perf_counter()
    init_c = init_fn.lower(key, hp).compile()
    state0 = jax.block_until_ready(init_c(key, hp))
    chunk_c = chunk_fn.lower(state0, hp, jnp.int32(1)).compile()
    compile_s = time.perf_counter() - t0
    rss_after_compile = peak_rss_mb()
    box = {"state": state0, "metrics": None}

    def call(n: int) -> None:
        state, metrics = chunk_c(box["state"], hp, jnp.int32(n))
        box["state"], box["metrics"] = jax.block_until_ready((state, metrics))

    timed = _calibrated_runs(call, target_s, min_updates, max_updates, repeats)
    steps = timed["iters"] * cfg.batch_size
    return {"compile_s": compile_s, **timed, "env_steps": steps,
            "sps": [steps / t for t in timed["run_s"]],
            "peak_rss_after_compile_mb": rss_after_compile}


# ---------------------------------------------------------------------------------------
# One measurement point (scaling / roofline), run in a fresh process
# ---------------------------------------------------------------------------------------

#: The three environments of the scaling and roofline benchmarks.
CARTPOLE = "CartPole-v1"
BRAX_TASK = "brax/inverted_pendulum"
LARGE_OBS = "Breakout-MinAtar"  # 10 x 10 x 4 = 400-dim observations
PARTS = ("trainer", "env", "rollout")


def point_config(env_id: str, num_envs: int, num_steps: int | None = None,
                 num_minibatches: int | None = None) -> tuple[Any, Any]:
    """The ``(PPOConfig, HParams)`` of a scaling/roofline point.

    ppox's per-env defaults (``ppox.defaults.resolve``) with ``num_envs`` replaced: the
    rollout length stays the env's default (128 for gymnax envs, 32 for brax), so one
    update is ``num_envs * num_steps`` steps, and ``num_minibatches`` (default 4 for
    gymnax, the env's default for brax) is reduced to a divisor of the batch if needed.
    """
    from ppox.config import _divisor_near
    from ppox.defaults import resolve

    cfg, hp = resolve(env_id)
    cfg = cfg.replace(num_envs=int(num_envs))
    if num_steps is not None:
        cfg = cfg.replace(num_steps=int(num_steps))
    m = int(num_minibatches or cfg.num_minibatches)
    if cfg.batch_size % m:
        m = _divisor_near(cfg.batch_size, m)
    cfg = cfg.replace(num_minibatches=m, total_timesteps=max(cfg.total_timesteps,
                                                             cfg.batch_size))
    cfg.validate()
    return cfg, hp


def _device_memory() -> dict[str, Any] | None:
    import jax

    try:
        stats = jax.devices()[0].memory_stats()
    except Exception:
        return None
    if not stats:
        return None
    keep = ("peak_bytes_in_use", "bytes_in_use", "bytes_limit")
    return {k: int(v) for k, v in stats.items() if k in keep}


def measure_point(env_id: str, num_envs: int, parts: Sequence[str] = PARTS, *,
                  target_s: float = 2.0, repeats: int = 1, seed: int = 0,
                  num_steps: int | None = None,
                  num_minibatches: int | None = None) -> dict[str, Any]:
    """Measures one (env, num_envs) point in this process: the trainer first (so the peak
    memory is the trainer's), then the env alone and the rollout alone.

    Returns the config, the FLOP count, each part's compile time / run times / steps/s,
    and memory: the process's peak RSS before compiling, after compiling and after the
    trainer ran (MiB), and the device's own peak where it reports one (GPUs).
    """
    import jax

    import ppox  # noqa: F401  (ppox's platform setup, as users get it)
    from ppox.config import config_to_dict
    from ppox.trainer import build

    cfg, hp = point_config(env_id, num_envs, num_steps, num_minibatches)
    build(cfg)  # the env and policy, before the memory baseline
    fc = flops_for_config(cfg)
    jax.block_until_ready(jax.numpy.zeros(()))  # backend up
    out: dict[str, Any] = {
        "env_id": env_id, "num_envs": cfg.num_envs, "num_steps": cfg.num_steps,
        "num_minibatches": cfg.num_minibatches, "update_epochs": cfg.update_epochs,
        "config": config_to_dict(cfg), "hparams": {k: float(v) for k, v in
                                                   hp.to_dict().items()},
        "flops": fc.as_dict(), "target_s": target_s, "repeats": repeats,
    }
    rss_base = current_rss_mb()
    peak_base = peak_rss_mb()
    for part in parts:
        if part == "trainer":
            res = measure_trainer(cfg, hp, target_s=target_s, repeats=repeats, seed=seed)
            out["memory"] = {
                "rss_before_mb": rss_base, "peak_rss_before_mb": peak_base,
                "peak_rss_after_compile_mb": res.pop("peak_rss_after_compile_mb"),
                "peak_rss_after_run_mb": peak_rss_mb(),
                "peak_rss_delta_mb": peak_rss_mb() - rss_base,
                "device": _device_memory(),
            }
        elif part == "env":
            res = measure_env_only(cfg, target_s=target_s, repeats=repeats, seed=seed)
        elif part == "rollout":
            res = measure_rollout_only(cfg, hp, target_s=target_s, repeats=repeats, seed=seed)
        else:
            raise ValueError(f"unknown part {part!r}; choose from {PARTS}")
        res["sps_median"] = median(res["sps"])
        out[part] = res
    if "trainer" in out:
        sps = out["trainer"]["sps_median"]
        out["trainer"]["useful_gflops"] = sps * fc.useful_per_step / 1e9
        out["trainer"]["executed_gflops"] = sps * fc.executed / fc.env_steps / 1e9
    return out


def _worker_env() -> dict[str, str]:
    """The environment of a worker process: ours, with this ppox importable first."""
    import ppox

    env = dict(os.environ)
    src = str(Path(ppox.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


MULTI_DEVICE_APIS = ("data_parallel", "split_networks")  # one run over several devices


def _worker_platform(env_id: str, multi_device: bool = False) -> None:
    """In a worker process, before JAX starts: what ``ppox train`` sets up for ``env_id``
    (its per-env XLA CPU flags, ``ppox._platform.apply_env_cpu_xla_flags``) and, for a
    run spread over devices, one XLA CPU device per core (``ppox._platform.use_every_cpu_core``)."""
    from ppox._platform import (
        apply_env_cpu_xla_flags,
        use_every_cpu_core,
        use_unrolled_threefry_on_cpu,
    )

    apply_env_cpu_xla_flags(env_id)
    if multi_device:
        use_every_cpu_core()
    use_unrolled_threefry_on_cpu()


def run_json_process(cmd: Sequence[str], *, timeout: float | None = None,
                     env: Mapping[str, str] | None = None,
                     cwd: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Runs ``cmd`` in a fresh process; returns the last JSON object line of its stdout.

    On failure returns ``{"error": ..., "returncode": ..., "stderr_tail": ...}``. The
    process's own wall time is added as ``process_wall_s``.
    """
    import subprocess

    t0 = time.perf_counter()
    try:
        proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout,
                              env=dict(env) if env is not None else None, cwd=cwd)
    except subprocess.TimeoutExpired as err:
        return {"error": f"timed out after {timeout} s", "returncode": None,
                "stderr_tail": (err.stderr or "")[-2000:] if isinstance(err.stderr, str)
                else ""}
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
                     timeout: float | None = 1800.0) -> dict[str, Any]:
    """:func:`measure_point` in a fresh Python process (clean compile caches and memory)."""
    spec = {"env_id": env_id, "num_envs": num_envs, "parts": list(parts),
            "target_s": target_s, "repeats": repeats, "seed": seed}
    cmd = [sys.executable, "-m", "ppox.bench", "point", json.dumps(spec)]
    out = run_json_process(cmd, timeout=timeout, env=_worker_env())
    out.setdefault("env_id", env_id)
    out.setdefault("num_envs", num_envs)
    out["command"] = shlex.join(["python", *cmd[1:]])
    return out


# ---------------------------------------------------------------------------------------
# Side by side with the peers: one fresh process per measurement, interleaved
# ---------------------------------------------------------------------------------------

PEERS = ("rejax", "brax", "sb3")
_PEER_RUNNER = {"rejax": "run_rejax.py", "brax": "run_brax_ppo.py", "sb3": "run_sb3.py"}


def repo_root() -> Path | None:
    """The ppox checkout this module runs from, or one in the working directory (the one
    holding ``benchmarks/peers``); None for an installed package without the repository."""
    import ppox

    here = Path(ppox.__file__).resolve().parent.parent.parent
    for root in (Path(os.environ.get("PPOX_REPO", "")), here, Path.cwd()):
        if str(root) and (root / "benchmarks" / "peers").is_dir():
            return root.resolve()
    return None


def peer_command(peer: str) -> tuple[list[str] | None, str | None]:
    """``([python, runner], None)`` for a peer, or ``(None, why it is skipped)``."""
    root = repo_root()
    if root is None:
        return None, ("the peers' runner scripts (benchmarks/peers/) are not here: run from "
                      "a ppox checkout")
    runner = root / "benchmarks" / "peers" / _PEER_RUNNER[peer]
    python = root / ".venvs" / f"peer-{peer}" / "bin" / "python"
    if not runner.is_file():
        return None, f"{runner} is missing"
    if not python.exists():
        return None, (f"no venv at {python.parent.parent}; build it with "
                      f"`benchmarks/peers/build_venv.sh {peer}`")
    return [str(python), str(runner)], None


def _hidden_flag(widths: Sequence[int]) -> str:
    return ",".join(str(int(w)) for w in widths)


def peer_args(peer: str, cfg: Any, hp: Any, *, repeats: int = 1, seed: int = 0,
              extra: Sequence[str] = ()) -> list[str]:
    """The runner flags that give ``peer`` the same settings as ``(cfg, hp)``.

    Core flags (every runner): env, envs, rollout length, epochs, minibatches, network
    widths, steps, learning rate and its annealing, gamma, lambda, clip, entropy and value
    coefficients, grad-norm clip. Brax also gets its critic widths, backend, episode length
    and observation normalization; one ppox update maps to ``num_envs=E, unroll_length=T,
    batch_size=E/M, num_minibatches=M, num_updates_per_batch=K`` (see the runner).
    """
    env = cfg.env_id.removeprefix("brax/")
    args = [
        "--env", env, "--num-envs", str(cfg.num_envs), "--num-steps", str(cfg.num_steps),
        "--update-epochs", str(cfg.update_epochs),
        "--num-minibatches", str(cfg.num_minibatches),
        "--hidden", _hidden_flag(cfg.actor_hidden),
        "--total-timesteps", str(cfg.total_timesteps),
        "--learning-rate", repr(float(hp.learning_rate)),
        "--anneal-lr", str(bool(cfg.anneal_lr)).lower(),
        "--gamma", repr(float(hp.gamma)), "--gae-lambda", repr(float(hp.gae_lambda)),
        "--clip-eps", repr(float(hp.clip_eps)), "--ent-coef", repr(float(hp.ent_coef)),
        "--vf-coef", repr(float(hp.vf_coef)),
        "--max-grad-norm", repr(float(hp.max_grad_norm)),
        "--seed", str(seed), "--repeats", str(repeats),
    ]
    if peer == "brax":
        args += ["--critic-hidden", _hidden_flag(cfg.critic_hidden),
                 "--backend", cfg.backend, "--episode-length", str(cfg.episode_length),
                 "--action-repeat", str(cfg.action_repeat),
                 "--normalize-observations", str(bool(cfg.normalize_obs)).lower()]
    elif tuple(cfg.critic_hidden) != tuple(cfg.actor_hidden):
        raise ValueError(f"{peer} uses the same widths for actor and critic; got "
                         f"{cfg.actor_hidden} and {cfg.critic_hidden}")
    return [*args, *extra]


def ppox_worker_command(cfg: Any, hp: Any, *, repeats: int = 1, seed: int = 0,
                        api: str = "fused", eval_episodes: int = 0) -> list[str]:
    """The command of a fresh ppox process that trains ``(cfg, hp)`` like a peer runner."""
    from ppox.config import config_to_dict

    spec = {"config": config_to_dict(cfg),
            "hparams": {k: float(v) for k, v in hp.to_dict().items()},
            "repeats": repeats, "seed": seed, "api": api, "eval_episodes": eval_episodes}
    return [sys.executable, "-m", "ppox.bench", "train", json.dumps(spec)]


def ppox_train_worker(spec: Mapping[str, Any]) -> dict[str, Any]:
    """Trains as a peer runner does and returns the same JSON fields.

    First ``build(cfg)`` (validation and the env, whose first use imports gymnax or brax)
    is timed as ``setup_s``, apart from ``compile_s``, as the peers' runners leave their env
    construction out of their compile time.
    ``api="fused"``: ``jax.jit(make_train(cfg)).lower(key, hp).compile()``, its lowering and
    compile timed as ``compile_s``, then the compiled program called ``repeats`` times
    (seeds seed, seed+1, ...) under ``jax.block_until_ready`` -- the way the rejax runner
    times rejax.
    ``api="train_runs"``: ``ppox.host.run.train_runs`` (what ``ppox train`` runs: chunks,
    progress metrics on the host) once per repeat; its own compile/run split.
    ``api="data_parallel"``: ``train_runs(..., data_parallel=True, progress_chunks=1)``:
    one run split across every local device (``python -m ppox.bench train`` exposes one
    XLA CPU device per core for it, as ``ppox train`` does), its whole training one chunk
    as in the fused program.
    ``api="split_networks"``: the same with ``split_networks=True``: the actor's and the
    critic's updates on two devices at once.
    ``final_return``: mean episodic return of the last 5% of the updates (at least
    ``num_envs`` episodes; ``ppox.host.metrics.final_return``), mean over repeats.
    ``eval_episodes > 0`` adds a deterministic evaluation (``ppox.evaluate``), untimed.
    """
    import importlib.metadata as md

    import jax
    import numpy as np

    from ppox import make_train
    from ppox.config import HParams, config_from_dict, config_to_dict
    from ppox.host.metrics import final_return
    from ppox.trainer import build

    cfg = config_from_dict(dict(spec["config"]))
    hp = HParams(**spec.get("hparams", {}))
    repeats, seed = int(spec.get("repeats", 1)), int(spec.get("seed", 0))
    api = spec.get("api", "fused")
    eval_episodes = int(spec.get("eval_episodes", 0))
    total = cfg.num_updates * cfg.batch_size
    run_s: list[float] = []
    returns: list[float] = []
    states = []
    t0 = time.perf_counter()
    build(cfg)  # validation and the env (the first gymnax/brax import), before any timing
    setup_s = time.perf_counter() - t0
    if api == "fused":
        hp_arr = hp.as_arrays()
        train = make_train(cfg)
        t0 = time.perf_counter()
        compiled = jax.jit(train).lower(jax.random.PRNGKey(seed), hp_arr).compile()
        compile_s = time.perf_counter() - t0
        compile_list = [compile_s]
        for r in range(repeats):
            key = jax.random.PRNGKey(seed + r)
            t0 = time.perf_counter()
            state, metrics = jax.block_until_ready(compiled(key, hp_arr))
            run_s.append(time.perf_counter() - t0)
            host = {k: np.asarray(v) for k, v in metrics.items()}
            returns.append(float(final_return(host, min_episodes=cfg.num_envs)))
            states.append(state)
    elif api in ("train_runs", *MULTI_DEVICE_APIS):
        from ppox.host.run import train_runs

        kwargs = {api: True, "progress_chunks": 1} if api in MULTI_DEVICE_APIS else {}
        compile_list = []
        for r in range(repeats):
            res = train_runs(cfg, [hp], [seed + r], **kwargs)
            compile_list.append(res.compile_s)
            run_s.append(res.run_s)
            returns.append(float(res.final_return[0]))
            states.append(jax.tree.map(lambda x: x[0], res.state))
        compile_s = compile_list[0]
    else:
        raise ValueError(f"unknown api {api!r}: fused, train_runs, data_parallel or "
                         "split_networks")
    out: dict[str, Any] = {
        "peer": "ppox",
        "versions": {"python": platform.python_version(),
                     **{d: _dist_version(md, d) for d in
                        ("ppox", "jax", "jaxlib", "flax", "optax", "gymnax", "brax")}},
        "config": {**config_to_dict(cfg), **{k: float(v) for k, v in hp.to_dict().items()},
                   "total_timesteps_run": total, "num_updates": cfg.num_updates,
                   "api": api, "seed": seed, "repeats": repeats, "adam_eps": 1e-5,
                   "init": "orthogonal"},
        "setup_s": setup_s,
        "compile_s": compile_s,
        "compile_s_per_repeat": compile_list,
        "run_s": run_s,
        "sps": [total / t for t in run_s],
        "final_return": float(np.nanmean(returns)) if np.isfinite(returns).any()
        else float("nan"),
        "return_kind": "train: mean return of the episodes that ended in the last 5% of "
                       "the updates (>= num_envs episodes), mean over repeats",
        "final_return_per_repeat": returns,
        "jax_devices": [str(d) for d in jax.devices()],
    }
    if eval_episodes > 0:
        from ppox.evaluate import make_evaluate

        evaluate = jax.jit(make_evaluate(cfg, eval_episodes, deterministic=True))
        evals = []
        for r, st in enumerate(states):
            ret, _, _ = evaluate(jax.random.PRNGKey(10_000 + r), st.params, st.obs_stats)
            evals.append(float(np.mean(np.asarray(ret))))
        out["eval_return"] = float(np.mean(evals))
        out["eval_return_per_repeat"] = evals
        out["eval_return_kind"] = (f"ppox.evaluate: {eval_episodes} episodes, deterministic "
                                   "policy, untimed, mean over repeats")
    return out


def _dist_version(md: Any, dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


@dataclasses.dataclass
class Job:
    """One implementation of a side-by-side comparison: how to start one measurement.

    ``cmd_for_round(r)`` is the command of round ``r`` (the seed advances with the round,
    the same seeds for every implementation); ``cmd`` is round 0's. ``skipped`` says why a
    job cannot run (then ``cmd`` is None).
    """

    name: str
    cmd: list[str] | None
    env: dict[str, str] | None = None
    skipped: str | None = None
    note: str = ""
    cmd_for_round: Callable[[int], list[str]] | None = None

    def command(self, round_index: int) -> list[str]:
        assert self.cmd is not None
        return self.cmd_for_round(round_index) if self.cmd_for_round else self.cmd


def ppox_job(cfg: Any, hp: Any, *, repeats: int = 1, seed: int = 0, api: str = "fused",
             eval_episodes: int = 0, name: str = "ppox", xla_flags: str = "") -> Job:
    """The ppox side of a comparison (a fresh ``python -m ppox.bench train`` process).

    ``xla_flags`` are appended to ``XLA_FLAGS`` of the ppox processes only (to measure a
    flag's effect on ppox while the peers run as they come).
    """

    def cmd(r: int) -> list[str]:
        return ppox_worker_command(cfg, hp, repeats=repeats, seed=seed + r * repeats,
                                   api=api, eval_episodes=eval_episodes)

    from ppox._platform import env_cpu_xla_flags

    env = _worker_env()
    notes = []
    if env_cpu_xla_flags(cfg.env_id):  # the worker applies them, as `ppox train` does
        notes.append(f"ppox's per-env XLA CPU flags {' '.join(env_cpu_xla_flags(cfg.env_id))}")
    if api == "data_parallel":
        notes.append("one run split across one XLA CPU device per core")
    elif api == "split_networks":
        notes.append("one run, actor and critic updated on two XLA CPU devices at once")
    if getattr(cfg, "grad_clip", "global") != "global":
        notes.append(f"grad_clip={cfg.grad_clip}")
    if xla_flags:
        env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {xla_flags}".strip()
        notes.append(f"XLA_FLAGS += {xla_flags}")
    return Job(name, cmd(0), env=env, cmd_for_round=cmd, note="; ".join(notes))


def peer_job(peer: str, cfg: Any, hp: Any, *, repeats: int = 1, seed: int = 0,
             extra: Sequence[str] = (), note: str = "") -> Job:
    """A peer's side of a comparison, or a skipped job saying why."""
    base, why = peer_command(peer)
    if base is None:
        return Job(peer, None, skipped=why, note=note)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.setdefault("PYTHONUNBUFFERED", "1")

    def cmd(r: int) -> list[str]:
        return [*base, *peer_args(peer, cfg, hp, repeats=repeats, seed=seed + r * repeats,
                                  extra=extra)]

    return Job(peer, cmd(0), env=env, note=note, cmd_for_round=cmd)


def run_side_by_side(jobs: Sequence[Job], rounds: int, *, timeout: float | None = 1800.0,
                     log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Runs every job once per round, each in a fresh process, interleaved: A B C, then
    C B A, ... Returns ``{name: {"runs": [JSON of each process], "skipped": reason}}``."""
    out: dict[str, Any] = {}
    live = [j for j in jobs if j.cmd is not None]
    for j in jobs:
        out[j.name] = {"command": shlex.join(j.cmd) if j.cmd else None, "runs": [],
                       "skipped": j.skipped, "note": j.note}
        if j.skipped and log:
            log(f"  skipping {j.name}: {j.skipped}")
    for r in range(rounds):
        order = live if r % 2 == 0 else live[::-1]
        for j in order:
            cmd = j.command(r)
            res = run_json_process(cmd, timeout=timeout, env=j.env)
            res["round"] = r
            res["command"] = shlex.join(cmd)
            out[j.name]["runs"].append(res)
            if log:
                if "error" in res:
                    log(f"  round {r + 1}/{rounds} {j.name}: FAILED ({res['error']})")
                else:
                    log(f"  round {r + 1}/{rounds} {j.name}: compile {res['compile_s']:.1f} s,"
                        f" {median(res['sps']):,.0f} steps/s, return "
                        f"{res.get('final_return', float('nan')):.1f} "
                        f"({res['process_wall_s']:.0f} s in all)")
    return out


def summarize_side_by_side(results: Mapping[str, Any],
                           reference: str = "ppox") -> dict[str, dict[str, Any]]:
    """Medians over rounds (and repeats) per implementation, and ``reference / peer``
    ratios of steps/s and compile time. A variant of the reference (a name that starts with
    it: ``ppox-dp``, ``ppox+flags``) gets ``vs_peers``: its own ratios against the reference
    and every peer. Every raw number stays in ``results``."""
    summary: dict[str, dict[str, Any]] = {}
    for name, entry in results.items():
        ok = [r for r in entry["runs"] if "error" not in r]
        if entry.get("skipped") or not ok:
            summary[name] = {"skipped": entry.get("skipped") or
                             (entry["runs"][0].get("error") if entry["runs"] else "no runs")}
            continue
        sps = [s for r in ok for s in r["sps"]]
        summary[name] = {
            "runs": len(ok),
            "sps_median": median(sps),
            "sps_all": sps,
            "compile_s_median": median([r["compile_s"] for r in ok]),
            "run_s_median": median([t for r in ok for t in r["run_s"]]),
            "total_timesteps": (ok[0].get("config") or {}).get(
                "total_timesteps_run", (ok[0].get("config") or {}).get("total_timesteps")),
            "final_return_median": median([r["final_return"] for r in ok]),
            "final_returns": [r["final_return"] for r in ok],
            "return_kind": ok[0].get("return_kind"),
            "eval_return_median": median([r["eval_return"] for r in ok
                                          if r.get("eval_return") is not None]),
        }
    ref = summary.get(reference)
    peers = [n for n, s in summary.items()
             if not n.startswith(reference) and "skipped" not in s]
    for name, s in summary.items():
        if (ref is None or name.startswith(reference) or "skipped" in s
                or "skipped" in ref):
            continue
        s["sps_ratio"] = ratio(ref["sps_median"], s["sps_median"])
        s["compile_ratio"] = ratio(ref["compile_s_median"], s["compile_s_median"])
    for name, s in summary.items():  # variants of the reference ("ppox-dp", "ppox+flags")
        if name != reference and name.startswith(reference) and "skipped" not in s:
            s["vs_peers"] = {p: {"sps_ratio": ratio(s["sps_median"], summary[p]["sps_median"]),
                                 "compile_ratio": ratio(s["compile_s_median"],
                                                        summary[p]["compile_s_median"])}
                             for p in [reference, *peers] if "skipped" not in summary[p]}
    return summary


# ---------------------------------------------------------------------------------------
# What each benchmark runs, quick and full
# ---------------------------------------------------------------------------------------

#: Every power of two from 1 to 4096.
POW2 = tuple(2**k for k in range(13))
#: Every power of four from 1 to 4096 (brax: its programs compile for ~30 s each on CPU).
POW4 = tuple(4**k for k in range(7))


def scaling_plan(quick: bool) -> dict[str, tuple[int, ...]]:
    """``{env_id: num_envs values}`` of the scaling benchmark.

    Full: CartPole-v1 and Breakout-MinAtar at every power of two from 1 to 4096; the brax
    task at powers of four only (each point compiles for ~30 s on a 2-core CPU).
    Quick: three CartPole points and one point of each other env.
    """
    if quick:
        return {CARTPOLE: (4, 64, 1024), LARGE_OBS: (64,), BRAX_TASK: (256,)}
    return {CARTPOLE: POW2, LARGE_OBS: POW2, BRAX_TASK: POW4}


def override_plan(plan: Mapping[str, tuple[int, ...]], envs: Sequence[str] | None,
                  num_envs: Sequence[int] | None,
                  default: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    """``plan`` with ``--envs`` (those envs only; ``default`` sizes for an env the plan
    lacks) and ``--num-envs`` (these sizes for every env) applied."""
    out = {e: tuple(plan.get(e, default)) for e in envs} if envs else dict(plan)
    if num_envs:
        out = {e: tuple(num_envs) for e in out}
    return out


def roofline_plan(quick: bool) -> dict[str, tuple[int, ...]]:
    """``{env_id: num_envs values}`` of the roofline benchmark (three programs per point).

    Full: powers of four from 1 to 4096 for CartPole-v1 and Breakout-MinAtar, and 1, 16,
    256, 4096 for the brax task. Quick: CartPole-v1 at 4, 64 and 1024 envs.
    """
    if quick:
        return {CARTPOLE: (4, 64, 1024)}
    return {CARTPOLE: POW4, LARGE_OBS: POW4, BRAX_TASK: (1, 16, 256, 4096)}


# ---------------------------------------------------------------------------------------
# Tables and plots
# ---------------------------------------------------------------------------------------


def fmt_num(x: Any, digits: int = 0) -> str:
    """``12,345`` / ``1.2`` / ``-`` for None or NaN."""
    if x is None:
        return "-"
    try:
        xf = float(x)
    except (TypeError, ValueError):
        return str(x)
    if xf != xf:
        return "-"
    return f"{xf:,.{digits}f}"


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table (pipes), columns padded so it also reads as plain text."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(cells[0], widths, strict=True)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    for row in cells[1:]:
        lines.append("| " + " | ".join(c.rjust(w) for c, w in zip(row, widths, strict=True))
                     + " |")
    return "\n".join(lines)


def scaling_table(points: Sequence[Mapping[str, Any]]) -> str:
    """One row per point: env, envs, steps/s, compile and run time, peak memory."""
    rows = []
    for p in points:
        if "error" in p:
            rows.append([p["env_id"], p["num_envs"], "FAILED: " + str(p["error"])[:40],
                         "", "", "", ""])
            continue
        t, mem = p["trainer"], p.get("memory", {})
        rows.append([p["env_id"], p["num_envs"], p["num_steps"], fmt_num(t["sps_median"]),
                     fmt_num(t["compile_s"], 1), fmt_num(median(t["run_s"]), 2),
                     fmt_num(mem.get("peak_rss_delta_mb"), 0)])
    return format_table(["env", "num_envs", "num_steps", "train steps/s", "compile s",
                         "run s", "peak RSS Δ MiB"], rows)


def roofline_table(points: Sequence[Mapping[str, Any]], peak_gflops: float) -> str:
    """Env alone, rollout alone, trainer steps/s, useful GFLOP/s and % of the matmul peak."""
    rows = []
    for p in points:
        if "error" in p:
            rows.append([p["env_id"], p["num_envs"], "FAILED", "", "", "", "", ""])
            continue
        t = p.get("trainer", {})
        gf = t.get("useful_gflops")
        env_sps = p.get("env", {}).get("sps_median")
        ro_sps = p.get("rollout", {}).get("sps_median")
        tr_sps = t.get("sps_median")
        share = None if not (ro_sps and tr_sps) else 100 * (1 - tr_sps / ro_sps)
        rows.append([p["env_id"], p["num_envs"], fmt_num(env_sps), fmt_num(ro_sps),
                     fmt_num(tr_sps), fmt_num(share, 0),
                     fmt_num(gf, 1), fmt_num(None if gf is None else 100 * gf / peak_gflops, 1)])
    return format_table(["env", "num_envs", "env alone steps/s", "rollout alone steps/s",
                         "trainer steps/s", "% time not rollout", "useful GFLOP/s",
                         "% of peak"], rows)


def side_by_side_table(summary: Mapping[str, Mapping[str, Any]],
                       reference: str = "ppox") -> str:
    """One row per implementation: medians, ratios reference/peer, final returns."""
    rows = []
    for name, s in summary.items():
        if "skipped" in s:
            rows.append([name, "skipped: " + str(s["skipped"])[:60], "", "", "", "", "", ""])
            continue
        peer = not name.startswith(reference)
        ret = fmt_num(s["final_return_median"], 1)
        if s.get("eval_return_median") == s.get("eval_return_median"):  # not NaN
            ret += f" (eval {fmt_num(s['eval_return_median'], 1)})"
        rows.append([name, fmt_num(s["total_timesteps"]), fmt_num(s["sps_median"]),
                     fmt_num(s.get("sps_ratio"), 2) + "x" if peer else "",
                     fmt_num(s["compile_s_median"], 1),
                     fmt_num(s.get("compile_ratio"), 2) + "x" if peer else "",
                     ret, s["runs"]])
    table = format_table(["impl", "steps", "steps/s (median)", f"{reference}/peer steps/s",
                          "compile s", f"{reference}/peer compile", "final return", "runs"],
                         rows)
    lines = [f"  {name}/{peer}: steps/s {fmt_num(r['sps_ratio'], 2)}x, compile "
             f"{fmt_num(r['compile_ratio'], 2)}x"
             for name, s in summary.items() for peer, r in s.get("vs_peers", {}).items()]
    return "\n".join([table, *lines])


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save_figure(fig: Any, path: str | os.PathLike[str]) -> Path:
    """``tight_layout``, write the PNG (creating its folder), close the figure."""
    plt = _pyplot()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_scaling(points: Sequence[Mapping[str, Any]], path: str | os.PathLike[str],
                 title: str = "") -> Path:
    """Training steps/s vs num_envs, log-log, one line per env; compile time below."""
    plt = _pyplot()
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(7, 7.5), sharex=True,
                                  gridspec_kw={"height_ratios": [3, 1.3]})
    for env_id in dict.fromkeys(p["env_id"] for p in points):
        ok = [p for p in points if p["env_id"] == env_id and "trainer" in p]
        if not ok:
            continue
        xs = [p["num_envs"] for p in ok]
        ax.plot(xs, [p["trainer"]["sps_median"] for p in ok], "o-", label=env_id)
        ax2.plot(xs, [p["trainer"]["compile_s"] for p in ok], "o-", label=env_id)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_ylabel("training env steps / s")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    ax.set_title(title or "ppox training throughput vs num_envs")
    ax2.set_xscale("log", base=2)
    ax2.set_xlabel("num_envs")
    ax2.set_ylabel("compile s")
    ax2.grid(True, which="both", alpha=0.3)
    return _save_figure(fig, path)


def plot_roofline(points: Sequence[Mapping[str, Any]], peak_gflops: float,
                  path: str | os.PathLike[str], title: str = "") -> Path:
    """Per env: steps/s of env alone, rollout alone and trainer vs num_envs (log-log), and
    the trainer's useful GFLOP/s as a fraction of the measured matmul peak."""
    plt = _pyplot()
    envs = list(dict.fromkeys(p["env_id"] for p in points))
    fig, axes = plt.subplots(2, len(envs), figsize=(max(7.0, 5.0 * len(envs)), 7.5),
                             squeeze=False)
    for i, env_id in enumerate(envs):
        ok = [p for p in points if p["env_id"] == env_id and "error" not in p]
        ax, ax2 = axes[0][i], axes[1][i]
        xs = [p["num_envs"] for p in ok]
        for part, style in (("env", "s-"), ("rollout", "^-"), ("trainer", "o-")):
            ys = [p.get(part, {}).get("sps_median") for p in ok]
            if any(y is not None for y in ys):
                label = {"env": "env alone", "rollout": "rollout alone",
                         "trainer": "trainer"}[part]
                ax.plot(xs, [y if y is not None else float("nan") for y in ys], style,
                        label=label)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_title(env_id)
        ax.set_ylabel("env steps / s")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        frac = [100 * p.get("trainer", {}).get("useful_gflops", float("nan")) / peak_gflops
                for p in ok]
        ax2.bar([str(x) for x in xs], frac, color="tab:green")
        ax2.axhline(25, color="k", ls="--", lw=0.8)
        ax2.set_ylabel(f"useful FLOP/s, % of {peak_gflops:,.0f} GFLOP/s")
        ax2.set_xlabel("num_envs")
    fig.suptitle(title or "where the time goes: env, rollout, trainer", fontsize=10)
    return _save_figure(fig, path)


def plot_side_by_side(summaries: Mapping[str, Mapping[str, Mapping[str, Any]]],
                      path: str | os.PathLike[str], title: str = "") -> Path:
    """Bars of median steps/s per implementation, one group per comparison."""
    plt = _pyplot()
    groups = list(summaries)
    impls = list(dict.fromkeys(n for s in summaries.values() for n in s))
    fig, ax = plt.subplots(figsize=(max(6, 2.2 * len(groups) + 2), 4.5))
    width = 0.8 / max(1, len(impls))
    for j, name in enumerate(impls):
        ys = [summaries[g].get(name, {}).get("sps_median", 0.0) or 0.0 for g in groups]
        xs = [i + (j - (len(impls) - 1) / 2) * width for i in range(len(groups))]
        bars = ax.bar(xs, ys, width, label=name)
        for bar, g in zip(bars, groups, strict=True):
            s = summaries[g].get(name, {})
            if s.get("final_return_median") is not None and "skipped" not in s:
                ax.annotate(f"R {s['final_return_median']:.0f}",
                            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                            ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups, fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("env steps / s (median; R = final return)")
    ax.set_title(title or "side by side")
    ax.legend()
    ax.grid(True, axis="y", which="both", alpha=0.3)
    return _save_figure(fig, path)


# ---------------------------------------------------------------------------------------
# `ppox bench`
# ---------------------------------------------------------------------------------------


def merged_points(scaling: Mapping[str, Sequence[int]] | None,
                  roofline: Mapping[str, Sequence[int]] | None,
                  ) -> list[tuple[str, int, tuple[str, ...]]]:
    """``(env_id, num_envs, parts)`` covering both plans, each point measured once: the
    trainer everywhere, env alone and rollout alone where the roofline needs them."""
    parts: dict[tuple[str, int], set[str]] = {}
    for env_id, ns in (scaling or {}).items():
        for n in ns:
            parts.setdefault((env_id, n), set()).add("trainer")
    for env_id, ns in (roofline or {}).items():
        for n in ns:
            parts.setdefault((env_id, n), set()).update(PARTS)
    return [(e, n, tuple(p for p in PARTS if p in ps)) for (e, n), ps in parts.items()]


def matmul_peak_in_process(device_count: int | None = None, n: int = 2048,
                           repeats: int = 5) -> dict[str, Any]:
    """:func:`matmul_peak` in a fresh process; ``device_count`` sets
    ``--xla_force_host_platform_device_count`` there (None: this process's XLA_FLAGS)."""
    env = _worker_env()
    if device_count is not None:
        flags = re.sub(r"--xla_force_host_platform_device_count=\d+", "",
                       env.get("XLA_FLAGS", ""))
        env["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={device_count}"
        env["XLA_FLAGS"] = env["XLA_FLAGS"].strip()
    cmd = [sys.executable, "-m", "ppox.bench", "matmul", json.dumps({"n": n,
                                                                    "repeats": repeats})]
    return run_json_process(cmd, timeout=600, env=env)


def run_points(points: Sequence[tuple[str, int, Sequence[str]]], *, target_s: float,
               repeats: int, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Measures each point in its own fresh process, one after the other."""
    out = []
    for i, (env_id, n, parts) in enumerate(points):
        t0 = time.perf_counter()
        res = point_in_process(env_id, n, parts, target_s=target_s, repeats=repeats)
        took = time.perf_counter() - t0
        if "error" in res:
            log(f"[{i + 1}/{len(points)}] {env_id} x {n}: FAILED ({res['error']})\n"
                f"{res.get('stderr_tail', '')[-800:]}")
        else:
            bits = [f"{p} {res[p]['sps_median']:,.0f}/s (compile {res[p]['compile_s']:.1f} s)"
                    for p in parts]
            log(f"[{i + 1}/{len(points)}] {env_id} x {n}: " + ", ".join(bits) +
                f"  [{took:.0f} s]")
        out.append(res)
    return out


def cartpole_comparison_config(num_envs: int = 4,
                               total_timesteps: int = 500_000) -> tuple[Any, Any]:
    """The side-by-side CartPole setting: ppox's defaults (CleanRL/PureJaxRL: 128 steps,
    4 epochs, 4 minibatches, 64x64 tanh MLPs) with ``num_envs`` and ``total_timesteps``."""
    from ppox.defaults import resolve

    cfg, hp = resolve(CARTPOLE)
    return cfg.replace(num_envs=num_envs, total_timesteps=total_timesteps), hp


def default_out_dir() -> Path:
    """``<checkout>/benchmarks/results/<machine>`` inside a ppox checkout, else
    ``./ppox-bench-results/<machine>``."""
    root = repo_root()
    base = root / "benchmarks" / "results" if root else Path("ppox-bench-results")
    return base / machine_name()


@dataclasses.dataclass(frozen=True)
class BenchArgs:
    """Quick throughput benchmarks: scaling over num_envs, the roofline (env alone /
    rollout alone / trainer, useful FLOP/s against the matmul peak) and ppox side by side
    with rejax on CartPole. Each measurement runs in its own fresh process."""

    full: bool = False
    """full-size plans (every power of two, peers at 500k steps, 5 rounds); takes ~30+ min"""
    skip_peers: bool = False
    """leave out the side-by-side comparison with the peers"""
    skip_scaling: bool = False
    """leave out the scaling and roofline points"""
    target_s: float | None = None
    """seconds each timed run aims at (default: 1 quick, 2 full)"""
    repeats: int | None = None
    """timed runs per program and point (default: 1 quick, 3 full)"""
    rounds: int | None = None
    """side-by-side rounds, each implementation once per round (default: 1 quick, 5 full)"""
    peer_steps: int | None = None
    """CartPole steps of the side-by-side runs (default: 100k quick, 500k full)"""
    out: Path | None = None
    """results folder (default: benchmarks/results/<machine> in a checkout, else
    ./ppox-bench-results/<machine>)"""
    envs: tuple[str, ...] | None = None
    """measure only these env ids (all three programs at each point)"""
    num_envs: tuple[int, ...] | None = None
    """measure only these num_envs values (all three programs at each point)"""


def cmd_bench(argv: Sequence[str]) -> int:
    """``ppox bench``: runs the benchmarks, prints tables, writes JSON and PNGs."""
    import tyro

    args = tyro.cli(BenchArgs, args=list(argv), prog="ppox bench")
    quick = not args.full
    target_s = args.target_s or (1.0 if quick else 2.0)
    repeats = args.repeats or (1 if quick else 3)
    rounds = args.rounds or (1 if quick else 5)
    peer_steps = args.peer_steps or (100_000 if quick else 500_000)
    out_dir = Path(args.out) if args.out else default_out_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()

    result: dict[str, Any] = {"command": argv_string(["ppox", "bench", *argv]),
                              "machine": machine_info(), "quick": quick,
                              "target_s": target_s, "repeats": repeats}
    print(f"ppox bench ({'quick' if quick else 'full'}) on {result['machine']['machine']}; "
          f"results -> {out_dir}", flush=True)
    peak = matmul_peak()
    result["matmul_peak"] = peak
    print(f"dense matmul 2048^3 float32: {peak['peak_gflops']:,.0f} GFLOP/s (best of "
          f"{len(peak['gflops'])}; median {peak['median_gflops']:,.0f})", flush=True)

    if not args.skip_scaling:
        scaling, roofline = scaling_plan(quick), roofline_plan(quick)
        if args.envs or args.num_envs:
            scaling = override_plan(scaling, args.envs, args.num_envs, (64,))
            roofline = scaling
        points = run_points(merged_points(scaling, roofline), target_s=target_s,
                            repeats=repeats, log=lambda s: print(s, flush=True))
        result["points"] = points
        sc = [p for p in points if p["num_envs"] in scaling.get(p["env_id"], ())]
        rf = [p for p in points if p["num_envs"] in roofline.get(p["env_id"], ())]
        tables = ("Scaling (training throughput vs num_envs)\n\n" + scaling_table(sc) +
                  "\n\nRoofline (useful FLOP/s against the matmul peak of "
                  f"{peak['peak_gflops']:,.0f} GFLOP/s)\n\n" +
                  roofline_table(rf, peak["peak_gflops"]))
        result["table"] = tables
        print("\n" + tables)
        plot_scaling(sc, out_dir / "bench_scaling.png")
        plot_roofline(rf, peak["peak_gflops"], out_dir / "bench_roofline.png")

    if not args.skip_peers:
        cfg, hp = cartpole_comparison_config(4, peer_steps)
        peers = ("rejax",) if quick else ("rejax", "sb3")
        in_proc = 2 if quick else 1
        print(f"\nSide by side on {cfg.env_id}: {cfg.num_envs} envs x {cfg.num_steps} steps, "
              f"{cfg.update_epochs} epochs, {cfg.num_minibatches} minibatches, {peer_steps:,d} "
              f"steps, {rounds} round(s) of fresh processes", flush=True)
        jobs = [ppox_job(cfg, hp, repeats=in_proc)]
        if (os.cpu_count() or 1) > 1:  # the run on two cores (see README, --split-networks)
            jobs.append(ppox_job(cfg, hp, repeats=in_proc, api="split_networks",
                                 name="ppox-split"))
        for peer in peers:
            if peer == "sb3":
                sb3_cfg = cfg.replace(total_timesteps=min(peer_steps, 100_000))
                jobs.append(peer_job(peer, sb3_cfg, hp, repeats=1,
                                     note=f"{sb3_cfg.total_timesteps:,d} steps (SB3 is slow)"))
            else:
                jobs.append(peer_job(peer, cfg, hp, repeats=in_proc))
        raw = run_side_by_side(jobs, rounds, log=lambda s: print(s, flush=True))
        summary = summarize_side_by_side(raw)
        result["side_by_side"] = {"config": {"env": cfg.env_id, "num_envs": cfg.num_envs,
                                             "num_steps": cfg.num_steps,
                                             "total_timesteps": peer_steps, "rounds": rounds},
                                  "raw": raw, "summary": summary}
        print(side_by_side_table(summary))
        if any("skipped" not in s for name, s in summary.items() if name != "ppox"):
            plot_side_by_side({f"{cfg.env_id} {cfg.num_envs} envs": summary},
                              out_dir / "bench_side_by_side.png")

    result["wall_s"] = time.perf_counter() - t_start
    path = save_json(out_dir / "bench.json", result)
    print(f"\nwrote {path} ({result['wall_s']:.0f} s in all)")
    return 0


def _worker_main(argv: Sequence[str]) -> int:
    """``python -m ppox.bench point|train|matmul '<json>'``: one measurement, one JSON line
    on stdout."""
    if len(argv) != 2 or argv[0] not in ("point", "train", "matmul"):
        print("usage: python -m ppox.bench point|train|matmul '<json spec>'  (internal; "
              "use `ppox bench`)", file=sys.stderr)
        return 2
    import ppox  # noqa: F401  (platform setup)

    spec = json.loads(argv[1])
    if argv[0] == "point":
        _worker_platform(spec["env_id"])
        res = measure_point(spec["env_id"], int(spec["num_envs"]),
                            tuple(spec.get("parts", PARTS)),
                            target_s=float(spec.get("target_s", 2.0)),
                            repeats=int(spec.get("repeats", 1)), seed=int(spec.get("seed", 0)))
        res["machine"] = machine_name()
    elif argv[0] == "matmul":
        res = matmul_peak(int(spec.get("n", 2048)), int(spec.get("repeats", 5)))
    else:
        _worker_platform(spec["config"]["env_id"], spec.get("api") in MULTI_DEVICE_APIS)
        res = ppox_train_worker(spec)
    res["host"] = {"cpu_count": os.cpu_count(), "executable": sys.executable,
                   "xla_flags": os.environ.get("XLA_FLAGS", "")}
    sys.stdout.write(json.dumps(res, default=_jsonable) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv[1:]))
