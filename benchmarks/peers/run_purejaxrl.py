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
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import types

T0 = time.perf_counter()


def _stand_in(name: str) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__path__ = []  # a package, so `from brax.envs.wrappers.training import X` resolves
    mod.__getattr__ = lambda attr: _stand_in(f"{name}.{attr}")  # type: ignore[attr-defined]
    sys.modules[name] = mod
    return mod


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--script-dir", required=True,
                   help="a folder holding PureJaxRL's ppo.py and wrappers.py")
    p.add_argument("--seed", type=int, default=30, help="the script's PRNGKey (30 in it)")
    args = p.parse_args()

    for name in ("brax", "brax.envs", "brax.envs.wrappers", "brax.envs.wrappers.training",
                 "navix"):
        _stand_in(name)
    sys.path.insert(0, os.path.abspath(args.script_dir))
    import jax
    import numpy as np
    import ppo  # PureJaxRL's purejaxrl/ppo.py

    config = {  # the script's __main__ config, DEBUG off
        "LR": 2.5e-4, "NUM_ENVS": 4, "NUM_STEPS": 128, "TOTAL_TIMESTEPS": 5e5,
        "UPDATE_EPOCHS": 4, "NUM_MINIBATCHES": 4, "GAMMA": 0.99, "GAE_LAMBDA": 0.95,
        "CLIP_EPS": 0.2, "ENT_COEF": 0.01, "VF_COEF": 0.5, "MAX_GRAD_NORM": 0.5,
        "ACTIVATION": "tanh", "ENV_NAME": "CartPole-v1", "ANNEAL_LR": True, "DEBUG": False,
    }
    rng = jax.random.PRNGKey(args.seed)
    t_start = time.perf_counter()
    train_jit = jax.jit(make_train := ppo.make_train(config))
    del make_train
    out = train_jit(rng)
    jax.block_until_ready(out)
    t_end = time.perf_counter()
    info = out["metrics"]
    done = np.asarray(info["returned_episode"])
    returns = np.asarray(info["returned_episode_returns"])
    last = returns[-1][done[-1]] if done[-1].any() else returns[-1].ravel()
    print(json.dumps({
        "impl": "purejaxrl", "jax": jax.__version__,
        "import_and_setup_s": t_start - T0, "compile_and_train_s": t_end - t_start,
        "final_return": float(np.mean(last)),
    }))


if __name__ == "__main__":
    main()
