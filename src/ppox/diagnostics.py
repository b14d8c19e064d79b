"""Throughput diagnostics (what ``ppox bench`` runs): per ``(env, num_envs)`` point, the env
alone, the rollout alone and the trainer, each compiled (timed apart) and timed for about
``target_s`` s; a FLOP model of the layer shapes (checked against XLA's cost analysis) gives
the trainer's useful FLOP/s, shown against the machine's dense-matmul peak. The benchmark
harness (fresh processes, peers, plans, plots) lives in the repository's ``benchmarks/``.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ppox.config import HParams, PPOConfig

#: The programs a point can time.
PARTS = ("trainer", "env", "rollout")

Program = tuple[Callable[..., Any], Callable[..., Any]]  # (init(key), block(i, carry, key))


# --- Small helpers: statistics, memory, tables --------------------------------------------------


def median(xs: Sequence[float | None]) -> float:
    """Median of the values, ``None`` left out (NaN for none)."""
    vals = [float(x) for x in xs if x is not None]
    return statistics.median(vals) if vals else float("nan")


_SEEN_RSS_MB = 0.0  # the largest RSS this process has read from /proc/self/statm


def peak_rss_mb() -> float:
    """This process's peak resident set size so far, in MiB: ``ru_maxrss``, and never less
    than an RSS read now or before (the kernel's high-water mark and its RSS counters are
    kept lazily and can disagree by a few hundred KiB, so ``ru_maxrss`` alone can read below
    an RSS read moments earlier)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak = rss / 2**20 if sys.platform == "darwin" else rss / 2**10
    _statm_rss_mb()  # raises _SEEN_RSS_MB to the RSS now
    return max(peak, _SEEN_RSS_MB)


def _device_memory(jax: Any) -> dict[str, int] | None:
    """The device's own memory counters (GPUs), None where it has none."""
    try:
        stats = jax.devices()[0].memory_stats() or {}
    except Exception:  # backends without memory stats
        stats = {}
    keep = ("peak_bytes_in_use", "bytes_in_use", "bytes_limit")
    return {k: int(v) for k, v in stats.items() if k in keep} or None


def _statm_rss_mb() -> float | None:
    """The RSS now from ``/proc/self/statm`` in MiB (None where there is none); every read
    raises the floor of :func:`peak_rss_mb`."""
    global _SEEN_RSS_MB
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    mb = pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    _SEEN_RSS_MB = max(_SEEN_RSS_MB, mb)
    return mb


def current_rss_mb() -> float:
    """This process's resident set size now, in MiB (``/proc/self/statm``; else peak)."""
    now = _statm_rss_mb()
    return peak_rss_mb() if now is None else now


def fmt_num(x: Any, digits: int = 0) -> str:
    """``12,345`` / ``1.2``; ``-`` for None or NaN."""
    if x is None:
        return "-"
    try:
        xf = float(x)
    except (TypeError, ValueError):
        return str(x)
    return "-" if xf != xf else f"{xf:,.{digits}f}"


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table (pipes), columns padded so it also reads as plain text."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(cells[0], widths, strict=True)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += ["| " + " | ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) + " |"
              for row in cells[1:]]
    return "\n".join(lines)


def roofline_table(points: Sequence[Mapping[str, Any]], peak_gflops: float | None) -> str:
    """Per point: env alone, rollout alone and trainer steps/s, the share of the trainer's
    time spent outside the rollout, useful GFLOP/s and its % of the matmul peak."""
    rows = []
    for p in points:
        if "error" in p:
            rows.append([p["env_id"], p["num_envs"], "FAILED", "", "", "", "", ""])
            continue
        t = p.get("trainer", {})
        gf, tr = t.get("useful_gflops"), t.get("sps_median")
        env, ro = p.get("env", {}).get("sps_median"), p.get("rollout", {}).get("sps_median")
        share = 100 * (1 - tr / ro) if ro and tr else None
        frac = 100 * gf / peak_gflops if gf is not None and peak_gflops else None
        rows.append([p["env_id"], p["num_envs"], fmt_num(env), fmt_num(ro), fmt_num(tr),
                     fmt_num(share, 0), fmt_num(gf, 1), fmt_num(frac, 1)])
    return format_table(["env", "num_envs", "env alone steps/s", "rollout alone steps/s",
                         "trainer steps/s", "% time not rollout", "useful GFLOP/s",
                         "% of peak"], rows)


