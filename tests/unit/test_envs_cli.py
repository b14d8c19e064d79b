"""`ppox envs`: ids, and for named envs their observation shape, action space and defaults."""

import numpy as np

from ppox.cli.envs import action_space_text, cmd_envs, defaults_text
from ppox.envs import Box, Discrete


def test_named_envs_show_obs_action_time_limit_and_defaults(capsys):
    assert cmd_envs(["CartPole-v1", "Pendulum-v1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["id", "obs", "action", "time", "limit", "defaults"]
    assert lines[1].split()[:4] == ["CartPole-v1", "(4,)", "Discrete(2)", "500"]
    assert lines[2].split()[:6] == ["Pendulum-v1", "(3,)", "Box(1,)", "in", "[-2,", "2]"]
    assert cmd_envs([]) == 0
    out = capsys.readouterr().out
    assert "CartPole-v1" in out and "brax/halfcheetah" in out


def test_texts():
    assert action_space_text(Discrete(3)) == "Discrete(3)"
    box = Box(low=np.array([-1.0, 0.0], np.float32), high=np.array([1.0, 2.0], np.float32))
    assert action_space_text(box) == "Box(2,) in [[-1.0, 0.0], [1.0, 2.0]]"
    assert defaults_text("CartPole-v1") == "the global defaults"
    assert "num_envs=64" in defaults_text("brax/inverted_pendulum")
