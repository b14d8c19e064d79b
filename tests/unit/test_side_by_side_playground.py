"""The side-by-side playground suite (ppox vs Playground's own training, Brax's ppo.train) with
fake workers: the same update on both sides, the peer's flags from ppox's config, interleaved
rounds, the summary, table, JSON and plot."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import side_by_side  # noqa: E402
from benchmarks.harness import peers  # noqa: E402
from ppox.config import HParams, PPOConfig  # noqa: E402


def _flags(cmd: list[str]) -> dict[str, str]:
    args = cmd[2:]
    return dict(zip(args[::2], args[1::2], strict=True))


def test_the_peer_gets_the_same_update_as_ppox():
    cfg = PPOConfig(env_id="playground/CartpoleSwingup", num_envs=32, num_steps=64,
                    update_epochs=4, num_minibatches=4, actor_hidden=(32,) * 4,
                    critic_hidden=(256,) * 5, env_config="impl=jax,episode_length=500")
    flags = _flags(["python", "runner", *peers.peer_args("playground", cfg, HParams())])
    assert flags["--env"] == "CartpoleSwingup"
    assert (flags["--num-envs"], flags["--num-steps"], flags["--update-epochs"],
            flags["--num-minibatches"], flags["--batch-size"]) == ("32", "64", "4", "4", "8")
    assert flags["--hidden"] == "32,32,32,32" and flags["--critic-hidden"] == "256," * 4 + "256"
    assert (flags["--impl"], flags["--episode-length"], flags["--action-repeat"]) == (
        "jax", "500", "1")
    with pytest.raises(ValueError, match="no env option 'vision'"):
        peers.peer_args("playground", cfg.replace(env_config="vision=true"), HParams())
    with pytest.raises(ValueError, match="must be divisible by num_minibatches"):
        peers.peer_args("playground", cfg.replace(num_envs=30), HParams())


def test_suite_with_fake_workers(tmp_path, monkeypatch, capsys):
    runner = str(ROOT / "benchmarks" / "peers" / "run_playground_ppo.py")
    monkeypatch.setattr(peers, "peer_command",
                        lambda peer: (["peer-python", runner], None))
    monkeypatch.setattr(side_by_side, "results_dir", lambda name=None: tmp_path)
    calls: list[list[str]] = []

    def fake_process(cmd, timeout=None, env=None):
        calls.append(list(cmd))
        if runner in cmd:
            total = int(_flags(cmd)["--total-timesteps"])
            return {"peer": "playground_brax_ppo", "compile_s": 100.0, "run_s": [40.0],
                    "sps": [2000.0], "final_return": 850.0,
                    "config": {"total_timesteps": total}, "process_wall_s": 300.0}
        spec = json.loads(cmd[3])
        return {"peer": "ppox", "compile_s": 50.0, "run_s": [20.0], "sps": [4000.0],
                "final_return": 700.0, "eval_return": 990.0,
                "config": {"total_timesteps_run": spec["config"]["total_timesteps"]},
                "process_wall_s": 150.0}

    monkeypatch.setattr(peers, "run_json_process", fake_process)
    assert side_by_side.main(["--suite", "playground", "--quick", "--rounds", "2"]) == 0
    # interleaved: ppox then the peer, then the other way round; seeds advance per round
    assert [runner in c for c in calls] == [False, True, True, False]
    spec = json.loads(calls[0][3])
    cfg = spec["config"]
    assert cfg["env_id"] == "playground/CartpoleBalance" and cfg["env_config"] == "impl=jax"
    assert (cfg["num_envs"], cfg["num_steps"], cfg["update_epochs"],
            cfg["num_minibatches"]) == (32, 64, 4, 4)
    # 2 epochs x 10 scans x 2 updates of 2048 steps: what brax's loop runs
    assert cfg["total_timesteps"] == 81_920 and spec["eval_episodes"] == 8
    peer = _flags(calls[1])
    assert peer["--total-timesteps"] == "81920" and peer["--batch-size"] == "8"
    assert peer["--num-evals"] == "3" and peer["--num-eval-envs"] == "8"
    assert float(peer["--learning-rate"]) == spec["hparams"]["learning_rate"] == 1e-3
    assert float(peer["--gamma"]) == pytest.approx(0.995)
    assert (peer["--seed"], _flags(calls[2])["--seed"]) == ("0", "1")
    out = json.loads((tmp_path / "side_by_side_playground.json").read_text())
    (title,) = out["comparisons"]
    summary = out["comparisons"][title]["summary"]
    assert summary["playground"]["sps_ratio"] == pytest.approx(2.0)
    assert summary["playground"]["compile_ratio"] == pytest.approx(0.5)
    assert summary["ppox"]["eval_return_median"] == 990.0
    assert summary["playground"]["final_return_median"] == 850.0
    assert "Playground's documented training" in out["comparisons"][title]["notes"][
        "playground"]
    text = capsys.readouterr().out
    assert "2.00x" in text and "0.50x" in text
    assert (tmp_path / "side_by_side_playground.png").stat().st_size > 0