# --- Useful FLOPs, counted from the network shapes -----------------------------------------------


def mlp_forward_flops(in_dim: int, hidden: Sequence[int], out_dim: int) -> int:
    """FLOPs of one row through a dense MLP: ``2 * fan_in * fan_out`` per layer (biases and
    activations, O(width) rather than O(width^2), are not counted)."""
    dims = [int(in_dim), *(int(h) for h in hidden), int(out_dim)]
    return sum(2 * a * b for a, b in itertools.pairwise(dims))


@dataclasses.dataclass(frozen=True)
class FlopCount:
    """FLOPs of one PPO update (one rollout of ``N = T * B`` steps plus its SGD epochs).

    ``useful`` is what any PPO must compute: the rollout runs the actor on ``N`` rows and
    the critic on ``N + B`` (a bootstrap row per env); the update runs ``epochs``
    forward+backward passes of actor and critic over the ``N`` rows, a backward pass costing
    2 x the forward except in the layer that reads the observation (1 x: no gradient for
    the input itself; ``input_row`` is that layer's forward FLOPs, actor + critic).
    ``executed_extra`` is what ppox's clipped PPO runs beyond that: below
    ``ppox.nets.TRUNCATED_PASS_ROWS`` rollout rows its critic pass covers ``2 N`` rows (obs
    and final obs, see ``ppox.rollout``); from there on ``N + B`` rows and a block of ``B``
    rows for the truncated steps (counted once: one block whenever a time limit cuts an env
    at most once per rollout); its diagnostics come from the SGD
    steps' own forward passes (``ppo_kl`` and ``trpo`` add a forward pass over the batch,
    not counted here). A row's FLOPs come from the torso
    (``row_flops()`` of ``ppox.nets``: dense layers, convolutions at every output position,
    a GRU's six gate matmuls per step); a recurrent update replays each row once per epoch,
    as a feed-forward one does.
    """

    actor_row: int  # forward FLOPs of the actor for one row
    critic_row: int  # forward FLOPs of the critic for one row
    input_row: int  # forward FLOPs of both networks' observation-reading layers, one row
    env_steps: int  # N, env steps per update
    rollout: int
    update: int
    executed_extra: int

    @property
    def useful(self) -> int:
        return self.rollout + self.update

    @property
    def executed(self) -> int:
        return self.useful + self.executed_extra

    @property
    def useful_per_step(self) -> float:
        return self.useful / self.env_steps

    def as_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "useful": self.useful, "executed": self.executed,
                "useful_per_step": self.useful_per_step}


def update_flops(actor_row: int, critic_row: int, input_row: int, num_envs: int,
                 num_steps: int, update_epochs: int) -> FlopCount:
    """The :class:`FlopCount` of one update from each network's forward FLOPs per row (and
    ``input_row``, see :class:`FlopCount`). The minibatch count does not change the total:
    every row is used once per epoch."""
    from ppox.nets import TRUNCATED_PASS_ROWS

    a, c, i, n = int(actor_row), int(critic_row), int(input_row), num_envs * num_steps
    extra_rows = num_envs if n >= TRUNCATED_PASS_ROWS else n - num_envs
    return FlopCount(actor_row=a, critic_row=c, input_row=i, env_steps=n,
                     rollout=n * a + (n + num_envs) * c,
                     update=update_epochs * n * (3 * (a + c) - i),
                     executed_extra=extra_rows * c)


