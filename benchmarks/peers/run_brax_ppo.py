"""Peer baseline: Brax's own PPO trainer (``brax.training.agents.ppo.train``), brax 0.12.4.

Run with the brax venv:
  .venvs/peer-brax/bin/python benchmarks/peers/run_brax_ppo.py --env inverted_pendulum
Prints one JSON line on stdout (logs go to stderr).

Mapping "num_envs x num_steps rollout, update_epochs, num_minibatches" -> brax's train():
  * brax collects, per training step, ``batch_size * num_minibatches // num_envs`` unrolls
    of ``unroll_length`` steps from each of ``num_envs`` envs (it asserts
    ``batch_size * num_minibatches % num_envs == 0``), i.e.
    ``batch_size * num_minibatches * unroll_length`` env steps (x action_repeat), then runs
    ``num_updates_per_batch`` epochs of ``num_minibatches`` minibatches, each minibatch
    being ``batch_size`` SEQUENCES of ``unroll_length`` transitions.
  * So one ppox/PureJaxRL update (E envs x T steps, K epochs, M minibatches) is:
    ``num_envs=E, unroll_length=T, num_updates_per_batch=K, num_minibatches=M,
    batch_size=E/M`` (E must be divisible by M); minibatch = E*T/M transitions, as in
    ppox. ``--batch-size`` overrides batch_size (then one training step is
    batch_size*M*T steps, i.e. batch_size*M/E unrolls per env).
  * brax runs ``num_evals - 1`` training "epochs" (one jitted/pmapped ``training_epoch``
    each, a ``lax.scan`` over ``ceil(num_timesteps / ((num_evals-1) * steps_per_train_step))``
    training steps) with an evaluation after each, plus one before training.  The total
    trained is that rounded UP; it is read back from the trainer and reported.

Timing (brax's train is a Python loop of jitted pieces, rebuilt -- and recompiled --
at every call, so a second call is not compile-free):
  * Each timed epoch's wall time is read from the trainer's own progress metrics
    (``training/walltime``, which excludes evaluation).  The FIRST training epoch
    includes tracing + XLA compilation of ``training_epoch``; epochs 2.. are steady state.
  * ``sps`` = steps of epochs 2.. / their wall time (so ``--num-evals`` must be >= 3);
    ``run_s`` = total_timesteps / sps, i.e. the training time of the whole budget
    without compilation and without evaluations (extrapolated from the steady epochs,
    raw numbers in ``timing``); ``compile_s`` = first epoch time - its steps / sps.
  * ``--repeats`` R calls train() R times (seeds seed..seed+R-1); each call recompiles.
    ``wall_s`` is each call's whole wall time (env setup, compile, evals included).

Settings the brax 0.12.4 trainer cannot match (documented, not patched):
  * Policy: tanh-squashed Gaussian whose std is a network OUTPUT
    (softplus + 0.001), not a state-independent log-std; entropy is a sampled estimate.
  * Init: lecun_uniform kernels everywhere (make_ppo_networks has no init option).
  * GAE is computed inside the loss for every minibatch with the CURRENT value params
    (on each sampled sequence), not once per rollout; minibatches shuffle whole
    env sequences of length unroll_length, not single transitions.
  * Value loss: 0.25 * mean((vs - v)^2), unclipped.  0.25 = vf_coef 0.5 x 0.5 in the
    CleanRL convention, so vf_coef is fixed at 0.5 (--vf-coef other than 0.5 is
    rejected); no value clipping.
  * Rewards: only a constant ``--reward-scaling`` (no running return normalisation).
  * Adam eps 1e-8 (``optax.adam(learning_rate)``); gradient clipping by global norm
    (``max_grad_norm``) matches.
  * LR annealing is not a trainer option; with ``--anneal-lr`` (default on) the
    ``learning_rate`` handed to ``optax.adam`` is an optax schedule callable
    (PureJaxRL's per-update linear decay over the minibatch-step count).
  * Truncation at episode_length is handled by brax (no bootstrap across it, the delta
    is masked) -- not the same as ppox's handling.
  * ``final_return`` is brax's evaluator (``eval/episode_reward``): ``num_eval_envs``
    episodes run in parallel for episode_length steps; deterministic policy by default
    (``--deterministic-eval``).  Training-episode returns are not reported (brax's
    ``log_training_metrics`` would add host callbacks to the timed program).
"""

from __future__ import annotations

import argparse
import functools
import itertools
import math
import time

import _common
from _compile_clock import CompileClock

# Per-env defaults: those of ppox's src/ppox/defaults.py for the same brax task, so that a
# bare run of this script is the side-by-side of a bare `ppox train` run.
ENV_DEFAULTS = {
    "inverted_pendulum": dict(num_envs=64, num_steps=32, total_timesteps=300_000,
                              update_epochs=4, num_minibatches=4, learning_rate=1e-3,
                              gamma=0.97, ent_coef=0.0, hidden="64", critic_hidden="64"),
    "halfcheetah": dict(num_envs=256, num_steps=32, total_timesteps=10_000_000,
                        update_epochs=4, num_minibatches=8, learning_rate=3e-4,
                        gamma=0.95, ent_coef=1e-3, hidden="64", critic_hidden="256,256"),
}
FALLBACK = dict(num_envs=256, num_steps=32, total_timesteps=10_000_000, update_epochs=4,
                num_minibatches=8, learning_rate=3e-4, gamma=0.99, ent_coef=1e-3,
                hidden="64", critic_hidden="64")


