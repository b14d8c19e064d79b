"""Peer baseline: MuJoCo Playground's documented training of its DM Control Suite, i.e. Brax's
PPO trainer (``brax.training.agents.ppo.train``, brax 0.14.2) with the settings of
``mujoco_playground.config.dm_control_suite_params.brax_ppo_config(env)`` and the env wrapped
by ``mujoco_playground.wrapper.wrap_for_brax_training``, as Playground's tutorial notebook
(``learning/notebooks/dm_control_suite.ipynb``) runs it.

Run with the playground venv (brax 0.14.2's trainer needs jax < 0.10, see README.md here):
  .venvs/peer-playground/bin/python benchmarks/peers/run_playground_ppo.py --env CartpoleBalance
Prints one JSON line on stdout (logs go to stderr).

Every setting starts at Playground's value for the env (a bare run is its documented config,
60M steps and all); the common flags override it. One ppox update (E envs x T steps, K
epochs, M minibatches) is ``--num-envs E --num-steps T --update-epochs K --num-minibatches M
--batch-size E/M`` (brax: ``unroll_length=T``, ``num_updates_per_batch=K``; one training
step is ``batch_size * M * T`` env steps; see ``run_brax_ppo.py`` for the mapping and what
Brax's trainer does differently from ppox). Kept from Playground's config unless given:
``reward_scaling`` (10 for most envs), ``normalize_observations``, brax's default networks
(policy 4x32, value 5x256, swish) and ``bootstrap_on_timeout=False`` (a time-out is treated
as a termination). ``--max-grad-norm`` >= 1e8 means none (Playground sets none).

Timing as in ``run_brax_ppo.py``: ``--num-evals`` N gives N-1 training epochs, each timed by
the trainer's ``training/walltime`` (evaluations excluded); epoch 1 holds the compile,
``sps`` comes from epochs 2.., ``compile_s`` = epoch 1 - its steps / sps. Each epoch is
``num_resets_per_eval`` (Playground: 10) scans of whole training steps with the envs reset
between them, so the budget is rounded up to a multiple of ``(N-1) x 10 x batch_size *
num_minibatches * unroll_length``.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import math
import time
from typing import Any

import _common

# brax.training.agents.ppo.networks.make_ppo_networks' defaults (Playground's DM Control
# Suite config names no network_factory)
BRAX_POLICY_HIDDEN = "32,32,32,32"
BRAX_VALUE_HIDDEN = "256,256,256,256,256"
NO_CLIP = 1e8


def playground_config(env: str) -> dict[str, Any]:
    """Playground's published Brax-PPO settings for ``env`` (a plain dict)."""
    from mujoco_playground.config import dm_control_suite_params

    return dict(dm_control_suite_params.brax_ppo_config(env).to_dict())


def build_parser(env: str, pg: dict[str, Any]) -> argparse.ArgumentParser:
    nets = pg.get("network_factory", {})
    defaults = dict(
        env=env, num_envs=pg["num_envs"], num_steps=pg["unroll_length"],
        update_epochs=pg["num_updates_per_batch"], num_minibatches=pg["num_minibatches"],
        hidden=",".join(map(str, nets.get("policy_hidden_layer_sizes", ()))) or
        BRAX_POLICY_HIDDEN,
        total_timesteps=pg["num_timesteps"], learning_rate=pg["learning_rate"],
        anneal_lr=False, gamma=pg["discounting"], gae_lambda=pg.get("gae_lambda", 0.95),
        clip_eps=pg.get("clipping_epsilon", 0.3), ent_coef=pg["entropy_cost"],
        vf_coef=pg.get("vf_loss_coefficient", 0.5),
        max_grad_norm=pg.get("max_grad_norm") or 1e9)
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    _common.add_common_args(p, defaults=defaults)
    p.add_argument("--critic-hidden", type=_common.parse_hidden, default=_common.parse_hidden(
        ",".join(map(str, nets.get("value_hidden_layer_sizes", ()))) or BRAX_VALUE_HIDDEN))
    p.add_argument("--batch-size", type=int, default=pg["batch_size"],
                   help="brax batch_size (env sequences per minibatch); ppox's update: "
                        "num_envs / num_minibatches")
    p.add_argument("--impl", default="jax", choices=["jax", "warp"],
                   help="the env's physics (Playground's own default is warp)")
    p.add_argument("--episode-length", type=int, default=pg["episode_length"])
    p.add_argument("--action-repeat", type=int, default=pg["action_repeat"])
    p.add_argument("--normalize-observations", type=_common.str2bool,
                   default=pg["normalize_observations"])
    p.add_argument("--reward-scaling", type=float, default=pg["reward_scaling"])
    p.add_argument("--num-evals", type=int, default=3,
                   help="1 initial eval + (num_evals-1) training epochs; >= 3 so that one "
                        "timed epoch has no compile in it")
    p.add_argument("--num-eval-envs", type=int, default=128)
    p.add_argument("--deterministic-eval", type=_common.str2bool, default=True)
    return p


