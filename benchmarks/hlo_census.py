"""What XLA makes of ppox's training program: the ops of each loop body after optimization.

On a CPU (and for small networks on any accelerator) an SGD step of a 64x64 actor and critic
on a 128-row minibatch is a few MFLOP, so its time is set less by the FLOPs than by how many
separate kernels ("thunks": fusions, stand-alone dots, copies, ...) run per step. This script
compiles ``make_train_chunk`` (what ``ppox train`` runs; ``:S`` vmaps it over S runs, as
seeds and sweeps do), reads the optimized HLO (``compiled.as_text()``), and for every while
loop counts its body's own ops:

* ``thunks``: every op that runs as its own kernel (not parameters, tuples, tuple elements,
  constants or bitcasts), ``fusions`` among them;
* ``dots``: matrix products, stand-alone or inside a fusion;
* ``copies``, ``concatenates``, ``gathers``, ``scatters`` (stand-alone or fused),
  ``all_reduces``.

The loop labelled ``sgd_step`` is the innermost loop with the most dots (the forward and
backward passes of both networks); ``rollout_step`` is the innermost loop, other than that
one, with the most dots (the actor's forward per env step). Nothing is timed: the figures are
counts, the same on every run of the same versions of ppox and jax.

    python benchmarks/hlo_census.py                      # CartPole-v1:4, CartPole-v1:4:64
    python benchmarks/hlo_census.py --points CartPole-v1:1024 brax/inverted_pendulum:256

Writes ``benchmarks/results/<machine>/hlo_census.json``.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections import Counter
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks._common import argv_string, machine_info, parse_point, results_dir, save_json

DEFAULT_POINTS = ("CartPole-v1:4", "CartPole-v1:4:64")
COUNTS = ("thunks", "fusions", "dots", "copies", "concatenates", "gathers", "scatters",
          "all_reduces", "loops")
_FREE = {"parameter", "get-tuple-element", "tuple", "constant", "bitcast"}
_HEADER = re.compile(r"^(?:ENTRY )?%?([\w.\-]+) \(.*\{$")
_OP = re.compile(r"^(?:ROOT )?%?[\w.\-]+ = .+? ([a-z][\w\-]*)\((.*)$")


def computations(hlo: str) -> dict[str, list[tuple[str, str]]]:
    """``{computation name: [(op, the rest of its line), ...]}`` of an HLO module's text."""
    comps: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for line in hlo.splitlines():
        header = _HEADER.match(line)
        if header:
            current = comps.setdefault(header.group(1), [])
        elif line.startswith("}"):
            current = None
        elif current is not None:
            op = _OP.match(line.strip())
            if op:
                current.append((op.group(1), op.group(2)))
    return comps


def _called(rest: str) -> list[str]:
    return re.findall(r"(?:calls|to_apply)=%?([\w.\-]+)", rest)


def _fused_ops(comps: dict[str, list[tuple[str, str]]], name: str) -> Counter:
    """The ops inside a fusion computation (and the computations it calls)."""
    out: Counter = Counter()
    for op, rest in comps.get(name, []):
        out[op] += 1
        for inner in _called(rest):
            out += _fused_ops(comps, inner)
    return out


def census(comps: dict[str, list[tuple[str, str]]], body: str) -> dict[str, int]:
    """The counts of one loop body's own ops (nested loops' bodies not included)."""
    own: Counter = Counter()
    for op, rest in comps[body]:
        if op in _FREE:
            continue
        own["thunks"] += 1
        called = _called(rest) if op == "fusion" else []
        inner = _fused_ops(comps, called[0]) if called else Counter()
        own["fusions"] += op == "fusion"
        own["dots"] += (op == "dot") + inner["dot"] + inner["convolution"]
        own["copies"] += op == "copy"
        own["concatenates"] += op == "concatenate"
        own["gathers"] += (op == "gather") + inner["gather"]
        own["scatters"] += (op == "scatter") + inner["scatter"]
        own["all_reduces"] += op.startswith("all-reduce")
        own["loops"] += op == "while"
    return {k: int(own[k]) for k in COUNTS}


def loops(hlo: str) -> list[dict[str, Any]]:
    """Every while loop of the module: its body, the computation it sits in, its trip count
    where XLA knows it, and its body's census; ``role`` marks the SGD and rollout steps."""
    comps = computations(hlo)
    found = []
    for parent, ops in comps.items():
        for op, rest in ops:
            if op != "while":
                continue
            body = re.search(r"body=%?([\w.\-]+)", rest)
            trip = re.search(r'"known_trip_count":\{"n":"(\d+)"', rest)
            if body and body.group(1) in comps:
                found.append({"body": body.group(1), "in": parent,
                              "trip_count": int(trip.group(1)) if trip else None,
                              **census(comps, body.group(1)), "role": None})
    innermost = sorted((x for x in found if x["loops"] == 0 and x["dots"] > 0),
                       key=lambda x: -x["dots"])
    for role, loop in zip(("sgd_step", "rollout_step"), innermost, strict=False):
        loop["role"] = role
    return found


def measure(point: str) -> dict[str, Any]:
    """Compile the training chunk for ``ENV_ID:NUM_ENVS[:RUNS]`` and return its loops."""
    import jax
    import jax.numpy as jnp

    import ppox
    from ppox import trainer
    from ppox.defaults import resolve

    ppox.use_unrolled_threefry_on_cpu()  # as ppox train does
    env_id, num_envs, runs = parse_point(point)
    cfg, hp = resolve(env_id)
    cfg = cfg.replace(num_envs=num_envs, total_timesteps=num_envs * cfg.num_steps * 4)
    hpa = hp.as_arrays()
    init, chunk = trainer.make_init(cfg), trainer.make_train_chunk(cfg, 4)
    if runs == 1:
        state = jax.eval_shape(init, jax.random.PRNGKey(0), hpa)
        lowered = jax.jit(chunk).lower(state, hpa, jnp.int32(4))
    else:
        keys = jax.random.split(jax.random.PRNGKey(0), runs)
        state = jax.eval_shape(jax.vmap(init, (0, None)), keys, hpa)
        many = jax.vmap(chunk, (0, None, None))
        lowered = jax.jit(many).lower(state, hpa, jnp.int32(4))
    hlo = lowered.compile().as_text()
    found = loops(hlo)
    return {"point": point, "env": env_id, "num_envs": num_envs, "runs": runs,
            "minibatch_rows": cfg.num_envs * cfg.num_steps // cfg.num_minibatches,
            "loops": found, **{x["role"]: x for x in found if x["role"]}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--points", nargs="+", default=list(DEFAULT_POINTS),
                    help="ENV_ID:NUM_ENVS[:RUNS] (default: %(default)s)")
    args = ap.parse_args(argv)
    record: dict[str, Any] = {"command": argv_string(), "machine": machine_info(),
                              "results": []}
    cols = COUNTS[:-1]  # every count but the nested loops
    print("| point | loop | " + " | ".join(cols) + " |")
    print("|---" * (len(cols) + 2) + "|")
    for point in args.points:
        res = measure(point)
        record["results"].append(res)
        for role in ("sgd_step", "rollout_step"):
            if role in res:
                print(f"| {point} | {role} | " + " | ".join(str(res[role][c]) for c in cols)
                      + " |", flush=True)
    path = save_json(results_dir() / "hlo_census.json", record)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
