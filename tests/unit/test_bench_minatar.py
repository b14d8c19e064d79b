"""``benchmarks/minatar.py``: its sweep spec parses as a ppox sweep spec, finished sweep
folders are collected (best learning rate, curves), the table and the script's collect
mode end to end (fake sweep folders, the random floor stubbed), and the random-policy
floor on a real MinAtar env."""

from __future__ import annotations

import json
import math
import sys
import tomllib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import minatar  # noqa: E402
from ppox.sweep.spec import parse_spec  # noqa: E402


def fake_sweep(folder: Path, lrs: list[float], finals: list[float]) -> None:
    folder.mkdir(parents=True)
    names = np.array(["learning_rate", "clip_eps"])
    n, u = len(lrs), 5
    np.savez(folder / "curves.npz", returns=np.tile(np.arange(u, dtype=np.float64), (n, 1)),
             env_steps=np.tile(np.arange(1, u + 1) * 100, (n, 1)), final_return=np.array(finals),
             auc=np.zeros(n), diverged=np.zeros(n, bool), hparam_names=names,
             hparams=np.array([[lr, 0.2] for lr in lrs]), config=np.arange(n), seed=np.zeros(n))
    (folder / "sweep.json").write_text(json.dumps({"env_steps_total": 500 * n,
                                                   "steps_per_second": 1234.0, "wall_s": 9.0,
                                                   "compile_s": 1.0}))


def test_spec_text_is_a_ppox_sweep_spec():
    spec = parse_spec(tomllib.loads(minatar.spec_text((2.5e-3, 1e-2), seeds=2)))
    assert spec.grid == {"learning_rate": (2.5e-3, 1e-2)}
    assert spec.seeds == 2 and spec.seed == 0


def test_collect_picks_the_best_final_return_and_skips_nan(tmp_path):
    fake_sweep(tmp_path / "Breakout", [1e-3, 5e-3, 1e-2], [3.0, float("nan"), 7.5])
    res = minatar.collect("Breakout", tmp_path / "Breakout")
    assert res["best_learning_rate"] == 1e-2 and res["best_final_return"] == 7.5
    assert res["total_timesteps"] == 500
    assert [r["learning_rate"] for r in res["runs"]] == [1e-3, 5e-3, 1e-2]
    assert res["runs"][0]["curve"] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert minatar.collect("Asterix", tmp_path / "Asterix") is None


def test_collect_mode_end_to_end(tmp_path, monkeypatch, capsys):
    fake_sweep(tmp_path / "sweeps" / "Breakout", [5e-3, 1e-2], [9.0, 4.0])
    fake_sweep(tmp_path / "sweeps" / "Freeway", [5e-3, 1e-2], [20.0, 21.0])
    monkeypatch.setattr(minatar, "random_return", lambda game, steps: 0.5)
    out = tmp_path / "results"
    monkeypatch.setattr(minatar, "results_dir", lambda name=None: out.mkdir(
        exist_ok=True) or out)
    code = minatar.main(["--collect", str(tmp_path / "sweeps"), "--games", "Breakout",
                         "Freeway", "Asterix"])
    assert code == 0
    saved = json.loads((out / "minatar_sweeps.json").read_text())
    assert [g["best_learning_rate"] for g in saved["games"]] == [5e-3, 1e-2]
    assert saved["games"][0]["random_return"] == 0.5
    md = (out / "minatar_sweeps.md").read_text()
    assert "Breakout-MinAtar" in md and "Freeway-MinAtar" in md and "9.00" in md
    assert (out / "minatar_sweeps.png").stat().st_size > 0
    assert "Asterix: no finished sweep" in capsys.readouterr().out
    assert minatar.main(["--collect", str(tmp_path / "none"), "--games", "Seaquest"]) == 1


def test_random_floor_on_breakout():
    r = minatar.random_return("Breakout", num_envs=8, steps=256)
    # a random Breakout policy scores well under 1 point per episode, never below 0
    assert not math.isnan(r) and 0.0 <= r < 2.0
    # Freeway's episodes last 2,500 steps: none ends in 16, so there is no floor (NaN)
    assert math.isnan(minatar.random_return("Freeway", num_envs=2, steps=16))
