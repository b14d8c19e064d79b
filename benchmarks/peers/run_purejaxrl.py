"""Peer baseline: PureJaxRL's own ``purejaxrl/ppo.py`` script, end to end, one process.

PureJaxRL is not on PyPI and none of its code is kept in this repository: the script is read
from a local clone (``--source``, a work tree or a bare git directory, at ``--commit``) into
a temporary folder by ``benchmarks/e2e.py``, which then times this runner as a whole
process, start-up included:

  .venvs/peer-rejax/bin/python benchmarks/peers/run_purejaxrl.py --script-dir DIR

What runs is the script's ``__main__`` block, unchanged but for one setting: its config
(CartPole-v1, 4 envs x 128 steps, 500k steps, 4 epochs x 4 minibatches, lr 2.5e-4 annealed,
the same numbers as ppox's CartPole defaults), then ``jax.jit(make_train(config))(rng)``;
this runner also blocks on the result and prints one JSON line. ``DEBUG`` is off: on, the
script prints every finished episode from inside the program through a host callback.
PureJaxRL's ``wrappers.py`` imports brax and navix at the top for its brax and navix
wrappers, which CartPole does not use; the rejax venv (gymnax 0.0.9, the gymnax API the
script is written for, distrax, jax 0.10.2 as ppox) has neither, so empty stand-in modules
are registered for them. That leaves brax's import time (seconds) out of PureJaxRL's figure:
it makes the peer faster than it is with its own requirements installed.

``--timed`` is the side-by-side mode (``benchmarks/side_by_side.py --peers purejaxrl
--purejaxrl CLONE``): the settings come from the runners' common flags (the script's own
network: two tanh layers of 64, so ``--hidden`` must be 64), ``jax.jit(make_train(config))``
is lowered and compiled (timed as the compile), then run ``--repeats`` times (seeds seed,
seed+1, ...) under ``block_until_ready``, and the JSON line has what the other runners print:
``compile_s``, ``run_s``, ``sps`` (env steps actually trained / run seconds), the final
training return (mean over the last update's finished episodes).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import types

import _common

T0 = time.perf_counter()


def _stand_in(name: str) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__path__ = []  # a package, so `from brax.envs.wrappers.training import X` resolves
    mod.__getattr__ = lambda attr: _stand_in(f"{name}.{attr}")  # type: ignore[attr-defined]
    sys.modules[name] = mod
    return mod


def _config(args: argparse.Namespace) -> dict:
    """The script's config: its ``__main__`` values (CartPole-v1, 4 x 128, 500k steps), or,
    with ``--timed``, the common flags'."""
    if not args.timed:
        return {  # the script's __main__ config, DEBUG off
            "LR": 2.5e-4, "NUM_ENVS": 4, "NUM_STEPS": 128, "TOTAL_TIMESTEPS": 5e5,
            "UPDATE_EPOCHS": 4, "NUM_MINIBATCHES": 4, "GAMMA": 0.99, "GAE_LAMBDA": 0.95,
            "CLIP_EPS": 0.2, "ENT_COEF": 0.01, "VF_COEF": 0.5, "MAX_GRAD_NORM": 0.5,
            "ACTIVATION": "tanh", "ENV_NAME": "CartPole-v1", "ANNEAL_LR": True,
            "DEBUG": False}
    if tuple(args.hidden) != (64, 64):
        raise SystemExit(f"PureJaxRL's network is two layers of 64; got --hidden {args.hidden}")
    return {
        "LR": args.learning_rate, "NUM_ENVS": args.num_envs, "NUM_STEPS": args.num_steps,
        "TOTAL_TIMESTEPS": args.total_timesteps, "UPDATE_EPOCHS": args.update_epochs,
        "NUM_MINIBATCHES": args.num_minibatches, "GAMMA": args.gamma,
        "GAE_LAMBDA": args.gae_lambda, "CLIP_EPS": args.clip_eps, "ENT_COEF": args.ent_coef,
        "VF_COEF": args.vf_coef, "MAX_GRAD_NORM": args.max_grad_norm, "ACTIVATION": "tanh",
        "ENV_NAME": args.env, "ANNEAL_LR": args.anneal_lr, "DEBUG": False}


def _final_return(out: dict) -> float:
    import numpy as np

    info = out["metrics"]
    done = np.asarray(info["returned_episode"])
    returns = np.asarray(info["returned_episode_returns"])
    last = returns[-1][done[-1]] if done[-1].any() else returns[-1].ravel()
    return float(np.mean(last))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--script-dir", required=True,
                   help="a folder holding PureJaxRL's ppo.py and wrappers.py")
    p.add_argument("--timed", action="store_true",
                   help="side-by-side mode: the common flags' settings, compile and run timed "
                        "apart (module docstring)")
    _common.add_common_args(p, defaults={"seed": 30})  # 30: the script's own PRNGKey
    args = p.parse_args()

    for name in ("brax", "brax.envs", "brax.envs.wrappers", "brax.envs.wrappers.training",
                 "navix"):
        _stand_in(name)
    sys.path.insert(0, os.path.abspath(args.script_dir))
    import jax
    import ppo  # PureJaxRL's purejaxrl/ppo.py

    config = _config(args)
    rng = jax.random.PRNGKey(args.seed)
    if not args.timed:
        t_start = time.perf_counter()
        train_jit = jax.jit(make_train := ppo.make_train(config))
        del make_train
        out = train_jit(rng)
        jax.block_until_ready(out)
        t_end = time.perf_counter()
        print(json.dumps({
            "impl": "purejaxrl", "jax": jax.__version__,
            "import_and_setup_s": t_start - T0, "compile_and_train_s": t_end - t_start,
            "final_return": _final_return(out),
        }))
        return
    t0 = time.perf_counter()
    compiled = jax.jit(ppo.make_train(config)).lower(rng).compile()
    compile_s = time.perf_counter() - t0
    # make_train wrote NUM_UPDATES into config: the env steps actually trained
    total = int(config["NUM_UPDATES"]) * config["NUM_ENVS"] * config["NUM_STEPS"]
    run_s, sps, returns = [], [], []
    for r in range(args.repeats):
        t0 = time.perf_counter()
        out = jax.block_until_ready(compiled(jax.random.PRNGKey(args.seed + r)))
        run_s.append(time.perf_counter() - t0)
        sps.append(total / run_s[-1])
        returns.append(_final_return(out))
        _common.log(f"[purejaxrl] repeat {r}: {run_s[-1]:.3f}s, {sps[-1]:,.0f} sps, "
                    f"return {returns[-1]:.1f}")
    _common.emit({
        "peer": "purejaxrl",
        "versions": _common.versions("jax", "jaxlib", "flax", "optax", "gymnax", "distrax"),
        "config": {**config, "total_timesteps": total,
                   "total_timesteps_requested": args.total_timesteps, "seed": args.seed,
                   "repeats": args.repeats},
        "compile_s": compile_s, "run_s": run_s, "sps": sps,
        "final_return": float(sum(returns) / len(returns)),
        "return_kind": "train: mean return of the episodes that ended in the last update "
                       "(PureJaxRL's LogWrapper metrics), mean over repeats",
        "final_return_per_repeat": returns,
        "jax_devices": [str(d) for d in jax.devices()],
    })


if __name__ == "__main__":
    main()
