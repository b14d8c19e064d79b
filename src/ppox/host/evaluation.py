"""Loading a trained policy from a run directory and evaluating it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ppox.config import ConfigError, HParams, PPOConfig, config_from_dict, hparams_from_dict
from ppox.host.checkpoint import POLICY_DIR, policy_tree, restore_tree
from ppox.host.configfile import read_run_file


@dataclass
class LoadedPolicy:
    """A trained policy: its config and the arrays evaluation needs (one run)."""

    cfg: PPOConfig
    hparams: HParams
    params: Any
    obs_stats: Any
    reward_stats: Any


def load_config(run_dir: str | Path) -> tuple[PPOConfig, HParams, int]:
    """(PPOConfig, HParams, number of runs) recorded in ``run_dir/config.toml``."""
    run_dir = Path(run_dir)
    path = run_dir / "config.toml"
    if not path.is_file():
        raise ConfigError(f"{str(run_dir)!r} is not a ppox run directory (no config.toml); "
                          "pass the --run-dir of a `ppox train` run")
    file = read_run_file(path)
    cfg = config_from_dict(file.config, PPOConfig(env_id=file.env or PPOConfig().env_id))
    return cfg, hparams_from_dict(file.hparams), int(file.num_seeds or 1)


def load_policy(run_dir: str | Path, run_index: int = 0) -> LoadedPolicy:
    """Loads run ``run_index`` of a run directory written by ``ppox train``/``train_runs``."""
    from ppox.trainer import make_init

    run_dir = Path(run_dir)
    cfg, hp, num_runs = load_config(run_dir)
    if not 0 <= run_index < num_runs:
        raise ConfigError(f"run_index={run_index} is out of range: {run_dir} holds "
                          f"{num_runs} run(s)")
    if not (run_dir / POLICY_DIR).exists():
        raise ConfigError(f"{str(run_dir)!r} has no saved policy yet (training unfinished?)")
    init = make_init(cfg)
    state_shape = jax.eval_shape(jax.vmap(init, in_axes=(0, None)),
                                 jnp.zeros((num_runs, 2), jnp.uint32), hp)
    tree = restore_tree(run_dir / POLICY_DIR, policy_tree(state_shape))
    one = jax.tree.map(lambda x: jnp.asarray(x[run_index]), tree)
    return LoadedPolicy(cfg=cfg, hparams=hp, params=one["params"],
                        obs_stats=one["obs_stats"], reward_stats=one["reward_stats"])


@dataclass
class EvalOutput:
    returns: np.ndarray  # [E]
    lengths: np.ndarray  # [E]
    html_path: Path | None


def evaluate_run(run_dir: str | Path, episodes: int = 16, seed: int = 0, run_index: int = 0,
                 html: str | Path | None = None, deterministic: bool = True) -> EvalOutput:
    """Deterministic episodes of a trained run; for brax also an HTML visualisation."""
    from ppox.evaluate import jit_evaluate

    pol = load_policy(run_dir, run_index)
    want_html = html is not None and pol.cfg.is_brax
    evaluate = jit_evaluate(pol.cfg, episodes, deterministic=deterministic,
                            keep_states=want_html)
    returns, lengths, states = evaluate(jax.random.PRNGKey(seed), pol.params, pol.obs_stats)
    html_path = None
    if want_html:
        from ppox.envs.brax import render_html
        from ppox.trainer import env_for

        env = env_for(pol.cfg).env
        html_path = Path(html)
        from ppox.host.configfile import atomic_write_text

        atomic_write_text(html_path, render_html(env, states, int(lengths[0])))
    return EvalOutput(np.asarray(returns), np.asarray(lengths), html_path)
