"""How fast can this config train on this machine at all? A ceiling over ppox and its peers.

A PPO update of a feed-forward policy must at least (a) collect the rollout: the env steps,
the actor's forward pass and the sampling on every step, and (b) run ``update_epochs x
num_minibatches`` SGD steps, each a forward and backward pass of the actor and the critic
over one minibatch. This script times both on ONE core (a fresh process per point, pinned
with ``os.sched_setaffinity``), for ``RUNS`` runs vmapped (as ``--num-seeds`` and sweeps do):

* ``sgd floor``: ppox's own actor and critic (same networks, same init), the gradient of
  ``mean(log_prob(action)) + mean(V(obs))`` on a fixed minibatch of ``batch / minibatches``
  rows, and a plain ``p - lr * g`` step, in a ``fori_loop``. No clipped surrogate, no
  entropy, no Adam, no gradient clipping, no shuffle or gather, no GAE, no diagnostics: work
  every PPO implementation does, and nothing more (a lower bound on its SGD step);
* ``rollout``: ppox's rollout alone (``ppox.diagnostics.measure_rollout_only``: env, actor,
  sampling, the ``[T, B]`` records; no critic);
* ``trainer``: ppox's chunked trainer (``measure_trainer``, what ``ppox train`` runs).

The ceiling is ``RUNS * batch / (epochs * minibatches * t_sgd_floor + t_rollout)`` env steps
per second: no implementation of this config runs faster on this core than that (give or take
the rollout, which is ppox's own, not a floor). ``--peer NAME=SPS`` (a peer's measured steps/s
from ``benchmarks/side_by_side.py``) prints, for the one-run points, the most any trainer
could be ahead of it here; a 2-core figure is twice the one-core ceiling (an upper bound:
two busy cores each run slower than one alone).

    python benchmarks/update_floor.py              # CartPole 4 envs, 1 and 32 runs
    python benchmarks/update_floor.py --points CartPole-v1:4 --peer rejax=127087

Writes ``benchmarks/results/<machine>/update_floor.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, NoReturn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks._common import (
    argv_string,
    machine_info,
    median,
    parse_point,
    results_dir,
    save_json,
)
from benchmarks.harness.workers import run_json_process, worker_env, worker_platform

DEFAULT_POINTS = ("CartPole-v1:4", "CartPole-v1:4:32")


def refuse(message: str) -> NoReturn:
    """One ``error:`` line on stderr, exit status 2."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def sgd_floor_program(cfg: Any, hp: Any, runs: int) -> Any:
    """``(init, block)`` for ``ppox.diagnostics.time_program``: one block is one bare SGD
    step (see the module docstring) of ``runs`` vmapped copies of the policy."""
    import jax
    import jax.numpy as jnp

    from ppox.diagnostics import random_actions, vmapped_program
    from ppox.trainer import build

    setup = build(cfg)
    policy, env = setup.policy, setup.env
    rows = cfg.batch_size // cfg.num_minibatches
    obs_like = jax.eval_shape(env.reset, jax.random.PRNGKey(0))[0]

    def init(key: Any) -> Any:
        key_params, key_obs, key_action = jax.random.split(key, 3)
        obs = jax.random.normal(key_obs, (rows, *obs_like.shape)).astype(obs_like.dtype)
        return (policy.init(key_params, hp.init_log_std), obs,
                random_actions(env.spec, key_action, rows))

    def loss(params: Any, obs: Any, action: Any) -> Any:
        return (jnp.mean(policy.dist(params, obs).log_prob(action))
                + jnp.mean(policy.value(params, obs)))

    def block(i: Any, carry: Any, key: Any) -> Any:
        params, obs, action = carry
        grads = jax.grad(loss)(params, obs, action)
        return jax.tree.map(lambda p, g: p - 1e-6 * g, params, grads), obs, action

    return vmapped_program((init, block), runs)