def ppo_flops(obs_dim: int, num_outputs: int, actor_hidden: Sequence[int],
              critic_hidden: Sequence[int], num_envs: int, num_steps: int,
              update_epochs: int) -> FlopCount:
    """:func:`update_flops` for MLP actor and critic. ``num_outputs``: logits or means (a
    state-independent log-std costs no matmul)."""
    first = [mlp_forward_flops(obs_dim, (), (hidden or (out,))[0])
             for hidden, out in ((actor_hidden, num_outputs), (critic_hidden, 1))]
    return update_flops(mlp_forward_flops(obs_dim, actor_hidden, num_outputs),
                        mlp_forward_flops(obs_dim, critic_hidden, 1), sum(first),
                        num_envs, num_steps, update_epochs)


def flops_for_config(cfg: PPOConfig) -> FlopCount:
    """:func:`update_flops` for a ``PPOConfig``'s policy (MLP, CNN or GRU torsos; builds the
    env to read its spec)."""
    from ppox.nets import make_policy
    from ppox.trainer import env_for

    policy = make_policy(cfg, env_for(cfg).spec)
    return update_flops(policy.actor.row_flops(), policy.critic.row_flops(),
                        policy.actor.input_flops() + policy.critic.input_flops(),
                        cfg.num_envs, cfg.num_steps, cfg.update_epochs)


def xla_flops(fn: Callable[..., Any], *args: Any) -> float | None:
    """FLOPs XLA's cost analysis reports for ``jax.jit(fn)(*args)`` (None if unavailable).
    XLA counts a loop body once, not times its trip count: use it on loop-free pieces."""
    import jax

    try:
        cost = jax.jit(fn).lower(*args).compile().cost_analysis()
    except Exception:  # backends without cost analysis
        return None
    if isinstance(cost, list | tuple):
        cost = cost[0] if cost else None
    return float(cost["flops"]) if cost and "flops" in cost else None


def xla_flop_check(cfg: PPOConfig, rows: int | None = None) -> dict[str, Any]:
    """The analytic counts against XLA's on ``rows`` rows (default: one minibatch): the actor
    forward, and the gradient of ``sum(actor) + sum(critic)`` with respect to the parameters
    and any recurrent carry (analytic: 3 x forward less the input layers' input gradient).
    XLA also counts element-wise ops (tanh, bias adds, a GRU's gates), so it runs a few
    percent higher."""
    import jax
    import jax.numpy as jnp

    rows = rows or cfg.minibatch_size
    params, obs_shape, actor, critic = _policy_forward(cfg, rows)
    fc = flops_for_config(cfg)
    obs = jnp.ones((rows, *obs_shape), jnp.float32)

    def both(p: Any, x: jax.Array) -> jax.Array:
        return jnp.sum(actor(p, x)) + jnp.sum(critic(p, x))

    out: dict[str, Any] = {"rows": rows}
    for name, xla, analytic in (
            ("actor_forward", xla_flops(actor, params, obs), rows * fc.actor_row),
            ("fwd_bwd", xla_flops(jax.grad(both), params, obs),
             rows * (3 * (fc.actor_row + fc.critic_row) - fc.input_row))):
        out[name] = {"analytic": analytic, "xla": xla,
                     "xla_over_analytic": None if xla is None else xla / analytic}
    return out


def matmul_peak(n: int = 2048, repeats: int = 5, dtype: str = "float32") -> dict[str, Any]:
    """GFLOP/s (``2 n^3 / t``) of ``repeats`` timed ``n x n`` matmuls, compiled once: their
    best (the peak) and median, on XLA's default device under the current ``XLA_FLAGS``."""
    import jax
    import jax.numpy as jnp

    key_a, key_b = jax.random.split(jax.random.PRNGKey(0))
    a = jax.random.normal(key_a, (n, n), dtype)
    b = jax.random.normal(key_b, (n, n), dtype)
    matmul = jax.jit(jnp.matmul).lower(a, b).compile()
    secs = []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        jax.block_until_ready(matmul(a, b))
        secs.append(time.perf_counter() - t0)
    secs = secs[1:]  # the first call also touches fresh output memory
    gflops = [2 * n**3 / t / 1e9 for t in secs]
    return {"n": n, "dtype": dtype, "run_s": secs, "gflops": gflops,
            "peak_gflops": max(gflops), "median_gflops": median(gflops),
            "device": str(jax.devices()[0]), "num_devices": len(jax.devices()),
            "xla_flags": os.environ.get("XLA_FLAGS", "")}


