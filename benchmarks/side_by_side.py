"""ppox side by side with peer PPOs, in one run: interleaved fresh processes, medians, ratios.

Every measurement runs in its own fresh process, ppox included (``python
benchmarks/worker.py train '<json>'`` prints the same JSON fields as the peer runners in
``benchmarks/peers/``); over ``--rounds`` rounds the implementations run interleaved
(A B C, C B A, ...), and the table shows medians over rounds, the ratios ppox/peer of
steps per second and compile time, and the final return of each, so speed is not bought
with worse learning. "All programs" is the time a process spent tracing, lowering and
compiling every program it built, evaluation included, by JAX's own clock
(``benchmarks/peers/_compile_clock.py``), where the runner reports it (ppox's worker and
Brax's runner): the compile figure of Brax's runner is its training epoch alone. A peer
whose venv does not exist is skipped with a note (and ``"skipped": reason`` in the JSON).

Suites:
  * ``cartpole``: CartPole-v1, 4 envs x 128 steps, 4 epochs, 4 minibatches, 64x64 tanh
    MLPs, 500k steps (quick: 100k), against rejax (same jax/XLA as ppox) and SB3 (PyTorch;
    ~5k steps/s here, so it gets a smaller budget, 100k steps (quick: 20k): its steps/s
    barely depends on the budget, its final return does -- the table says so).
    On a multi-core host ppox also runs as ``ppox-dp``: the same single run split across
    one XLA CPU device per core (``ppox train --data-parallel``), since one XLA CPU
    process runs these small ops on one core; its ratios to each peer are printed under
    the table. The peers' single runs cannot use a second core. ``--peers ... purejaxrl
    --purejaxrl CLONE`` adds PureJaxRL's own ``ppo.py`` (in the rejax venv; same jax), timed
    the same way (compile apart, then the runs). It also runs as
    ``ppox-split`` (``ppox train --split-networks``): one run on two devices, the actor's
    and the critic's SGD steps at the same time, the arithmetic of one device
    (``--ppox-split-per-network`` adds ``ppox-split-pn``: the same with each network's
    gradient norm clipped on its own, ``grad_clip="per_network"``).
  * ``brax``: brax/inverted_pendulum and brax/halfcheetah (spring backend) at 256 and 1024
    envs, ppox's per-env defaults (``ppox.defaults``) mapped to Brax's own PPO trainer
    (``num_envs=E, unroll_length=T, batch_size=E/M, num_minibatches=M,
    num_updates_per_batch=K``); equal step counts (a multiple of brax's epoch size); both
    report a deterministic evaluation after training (brax's evaluator; ppox.evaluate, same
    episode count). The brax peer runs jax 0.6.2 (a different XLA from ppox's 0.10.2).

  * ``playground``: playground/CartpoleBalance (DM Control Suite, MJX ``impl=jax``) with
    ppox's Playground defaults (``ppox.defaults.playground_defaults``: Playground's published
    Brax-PPO settings) at the learning test's budget, 32 envs x 64 steps, 4 epochs of 4
    minibatches, 410k steps (quick: 82k), against Playground's documented training (Brax's
    ``ppo.train`` with ``dm_control_suite_params``, ``benchmarks/peers/run_playground_ppo.py``)
    mapped to the same update; both report a deterministic evaluation of 8 full episodes.
    The peer runs jax 0.9.2 (brax 0.14.2's trainer fails on jax 0.10), and keeps
    Playground's reward_scaling 10 and time-outs treated as terminations.

    python benchmarks/side_by_side.py --quick                  # ~2 min
    python benchmarks/side_by_side.py                          # cartpole, ~8 min
    python benchmarks/side_by_side.py --suite brax --quick     # ~5 min
    python benchmarks/side_by_side.py --suite brax             # ~20 min
    python benchmarks/side_by_side.py --suite playground --rounds 1   # ~10 min
    python benchmarks/side_by_side.py --peers rejax purejaxrl --purejaxrl CLONE --num-envs 4 1024

Writes ``benchmarks/results/<machine>/side_by_side_<suite>.json`` (every process's JSON,
the exact commands, ``machine_info()``) and ``side_by_side_<suite>.png``.
"""

from __future__ import annotations

