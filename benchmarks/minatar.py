"""The MinAtar per-game defaults: one learning-rate ``ppox sweep`` per game, collected.

For each game, ``ppox sweep --env <Game>-MinAtar --spec <lr grid> --total-timesteps N``
(the rest from ``ppox.defaults``: the CNN torso, 64 envs x 64 steps, 4 epochs x 8
minibatches, relu) trains every learning rate of the grid in one vmapped program; the best
final return (mean return of the last episodes, ``ppox.host.metrics.final_return``) picks
the game's default learning rate in ``src/ppox/defaults.py``. A uniform random policy's
return is measured beside it (64 envs x ``--random-steps`` steps), so each figure has its
floor.

    python benchmarks/minatar.py                         # 5 games x 4 learning rates, 400k steps
    python benchmarks/minatar.py --games Breakout --total-timesteps 131072
    python benchmarks/minatar.py --collect /path/to/sweeps   # read finished sweep dirs only

Each sweep goes to ``--sweeps DIR/<Game>`` (``ppox sweep --out``; rerunning resumes it).
Writes ``benchmarks/results/<machine>/minatar_sweeps.json``, ``minatar_sweeps.md`` (each
game's returns per learning rate, the chosen one, the random floor) and
``minatar_sweeps.png`` (each game's curves, return vs env steps).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import argv_string, machine_info, results_dir, save_json
from ppox.diagnostics import fmt_num, format_table

GAMES = ("Breakout", "Asterix", "Freeway", "SpaceInvaders", "Seaquest")
LEARNING_RATES = (2.5e-3, 5e-3, 7.5e-3, 1e-2)


def spec_text(learning_rates: tuple[float, ...], seeds: int) -> str:
    """The sweep spec TOML: a learning-rate grid, ``seeds`` seeds per value."""
    values = ", ".join(repr(float(v)) for v in learning_rates)
    return f"seeds = {seeds}\nseed = 0\n[grid]\nlearning_rate = [{values}]\n"


def run_sweep(game: str, out: Path, spec: Path, total_timesteps: int) -> int:
    """``ppox sweep`` for one game (its progress lines stream through); the exit status."""
    cmd = [sys.executable, "-m", "ppox.cli", "sweep", "--env", f"{game}-MinAtar",
           "--spec", str(spec), "--total-timesteps", str(total_timesteps), "--out", str(out)]
    if (out / "plan.json").exists():
        cmd.append("--resume")
    print("+ " + " ".join(cmd), flush=True)
    return subprocess.run(cmd, check=False).returncode


def random_return(game: str, num_envs: int = 64, steps: int = 2600, seed: int = 0) -> float:
    """Mean return of the episodes a uniform random policy finishes in ``num_envs`` envs x
    ``steps`` steps (NaN if none ends)."""
    import jax
    import jax.numpy as jnp

    from ppox.config import PPOConfig
    from ppox.trainer import env_for

    env = env_for(PPOConfig(env_id=f"{game}-MinAtar")).env
    n = env.spec.action_dim

    def step(carry: Any, key: jax.Array) -> tuple[Any, tuple[jax.Array, jax.Array]]:
        state, ret = carry
        k_act, k_env = jax.random.split(key)
        actions = jax.random.randint(k_act, (num_envs,), 0, n)
        state, ts = jax.vmap(env.step)(jax.random.split(k_env, num_envs), state, actions)
        ret = ret + ts.reward
        done = ts.terminated | ts.truncated
        return (state, jnp.where(done, 0.0, ret)), (done, jnp.where(done, ret, 0.0))

    key_reset, key_run = jax.random.split(jax.random.PRNGKey(seed))
    state = jax.vmap(env.reset)(jax.random.split(key_reset, num_envs))[1]
    run = jax.jit(lambda s, k: jax.lax.scan(step, (s, jnp.zeros(num_envs)),
                                            jax.random.split(k, steps))[1])
    done, finished = run(state, key_run)
    count = float(jnp.sum(done))
    return float(jnp.sum(finished)) / count if count else math.nan


def collect(game: str, folder: Path) -> dict[str, Any] | None:
    """One finished sweep's figures (None if it has no results yet)."""
    curves_path, info_path = folder / "curves.npz", folder / "sweep.json"
    if not curves_path.exists() or not info_path.exists():
        return None
    info = json.loads(info_path.read_text())
    with np.load(curves_path) as f:
        names = [str(n) for n in f["hparam_names"]]
        lr = f["hparams"][:, names.index("learning_rate")]
        runs = [{"learning_rate": float(lr[i]), "final_return": float(f["final_return"][i]),
                 "auc": float(f["auc"][i]), "diverged": bool(f["diverged"][i]),
                 "env_steps": f["env_steps"][i].tolist(), "curve": f["returns"][i].tolist()}
                for i in range(len(lr))]
    best = max(runs, key=lambda r: -math.inf if math.isnan(r["final_return"])
               else r["final_return"])
    return {"game": game, "env": f"{game}-MinAtar", "sweep_dir": str(folder),
            "total_timesteps": int(info.get("env_steps_total", 0)) // max(len(runs), 1),
            "steps_per_second": info.get("steps_per_second"), "wall_s": info.get("wall_s"),
            "compile_s": info.get("compile_s"), "runs": runs,
            "best_learning_rate": best["learning_rate"], "best_final_return": best["final_return"]}


