"""``ppox bench``: quick throughput diagnostics of this install on this machine.

Everything runs in this process (see ``ppox.diagnostics``). The repository's
``benchmarks/`` measure each point in a fresh process and compare ppox with its peers.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal


@dataclasses.dataclass(frozen=True)
class BenchArgs:
    """Throughput of ppox on one env at a few env counts: the env alone (random actions),
    the rollout alone (fixed policy) and the trainer, in env steps/s; the dense-matmul peak
    and the trainer's useful FLOP/s as a fraction of it. All in this process."""

    env: str = "CartPole-v1"
    """environment id (`ppox envs` lists them)"""
    num_envs: tuple[int, ...] = (4, 64, 256)
    """env counts to measure"""
    parts: tuple[Literal["trainer", "env", "rollout"], ...] = ("trainer", "env", "rollout")
    """programs to time at each env count"""
    target_s: float = 1.0
    """seconds each timed run aims at (after its compile)"""
    repeats: int = 1
    """timed runs per program and env count"""
    seed: int = 0
    """PRNG seed of every program"""
    matmul: bool = True
    """time a 2048^3 float32 matmul for the peak FLOP/s"""
    flop_check: bool = False
    """also check the FLOP model against XLA's cost analysis"""
    out: Path | None = None
    """write every number to this JSON file"""


def _point_line(point: dict[str, Any], parts: Sequence[str]) -> str:
    bits = [f"{p} {point[p]['sps_median']:,.0f}/s (compile {point[p]['compile_s']:.1f} s)"
            for p in parts if p in point]
    return f"{point['env_id']} x {point['num_envs']}: " + ", ".join(bits)


def _flop_check_line(check: dict[str, Any]) -> str:
    ratios = [check[k]["xla_over_analytic"] for k in ("actor_forward", "fwd_bwd")]
    text = ", ".join("n/a" if r is None else f"{r:.3f}" for r in ratios)
    return f"FLOP model ({check['rows']} rows): XLA/analytic actor forward, fwd+bwd: {text}"


def run_bench(args: BenchArgs) -> dict[str, Any]:
    """Measures what ``args`` asks for, printing as it goes; returns every number."""
    import jax

    from ppox import diagnostics

    t0 = time.perf_counter()
    devices = jax.devices()
    result: dict[str, Any] = {
        "args": {k: str(v) if isinstance(v, Path) else v
                 for k, v in dataclasses.asdict(args).items()},
        "jax": jax.__version__, "backend": jax.default_backend(),
        "devices": [str(d) for d in devices], "device_kind": devices[0].device_kind}
    print(f"ppox bench: {args.env} on {len(devices)} {jax.default_backend()} device(s) "
          f"({devices[0].device_kind})", flush=True)
    peak = None
    if args.matmul:
        result["matmul_peak"] = diagnostics.matmul_peak()
        peak = result["matmul_peak"]["peak_gflops"]
        print(f"dense matmul 2048^3 float32: {peak:,.0f} GFLOP/s", flush=True)
    if args.flop_check:
        cfg, _ = diagnostics.point_config(args.env, args.num_envs[0])
        result["flop_check"] = diagnostics.xla_flop_check(cfg)
        print(_flop_check_line(result["flop_check"]), flush=True)
    result["points"] = []
    for n in args.num_envs:
        point = diagnostics.measure_point(args.env, n, args.parts, target_s=args.target_s,
                                          repeats=args.repeats, seed=args.seed)
        result["points"].append(point)
        print(_point_line(point, args.parts), flush=True)
    result["table"] = diagnostics.roofline_table(result["points"], peak)
    result["wall_s"] = time.perf_counter() - t0
    return result


def cmd_bench(argv: Sequence[str]) -> int:
    """``ppox bench``: times the programs, prints a table, optionally writes JSON."""
    from ppox._platform import apply_env_cpu_xla_flags
    from ppox.cli.command_flags import parse_command
    from ppox.config import ConfigError
    from ppox.diagnostics import point_config
    from ppox.envs import check_env_id

    args = parse_command(BenchArgs, argv, "ppox bench")
    if not args.num_envs or not args.parts:
        raise ConfigError("--num-envs and --parts need at least one value each")
    check_env_id(args.env)  # bad settings fail here, before anything is compiled
    for n in args.num_envs:
        point_config(args.env, n)
    apply_env_cpu_xla_flags(args.env)  # what `ppox train` sets up, before JAX starts
    result = run_bench(args)
    print("\n" + result["table"])
    if args.out is not None:
        from ppox.host.metrics import to_jsonable

        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(to_jsonable(result), indent=2) + "\n")
        print(f"\nwrote {args.out}")
    return 0