import atexit
import dataclasses
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import tyro

from benchmarks._common import argv_string, machine_info, results_dir, save_json
from benchmarks.harness.peers import (
    Job,
    cartpole_comparison_config,
    extract_purejaxrl,
    peer_job,
    ppox_job,
    run_side_by_side,
    summarize_side_by_side,
)
from benchmarks.harness.plots import plot_side_by_side
from benchmarks.harness.tables import side_by_side_table


@dataclasses.dataclass(frozen=True)
class Args:
    """ppox side by side with rejax, SB3 (suite cartpole), Brax's PPO (suite brax) or
    Playground's own training (suite playground)."""

    suite: Literal["cartpole", "brax", "playground"] = "cartpole"
    """which comparison: CartPole-v1 vs rejax and SB3, brax tasks vs Brax's trainer, or
    Playground's DM Control Suite vs Playground's own training (Brax's trainer)"""
    quick: bool = False
    """small budgets, one round"""
    rounds: int | None = None
    """fresh processes per implementation (default: cartpole 5, brax and playground 2;
    quick 1)"""
    repeats: int | None = None
    """timed runs inside each process after its compile (default 2 cartpole, 1 brax)"""
    peers: tuple[str, ...] | None = None
    """peers to include (default: rejax sb3 for cartpole, brax for brax, playground for
    playground)"""
    num_envs: tuple[int, ...] | None = None
    """num_envs values (default: cartpole 4; brax 256 1024 (quick: 256); playground 32)"""
    steps: int | None = None
    """training steps of ppox and rejax / of each brax task (default: see the suite)"""
    sb3_steps: int | None = None
    """SB3's steps (default 100k, quick 20k)"""
    envs: tuple[str, ...] | None = None
    """brax suite: tasks (default: inverted_pendulum halfcheetah; quick: inverted_pendulum);
    playground suite: DM Control Suite envs (default: CartpoleBalance)"""
    api: Literal["fused", "train_runs"] = "fused"
    """ppox program: one fused jit(make_train) (as the rejax runner times rejax) or
    train_runs (what `ppox train` runs: chunks, host metrics)"""
    ppox_xla_flags: str = ""
    """extra XLA flags for the ppox processes only (e.g. to measure a flag's effect)"""
    ppox_env: tuple[str, ...] = ()
    """KEY=VALUE environment variables for the ppox processes only (e.g.
    PPOX_ROLLED_THREEFRY=1 or PPOX_ENV_XLA_FLAGS=0)"""
    ppox_set: tuple[str, ...] = ()
    """KEY=VALUE config settings over the suite's config for the ppox processes only (e.g.
    auto_reset=first_state); a value is read as TOML, else as a string"""
    also_ppox_flags: bool = False
    """run ppox twice: as it comes, and with --ppox-xla-flags, --ppox-env and --ppox-set
    (as "ppox+flags")"""
    ppox_dp: bool | None = None
    """also run ppox with its one run split across every CPU core (``--data-parallel``,
    one XLA device per core), as "ppox-dp" (default: on for cartpole on a multi-core host,
    off for brax); the peers run one process on one core as they come"""
    ppox_split: bool | None = None
    """also run ppox with the actor's and the critic's updates on two devices at once
    (``--split-networks``), as "ppox-split" (default: on for cartpole on a multi-core host,
    off for brax)"""
    ppox_split_per_network: bool = False
    """also run ppox-split with ``grad_clip="per_network"`` (each network's gradient norm
    clipped on its own, as with separate actor and critic optimizers; no collective per
    SGD step), as "ppox-split-pn" """
    ppox_compile_split: bool = False
    """also compile ppox's init and its training program apart, after the timed runs (in
    the round lines and the JSON as compile_split_s): Brax's runner counts only its
    training program's compile, its reset compiling apart"""
    purejaxrl: Path | None = None
    """cartpole suite, ``--peers ... purejaxrl``: a local clone of
    github.com/luchris429/purejaxrl (work tree or bare git directory, its HEAD); its
    ``ppo.py`` runs in the rejax venv (``benchmarks/peers/run_purejaxrl.py --timed``)"""
    machine: str | None = None
    """results folder name (default: this machine's name)"""