def build_parser(env: str) -> argparse.ArgumentParser:
    d = dict(ENV_DEFAULTS.get(env, FALLBACK))
    critic_hidden = d.pop("critic_hidden")
    d["env"] = env
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    _common.add_common_args(p, defaults=d)
    # brax names for the same settings (aliases: they set the same value)
    for flag, dest, typ in (("--unroll-length", "num_steps", int),
                            ("--num-updates-per-batch", "update_epochs", int),
                            ("--discounting", "gamma", float),
                            ("--entropy-cost", "ent_coef", float),
                            ("--clipping-epsilon", "clip_eps", float)):
        p.add_argument(flag, dest=dest, type=typ, default=argparse.SUPPRESS,
                       help=f"alias of --{dest.replace('_', '-')}")
    p.add_argument("--critic-hidden", type=_common.parse_hidden,
                   default=_common.parse_hidden(critic_hidden))
    p.add_argument("--batch-size", type=int, default=None,
                   help="brax batch_size (sequences per minibatch); "
                        "default num_envs/num_minibatches")
    p.add_argument("--backend", default="spring", choices=["spring", "positional",
                                                           "generalized", "mjx"])
    p.add_argument("--episode-length", type=int, default=1000)
    p.add_argument("--action-repeat", type=int, default=1)
    p.add_argument("--normalize-observations", type=_common.str2bool, default=True)
    p.add_argument("--reward-scaling", type=float, default=1.0)
    p.add_argument("--num-evals", type=int, default=6,
                   help="brax num_evals: 1 initial eval + (num_evals-1) training epochs, "
                        "each followed by an eval; >= 3 for a compile-free timed epoch")
    p.add_argument("--num-eval-envs", type=int, default=128)
    p.add_argument("--deterministic-eval", type=_common.str2bool, default=True)
    return p


