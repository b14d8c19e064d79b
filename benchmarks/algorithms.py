"""The PPO family side by side: ppo (clip), ppo_kl (adaptive KL penalty) and trpo.

    python benchmarks/algorithms.py                  # CartPole-v1 and Pendulum-v1, 3 seeds
    python benchmarks/algorithms.py --envs CartPole-v1 --seeds 2

Each algorithm trains its seeds in one vmapped call (``train_runs``, the path of ``ppox
train --num-seeds``) from ``ppox.defaults.resolve(env, algo)`` (Pendulum-v1 with the
settings in ``PENDULUM`` below, the same for all three, under each algorithm's own table),
so the update is the only difference. Writes ``benchmarks/results/<machine>/algorithms.json``,
``algorithms.md`` (final return per seed and steps/s per algorithm and env) and one PNG of
return versus env steps per env (``algorithms_<env>.png``).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks._common import argv_string, machine_info, results_dir, save_json

ALGOS = ("ppo", "ppo_kl", "trpo")
# Pendulum-v1 has no entry in ppox.defaults; these are common PPO settings for it (a short
# horizon, normalized rewards), shared by the three algorithms.
PENDULUM: tuple[dict[str, Any], dict[str, float]] = (
    {"num_envs": 8, "num_steps": 256, "total_timesteps": 300_000, "update_epochs": 10,
     "num_minibatches": 8, "normalize_obs": True, "normalize_reward": True},
    {"learning_rate": 1e-3, "gamma": 0.9, "ent_coef": 0.0},
)


def settings(env: str, algo: str) -> tuple[Any, Any]:
    """The run's config and hyperparameters: the defaults, and PENDULUM for Pendulum-v1
    where the algorithm's table does not set the key."""
    from ppox.defaults import ALGO_DEFAULTS, resolve

    cfg, hp = resolve(env, algo)
    if env == "Pendulum-v1":
        algo_cfg, algo_hp = ALGO_DEFAULTS.get(algo, ({}, {}))
        cfg = cfg.replace(**{k: v for k, v in PENDULUM[0].items() if k not in algo_cfg})
        hp = hp.replace(**{k: v for k, v in PENDULUM[1].items() if k not in algo_hp})
    return cfg, hp


def train(env: str, algo: str, seeds: int) -> dict[str, Any]:
    """One vmapped call over ``seeds`` seeds; its curve, final returns and timings."""
    from ppox.host.metrics import episode_means
    from ppox.host.run import train_runs

    cfg, hp = settings(env, algo)
    result = train_runs(cfg, [hp] * seeds, list(range(seeds)), progress_chunks=1)
    curves = episode_means(result.metrics)  # [seeds, updates]
    print(f"{env} {algo}: final {np.round(result.final_return, 1).tolist()}, "
          f"{result.steps_per_second:,.0f} steps/s, compile {result.compile_s:.0f} s")
    extra = {k: float(np.nanmean(result.metrics[k])) for k in
             ("epochs_run", "kl", "kl_beta", "line_search_step", "step_accepted")
             if k in result.metrics}
    return {"env": env, "algo": algo, "seeds": seeds, "env_steps": result.env_steps,
            "batch_size": cfg.batch_size,
            "final_return": result.final_return.tolist(),
            "final_return_mean": float(np.mean(result.final_return)),
            "steps_per_second": result.steps_per_second, "compile_s": result.compile_s,
            "run_s": result.run_s, "means": extra,
            "config": {k: (list(v) if isinstance(v, tuple) else v)
                       for k, v in cfg.__dict__.items()},
            "hparams": {k: float(v) for k, v in hp.to_dict().items()},
            "curve": [[None if not np.isfinite(x) else float(x) for x in c] for c in curves]}


def table(rows: list[dict[str, Any]]) -> str:
    """The Markdown table: one row per env and algorithm."""
    lines = ["| env | algo | env steps | final return (per seed) | mean | steps/s | compile s |",
             "|---|---|---:|---|---:|---:|---:|"]
    for r in rows:
        seeds = ", ".join(f"{x:.1f}" for x in r["final_return"])
        lines.append(f"| {r['env']} | {r['algo']} | {r['env_steps']:,d} | {seeds} | "
                     f"{r['final_return_mean']:.1f} | {r['steps_per_second']:,.0f} | "
                     f"{r['compile_s']:.0f} |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict[str, Any]], env: str, path: Any) -> None:
    from ppox.host.plots import forward_fill, plot_learning_curves

    curves = {}
    for r in rows:
        if r["env"] == env:
            y = forward_fill(np.array(r["curve"], np.float64))
            x = (np.arange(y.shape[1]) + 1) * r["batch_size"]
            curves[f"{r['algo']} ({r['steps_per_second']:,.0f} steps/s)"] = (x, y)
    plot_learning_curves(curves, path, title=f"{env}: ppo, ppo_kl, trpo "
                         f"({rows[0]['seeds']} seeds each, one vmapped call per algorithm)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", nargs="+", default=["CartPole-v1", "Pendulum-v1"])
    parser.add_argument("--algos", nargs="+", default=list(ALGOS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--machine", default=None, help="results folder name")
    args = parser.parse_args(argv)

    from ppox._platform import use_ppox_cpu_setup

    use_ppox_cpu_setup()  # as `ppox train` does
    rows = [train(env, algo, args.seeds) for env in args.envs for algo in args.algos]
    out = results_dir(args.machine)
    save_json(out / "algorithms.json", {"command": argv_string(), "machine": machine_info(),
                                        "runs": rows})
    (out / "algorithms.md").write_text(f"`{argv_string()}`\n\n{table(rows)}")
    for env in args.envs:
        plot(rows, env, out / f"algorithms_{env.replace('/', '_')}.png")
    print(table(rows))
    print(f"wrote {out}/algorithms.json, algorithms.md and algorithms_<env>.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
