"""Side by side with the peers: their runner commands, one job per implementation, the
interleaved runner (a fresh process per measurement) and the summary of medians and ratios."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks.harness.machine import ratio
from benchmarks.harness.workers import (
    REPO_ROOT,
    run_json_process,
    shown_command,
    train_command,
    worker_env,
)
from ppox.diagnostics import median

#: Each peer's runner script under ``benchmarks/peers/`` (its venv: ``.venvs/peer-<name>``).
PEER_RUNNERS = {"rejax": "run_rejax.py", "brax": "run_brax_ppo.py", "sb3": "run_sb3.py",
                "playground": "run_playground_ppo.py", "purejaxrl": "run_purejaxrl.py"}
#: Peers that run in another peer's venv: PureJaxRL (not on PyPI) in rejax's, which has the
#: gymnax API its script is written for and the same jax as ppox.
PEER_VENVS = {"purejaxrl": "rejax"}


def peer_command(peer: str) -> tuple[list[str] | None, str | None]:
    """``([python, runner], None)`` for a peer, or ``(None, why it is skipped)``."""
    runner = REPO_ROOT / "benchmarks" / "peers" / PEER_RUNNERS[peer]
    venv = PEER_VENVS.get(peer, peer)
    python = REPO_ROOT / ".venvs" / f"peer-{venv}" / "bin" / "python"
    if not runner.is_file():
        return None, f"{runner} is missing"
    if not python.exists():
        return None, (f"no venv at {python.parent.parent}; build it with "
                      f"`benchmarks/peers/build_venv.sh {venv}`")
    return [str(python), str(runner)], None


def extract_purejaxrl(source: Path, commit: str, dest: Path) -> str:
    """Copies PureJaxRL's ``ppo.py`` and ``wrappers.py`` into ``dest``; returns what was read
    (a work tree's path, or the commit of a git directory)."""
    tree = source / "purejaxrl"
    if (tree / "ppo.py").is_file():
        for name in ("ppo.py", "wrappers.py"):
            shutil.copy(tree / name, dest / name)
        return str(tree)
    git = ["git", "--git-dir", str(source)]
    resolved = subprocess.run([*git, "rev-parse", commit], capture_output=True, text=True,
                              check=True).stdout.strip()
    for name in ("ppo.py", "wrappers.py"):
        text = subprocess.run([*git, "show", f"{resolved}:purejaxrl/{name}"],
                              capture_output=True, text=True, check=True).stdout
        (dest / name).write_text(text)
    return f"{source} at {resolved}"


def _hidden_flag(widths: Sequence[int]) -> str:
    return ",".join(str(int(w)) for w in widths)


def peer_args(peer: str, cfg: Any, hp: Any, *, repeats: int = 1, seed: int = 0,
              extra: Sequence[str] = ()) -> list[str]:
    """The runner flags that give ``peer`` the same settings as ``(cfg, hp)``.

    Core flags (every runner): env, envs, rollout length, epochs, minibatches, network
    widths, steps, learning rate and its annealing, gamma, lambda, clip, entropy and value
    coefficients, grad-norm clip. Brax also gets its critic widths, backend, episode length
    and observation normalization; one ppox update maps to ``num_envs=E, unroll_length=T,
    batch_size=E/M, num_minibatches=M, num_updates_per_batch=K`` (see the runner).
    Playground gets the same mapping, its env's ``impl``, episode length and action repeat
    from ``cfg.env_config`` (where absent: jax, and the env's own 1000 and 1).
    """
    env = cfg.env_id.removeprefix("brax/").removeprefix("playground/")
    args = [
        "--env", env, "--num-envs", str(cfg.num_envs),
        "--num-steps", str(cfg.num_steps), "--update-epochs", str(cfg.update_epochs),
        "--num-minibatches", str(cfg.num_minibatches),
        "--hidden", _hidden_flag(cfg.actor_hidden),
        "--total-timesteps", str(cfg.total_timesteps),
        "--learning-rate", repr(float(hp.learning_rate)),
        "--anneal-lr", str(bool(cfg.anneal_lr)).lower(),
        "--gamma", repr(float(hp.gamma)), "--gae-lambda", repr(float(hp.gae_lambda)),
        "--clip-eps", repr(float(hp.clip_eps)), "--ent-coef", repr(float(hp.ent_coef)),
        "--vf-coef", repr(float(hp.vf_coef)),
        "--max-grad-norm", repr(float(hp.max_grad_norm)),
        "--seed", str(seed), "--repeats", str(repeats),
    ]
    if peer == "brax":
        args += ["--critic-hidden", _hidden_flag(cfg.critic_hidden),
                 "--backend", cfg.backend, "--episode-length", str(cfg.episode_length),
                 "--action-repeat", str(cfg.action_repeat),
                 "--normalize-observations", str(bool(cfg.normalize_obs)).lower()]
    elif peer == "playground":
        args += _playground_args(cfg)
    elif tuple(cfg.critic_hidden) != tuple(cfg.actor_hidden):
        raise ValueError(f"{peer} uses the same widths for actor and critic; got "
                         f"{cfg.actor_hidden} and {cfg.critic_hidden}")
    return [*args, *extra]


def _playground_args(cfg: Any) -> list[str]:
    from ppox.envs.playground import parse_env_config

    env_config = {"impl": "jax", "episode_length": 1000, "action_repeat": 1,
                  **parse_env_config(cfg.env_config)}
    unknown = sorted(set(env_config) - {"impl", "episode_length", "action_repeat"})
    if unknown:
        raise ValueError(f"the playground peer takes no env option {unknown[0]!r}")
    if cfg.num_envs % cfg.num_minibatches:
        raise ValueError(f"num_envs={cfg.num_envs} must be divisible by num_minibatches="
                         f"{cfg.num_minibatches} (brax's batch_size = num_envs / minibatches)")
    return ["--critic-hidden", _hidden_flag(cfg.critic_hidden),
            "--batch-size", str(cfg.num_envs // cfg.num_minibatches),
            "--impl", str(env_config["impl"]),
            "--episode-length", str(env_config["episode_length"]),
            "--action-repeat", str(env_config["action_repeat"]),
            "--normalize-observations", str(bool(cfg.normalize_obs)).lower()]


@dataclasses.dataclass
class Job:
    """One implementation of a side-by-side comparison: how to start one measurement.

    ``cmd_for_round(r)`` is the command of round ``r`` (the seed advances with the round,
    the same seeds for every implementation); ``cmd`` is round 0's. ``skipped`` says why a
    job cannot run (then ``cmd`` is None).
    """

    name: str
    cmd: list[str] | None
    env: dict[str, str] | None = None
    skipped: str | None = None
    note: str = ""
    cmd_for_round: Callable[[int], list[str]] | None = None

    def command(self, round_index: int) -> list[str]:
        assert self.cmd is not None
        return self.cmd_for_round(round_index) if self.cmd_for_round else self.cmd


def _ppox_notes(cfg: Any, api: str) -> list[str]:
    from ppox._platform import env_cpu_xla_flags

    notes = []
    if env_cpu_xla_flags(cfg.env_id):  # the worker applies them, as `ppox train` does
        notes.append(f"ppox's per-env XLA CPU flags {' '.join(env_cpu_xla_flags(cfg.env_id))}")
    if api == "data_parallel":
        notes.append("one run split across one XLA CPU device per core")
    elif api == "split_networks":
        notes.append("one run, actor and critic updated on two XLA CPU devices at once")
    if getattr(cfg, "grad_clip", "global") != "global":
        notes.append(f"grad_clip={cfg.grad_clip}")
    return notes


def ppox_job(cfg: Any, hp: Any, *, repeats: int = 1, seed: int = 0, api: str = "fused",
             eval_episodes: int = 0, name: str = "ppox", xla_flags: str = "",
             env_vars: Mapping[str, str] | None = None, compile_split: bool = False) -> Job:
    """The ppox side of a comparison (a fresh ``benchmarks/worker.py train`` process).

    ``xla_flags`` are appended to ``XLA_FLAGS`` and ``env_vars`` set in the environment of
    the ppox processes only (to measure a flag's or a setting's effect on ppox, e.g.
    ``PPOX_ROLLED_THREEFRY=1``, while the peers run as they come). ``compile_split``: the
    worker also compiles the init and the training program apart
    (``workers.compile_split``), after its timed runs.
    """

    def cmd(r: int) -> list[str]:
        return train_command(cfg, hp, repeats=repeats, seed=seed + r * repeats, api=api,
                             eval_episodes=eval_episodes, compile_split=compile_split)

    env, notes = worker_env(), _ppox_notes(cfg, api)
    if xla_flags:
        env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {xla_flags}".strip()
        notes.append(f"XLA_FLAGS += {xla_flags}")
    for key, value in (env_vars or {}).items():
        env[key] = value
        notes.append(f"{key}={value}")
    return Job(name, cmd(0), env=env, cmd_for_round=cmd, note="; ".join(notes))


def peer_job(peer: str, cfg: Any, hp: Any, *, repeats: int = 1, seed: int = 0,
             extra: Sequence[str] = (), note: str = "") -> Job:
    """A peer's side of a comparison, or a skipped job saying why."""
    base, why = peer_command(peer)
    if base is None:
        return Job(peer, None, skipped=why, note=note)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.setdefault("PYTHONUNBUFFERED", "1")

    def cmd(r: int) -> list[str]:
        return [*base, *peer_args(peer, cfg, hp, repeats=repeats, seed=seed + r * repeats,
                                  extra=extra)]

    return Job(peer, cmd(0), env=env, note=note, cmd_for_round=cmd)


def _round_line(r: int, rounds: int, name: str, res: Mapping[str, Any]) -> str:
    if "error" in res:
        return f"  round {r + 1}/{rounds} {name}: FAILED ({res['error']})"
    split = res.get("compile_split_s")
    parts = (f" (apart: init {split['init_s']:.1f} s, training program {split['train_s']:.1f} s)"
             if split else "")
    if "jax_compile" in res:
        parts += f"; all programs {res['jax_compile']['total_s']:.1f} s"
    return (f"  round {r + 1}/{rounds} {name}: compile {res['compile_s']:.1f} s{parts}, "
            f"{median(res['sps']):,.0f} steps/s, return "
            f"{res.get('final_return', float('nan')):.1f} ({res['process_wall_s']:.0f} s in all)")


def run_side_by_side(jobs: Sequence[Job], rounds: int, *, timeout: float | None = 1800.0,
                     log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Runs every job once per round, each in a fresh process, interleaved: A B C, then
    C B A, ... Returns ``{name: {"runs": [JSON of each process], "skipped": reason}}``."""
    out: dict[str, Any] = {}
    live = [j for j in jobs if j.cmd is not None]
    for j in jobs:
        out[j.name] = {"command": shown_command(j.cmd) if j.cmd else None, "runs": [],
                       "skipped": j.skipped, "note": j.note}
        if j.skipped and log:
            log(f"  skipping {j.name}: {j.skipped}")
    for r in range(rounds):
        for j in live if r % 2 == 0 else live[::-1]:
            cmd = j.command(r)
            res = run_json_process(cmd, timeout=timeout, env=j.env)
            res["round"] = r
            res["command"] = shown_command(cmd)
            out[j.name]["runs"].append(res)
            if log:
                log(_round_line(r, rounds, j.name, res))
    return out


def _summary(entry: Mapping[str, Any]) -> dict[str, Any]:
    """Medians over the successful runs of one implementation (or why it has none)."""
    ok = [r for r in entry["runs"] if "error" not in r]
    if entry.get("skipped") or not ok:
        return {"skipped": entry.get("skipped") or
                (entry["runs"][0].get("error") if entry["runs"] else "no runs")}
    sps = [s for r in ok for s in r["sps"]]
    config = ok[0].get("config") or {}
    return {
        "runs": len(ok),
        "sps_median": median(sps),
        "sps_all": sps,
        "compile_s_median": median([r["compile_s"] for r in ok]),
        # JAX's clock of every program the process built (``_compile_clock``), where the
        # runner reports it: the same instrument on both sides of a ratio
        "all_compile_s_median": median([r["jax_compile"]["total_s"] for r in ok
                                        if "jax_compile" in r]),
        "run_s_median": median([t for r in ok for t in r["run_s"]]),
        "total_timesteps": config.get("total_timesteps_run", config.get("total_timesteps")),
        "final_return_median": median([r["final_return"] for r in ok]),
        "final_returns": [r["final_return"] for r in ok],
        "return_kind": ok[0].get("return_kind"),
        "eval_return_median": median([r["eval_return"] for r in ok
                                      if r.get("eval_return") is not None]),
    }


def _ratios(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, float]:
    return {"sps_ratio": ratio(a["sps_median"], b["sps_median"]),
            "compile_ratio": ratio(a["compile_s_median"], b["compile_s_median"]),
            "all_compile_ratio": ratio(a["all_compile_s_median"], b["all_compile_s_median"])}


def summarize_side_by_side(results: Mapping[str, Any],
                           reference: str = "ppox") -> dict[str, dict[str, Any]]:
    """Medians over rounds (and repeats) per implementation, and ``reference / peer``
    ratios of steps/s and compile time. A variant of the reference (a name that starts with
    it: ``ppox-dp``, ``ppox+flags``) gets ``vs_peers``: its own ratios against the reference
    and every peer. Every raw number stays in ``results``."""
    summary = {name: _summary(entry) for name, entry in results.items()}
    ref = summary.get(reference)
    ok = {n: s for n, s in summary.items() if "skipped" not in s}
    peers = [n for n in ok if not n.startswith(reference)]
    if ref is not None and "skipped" not in ref:
        for name in peers:
            summary[name].update(_ratios(ref, summary[name]))
    for name, s in ok.items():  # variants of the reference ("ppox-dp", "ppox+flags")
        if name != reference and name.startswith(reference):
            s["vs_peers"] = {p: _ratios(s, ok[p]) for p in [reference, *peers] if p in ok}
    return summary


def cartpole_comparison_config(num_envs: int = 4,
                               total_timesteps: int = 500_000) -> tuple[Any, Any]:
    """The side-by-side CartPole setting: ppox's defaults (CleanRL/PureJaxRL: 128 steps,
    4 epochs, 4 minibatches, 64x64 tanh MLPs) with ``num_envs`` and ``total_timesteps``."""
    from ppox.defaults import resolve

    cfg, hp = resolve("CartPole-v1")
    return cfg.replace(num_envs=num_envs, total_timesteps=total_timesteps), hp