def worker(point: str, target_s: float, repeats: int) -> dict[str, Any]:
    """Measures one point in this process (pinned to one core first)."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    env_id, num_envs, runs = parse_point(point)
    worker_platform(env_id)  # what ppox train sets up for this env, before JAX starts
    from ppox.defaults import resolve
    from ppox.diagnostics import (
        flops_for_config,
        matmul_peak,
        measure_rollout_only,
        measure_trainer,
        time_program,
    )

    cfg, hp = resolve(env_id)
    cfg = cfg.replace(num_envs=num_envs)
    steps = cfg.update_epochs * cfg.num_minibatches
    rows = cfg.batch_size // cfg.num_minibatches
    floor = time_program(sgd_floor_program(cfg, hp.as_arrays(), runs), rows * runs, target_s,
                         repeats, 0)
    sgd_s = median([t / floor["iters"] for t in floor["run_s"]])
    rollout = measure_rollout_only(cfg, hp, target_s=target_s, repeats=repeats, runs=runs)
    rollout_s = cfg.batch_size * runs / median(rollout["sps"])
    trainer = measure_trainer(cfg, hp, target_s=target_s, repeats=repeats, runs=runs)
    trainer_sps = median(trainer["sps"])
    ceiling = cfg.batch_size * runs / (steps * sgd_s + rollout_s)
    flops = flops_for_config(cfg)
    peak = matmul_peak()
    return {
        "point": point, "env": env_id, "num_envs": num_envs, "runs": runs,
        "minibatch_rows": rows, "sgd_steps_per_update": steps,
        "sgd_floor_step_s": sgd_s, "rollout_per_update_s": rollout_s,
        "floor_update_s": steps * sgd_s + rollout_s,
        "ceiling_sps": ceiling, "trainer_sps": trainer_sps,
        "trainer_update_s": cfg.batch_size * runs / trainer_sps,
        "trainer_over_ceiling": trainer_sps / ceiling,
        "useful_flops_per_step": flops.useful_per_step,
        "ceiling_gflops": ceiling * flops.useful_per_step / 1e9,
        "matmul_peak_gflops_one_core": peak["peak_gflops"],
        "raw": {"sgd_floor": floor, "rollout": rollout,
                "trainer": {k: v for k, v in trainer.items() if k != "xla_memory"}},
    }


def run_point(point: str, target_s: float, repeats: int) -> dict[str, Any]:
    """One point in a fresh process (the harness's ``run_json_process``); a failed worker
    ends the benchmark with its error and the tail of its stderr."""
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", point,
           "--target-s", str(target_s), "--repeats", str(repeats)]
    res = run_json_process(cmd, env=worker_env())
    if "error" in res:
        sys.stderr.write(res.get("stderr_tail", ""))
        raise SystemExit(f"error: point {point}: the worker failed: {res['error']}")
    return res


def parse_peers(items: list[str]) -> dict[str, float]:
    peers = {}
    for item in items:
        name, _, sps = item.partition("=")
        try:
            peers[name] = float(sps)
        except ValueError:
            refuse(f"--peer {item!r}: expected NAME=STEPS_PER_S, e.g. --peer rejax=127087")
    return peers


def report(results: list[dict[str, Any]], peers: dict[str, float]) -> list[str]:
    """The table (markdown) and, per peer, the largest lead this ceiling allows."""
    lines = ["| point | SGD floor / step | rollout / update | floor / update | ceiling steps/s "
             "(1 core) | ceiling GFLOP/s | ppox trainer steps/s | trainer / ceiling |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(
            f"| {r['point']} | {r['sgd_floor_step_s'] * 1e6:,.0f} µs × "
            f"{r['sgd_steps_per_update']} | {r['rollout_per_update_s'] * 1e3:.2f} ms | "
            f"{r['floor_update_s'] * 1e3:.2f} ms | {r['ceiling_sps']:,.0f} | "
            f"{r['ceiling_gflops']:.1f} (peak {r['matmul_peak_gflops_one_core']:.0f}) | "
            f"{r['trainer_sps']:,.0f} | {r['trainer_over_ceiling']:.2f} |")
    for r in results:
        for name, sps in peers.items() if r["runs"] == 1 else ():
            lines.append(f"{r['point']}: the ceiling is {r['ceiling_sps'] / sps:.2f}x {name} "
                         f"({sps:,.0f} steps/s); ppox's trainer {r['trainer_sps'] / sps:.2f}x")
        if r["runs"] > 1:
            lines.append(f"{r['point']}: 2 cores at most {2 * r['ceiling_sps']:,.0f} steps/s "
                         f"aggregate (twice the one-core ceiling)")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--points", nargs="+", default=list(DEFAULT_POINTS),
                    help="ENV_ID:NUM_ENVS[:RUNS] (default: %(default)s)")
    ap.add_argument("--peer", nargs="*", default=[], help="NAME=STEPS_PER_S of a peer")
    ap.add_argument("--target-s", type=float, default=2.0, help="seconds per timed run")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per program")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--out", help="JSON path (default: benchmarks/results/<machine>/"
                                  "update_floor.json)")
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.target_s, args.repeats)))
        return 0
    peers = parse_peers(args.peer)
    for point in args.points:  # every point checked before the first one is measured
        try:
            parse_point(point)
        except ValueError as err:
            refuse(str(err))
    results = []
    for point in args.points:
        results.append(run_point(point, args.target_s, args.repeats))
        print(f"measured {point}", flush=True)
    lines = report(results, peers)
    print("\n".join(lines))
    record = {"command": argv_string(), "machine": machine_info(), "peers": peers,
              "results": results, "report": lines}
    path = save_json(args.out or results_dir() / "update_floor.json", record)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