# Brax suite budgets: steps per (task, num_envs), each a multiple of brax's epoch size
# (2 training epochs with --num-evals 3: 2 x k x num_envs x 32 steps). Chosen so the full
# suite (2 rounds, ppox + brax) fits in ~20 min on a 2-core CPU, where halfcheetah trains
# at ~5-8k steps/s. Quick: one task, one size, one round.
BRAX_STEPS = {
    ("inverted_pendulum", 256): 1_015_808,   # 2 epochs x 62 updates x 8192
    ("inverted_pendulum", 1024): 1_048_576,  # 2 x 16 x 32768
    ("halfcheetah", 256): 131_072,           # 2 x 8 x 8192
    ("halfcheetah", 1024): 131_072,          # 2 x 2 x 32768
}
BRAX_EVAL_EPISODES = {"inverted_pendulum": 128, "halfcheetah": 16}


def _round_to(steps: int, unit: int) -> int:
    return max(unit, unit * round(steps / unit))


def _key_value(flag: str, pair: str, example: str) -> tuple[str, str]:
    """``KEY=VALUE`` split at the first ``=``; anything else is one ``error:`` line, exit 2."""
    key, sep, value = pair.partition("=")
    if not sep or not key or not key.replace("_", "").isalnum():
        print(f"error: {flag} {pair!r}: expected KEY=VALUE, e.g. {example}", file=sys.stderr)
        raise SystemExit(2)
    return key, value


def ppox_env_vars(pairs: Sequence[str]) -> dict[str, str]:
    """``--ppox-env`` values (``KEY=VALUE``) as a dict; a malformed one is a usage error."""
    return dict(_key_value("--ppox-env", p, "PPOX_ROLLED_THREEFRY=1") for p in pairs)