# --- Seams to the core: the only code here that knows ppox's policy, rollout and trainer ---------


def _policy_forward(cfg: PPOConfig, rows: int) -> tuple[Any, tuple[int, ...],
                                                   Callable[..., Any], Callable[..., Any]]:
    """``(inputs, obs_shape, actor(inputs, obs), critic(inputs, obs))`` of a fresh policy on
    ``rows`` rows: ``inputs`` holds the parameters and each network's carry (a recurrent
    torso's state, an input like the parameters so that a gradient flows into it, as it
    does through the steps of a replayed sequence; ``()`` for the others)."""
    import jax

    from ppox.trainer import build

    policy = build(cfg).policy
    inputs = {"params": policy.init(jax.random.PRNGKey(0)),
              "carry": policy.initial_carry((rows,))}

    def forward(net: Any, name: str) -> Callable[..., Any]:
        return lambda i, x: net.apply(i["params"][name], x, i["carry"][name])[0]

    return (inputs, tuple(policy.spec.obs_shape), forward(policy.actor, "actor"),
            forward(policy.critic, "critic"))


def _rollout_program(cfg: PPOConfig, hp: HParams, runs: int = 1) -> Program:
    """``block`` runs one ppox rollout (env + actor + sampling, ``[T, B]`` records written)
    with the fixed policy that ``init`` draws; no critic pass, no GAE, no update. With
    ``runs > 1``, that many rollouts vmapped, each with its own policy and envs."""
    import jax
    import jax.numpy as jnp

    from ppox.normalize import RunningMeanStd
    from ppox.rollout import RolloutContext, collect, init_env_carry
    from ppox.trainer import build

    setup = build(cfg)
    stats = RunningMeanStd.create(setup.env.spec.obs_shape) if cfg.normalize_obs else None

    def init(key: Any) -> Any:
        key_params, key_env = jax.random.split(key)
        params = setup.policy.init(key_params, hp.init_log_std)
        obs, env_state = jax.vmap(setup.env.reset)(jax.random.split(key_env, cfg.num_envs))
        return params, init_env_carry(setup.policy, obs, env_state), jnp.float32(0.0)

    def block(i: Any, carry: Any, key: Any) -> Any:
        params, env, total = carry
        ctx = RolloutContext(env=setup.env, policy=setup.policy, params=params,
                             obs_stats=stats, obs_clip=cfg.obs_clip)
        env, rec, episodes = collect(ctx, env, jax.random.fold_in(key, i), cfg.num_steps)
        # Reduce every record so that nothing of the rollout is dead code.
        total = total + sum(jnp.sum(x.astype(jnp.float32)) for x in jax.tree.leaves(rec))
        return params, env, total + episodes.count

    return vmapped_program((init, block), runs)


def vmapped_program(program: Program, runs: int) -> Program:
    """``runs`` independent copies of ``(init, block)`` vmapped, each its own key (the
    program itself for ``runs == 1``)."""
    import jax

    if runs == 1:
        return program
    init, block = program

    def init_many(key: Any) -> Any:
        return jax.vmap(init)(jax.random.split(key, runs))

    def block_many(i: Any, carry: Any, key: Any) -> Any:
        return jax.vmap(lambda c, k: block(i, c, k))(carry, jax.random.split(key, runs))

    return init_many, block_many


