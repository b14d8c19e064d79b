"""A brax environment alone: env steps/s of ``jit(scan(vmap(env.step)))`` with random actions.

Uses only jax and brax, so the same script runs in ppox's venv and in a peer's venv, to
separate the environment's speed (brax and XLA versions) from the trainer's:

    python benchmarks/peers/brax_env_only.py halfcheetah 256
    .venvs/peer-brax/bin/python benchmarks/peers/brax_env_only.py halfcheetah 256
    XLA_FLAGS="--xla_cpu_experimental_ynn_fusion_type= --xla_cpu_use_fusion_emitters=false" \\
        python benchmarks/peers/brax_env_only.py halfcheetah 256

Every task uses the spring backend by default (as ppox and the side-by-side benchmark do;
``--backend`` picks another). One compile, then 5 timed calls of 32 steps of every env;
prints one JSON line (compile time, best and median steps/s, versions, XLA_FLAGS).
"""

from __future__ import annotations

import argparse
import json
import os
import time


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("env", nargs="?", default="halfcheetah")
    p.add_argument("num_envs", nargs="?", type=int, default=256)
    p.add_argument("--steps", type=int, default=32, help="env steps per timed call")
    p.add_argument("--calls", type=int, default=5, help="timed calls")
    p.add_argument("--backend", default="spring", help="brax physics backend (default spring)")
    args = p.parse_args()

    import brax
    import jax
    from brax import envs
    from jax import lax

    env = envs.get_environment(args.env, backend=args.backend)
    n = args.num_envs

    def run(state, key):
        def body(s, k):
            a = jax.random.uniform(k, (n, env.action_size), minval=-1.0, maxval=1.0)
            return jax.vmap(env.step)(s, a), None

        return lax.scan(body, state, jax.random.split(key, args.steps))[0]

    state = jax.jit(jax.vmap(env.reset))(jax.random.split(jax.random.PRNGKey(0), n))
    t0 = time.perf_counter()
    step = jax.jit(run).lower(state, jax.random.PRNGKey(1)).compile()
    compile_s = time.perf_counter() - t0
    state = jax.block_until_ready(step(state, jax.random.PRNGKey(1)))
    times = []
    for r in range(args.calls):
        t0 = time.perf_counter()
        state = jax.block_until_ready(step(state, jax.random.PRNGKey(r + 2)))
        times.append(time.perf_counter() - t0)
    sps = sorted(n * args.steps / t for t in times)
    print(json.dumps({"env": args.env, "num_envs": n, "backend": args.backend,
                      "jax": jax.__version__,
                      "brax": getattr(brax, "__version__", "?"),
                      "xla_flags": os.environ.get("XLA_FLAGS", ""),
                      "compile_s": round(compile_s, 2), "sps_best": round(sps[-1]),
                      "sps_median": round(sps[len(sps) // 2])}))


if __name__ == "__main__":
    main()
