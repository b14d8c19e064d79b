"""brax: continuous-control PPO learns inverted_pendulum; `ppox eval` writes the HTML."""

import re

import numpy as np
import pytest

from ppox.cli import main
from ppox.defaults import resolve
from ppox.host.evaluation import evaluate_run


@pytest.mark.slow
def test_inverted_pendulum_learns_with_the_defaults(tmp_path, capsys):
    run_dir = tmp_path / "ip"
    # `ppox train --env brax/inverted_pendulum` with the per-env defaults, nothing tuned here
    assert main(["train", "--env", "brax/inverted_pendulum", "--run-dir", str(run_dir),
                 "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "final return:" in out.strip().splitlines()[-1]
    cfg, _ = resolve("brax/inverted_pendulum")
    assert cfg.total_timesteps <= 2_000_000  # ~1 min of training on 2 CPU cores

    # deterministic evaluation (the mean action), with the training obs statistics
    res = evaluate_run(run_dir, episodes=16, seed=1)
    assert res.returns.mean() >= 900.0, res.returns

    # the CLI: HTML file written, last line "eval return: <mean> ± <std> over <n> episodes"
    html = tmp_path / "episode.html"
    assert main(["eval", str(run_dir), "--episodes", "8", "--html", str(html)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    m = re.fullmatch(r"eval return: (\S+) ± (\S+) over 8 episodes", lines[-1])
    assert m, lines[-1]
    assert float(m.group(1)) >= 900.0
    text = html.read_text()
    assert text.lstrip().lower().startswith("<!doctype html>") and "brax" in text.lower()
    assert len(text) > 10_000  # the episode's system and trajectory are embedded
    assert np.isfinite(float(m.group(2)))
