"""Peer baseline: rejax 0.1.3's PPO (pure JAX, gymnax envs), timed like ppox.

Run with the rejax venv:
  .venvs/peer-rejax/bin/python benchmarks/peers/run_rejax.py --env CartPole-v1
Prints one JSON line on stdout (logs go to stderr).

How the rejax PPO is set up here (read from rejax 0.1.3's installed source:
rejax/algos/ppo.py, algorithm.py, mixins.py, networks.py):
  * ``rejax.get_algo("ppo").create(env=<gymnax env object>, env_params=..., num_envs=E,
    num_steps=T, num_epochs=K, num_minibatches=M, learning_rate=..., gamma, gae_lambda,
    clip_eps, vf_coef, ent_coef, max_grad_norm, total_timesteps, eval_freq,
    skip_initial_evaluation, agent_kwargs={"activation": "tanh",
    "hidden_layer_sizes": (64, 64)})``.  ``algo.train(rng)`` runs
    ``ceil(total/eval_freq)`` blocks of ``ceil(eval_freq/(E*T))`` PPO iterations, calling
    ``algo.eval_callback`` after each block (its default: 128 episodes of its
    stochastic policy, vmapped ``while_loop`` -- costly, and inside the timed program).
  * Here: total_timesteps is rounded DOWN to a whole number of updates
    (PureJaxRL's ``num_updates = total // (E*T)``), ``eval_freq = total`` and
    ``skip_initial_evaluation=True`` so there is exactly one block, and the
    eval_callback is replaced (``algo.replace(eval_callback=...)``, the rejax way to
    customise it) by a no-op, so the timed program is training only.  rejax's own
    evaluation (``rejax.evaluate.evaluate``, 128 episodes, its stochastic ``make_act``
    policy) is run afterwards, untimed, and reported as ``eval_return``.
  * The env (``gymnax.make(env)``) is wrapped in gymnax's ``LogWrapper`` (PureJaxRL's)
    so the training returns can be read from the final env state: ``final_return`` is the mean over
    envs of each env's last COMPLETED training episode return
    (``returned_episode_returns``), averaged over repeats.
  * PPO core matches PureJaxRL: GAE computed once per rollout, per-minibatch advantage
    normalisation, clipped surrogate, clipped value loss (with clip_eps), shuffled
    minibatches of E*T/M transitions, K epochs, separate actor and critic MLPs.

Settings rejax 0.1.3 cannot match (documented, not patched):
  * max_grad_norm: rejax uses ``optax.clip(max_grad_norm)`` = ELEMENT-WISE value
    clipping of each gradient entry to [-0.5, 0.5], not ``clip_by_global_norm``.
  * Adam eps: rejax calls ``optax.adam(learning_rate)`` -> eps = 1e-8 (not 1e-5).
  * Two optimizers: actor and critic have separate TrainStates / Adam states and are
    updated one after the other on separate losses (pi_loss - ent*H ; vf_coef*v_loss).
    With separate networks this equals one joint loss, except for the separate
    clipping/Adam moments noted above.
  * Initialisation: flax default (lecun_normal kernels, zero bias), also on the
    output heads -- no orthogonal init, no 0.01 policy-head scale.
  * LR annealing: rejax has no schedule option; ``learning_rate`` is handed straight
    to ``optax.adam``, so ``--anneal-lr`` (default on) passes an optax schedule
    callable, PureJaxRL's ``lr * (1 - (count // (M*K)) / num_updates)``; each of the
    two Adam states counts its own minibatch steps, so both follow that schedule.
  * ``done`` is gymnax 0.0.9's terminated-or-truncated flag (no bootstrap at the
    500-step time limit) -- same as PureJaxRL.
"""

from __future__ import annotations

import argparse
import time

