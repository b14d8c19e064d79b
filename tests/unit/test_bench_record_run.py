"""``benchmarks/record_run.py`` on a real (tiny) ``ppox train`` run of 2 seeds, and
``benchmarks/e2e.py``'s parsing of ``ppox train``'s last lines and its PureJaxRL extract."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import e2e, record_run  # noqa: E402


def test_record_of_a_finished_run(tmp_path, monkeypatch):
    run = tmp_path / "run"
    ppox = str(Path(sys.executable).with_name("ppox"))
    subprocess.run([ppox, "train", "--total-timesteps", "4096", "--num-seeds", "2",
                    "--run-dir", str(run), "--no-progress"], check=True, capture_output=True,
                   timeout=600)
    monkeypatch.setattr(record_run, "results_dir", lambda: tmp_path)
    assert record_run.main([str(run), "--name", "rec", "--command", "ppox train ...",
                            "--eval-episodes", "2"]) == 0
    rec = json.loads((tmp_path / "rec.json").read_text())
    assert rec["command"] == "ppox train ..." and rec["env"] == "CartPole-v1"
    assert set(rec["curve"]) == {"seed0", "seed1"}
    assert [s for s, _ in rec["curve"]["seed0"]] == [512 * (i + 1) for i in range(8)]
    assert all(len(v) == 2 and all(x >= 1 for x in v) for v in rec["deterministic_eval"].values())
    assert rec["summary"]["env_steps_per_run"] == 4096 and (tmp_path / "rec.png").stat().st_size
    with pytest.raises(SystemExit):  # not a finished run: one error from argparse
        record_run.main([str(tmp_path), "--name", "x", "--command", "c"])


def test_e2e_reads_ppox_lines_and_extracts_purejaxrl(tmp_path, monkeypatch):
    text = ("env CartPole-v1: 1 run(s) x 499,712 env steps on 1 device(s)\n"
            "compile 4.7 s (from the compilation cache), run 4.1 s, 121,000 env steps/s\n"
            "final return: 500.00\n")
    monkeypatch.setattr(e2e, "timed", lambda cmd, env=None: {"wall_s": 10.0, "stdout": text,
                                                             "stderr": ""})
    got = e2e.ppox_run(tmp_path / "r", 0, tmp_path / "c")
    assert got == {"wall_s": 10.0, "compile_s": 4.7, "run_s": 4.1,
                   "cache": "from the compilation cache", "rest_s": pytest.approx(1.2),
                   "final_return": 500.0}
    src = tmp_path / "clone" / "purejaxrl"
    src.mkdir(parents=True)
    for name in ("ppo.py", "wrappers.py"):
        (src / name).write_text(f"# {name}\n")
    (tmp_path / "out").mkdir()
    e2e.extract_purejaxrl(tmp_path / "clone", "HEAD", tmp_path / "out")
    assert (tmp_path / "out" / "ppo.py").read_text() == "# ppo.py\n"