def _trainer_program(cfg: PPOConfig, max_updates: int, runs: int = 1) -> tuple[Any, Any]:
    """``(jit(init(key, hp)), jit(chunk(state, hp, n)))``: what ``ppox train`` runs, ``n``
    updates per call (traced), the state donated; ``runs > 1`` vmaps both over that many
    runs with the same hyperparameters (what ``ppox train --num-seeds`` runs per device)."""
    import jax

    from ppox.trainer import make_init, make_train_chunk

    init, chunk = make_init(cfg), make_train_chunk(cfg, max_updates)
    if runs > 1:
        one_init = init

        def init(key: Any, hp: Any) -> Any:
            return jax.vmap(one_init, (0, None))(jax.random.split(key, runs), hp)

        chunk = jax.vmap(chunk, (0, None, None))
    return jax.jit(init), jax.jit(chunk, donate_argnums=(0,))


# --- The three programs, compiled and timed ------------------------------------------------------


def random_actions(spec: Any, key: Any, num: int) -> Any:
    """``num`` uniformly random actions for an env spec (ints, or floats in the box)."""
    import jax
    import jax.numpy as jnp

    if spec.is_discrete:
        return jax.random.randint(key, (num,), 0, spec.action_space.n, jnp.int32)
    box = spec.action_space
    return jax.random.uniform(key, (num, *box.shape), jnp.float32,
                              jnp.asarray(box.low), jnp.asarray(box.high))


def _env_only_program(cfg: PPOConfig) -> Program:
    """``block`` steps ``num_envs`` envs ``num_steps`` times with random actions in one
    ``lax.scan``, keys split as in ppox's rollout; no policy, no learning."""
    import jax
    import jax.numpy as jnp
    from jax import lax

    from ppox.envs.core import step_envs
    from ppox.trainer import env_for

    env, num_envs, num_steps = env_for(cfg), cfg.num_envs, cfg.num_steps

    def step(carry: Any, keys: Any) -> tuple[Any, None]:  # keys: [B + 1]
        env_state, reward_sum = carry
        action = random_actions(env.spec, keys[0], num_envs)
        env_state, ts = step_envs(env, keys[1:], env_state, action)
        return (env_state, reward_sum + ts.reward.sum()), None

    def init(key: Any) -> Any:
        _, env_state = jax.vmap(env.reset)(jax.random.split(key, num_envs))
        return env_state, jnp.float32(0.0)

    def block(i: Any, carry: Any, key: Any) -> Any:
        keys = jax.random.split(jax.random.fold_in(key, i), num_steps * (num_envs + 1))
        return lax.scan(step, carry, keys.reshape(num_steps, num_envs + 1, *key.shape))[0]

    return init, block


def _calibrated_runs(call: Callable[[int], Any], target_s: float, min_iters: int,
                     max_iters: int, repeats: int) -> dict[str, Any]:
    """Times ``call(n)`` (``n`` iterations, blocking) for a calibrated ``n``: after one
    untimed call, ``n`` doubles from 1 until a call takes >= 10% of ``target_s``, then is
    set so one call takes about ``target_s`` (within the bounds), timed ``repeats`` times."""
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


def time_program(program: Program, batch_size: int, target_s: float, repeats: int,
                 seed: int) -> dict[str, Any]:
    """Compiles ``init`` and a ``fori_loop`` of ``n`` blocks (timed together), then times
    a calibrated ``n``; steps/s counts ``batch_size`` env steps per block."""
    import jax
    import jax.numpy as jnp
    from jax import lax

    init, block = program
    key = jax.random.PRNGKey(seed)

    def run(carry: Any, key: Any, n: Any) -> Any:
        return lax.fori_loop(0, n, lambda i, c: block(i, c, key), carry)

    t0 = time.perf_counter()
    box = {"carry": jax.block_until_ready(jax.jit(init).lower(key).compile()(key))}
    run_c = jax.jit(run, donate_argnums=(0,)).lower(box["carry"], key, jnp.int32(1)).compile()
    compile_s = time.perf_counter() - t0

    def call(n: int) -> None:
        box["carry"] = jax.block_until_ready(run_c(box["carry"], key, jnp.int32(n)))

    timed = _calibrated_runs(call, target_s, 1, 1 << 20, repeats)
    steps = timed["iters"] * batch_size
    return {"compile_s": compile_s, **timed, "env_steps": steps,
            "sps": [steps / t for t in timed["run_s"]]}