def ppox_settings(cfg: Any, pairs: Sequence[str]) -> Any:
    """``cfg`` with the ``--ppox-set`` settings (``KEY=VALUE``, the value read as TOML, else
    as a string); a malformed or invalid one is a usage error."""
    import tomllib

    from ppox.config import ConfigError, config_from_dict, config_to_dict

    data = config_to_dict(cfg)
    for pair in pairs:
        key, text = _key_value("--ppox-set", pair, "auto_reset=first_state")
        try:
            data[key] = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            data[key] = text
    try:
        new = config_from_dict(data)
        new.validate()
    except ConfigError as err:
        print(f"error: --ppox-set: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    return new


def ppox_jobs(args: Args, cfg: Any, hp: Any, repeats: int,
              eval_episodes: int = 0) -> list[Job]:
    """ppox as it comes (with ``--ppox-xla-flags``, ``--ppox-env`` and ``--ppox-set`` if
    given), or both with ``--also-ppox-flags``; the multi-device variants asked for."""
    env_vars, set_cfg = ppox_env_vars(args.ppox_env), ppox_settings(cfg, args.ppox_set)

    def job(c: Any, name: str = "ppox", api: str = args.api, **kw: Any) -> Job:
        return ppox_job(c, hp, repeats=repeats, api=api, eval_episodes=eval_episodes,
                        compile_split=args.ppox_compile_split, name=name, **kw)

    if args.also_ppox_flags and (args.ppox_xla_flags or env_vars or args.ppox_set):
        jobs = [job(cfg), job(set_cfg, "ppox+flags", xla_flags=args.ppox_xla_flags,
                              env_vars=env_vars)]
    else:
        jobs = [job(set_cfg, xla_flags=args.ppox_xla_flags, env_vars=env_vars)]
        cfg = set_cfg
    if args.ppox_set:
        jobs[-1].note = "; ".join(filter(None, [jobs[-1].note, *args.ppox_set]))
    multi_core_cartpole = args.suite == "cartpole" and (os.cpu_count() or 1) > 1
    for flag, api, name in ((args.ppox_dp, "data_parallel", "ppox-dp"),
                            (args.ppox_split, "split_networks", "ppox-split")):
        if flag if flag is not None else multi_core_cartpole:
            jobs.append(job(cfg, name, api, xla_flags=args.ppox_xla_flags))
    if args.ppox_split_per_network:
        jobs.append(job(cfg.replace(grad_clip="per_network"), "ppox-split-pn",
                        "split_networks", xla_flags=args.ppox_xla_flags))
    return jobs


def cartpole_jobs(args: Args, num_envs: int) -> tuple[str, list[Job]]:
    """ppox, rejax and SB3 on CartPole-v1 at ``num_envs`` envs."""
    steps = args.steps or (100_000 if args.quick else 500_000)
    cfg, hp = cartpole_comparison_config(num_envs, steps)
    repeats = args.repeats or 2
    jobs = ppox_jobs(args, cfg, hp, repeats)
    for peer in args.peers or ("rejax", "sb3"):
        if peer == "sb3":
            sb3_cfg = cfg.replace(total_timesteps=args.sb3_steps or
                                  (20_000 if args.quick else 100_000))
            jobs.append(peer_job("sb3", sb3_cfg, hp, repeats=1,
                                 note=f"SB3 at {sb3_cfg.total_timesteps:,d} steps (slow: "
                                 "steps/s compared, its return is at this smaller budget)"))
        elif peer == "rejax":
            jobs.append(peer_job("rejax", cfg, hp, repeats=repeats))
        elif peer == "purejaxrl":
            jobs.append(purejaxrl_job(args, cfg, hp, repeats))
        else:
            raise SystemExit(f"peer {peer!r} is not a CartPole peer (rejax, sb3, purejaxrl)")
    return f"CartPole-v1 {num_envs} envs, {steps:,d} steps", jobs


def purejaxrl_job(args: Args, cfg: Any, hp: Any, repeats: int) -> Job:
    """PureJaxRL's own ``ppo.py``, read from ``--purejaxrl`` into a folder of this process's
    (kept until it exits), timed apart from its compile; skipped, saying why, without it."""
    if args.purejaxrl is None:
        return Job("purejaxrl", None, skipped="no --purejaxrl CLONE given (PureJaxRL is not "
                   "on PyPI; clone github.com/luchris429/purejaxrl)")
    folder = Path(tempfile.mkdtemp(prefix="ppox-purejaxrl-"))
    atexit.register(shutil.rmtree, folder, True)
    source = extract_purejaxrl(args.purejaxrl, "HEAD", folder)
    return peer_job("purejaxrl", cfg, hp, repeats=repeats,
                    extra=["--timed", "--script-dir", str(folder)],
                    note=f"purejaxrl/ppo.py from {source}, in the rejax venv")


def brax_jobs(args: Args, task: str, num_envs: int) -> tuple[str, list[Job]]:
    """ppox and Brax's PPO on ``brax/<task>`` at ``num_envs`` envs, ppox's defaults."""
    from ppox.defaults import resolve

    cfg, hp = resolve(f"brax/{task}")
    cfg = cfg.replace(num_envs=num_envs)
    unit = 2 * cfg.batch_size  # brax: 2 training epochs (num_evals 3), >= 1 update each
    steps = args.steps or BRAX_STEPS.get((task, num_envs), 500_000)
    if args.quick and not args.steps:
        steps = steps // 4
    steps = _round_to(steps, unit)
    cfg = cfg.replace(total_timesteps=steps)
    episodes = BRAX_EVAL_EPISODES.get(task, 16)
    repeats = args.repeats or 1
    jobs = ppox_jobs(args, cfg, hp, repeats, eval_episodes=episodes)
    for peer in args.peers or ("brax",):
        if peer != "brax":
            raise SystemExit(f"peer {peer!r} is not a brax peer (brax)")
        jobs.append(peer_job("brax", cfg, hp, repeats=repeats,
                             extra=["--num-evals", "3", "--num-eval-envs", str(episodes)],
                             note="jax 0.6.2 (a different XLA); eval: deterministic, "
                                  f"{episodes} episodes"))
    return f"{task} {num_envs} envs, {steps:,d} steps", jobs


# Playground suite: the budget of tests/integration/test_playground_learning.py (ppox learns
# CartpoleBalance there), 8 deterministic 1000-step evaluation episodes.
PLAYGROUND_BUDGET = dict(num_envs=32, num_steps=64, update_epochs=4, num_minibatches=4)
PLAYGROUND_STEPS = 400_000
PLAYGROUND_EVAL_EPISODES = 8
PLAYGROUND_RESETS = 10  # dm_control_suite_params' num_resets_per_eval (the runner checks)


def playground_jobs(args: Args, task: str, num_envs: int) -> tuple[str, list[Job]]:
    """ppox and Playground's own training on ``playground/<task>`` at ``num_envs`` envs."""
    from ppox.defaults import resolve

    cfg, hp = resolve(f"playground/{task}")
    cfg = cfg.replace(**{**PLAYGROUND_BUDGET, "num_envs": num_envs})
    # brax: 2 training epochs (num_evals 3) of PLAYGROUND_RESETS scans of >= 1 update each
    unit = 2 * PLAYGROUND_RESETS * cfg.batch_size
    steps = args.steps or (PLAYGROUND_STEPS // 4 if args.quick else PLAYGROUND_STEPS)
    cfg = cfg.replace(total_timesteps=_round_to(steps, unit))
    repeats = args.repeats or 1
    episodes = PLAYGROUND_EVAL_EPISODES
    jobs = ppox_jobs(args, cfg, hp, repeats, eval_episodes=episodes)
    for peer in args.peers or ("playground",):
        if peer != "playground":
            raise SystemExit(f"peer {peer!r} is not a playground peer (playground)")
        jobs.append(peer_job("playground", cfg, hp, repeats=repeats,
                             extra=["--num-evals", "3", "--num-eval-envs", str(episodes)],
                             note="Playground's documented training (brax 0.14.2 ppo.train, "
                                  "dm_control_suite_params) on jax 0.9.2 (a different XLA); "
                                  "keeps reward_scaling 10 and time-outs as terminations; "
                                  f"eval: deterministic, {episodes} episodes"))
    return f"{task} {num_envs} envs, {cfg.total_timesteps:,d} steps", jobs


def main(argv: list[str] | None = None) -> int:
    args = tyro.cli(Args, args=argv, description=__doc__.split("\n")[0])
    t_start = time.perf_counter()
    rounds = args.rounds or (1 if args.quick else (5 if args.suite == "cartpole" else 2))
    groups: list[tuple[str, list[Job]]] = []
    if args.suite == "cartpole":
        for n in args.num_envs or (4,):
            groups.append(cartpole_jobs(args, n))
    elif args.suite == "playground":
        for task in args.envs or ("CartpoleBalance",):
            for n in args.num_envs or (PLAYGROUND_BUDGET["num_envs"],):
                groups.append(playground_jobs(args, task.removeprefix("playground/"), n))
    else:
        tasks = args.envs or (("inverted_pendulum",) if args.quick
                              else ("inverted_pendulum", "halfcheetah"))
        sizes = args.num_envs or ((256,) if args.quick else (256, 1024))
        for task in tasks:
            for n in sizes:
                groups.append(brax_jobs(args, task.removeprefix("brax/"), n))

    out = {"command": argv_string(), "machine": machine_info(), "suite": args.suite,
           "quick": args.quick, "rounds": rounds, "api": args.api, "comparisons": {}}
    summaries = {}
    for title, jobs in groups:
        print(f"\n== {title}: {rounds} round(s), fresh process per run", flush=True)
        raw = run_side_by_side(jobs, rounds, log=lambda s: print(s, flush=True))
        summary = summarize_side_by_side(raw)
        summaries[title] = summary
        out["comparisons"][title] = {"raw": raw, "summary": summary,
                                     "notes": {j.name: j.note for j in jobs if j.note}}
        print(side_by_side_table(summary), flush=True)
        for j in jobs:
            if j.note:
                print(f"  note ({j.name}): {j.note}")
    out["wall_s"] = time.perf_counter() - t_start
    folder = results_dir(args.machine)
    # the suite's default envs keep the plain name; other --envs get theirs in it
    stem = f"side_by_side_{args.suite}" + ("".join(f"_{e.lower()}" for e in args.envs)
                                           if args.envs else "")
    path = save_json(folder / f"{stem}.json", out)
    png = plot_side_by_side(summaries, folder / f"{stem}.png",
                            title=f"ppox vs peers ({args.suite}), median of {rounds} round(s)")
    print(f"\nwrote {path} and {png} ({out['wall_s']:.0f} s in all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
