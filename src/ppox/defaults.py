"""Per-environment default settings, applied under the config file and the CLI flags.

``resolve(env_id, algo)`` gives the ``PPOConfig`` and ``HParams`` a run starts from: the
global defaults (CleanRL / PureJaxRL's CartPole settings) overridden by the entry for that
env id, then by the algorithm's (``ALGO_DEFAULTS``, ``ALGO_ENV_DEFAULTS``).
The brax entries were tuned on a 2-core CPU (see the comments on each entry and the README).
"""

from __future__ import annotations

from typing import Any

from ppox.config import HParams, PPOConfig

# env id -> ({PPOConfig overrides}, {HParams overrides})
ENV_DEFAULTS: dict[str, tuple[dict[str, Any], dict[str, float]]] = {
    # Solves CartPole-v1 (final return >= 475) within 500k steps: tests/integration.
    "CartPole-v1": ({}, {}),
    # Tuned on a 2-core CPU with `ppox sweep`: at 2M steps, ent_coef 0.01 kept 6/6 seeds at a
    # training return >= 917 (ent_coef 0: entropy collapsed early and 3 of 8 seeds stalled
    # near 400-800; at 1M steps only 4 of 8 seeds reached a deterministic eval of 900).
    "brax/inverted_pendulum": (
        {"num_envs": 64, "num_steps": 32, "total_timesteps": 2_000_000, "update_epochs": 4,
         "num_minibatches": 4, "policy": "tanh_gaussian", "normalize_obs": True,
         "normalize_reward": True},
        {"learning_rate": 1e-3, "gamma": 0.99, "ent_coef": 0.01},
    ),
    # Trained by benchmarks/brax_learning.py (curve and return in benchmarks/results/).
    "brax/halfcheetah": (
        {"num_envs": 256, "num_steps": 32, "total_timesteps": 10_000_000, "update_epochs": 4,
         "num_minibatches": 8, "policy": "tanh_gaussian", "normalize_obs": True,
         "normalize_reward": True, "actor_hidden": (64, 64), "critic_hidden": (256, 256)},
        {"learning_rate": 3e-4, "gamma": 0.95, "ent_coef": 1e-3},
    ),
}

# Every other brax task starts from these: common MuJoCo-PPO settings, a starting point that
# has NOT been tuned or verified per task (tune with `ppox sweep`).
BRAX_FALLBACK: tuple[dict[str, Any], dict[str, float]] = (
    {"num_envs": 256, "num_steps": 32, "total_timesteps": 10_000_000, "update_epochs": 4,
     "num_minibatches": 8, "policy": "tanh_gaussian", "normalize_obs": True,
     "normalize_reward": True},
    {"learning_rate": 3e-4, "gamma": 0.99, "ent_coef": 1e-3},
)


# algorithm -> ({PPOConfig overrides}, {HParams overrides}), applied over the env's entry
# (for the keys it names); then (algorithm, env id) -> overrides for that pair.
ALGO_DEFAULTS: dict[str, tuple[dict[str, Any], dict[str, float]]] = {
    "ppo": ({}, {}),
    "ppo_kl": ({}, {}),
    # The critic is fitted by regression (SB3's TRPO: Adam at 1e-3, 10 passes, no value
    # clip: a clip of 0.2 per update holds the values back on reward-per-step tasks).
    "trpo": ({"clip_value_loss": False, "update_epochs": 10}, {"learning_rate": 1e-3}),
}
ALGO_ENV_DEFAULTS: dict[tuple[str, str], tuple[dict[str, Any], dict[str, float]]] = {}


def overrides_for(env_id: str) -> tuple[dict[str, Any], dict[str, float]]:
    if env_id in ENV_DEFAULTS:
        return ENV_DEFAULTS[env_id]
    if env_id.startswith("brax/"):
        return BRAX_FALLBACK
    return {}, {}


def resolve(env_id: str, algo: str = "ppo") -> tuple[PPOConfig, HParams]:
    """The defaults for ``env_id`` trained by ``algo`` (the global defaults where the tables
    say nothing): the env's entry, then the algorithm's, then the pair's. An unknown
    ``algo`` is left for ``PPOConfig.validate`` to refuse (the config keeps ``ppo``)."""
    cfg, hp = PPOConfig(env_id=env_id), HParams()
    if algo in ALGO_DEFAULTS:
        cfg = cfg.replace(algo=algo)
    for cfg_over, hp_over in (overrides_for(env_id), ALGO_DEFAULTS.get(algo, ({}, {})),
                              ALGO_ENV_DEFAULTS.get((algo, env_id), ({}, {}))):
        cfg, hp = cfg.replace(**cfg_over), hp.replace(**hp_over)
    return cfg, hp
