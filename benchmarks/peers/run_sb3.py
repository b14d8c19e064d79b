"""Peer baseline: Stable-Baselines3 PPO (PyTorch, CPU) on a gymnasium env.

Run with the sb3 venv:  .venvs/peer-sb3/bin/python benchmarks/peers/run_sb3.py --env CartPole-v1
Prints one JSON line on stdout (logs go to stderr).

Mapping of the shared flags to ``stable_baselines3.PPO``:
  * ``make_vec_env(env, n_envs=num_envs, vec_env_cls=DummyVecEnv)`` (each env in a
    ``Monitor``), ``n_steps=num_steps``, ``batch_size=num_envs*num_steps/num_minibatches``
    (SB3's batch_size is the MINIBATCH size), ``n_epochs=update_epochs``,
    ``policy_kwargs=dict(net_arch=dict(pi=[64, 64], vf=[64, 64]), activation_fn=nn.Tanh)``
    (separate actor and critic MLPs), ``device="cpu"``.
  * SB3 defaults already match CleanRL: orthogonal init (sqrt(2) hidden, 0.01 policy head,
    1.0 value head; ``ortho_init=True``), Adam eps=1e-5 (SB3 sets it for Adam),
    per-minibatch advantage normalisation, global-norm gradient clipping.
  * ``--anneal-lr`` (default on): ``learning_rate`` is a schedule of SB3's
    ``progress_remaining`` (updated once per rollout): lr * progress_remaining =
    lr * (1 - (update-1)/num_updates), i.e. CleanRL's per-update linear annealing.
  * total_timesteps is rounded DOWN to a whole number of updates (as PureJaxRL/ppox).
  * ``torch.set_num_threads(--torch-threads)`` (default 1, to compare with
    single-threaded XLA); interop threads are set to 1.

Settings SB3 cannot match exactly:
  * vf_coef: SB3's value loss is ``F.mse_loss(returns, v)`` (no 0.5 factor) while
    CleanRL/PureJaxRL use ``0.5 * mean((v - ret)^2)``; we pass ``vf_coef/2`` to SB3 so
    the effective value-loss weight is the same (recorded as ``sb3_vf_coef``).
  * Value clipping (``--clip-vloss``, default on -> ``clip_range_vf=clip_eps``): SB3
    clips the prediction, ``mse(ret, v_old + clamp(v - v_old, -eps, eps))``; CleanRL takes
    ``max(unclipped, clipped)`` squared errors. Not identical.
  * Time-limit truncation: SB3 bootstraps truncated episodes (adds gamma*V(final obs)
    to the last reward when ``TimeLimit.truncated``); CleanRL/PureJaxRL/gymnax do not.
  * No compilation: ``compile_s`` is 0.0; ``setup_s`` is the model construction time.
  * Each repeat builds a fresh model (seed+r) and calls ``learn()``; ``run_s`` is the
    ``learn()`` wall time (rollouts in Python env loop + PyTorch updates).
"""

from __future__ import annotations

import argparse
import contextlib
import time

import _common


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    _common.add_common_args(p)
    p.add_argument("--torch-threads", type=int, default=1,
                   help="torch.set_num_threads (default 1, comparable with 1-thread XLA)")
    p.add_argument("--clip-vloss", type=_common.str2bool, default=True,
                   help="value clipping (clip_range_vf=clip_eps), default on")
    args = p.parse_args()

    import numpy as np
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import DummyVecEnv

    torch.set_num_threads(args.torch_threads)
    with contextlib.suppress(RuntimeError):  # already set in this process
        torch.set_num_interop_threads(1)

    E, T = args.num_envs, args.num_steps
    K, M = args.update_epochs, args.num_minibatches
    batch = E * T
    if batch % M:
        raise SystemExit(f"num_envs*num_steps={batch} not divisible by num_minibatches={M}")
    num_updates = args.total_timesteps // batch
    if num_updates < 1:
        raise SystemExit("total_timesteps < num_envs*num_steps")
    total = num_updates * batch

    lr0 = args.learning_rate
    learning_rate = (lambda progress_remaining: lr0 * progress_remaining) if args.anneal_lr \
        else lr0
    sb3_vf_coef = args.vf_coef / 2.0

    def build(seed: int) -> PPO:
        venv = make_vec_env(args.env, n_envs=E, seed=seed, vec_env_cls=DummyVecEnv)
        return PPO(
            "MlpPolicy",
            venv,
            learning_rate=learning_rate,
            n_steps=T,
            batch_size=batch // M,
            n_epochs=K,
            gamma=args.gamma,
            gae_lambda=args.gae_lambda,
            clip_range=args.clip_eps,
            clip_range_vf=args.clip_eps if args.clip_vloss else None,
            normalize_advantage=True,
            ent_coef=args.ent_coef,
            vf_coef=sb3_vf_coef,
            max_grad_norm=args.max_grad_norm,
            policy_kwargs=dict(
                net_arch=dict(pi=list(args.hidden), vf=list(args.hidden)),
                activation_fn=torch.nn.Tanh,
                ortho_init=True,
            ),
            stats_window_size=100,
            verbose=0,
            seed=seed,
            device="cpu",
        )

    setup_s, run_s, sps, returns, n_eps = [], [], [], [], []
    for r in range(args.repeats):
        t0 = time.perf_counter()
        model = build(args.seed + r)
        setup_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        model.learn(total_timesteps=total, progress_bar=False)
        dt = time.perf_counter() - t0
        if model.num_timesteps != total:
            raise SystemExit(f"sb3 ran {model.num_timesteps} steps, expected {total}")
        run_s.append(dt)
        sps.append(total / dt)
        eps = [ep["r"] for ep in model.ep_info_buffer]
        returns.append(float(np.mean(eps)) if eps else float("nan"))
        n_eps.append(len(eps))
        _common.log(f"[sb3] repeat {r}: {dt:.2f}s, {total / dt:,.0f} sps, "
                    f"return {returns[-1]:.1f} over last {len(eps)} episodes")
        model.env.close()

    _common.emit({
        "peer": "sb3",
        "versions": _common.versions("stable-baselines3", "torch", "gymnasium", "numpy"),
        "config": {
            "env": args.env, "num_envs": E, "num_steps": T, "update_epochs": K,
            "num_minibatches": M, "minibatch_size": batch // M, "hidden": list(args.hidden),
            "activation": "tanh", "total_timesteps": total,
            "total_timesteps_requested": args.total_timesteps, "num_updates": num_updates,
            "learning_rate": lr0, "anneal_lr": args.anneal_lr, "gamma": args.gamma,
            "gae_lambda": args.gae_lambda, "clip_eps": args.clip_eps,
            "clip_vloss": args.clip_vloss, "ent_coef": args.ent_coef,
            "vf_coef": args.vf_coef, "sb3_vf_coef": sb3_vf_coef,
            "max_grad_norm": args.max_grad_norm, "adam_eps": 1e-5, "init": "orthogonal",
            "vec_env": "DummyVecEnv", "device": "cpu", "torch_threads": args.torch_threads,
            "seed": args.seed, "repeats": args.repeats,
        },
        "compile_s": 0.0,
        "compile_kind": "none (eager PyTorch); setup_s = model construction",
        "setup_s": setup_s,
        "run_s": run_s,
        "sps": sps,
        "final_return": float(np.mean(returns)),
        "return_kind": "train: mean of the last <=100 completed training episodes "
                       "(SB3 Monitor / ep_info_buffer), mean over repeats",
        "final_return_per_repeat": returns,
        "episodes_in_window": n_eps,
    })


if __name__ == "__main__":
    main()
