"""``ppox envs [ID...]``: the environment ids, and for the ones asked about their
observation shape, action space, time limit and the defaults a run of them starts from."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Annotated, Any

import numpy as np
import tyro

from ppox.cli.command_flags import parse_command


@dataclasses.dataclass(frozen=True)
class EnvsArgs:
    """List the environment ids ppox accepts; with ids (or --details), also each one's
    observation shape, action space, time limit and the defaults its runs start from."""

    ids: Annotated[tuple[str, ...], tyro.conf.Positional,
                   tyro.conf.arg(metavar="ID...", help="environments to describe")] = ()
    details: bool = False
    """describe every gymnax env (brax envs take seconds each to build: name them)"""


def action_space_text(space: Any) -> str:
    """``Discrete(2)`` or ``Box(6,) in [-1, 1]`` (bounds shown once when all equal)."""
    from ppox.envs import Discrete

    if isinstance(space, Discrete):
        return f"Discrete({space.n})"
    low, high = np.asarray(space.low), np.asarray(space.high)
    shape = ",".join(str(d) for d in low.shape) + ("," if low.ndim == 1 else "")
    if np.all(low == low.flat[0]) and np.all(high == high.flat[0]):
        bounds = f"[{low.flat[0]:g}, {high.flat[0]:g}]"
    else:
        bounds = f"[{low.tolist()}, {high.tolist()}]"
    return f"Box({shape}) in {bounds}"


def defaults_text(env_id: str) -> str:
    """The settings this env's runs start from where they differ from the global defaults."""
    from ppox.defaults import overrides_for

    cfg, hp = overrides_for(env_id)
    parts = [f"{k}={' '.join(map(str, v)) if isinstance(v, tuple) else v}"
             for k, v in {**cfg, **hp}.items()]
    return ", ".join(parts) if parts else "the global defaults"


def describe(env_id: str) -> dict[str, str]:
    """One env's facts, as text: ``obs``, ``action``, ``time_limit``, ``defaults``."""
    from ppox.defaults import resolve
    from ppox.envs import check_env_id
    from ppox.trainer import env_for

    check_env_id(env_id)
    spec = env_for(resolve(env_id)[0]).spec
    return {"id": env_id, "obs": str(tuple(spec.obs_shape)),
            "action": action_space_text(spec.action_space),
            "time_limit": str(spec.max_episode_steps), "defaults": defaults_text(env_id)}


def cmd_envs(argv: Sequence[str]) -> int:
    from ppox.envs import brax_ids, gymnax_ids, playground_ids

    args = parse_command(EnvsArgs, argv, "ppox envs")
    ids = list(args.ids) or (list(gymnax_ids()) if args.details else [])
    if not ids:
        print("gymnax: " + ", ".join(gymnax_ids()))
        print("brax:   " + ", ".join(brax_ids()))
        print("playground (pip install 'ppox[playground]'): " + ", ".join(playground_ids()))
        print("(`ppox envs ID...` or `ppox envs --details`: observation shape, action space, "
              "time limit and defaults)")
        return 0
    rows = [describe(i) for i in ids]
    width = {k: max(len(k), *(len(r[k]) for r in rows)) for k in ("id", "obs", "action")}
    print(f"{'id':{width['id']}}  {'obs':{width['obs']}}  {'action':{width['action']}}  "
          "time limit  defaults")
    for r in rows:
        print(f"{r['id']:{width['id']}}  {r['obs']:{width['obs']}}  "
              f"{r['action']:{width['action']}}  {r['time_limit']:>10}  {r['defaults']}")
    return 0
