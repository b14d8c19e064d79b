"""Helpers shared by the peer runners (argparse flags, JSON line, versions).

Each runner is started with its own peer venv's python (``.venvs/peer-<name>/bin/python``);
Python puts the script's folder on ``sys.path``, so ``import _common`` works from there.
This module must only use the standard library: it is imported by all three venvs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any


def parse_hidden(text: str) -> tuple[int, ...]:
    """``"64"`` -> (64, 64) (two layers of that width); ``"64,64,64"`` -> those widths."""
    parts = [p for p in str(text).replace(" ", "").split(",") if p]
    if not parts:
        raise argparse.ArgumentTypeError(f"bad --hidden {text!r}")
    widths = tuple(int(p) for p in parts)
    if any(w <= 0 for w in widths):
        raise argparse.ArgumentTypeError(f"bad --hidden {text!r}")
    return widths * 2 if len(widths) == 1 else widths


def str2bool(text: str | bool) -> bool:
    if isinstance(text, bool):
        return text
    t = text.strip().lower()
    if t in ("1", "true", "yes", "y", "on"):
        return True
    if t in ("0", "false", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean, got {text!r}")


def add_common_args(
    p: argparse.ArgumentParser, *, defaults: dict[str, Any] | None = None
) -> argparse.ArgumentParser:
    """The flags every runner takes. ``defaults`` overrides the CleanRL/PureJaxRL values."""
    d: dict[str, Any] = {
        "env": "CartPole-v1",
        "num_envs": 4,
        "num_steps": 128,
        "update_epochs": 4,
        "num_minibatches": 4,
        "hidden": "64",
        "total_timesteps": 500_000,
        "learning_rate": 2.5e-4,
        "anneal_lr": True,
        "gamma": 0.99,
        "gae_lambda": 0.95,
        "clip_eps": 0.2,
        "ent_coef": 0.01,
        "vf_coef": 0.5,
        "max_grad_norm": 0.5,
        "seed": 0,
        "repeats": 1,
    }
    d.update(defaults or {})
    p.add_argument("--env", default=d["env"])
    p.add_argument("--num-envs", type=int, default=d["num_envs"])
    p.add_argument("--num-steps", type=int, default=d["num_steps"],
                   help="rollout length per env per update")
    p.add_argument("--update-epochs", type=int, default=d["update_epochs"])
    p.add_argument("--num-minibatches", type=int, default=d["num_minibatches"])
    p.add_argument("--hidden", type=parse_hidden, default=parse_hidden(d["hidden"]),
                   help="'64' = two tanh layers of 64 (actor and critic separate); "
                        "or a comma list of widths")
    p.add_argument("--total-timesteps", type=int, default=d["total_timesteps"])
    p.add_argument("--learning-rate", type=float, default=d["learning_rate"])
    p.add_argument("--anneal-lr", type=str2bool, default=d["anneal_lr"],
                   help="linear learning-rate decay to 0 over training (default on)")
    p.add_argument("--gamma", type=float, default=d["gamma"])
    p.add_argument("--gae-lambda", type=float, default=d["gae_lambda"])
    p.add_argument("--clip-eps", type=float, default=d["clip_eps"])
    p.add_argument("--ent-coef", type=float, default=d["ent_coef"])
    p.add_argument("--vf-coef", type=float, default=d["vf_coef"])
    p.add_argument("--max-grad-norm", type=float, default=d["max_grad_norm"])
    p.add_argument("--seed", type=int, default=d["seed"])
    p.add_argument("--repeats", type=int, default=d["repeats"],
                   help="timed runs after compilation")
    return p


def versions(*dists: str) -> dict[str, str]:
    import importlib.metadata  # here, not at the top: ~70 ms that an end-to-end time would count
    import platform

    out = {"python": platform.python_version()}
    for name in dists:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def host_info() -> dict[str, Any]:
    import platform

    return {
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "executable": sys.executable,
    }


def emit(result: dict[str, Any]) -> None:
    """Print the one JSON line on stdout (everything else the runners print goes to stderr)."""
    result.setdefault("host", host_info())
    sys.stdout.write(json.dumps(result, default=_jsonable, sort_keys=False) + "\n")
    sys.stdout.flush()


def _jsonable(x: Any) -> Any:
    try:
        import numpy as np  # every peer venv has numpy

        if isinstance(x, np.generic):
            return x.item()
        if isinstance(x, np.ndarray):
            return x.tolist()
    except ImportError:
        pass
    if isinstance(x, tuple):
        return list(x)
    return str(x)


def log(*args: Any) -> None:
    print(*args, file=sys.stderr, flush=True)