def epoch_timing(progress: list[tuple[int, dict[str, float]]], n_epochs: int,
                 epoch_steps: int, total: int) -> dict[str, Any]:
    """Steady steps/s, compile time and per-epoch seconds from the trainer's progress."""
    points = [(s, m) for s, m in progress if "training/walltime" in m]
    walls = [m["training/walltime"] for _, m in points]
    epoch_s = [walls[0]] + [b - a for a, b in itertools.pairwise(walls)] if walls else []
    if len(epoch_s) != n_epochs or points[-1][0] != total:
        raise SystemExit(f"unexpected brax progress: {len(epoch_s)} epochs, last step "
                         f"{points[-1][0] if points else None} (expected {n_epochs}, {total})")
    sps = (n_epochs - 1) * epoch_steps / sum(epoch_s[1:])
    return {"epoch_s": epoch_s, "sps": sps, "run_s": total / sps,
            "compile_s": epoch_s[0] - epoch_steps / sps}


def main() -> None:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--env", default="CartpoleBalance")
    env_name = pre.parse_known_args()[0].env.removeprefix("playground/")
    pg = playground_config(env_name)
    args = build_parser(env_name, pg).parse_args()
    if args.anneal_lr:
        raise SystemExit("--anneal-lr: Playground's DM Control Suite config keeps the "
                         "learning rate constant, and so does this runner")
    if args.num_evals < 3:
        raise SystemExit("--num-evals must be >= 3 (epoch 1 includes compilation)")

    import numpy as np
    from brax.training.agents.ppo import networks as ppo_networks
    from brax.training.agents.ppo import train as ppo
    from mujoco_playground import registry, wrapper

    E, T, K, M, B = (args.num_envs, args.num_steps, args.update_epochs,
                     args.num_minibatches, args.batch_size)
    if (B * M) % E:
        raise SystemExit("batch_size * num_minibatches must be divisible by num_envs")
    steps_per_train_step = B * M * T * args.action_repeat
    n_epochs = args.num_evals - 1
    # brax runs each epoch as max(1, num_resets_per_eval) scans of training steps (the envs
    # reset between them; Playground sets 10), rounding the budget up to whole scans
    resets = max(1, int(pg.get("num_resets_per_eval", 0)))
    per_scan = math.ceil(args.total_timesteps / (n_epochs * steps_per_train_step * resets))
    epoch_steps = resets * per_scan * steps_per_train_step
    total = n_epochs * epoch_steps  # what brax will run
    env = registry.load(env_name, config_overrides={"impl": args.impl})
    network_factory = functools.partial(
        ppo_networks.make_ppo_networks, policy_hidden_layer_sizes=tuple(args.hidden),
        value_hidden_layer_sizes=tuple(args.critic_hidden))
    settings = dict(
        num_timesteps=args.total_timesteps, num_envs=E, episode_length=args.episode_length,
        action_repeat=args.action_repeat, learning_rate=args.learning_rate,
        entropy_cost=args.ent_coef, discounting=args.gamma, unroll_length=T, batch_size=B,
        num_minibatches=M, num_updates_per_batch=K,
        normalize_observations=args.normalize_observations,
        reward_scaling=args.reward_scaling, clipping_epsilon=args.clip_eps,
        gae_lambda=args.gae_lambda, vf_loss_coefficient=args.vf_coef,
        max_grad_norm=None if args.max_grad_norm >= NO_CLIP else args.max_grad_norm,
        num_resets_per_eval=pg.get("num_resets_per_eval", 0), num_evals=args.num_evals,
        num_eval_envs=args.num_eval_envs, deterministic_eval=args.deterministic_eval)

    runs = []
    for r in range(args.repeats):
        progress: list[tuple[int, dict[str, float]]] = []

        def progress_fn(step, metrics, _progress=progress):
            m = {k: float(np.asarray(v)) for k, v in metrics.items()}
            _progress.append((int(step), m))
            _common.log(f"[playground] step {int(step):>10,d}  eval/episode_reward="
                        f"{m.get('eval/episode_reward', float('nan')):.2f}")

        t0 = time.perf_counter()
        _, _, final = ppo.train(environment=env, wrap_env_fn=wrapper.wrap_for_brax_training,
                                network_factory=network_factory, seed=args.seed + r,
                                progress_fn=progress_fn, **settings)
        wall = time.perf_counter() - t0
        timing = epoch_timing(progress, n_epochs, epoch_steps, total)
        runs.append({**timing, "wall_s": wall,
                     "final_return": float(np.asarray(final["eval/episode_reward"])),
                     "eval_curve": [(s, m.get("eval/episode_reward")) for s, m in progress]})
        _common.log(f"[playground] repeat {r}: wall {wall:.1f}s, steady {timing['sps']:,.0f} "
                    f"sps, compile ~{timing['compile_s']:.1f}s, eval return "
                    f"{runs[-1]['final_return']:.2f}")

    finals = [x["final_return"] for x in runs]
    _common.emit({
        "peer": "playground_brax_ppo",
        "versions": _common.versions("playground", "brax", "jax", "jaxlib", "flax", "optax",
                                     "mujoco", "mujoco-mjx"),
        "config": {**settings, "env": env_name, "impl": args.impl, "num_steps": T,
                   "update_epochs": K, "hidden": list(args.hidden),
                   "critic_hidden": list(args.critic_hidden), "activation": "swish",
                   "bootstrap_on_timeout": False, "total_timesteps": total,
                   "total_timesteps_requested": args.total_timesteps,
                   "steps_per_train_step": steps_per_train_step,
                   "scans_per_epoch": resets, "train_steps_per_scan": per_scan,
                   "playground_config": pg, "seed": args.seed, "repeats": args.repeats},
        "compile_s": runs[0]["compile_s"],
        "run_s": [x["run_s"] for x in runs],
        "sps": [x["sps"] for x in runs],
        "final_return": float(np.mean(finals)),
        "return_kind": (f"eval: brax evaluator eval/episode_reward after the last epoch, "
                        f"{args.num_eval_envs} episodes x {args.episode_length} steps, "
                        f"{'deterministic' if args.deterministic_eval else 'stochastic'} "
                        "policy, mean over repeats"),
        "final_return_per_repeat": finals,
        "timing": {"method": "brax progress_fn training/walltime per epoch (evals "
                             "excluded); epoch 1 holds the compile",
                   "epoch_steps": epoch_steps,
                   "per_repeat": [{k: x[k] for k in ("wall_s", "epoch_s", "compile_s",
                                                     "eval_curve")} for x in runs]},
    })


if __name__ == "__main__":
    main()
