"""Which (env, num_envs) points the scaling and roofline benchmarks measure, and the loop
that measures them one fresh process at a time."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from benchmarks.harness.workers import PARTS, point_in_process

#: The three environments of the scaling and roofline benchmarks.
CARTPOLE = "CartPole-v1"
BRAX_TASK = "brax/inverted_pendulum"
LARGE_OBS = "Breakout-MinAtar"  # 10 x 10 x 4 = 400-dim observations
#: Every power of two from 1 to 4096.
POW2 = tuple(2**k for k in range(13))
#: Every power of four from 1 to 4096 (brax: its programs compile for ~30 s each on CPU).
POW4 = tuple(4**k for k in range(7))

Plan = dict[str, tuple[int, ...]]


def scaling_plan(quick: bool) -> Plan:
    """``{env_id: num_envs values}`` of the scaling benchmark.

    Full: CartPole-v1 and Breakout-MinAtar at every power of two from 1 to 4096; the brax
    task at powers of four only (each point compiles for ~30 s on a 2-core CPU).
    Quick: three CartPole points and one point of each other env.
    """
    if quick:
        return {CARTPOLE: (4, 64, 1024), LARGE_OBS: (64,), BRAX_TASK: (256,)}
    return {CARTPOLE: POW2, LARGE_OBS: POW2, BRAX_TASK: POW4}


def roofline_plan(quick: bool) -> Plan:
    """``{env_id: num_envs values}`` of the roofline benchmark (three programs per point).

    Full: powers of four from 1 to 4096 for CartPole-v1 and Breakout-MinAtar, and 1, 16,
    256, 4096 for the brax task. Quick: CartPole-v1 at 4, 64 and 1024 envs.
    """
    if quick:
        return {CARTPOLE: (4, 64, 1024)}
    return {CARTPOLE: POW4, LARGE_OBS: POW4, BRAX_TASK: (1, 16, 256, 4096)}


def override_plan(plan: Mapping[str, tuple[int, ...]], envs: Sequence[str] | None,
                  num_envs: Sequence[int] | None, default: tuple[int, ...]) -> Plan:
    """``plan`` with ``--envs`` (those envs only; ``default`` sizes for an env the plan
    lacks) and ``--num-envs`` (these sizes for every env) applied."""
    out = {e: tuple(plan.get(e, default)) for e in envs} if envs else dict(plan)
    if num_envs:
        out = {e: tuple(num_envs) for e in out}
    return out


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


def _point_line(i: int, total: int, res: Mapping[str, Any], parts: Sequence[str],
                took: float) -> str:
    head = f"[{i + 1}/{total}] {res['env_id']} x {res['num_envs']}"
    if "error" in res:
        return f"{head}: FAILED ({res['error']})\n{res.get('stderr_tail', '')[-800:]}"
    bits = [f"{p} {res[p]['sps_median']:,.0f}/s (compile {res[p]['compile_s']:.1f} s)"
            for p in parts]
    return f"{head}: " + ", ".join(bits) + f"  [{took:.0f} s]"


def run_points(points: Sequence[tuple[str, int, Sequence[str]]], *, target_s: float,
               repeats: int, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Measures each point in its own fresh process, one after the other."""
    out = []
    for i, (env_id, n, parts) in enumerate(points):
        t0 = time.perf_counter()
        res = point_in_process(env_id, n, parts, target_s=target_s, repeats=repeats)
        log(_point_line(i, len(points), res, parts, time.perf_counter() - t0))
        out.append(res)
    return out