def main() -> None:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--env", default="inverted_pendulum")
    env_name = pre.parse_known_args()[0].env
    args = build_parser(env_name).parse_args()

    if args.vf_coef != 0.5:
        raise SystemExit("brax's PPO loss has a fixed value weight (0.25*MSE = vf_coef 0.5)")
    if args.num_evals < 3:
        raise SystemExit("--num-evals must be >= 3 (epoch 1 includes compilation)")

    import flax.linen as nn
    import jax

    clock = CompileClock().start()  # every program the trainer builds, evaluator included
    import numpy as np
    from brax import envs
    from brax.training.agents.ppo import networks as ppo_networks
    from brax.training.agents.ppo import train as ppo

    E, T, K, M = args.num_envs, args.num_steps, args.update_epochs, args.num_minibatches
    if args.batch_size is None:
        if E % M:
            raise SystemExit(f"num_envs={E} must be divisible by num_minibatches={M}")
        batch_size = E // M
    else:
        batch_size = args.batch_size
    if (batch_size * M) % E:
        raise SystemExit("batch_size * num_minibatches must be divisible by num_envs")
    steps_per_train_step = batch_size * M * T * args.action_repeat
    n_epochs = args.num_evals - 1
    train_steps_per_epoch = math.ceil(args.total_timesteps / (n_epochs * steps_per_train_step))
    total_train_steps = n_epochs * train_steps_per_epoch
    total = total_train_steps * steps_per_train_step  # what brax will actually run
    epoch_steps = train_steps_per_epoch * steps_per_train_step

    lr0 = args.learning_rate
    if args.anneal_lr:
        def learning_rate(count):
            return lr0 * (1.0 - (count // (M * K)) / total_train_steps)
    else:
        learning_rate = lr0

    network_factory = functools.partial(
        ppo_networks.make_ppo_networks,
        policy_hidden_layer_sizes=tuple(args.hidden),
        value_hidden_layer_sizes=tuple(args.critic_hidden),
        activation=nn.tanh,
    )
    env = envs.get_environment(args.env, backend=args.backend)

    runs = []
    for r in range(args.repeats):
        progress = []

        def progress_fn(step, metrics, _progress=progress):
            m = {k: float(np.asarray(v)) for k, v in metrics.items()}
            _progress.append((int(step), m))
            _common.log(f"[brax] step {int(step):>10,d}  eval/episode_reward="
                        f"{m.get('eval/episode_reward', float('nan')):.2f}  "
                        f"training/sps={m.get('training/sps', float('nan')):,.0f}")

        t0 = time.perf_counter()
        _, _, final_metrics = ppo.train(
            environment=env,
            num_timesteps=args.total_timesteps,
            num_envs=E,
            episode_length=args.episode_length,
            action_repeat=args.action_repeat,
            learning_rate=learning_rate,
            entropy_cost=args.ent_coef,
            discounting=args.gamma,
            unroll_length=T,
            batch_size=batch_size,
            num_minibatches=M,
            num_updates_per_batch=K,
            normalize_observations=args.normalize_observations,
            reward_scaling=args.reward_scaling,
            clipping_epsilon=args.clip_eps,
            gae_lambda=args.gae_lambda,
            max_grad_norm=args.max_grad_norm,
            normalize_advantage=True,
            network_factory=network_factory,
            seed=args.seed + r,
            num_evals=args.num_evals,
            num_eval_envs=args.num_eval_envs,
            deterministic_eval=args.deterministic_eval,
            progress_fn=progress_fn,
        )
        wall = time.perf_counter() - t0
        train_points = [(s, m) for s, m in progress if "training/walltime" in m]
        walltimes = [m["training/walltime"] for _, m in train_points]
        epoch_s = [walltimes[0]] + [b - a for a, b in itertools.pairwise(walltimes)]
        if len(epoch_s) != n_epochs or train_points[-1][0] != total:
            raise SystemExit(f"unexpected brax progress: {len(epoch_s)} epochs, "
                             f"last step {train_points[-1][0]} (expected {n_epochs}, {total})")
        steady_s = sum(epoch_s[1:])
        sps = (n_epochs - 1) * epoch_steps / steady_s
        runs.append({
            "wall_s": wall,
            "epoch_s": epoch_s,
            "sps": sps,
            "run_s": total / sps,
            "compile_s": epoch_s[0] - epoch_steps / sps,
            "final_return": float(np.asarray(final_metrics["eval/episode_reward"])),
            "eval_avg_episode_length": float(np.asarray(final_metrics["eval/avg_episode_length"])),
            "eval_curve": [(s, m.get("eval/episode_reward")) for s, m in progress],
        })
        _common.log(f"[brax] repeat {r}: wall {wall:.1f}s, steady {sps:,.0f} sps, "
                    f"compile ~{runs[-1]['compile_s']:.1f}s, "
                    f"eval return {runs[-1]['final_return']:.2f}")

    finals = [x["final_return"] for x in runs]
    _common.emit({
        "peer": "brax_ppo",
        "versions": _common.versions("brax", "jax", "jaxlib", "flax", "optax", "mujoco",
                                     "mujoco-mjx"),
        "config": {
            "env": args.env, "backend": args.backend, "episode_length": args.episode_length,
            "action_repeat": args.action_repeat, "num_envs": E, "num_steps": T,
            "unroll_length": T, "update_epochs": K, "num_updates_per_batch": K,
            "num_minibatches": M, "batch_size": batch_size,
            "minibatch_transitions": batch_size * T,
            "steps_per_train_step": steps_per_train_step,
            "train_steps_per_epoch": train_steps_per_epoch, "num_evals": args.num_evals,
            "num_eval_envs": args.num_eval_envs, "deterministic_eval": args.deterministic_eval,
            "hidden": list(args.hidden), "critic_hidden": list(args.critic_hidden),
            "activation": "tanh", "total_timesteps": total,
            "total_timesteps_requested": args.total_timesteps,
            "learning_rate": lr0, "anneal_lr": args.anneal_lr, "gamma": args.gamma,
            "gae_lambda": args.gae_lambda, "clip_eps": args.clip_eps,
            "ent_coef": args.ent_coef, "vf_coef": 0.5, "max_grad_norm": args.max_grad_norm,
            "normalize_observations": args.normalize_observations,
            "reward_scaling": args.reward_scaling, "adam_eps": 1e-8,
            "init": "lecun_uniform", "policy": "tanh-normal, std from network",
            "seed": args.seed, "repeats": args.repeats,
        },
        "compile_s": runs[0]["compile_s"],
        "run_s": [x["run_s"] for x in runs],
        "sps": [x["sps"] for x in runs],
        "final_return": float(np.mean(finals)),
        "return_kind": (f"eval: brax evaluator eval/episode_reward after the last epoch, "
                        f"{args.num_eval_envs} episodes x {args.episode_length} steps, "
                        f"{'deterministic' if args.deterministic_eval else 'stochastic'} "
                        "policy, mean over repeats"),
        "final_return_per_repeat": finals,
        "timing": {
            "method": "brax progress_fn training/walltime per epoch (evals excluded); "
                      "epoch 1 holds the compile; sps from epochs 2..; run_s = "
                      "total_timesteps / sps; compile_s = epoch1_s - epoch_steps / sps",
            "epoch_steps": epoch_steps,
            "per_repeat": [{k: x[k] for k in ("wall_s", "epoch_s", "compile_s",
                                               "eval_avg_episode_length", "eval_curve")}
                           for x in runs],
        },
        "jax_compile": clock.summary(),
        "jax_devices": [str(d) for d in jax.devices()],
    })


if __name__ == "__main__":
    main()
