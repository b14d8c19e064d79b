"""Learning tests assert on returns."""

import numpy as np
import pytest

from ppox import HParams, PPOConfig
from ppox.defaults import resolve
from ppox.host.run import train_runs


@pytest.mark.slow
def test_cartpole_reaches_475_within_500k_steps():
    cfg, hp = resolve("CartPole-v1")
    assert cfg.total_timesteps <= 500_000
    # two seeds in one vmapped program; each must solve it on its own
    result = train_runs(cfg, [hp, hp], seeds=[0, 1])
    assert result.env_steps <= 500_000
    assert np.all(result.final_return >= 475.0), result.final_return
    # it learned (the first updates are far from solved)
    first = result.metrics["episode_return_sum"][:, :10].sum() / result.metrics[
        "episode_count"][:, :10].sum()
    assert first < 100.0


@pytest.mark.slow
def test_divergent_learning_rate_does_not_solve_it():
    # the learning test above can fail: a broken setting does not reach 475
    cfg = PPOConfig(total_timesteps=100_000)
    result = train_runs(cfg, [HParams(learning_rate=1e-7)], seeds=[0])
    assert result.final_return[0] < 100.0