import _common


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    _common.add_common_args(p)
    p.add_argument("--normalize-observations", type=_common.str2bool, default=False)
    p.add_argument("--normalize-rewards", type=_common.str2bool, default=False)
    p.add_argument("--eval-episodes", type=int, default=128,
                   help="episodes of rejax's own (stochastic-policy) evaluation, untimed")
    args = p.parse_args()

    import gymnax
    import jax
    import jax.numpy as jnp
    import numpy as np
    import rejax
    from gymnax.wrappers.purerl import LogWrapper
    from rejax.evaluate import evaluate

    E, T = args.num_envs, args.num_steps
    K, M = args.update_epochs, args.num_minibatches
    batch = E * T
    if batch % M:
        raise SystemExit(f"num_envs*num_steps={batch} not divisible by num_minibatches={M}")
    num_updates = args.total_timesteps // batch
    if num_updates < 1:
        raise SystemExit("total_timesteps < num_envs*num_steps")
    total = num_updates * batch  # what is actually trained


    class _DeepcopyableLogWrapper(LogWrapper):
        # PureJaxRL's LogWrapper records episode returns in the env state. rejax deep-copies
        # its config (create(), the .config property), and gymnax 0.0.9's wrapper
        # __getattr__ recurses forever on a half-built copy; this guard is the only change.
        def __getattr__(self, name):
            if name.startswith("__") or name == "_env":
                raise AttributeError(name)
            return getattr(self._env, name)

    base_env, base_params = gymnax.make(args.env)

    lr0 = args.learning_rate
    if args.anneal_lr:
        def learning_rate(count):
            frac = 1.0 - (count // (M * K)) / num_updates
            return lr0 * frac
    else:
        learning_rate = lr0

    algo = rejax.get_algo("ppo").create(
        env=_DeepcopyableLogWrapper(base_env),
        env_params=base_params,
        num_envs=E,
        num_steps=T,
        num_epochs=K,
        num_minibatches=M,
        learning_rate=learning_rate,
        gamma=args.gamma,
        gae_lambda=args.gae_lambda,
        clip_eps=args.clip_eps,
        vf_coef=args.vf_coef,
        ent_coef=args.ent_coef,
        max_grad_norm=args.max_grad_norm,
        total_timesteps=total,
        eval_freq=total,
        skip_initial_evaluation=True,
        normalize_observations=args.normalize_observations,
        normalize_rewards=args.normalize_rewards,
        agent_kwargs={"activation": "tanh", "hidden_layer_sizes": tuple(args.hidden)},
    )
    env, env_params = algo.env, algo.env_params
    # Training only in the timed program: no evaluation inside train().
    algo = algo.replace(eval_callback=lambda algo, ts, rng: jnp.zeros((), jnp.float32))

    def train(key):
        ts, _ = algo.train(key)
        # Return only what is read afterwards (the whole state would also work).
        return ts

    key0 = jax.random.PRNGKey(args.seed)
    t0 = time.perf_counter()
    compiled = jax.jit(train).lower(key0).compile()
    compile_s = time.perf_counter() - t0
    _common.log(f"[rejax] compiled in {compile_s:.2f}s; {num_updates} updates x {batch} steps")

    run_s, sps, train_returns, eval_returns = [], [], [], []
    for r in range(args.repeats):
        key = jax.random.PRNGKey(args.seed + r)
        t0 = time.perf_counter()
        ts = jax.block_until_ready(compiled(key))
        dt = time.perf_counter() - t0
        run_s.append(dt)
        sps.append(total / dt)
        if int(ts.global_step) != total:
            raise SystemExit(f"rejax ran {int(ts.global_step)} steps, expected {total}")
        ret = np.asarray(ts.env_state.returned_episode_returns, dtype=np.float64)
        # an env that never finished an episode has 0 here: leave it out
        done_once = np.asarray(ts.env_state.returned_episode_lengths) > 0
        train_returns.append(float(ret[done_once].mean()) if done_once.any() else float("nan"))
        # rejax's own evaluation (as its default eval_callback does), untimed.
        act = algo.make_act(ts)
        _lengths, returns = evaluate(act, jax.random.PRNGKey(10_000 + r), env, env_params,
                                     args.eval_episodes, env_params.max_steps_in_episode)
        eval_returns.append(float(np.mean(np.asarray(returns))))
        _common.log(f"[rejax] repeat {r}: {dt:.3f}s, {total / dt:,.0f} sps, "
                    f"train return {train_returns[-1]:.1f}, eval return {eval_returns[-1]:.1f}")

    _common.emit({
        "peer": "rejax",
        "versions": _common.versions("rejax", "jax", "jaxlib", "flax", "optax", "gymnax",
                                     "chex", "distrax"),
        "config": {
            "env": args.env, "num_envs": E, "num_steps": T, "update_epochs": K,
            "num_minibatches": M, "minibatch_size": batch // M, "hidden": list(args.hidden),
            "activation": "tanh", "total_timesteps": total,
            "total_timesteps_requested": args.total_timesteps, "num_updates": num_updates,
            "learning_rate": lr0, "anneal_lr": args.anneal_lr, "gamma": args.gamma,
            "gae_lambda": args.gae_lambda, "clip_eps": args.clip_eps, "ent_coef": args.ent_coef,
            "vf_coef": args.vf_coef, "max_grad_norm": args.max_grad_norm,
            "max_grad_norm_kind": "optax.clip (element-wise value clip)",
            "adam_eps": 1e-8, "init": "flax default lecun_normal",
            "normalize_observations": args.normalize_observations,
            "normalize_rewards": args.normalize_rewards, "seed": args.seed,
            "repeats": args.repeats,
        },
        "compile_s": compile_s,
        "run_s": run_s,
        "sps": sps,
        "final_return": float(np.mean(train_returns)),
        "return_kind": "train: mean over envs of each env's last completed training episode "
                       "(gymnax LogWrapper), mean over repeats",
        "final_return_per_repeat": train_returns,
        "eval_return": float(np.mean(eval_returns)),
        "eval_return_kind": f"rejax.evaluate: {args.eval_episodes} episodes, stochastic policy "
                            "(rejax's make_act), untimed, mean over repeats",
        "eval_return_per_repeat": eval_returns,
        "jax_devices": [str(d) for d in jax.devices()],
    })


if __name__ == "__main__":
    main()