def measure_env_only(cfg: PPOConfig, *, target_s: float = 2.0, repeats: int = 1,
                     seed: int = 0) -> dict[str, Any]:
    """Env steps/s of the env alone: random actions, ``num_steps`` per ``lax.scan``."""
    return time_program(_env_only_program(cfg), cfg.batch_size, target_s, repeats, seed)


def measure_rollout_only(cfg: PPOConfig, hp: HParams, *, target_s: float = 2.0, repeats: int = 1,
                         seed: int = 0, runs: int = 1) -> dict[str, Any]:
    """Env steps/s of ppox's rollout with a fixed policy (no critic, GAE or update), of
    ``runs`` rollouts vmapped (their steps added)."""
    return time_program(_rollout_program(cfg, hp, runs), cfg.batch_size * runs, target_s,
                        repeats, seed)


def measure_trainer(cfg: PPOConfig, hp: HParams, *, target_s: float = 3.0, repeats: int = 1,
                    seed: int = 0, max_updates: int = 4096,
                    min_updates: int = 2, runs: int = 1) -> dict[str, Any]:
    """Env steps/s of full training updates through the chunked trainer: one compile
    (timed), then a calibrated number of updates (about ``target_s``) timed ``repeats``
    times, each call training on from the last. ``total_timesteps`` only sets the
    learning-rate schedule here. ``runs > 1``: that many runs vmapped (their steps added)."""
    import jax
    import jax.numpy as jnp

    cfg = cfg.replace(total_timesteps=max(cfg.total_timesteps, max_updates * cfg.batch_size))
    key, hp = jax.random.PRNGKey(seed), hp.as_arrays()
    init_fn, chunk_fn = _trainer_program(cfg, max_updates, runs)
    t0 = time.perf_counter()
    box = {"state": jax.block_until_ready(init_fn.lower(key, hp).compile()(key, hp))}
    chunk_c = chunk_fn.lower(box["state"], hp, jnp.int32(1)).compile()
    compile_s = time.perf_counter() - t0
    rss_after_compile = peak_rss_mb()
    xla_memory = compiled_memory(chunk_c)

    def call(n: int) -> None:
        state, _metrics = jax.block_until_ready(chunk_c(box["state"], hp, jnp.int32(n)))
        box["state"] = state

    timed = _calibrated_runs(call, target_s, min_updates, max_updates, repeats)
    steps = timed["iters"] * cfg.batch_size * runs
    return {"compile_s": compile_s, **timed, "env_steps": steps,
            "sps": [steps / t for t in timed["run_s"]],
            "peak_rss_after_compile_mb": rss_after_compile, "xla_memory": xla_memory}


def compiled_memory(compiled: Any) -> dict[str, int] | None:
    """XLA's buffer sizes of a compiled program, in bytes: its arguments, outputs, temporaries
    and the outputs aliased to (donated) arguments; ``peak_bytes`` = arguments + outputs +
    temporaries - aliased, what the program holds at once at most. None where the backend
    reports nothing."""
    try:
        m = compiled.memory_analysis()
    except Exception:  # backends without a memory analysis
        return None
    if m is None:
        return None
    out = {k: int(getattr(m, f"{k}_size_in_bytes", 0))
           for k in ("argument", "output", "temp", "alias", "generated_code")}
    out["peak_bytes"] = out["argument"] + out["output"] + out["temp"] - out["alias"]
    return out


# --- One point: (env, num_envs), every program ---------------------------------------------------