def table(games: list[dict[str, Any]]) -> str:
    """A Markdown table: each game's final return per learning rate, the best, the floor."""
    lrs = sorted({r["learning_rate"] for g in games for r in g["runs"]})
    rows = []
    for g in games:
        by_lr = {r["learning_rate"]: r["final_return"] for r in g["runs"]}
        rows.append([g["env"], fmt_num(g["total_timesteps"]),
                     *(fmt_num(by_lr.get(lr), 2) for lr in lrs),
                     f"{g['best_learning_rate']:g}", fmt_num(g.get("random_return"), 2),
                     fmt_num(g.get("steps_per_second"))])
    return format_table(["env", "steps per run", *(f"lr {lr:g}" for lr in lrs), "chosen lr",
                         "random policy", "sweep steps/s (all runs)"], rows)


def plot(games: list[dict[str, Any]], path: Path) -> Path:
    """Return vs env steps, one panel per game, one line per learning rate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(games), figsize=(4 * len(games), 3.4), squeeze=False)
    lrs = sorted({r["learning_rate"] for g in games for r in g["runs"]})
    colors = {lr: f"C{i}" for i, lr in enumerate(lrs)}  # one color per rate in every panel
    for ax, g in zip(axes[0], games, strict=True):
        for r in g["runs"]:
            curve = np.asarray(r["curve"], np.float64)
            steps = np.asarray(r["env_steps"], np.float64)
            ok = np.isfinite(curve)
            ax.plot(steps[ok], curve[ok], marker="." if ok.sum() < 10 else None,
                    lw=2.0 if r["learning_rate"] == g["best_learning_rate"] else 1.0,
                    color=colors[r["learning_rate"]], label=f"lr {r['learning_rate']:g}")
        if g.get("random_return") is not None and np.isfinite(g["random_return"]):
            ax.axhline(g["random_return"], color="gray", ls="--", lw=1, label="random")
        ax.set_title(g["env"])
        ax.set_xlabel("env steps")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("training return")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--games", nargs="+", default=list(GAMES), choices=GAMES)
    p.add_argument("--learning-rates", nargs="+", type=float, default=list(LEARNING_RATES))
    p.add_argument("--seeds", type=int, default=1, help="seeds per learning rate")
    p.add_argument("--total-timesteps", type=int, default=400_000)
    p.add_argument("--sweeps", type=Path, default=None,
                   help="folder of the per-game sweep dirs (default: a temporary one)")
    p.add_argument("--collect", type=Path, default=None,
                   help="only read the finished sweeps under this folder, run nothing")
    p.add_argument("--random-steps", type=int, default=2600,
                   help="steps per env of the random policy (Freeway's episodes: 2,500)")
    p.add_argument("--machine", default=None, help="results folder name")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    root = args.collect or args.sweeps or Path(tempfile.mkdtemp(prefix="ppox-minatar-"))
    if args.collect is None:
        root.mkdir(parents=True, exist_ok=True)
        spec = root / "spec.toml"
        spec.write_text(spec_text(tuple(args.learning_rates), args.seeds))
        for game in args.games:
            code = run_sweep(game, root / game, spec, args.total_timesteps)
            if code != 0:
                print(f"error: the {game} sweep exited with status {code}", file=sys.stderr)
                return code
    games = []
    for game in args.games:
        res = collect(game, root / game)
        if res is None:
            print(f"{game}: no finished sweep under {root / game}, skipped", flush=True)
            continue
        res["random_return"] = random_return(game, steps=args.random_steps)
        res["random_kind"] = f"uniform random actions, 64 envs x {args.random_steps} steps"
        games.append(res)
    if not games:
        print(f"error: no finished sweep under {root}", file=sys.stderr)
        return 1
    text = table(games)
    print("\n" + text)
    folder = results_dir(args.machine)
    out = {"command": argv_string(), "machine": machine_info(), "sweeps": str(root),
           "what": "final return = mean return of the episodes that ended in the last 5% of "
                   "the updates (widened to >= num_envs episodes), 1 run per learning rate "
                   "unless --seeds; the rest of each run's settings from ppox.defaults",
           "games": games, "table": text, "wall_s": time.perf_counter() - t0}
    path = save_json(folder / "minatar_sweeps.json", out)
    (folder / "minatar_sweeps.md").write_text(
        f"# MinAtar learning-rate sweeps ({out['machine']['machine']})\n\n"
        f"`{out['command']}`\n\n{text}\n")
    png = plot(games, folder / "minatar_sweeps.png")
    print(f"wrote {path}, {folder / 'minatar_sweeps.md'} and {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