def point_config(env_id: str, num_envs: int, num_steps: int | None = None,
                 num_minibatches: int | None = None,
                 overrides: Mapping[str, Any] | None = None) -> tuple[PPOConfig, HParams]:
    """``(PPOConfig, HParams)`` of a point: ppox's per-env defaults (``ppox.defaults``) with
    ``num_envs`` and the ``overrides`` (``PPOConfig`` fields, e.g. ``{"torso": "cnn",
    "recurrent": True}``) replaced; the minibatch count is reduced to a divisor of the
    batch (of the envs for a recurrent policy, whose minibatches are whole sequences) if
    needed."""
    from ppox.config import _divisor_near, config_from_dict
    from ppox.defaults import resolve

    cfg, hp = resolve(env_id)
    if overrides:
        cfg = config_from_dict(dict(overrides), base=cfg)
    cfg = cfg.replace(num_envs=int(num_envs))
    if num_steps is not None:
        cfg = cfg.replace(num_steps=int(num_steps))
    m = int(num_minibatches or cfg.num_minibatches)
    units = cfg.num_envs if cfg.recurrent else cfg.batch_size  # recurrent: whole sequences
    if units % m:
        m = _divisor_near(units, m)
    cfg = cfg.replace(num_minibatches=m,
                      total_timesteps=max(cfg.total_timesteps, cfg.batch_size))
    cfg.validate()
    return cfg, hp


def measure_point(env_id: str, num_envs: int, parts: Sequence[str] = PARTS, *,
                  target_s: float = 2.0, repeats: int = 1, seed: int = 0,
                  num_steps: int | None = None, num_minibatches: int | None = None,
                  overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Measures one point in this process, the trainer first (so that the peak memory is
    its own): the config, the FLOP count, each part's compile time, run times and steps/s,
    the trainer's useful and executed GFLOP/s, and memory (the process's RSS before, peak
    RSS after compiling and after running, in MiB; the device's own peak where it has one;
    XLA's buffer sizes of the compiled training chunk). ``overrides``: see
    :func:`point_config`."""
    import jax

    from ppox.config import config_to_dict

    cfg, hp = point_config(env_id, num_envs, num_steps, num_minibatches, overrides)
    fc = flops_for_config(cfg)  # builds the env (its first import) before the baseline
    jax.block_until_ready(jax.numpy.zeros(()))  # backend up
    out: dict[str, Any] = {
        "env_id": env_id, "num_envs": cfg.num_envs, "num_steps": cfg.num_steps,
        "num_minibatches": cfg.num_minibatches, "update_epochs": cfg.update_epochs,
        "config": config_to_dict(cfg),
        "hparams": {k: float(v) for k, v in hp.to_dict().items()},
        "flops": fc.as_dict(), "target_s": target_s, "repeats": repeats}
    rss_base, peak_base = current_rss_mb(), peak_rss_mb()
    timing = {"target_s": target_s, "repeats": repeats, "seed": seed}
    for part in sorted(parts, key=lambda p: p != "trainer"):
        if part == "trainer":
            res = measure_trainer(cfg, hp, **timing)
            out["memory"] = {
                "rss_before_mb": rss_base, "peak_rss_before_mb": peak_base,
                "peak_rss_after_compile_mb": res.pop("peak_rss_after_compile_mb"),
                "peak_rss_after_run_mb": peak_rss_mb(),
                "peak_rss_delta_mb": peak_rss_mb() - rss_base, "device": _device_memory(jax),
                "xla": res.pop("xla_memory")}
            res["useful_gflops"] = median(res["sps"]) * fc.useful_per_step / 1e9
            res["executed_gflops"] = median(res["sps"]) * fc.executed / fc.env_steps / 1e9
        elif part == "env":
            res = measure_env_only(cfg, **timing)
        elif part == "rollout":
            res = measure_rollout_only(cfg, hp, **timing)
        else:
            raise ValueError(f"unknown part {part!r}; choose from {PARTS}")
        res["sps_median"] = median(res["sps"])
        out[part] = res
    return out
