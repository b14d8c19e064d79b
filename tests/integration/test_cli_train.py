"""`ppox train` end to end: run dir contents, multi-seed summary on every core, --config."""

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib

import pytest

from ppox.cli import main


def _ppox(args, env_extra=None, timeout=600):
    env = dict(os.environ, **(env_extra or {}))
    env.pop("PPOX_CPU_DEVICES", None)  # let the CLI use every core, as users get it
    return subprocess.run([sys.executable, "-m", "ppox.cli", *args], capture_output=True,
                          text=True, timeout=timeout, env=env)


@pytest.mark.slow
def test_num_seeds_are_one_program_split_across_cores(tmp_path):
    proc = _ppox(["train", "--num-seeds", "2", "--total-timesteps", "8192", "--run-dir",
                  str(tmp_path / "r")])
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    cores = len(os.sched_getaffinity(0))
    assert f"on {2 if cores >= 2 else 1} device(s)" in proc.stdout
    assert re.fullmatch(r"final return: \S+ ± \S+ \(mean ± std over 2 seeds; min \S+, max \S+\)",
                        lines[-1]), lines[-1]
    # progress lines: steps, SPS and mean return
    assert any(re.search(r"steps\s+[\d,]+ .*SPS\s+[\d,]+\s+return", line) for line in lines)


def test_a_small_single_run_trains_on_one_cpu_thread(tmp_path):
    # as users get it (no PPOX_CPU_THREADS): CartPole's 4 envs on one XLA CPU thread, one
    # device; the test process's JAX_PLATFORMS=cpu keeps accelerator plugins out of it
    env = {"PPOX_CPU_THREADS": "", "XLA_FLAGS": ""}
    proc = _ppox(["train", "--total-timesteps", "2048", "--run-dir", str(tmp_path / "r")], env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    one = len(os.sched_getaffinity(0)) >= 2
    assert ("on 1 device(s), one CPU thread" in proc.stdout) == one, proc.stdout
    if one:  # 32 envs x 128 steps / 4 minibatches = 1024 rows: XLA's pool, a device per core
        proc = _ppox(["train", "--total-timesteps", "4096", "--num-envs", "32", "--run-dir",
                      str(tmp_path / "s")], env)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert "on 1 device(s)\n" in proc.stdout, proc.stdout


def test_run_dir_contents_and_config_roundtrip(tmp_path, capsys):
    run = tmp_path / "a"
    assert main(["train", "--total-timesteps", "4096", "--num-envs", "8", "--learning-rate",
                 "1e-3", "--seed", "3", "--run-dir", str(run), "--quiet"]) == 0
    first = capsys.readouterr().out.strip().splitlines()[-1]
    for name in ("config.toml", "metrics.jsonl", "summary.json", "policy", "checkpoints"):
        assert (run / name).exists(), name
    conf = tomllib.loads((run / "config.toml").read_text())
    assert conf["env"] == "CartPole-v1" and conf["seed"] == 3
    assert conf["config"]["num_envs"] == 8 and conf["hparams"]["learning_rate"] == 1e-3
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 4096 // (8 * 128)
    assert {"update", "env_steps", "episode_return", "loss", "approx_kl"} <= set(rows[0])
    # the resolved config file repeats the run exactly
    assert main(["train", "--config", str(run / "config.toml"), "--run-dir",
                 str(tmp_path / "b"), "--quiet"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == first


def test_resume_continues_with_the_run_settings(tmp_path, capsys):
    # a run started with non-default settings, cut after its 3rd of 4 checkpointed chunks:
    # `--resume` with no other flag continues it with its own settings, to the same end
    run = tmp_path / "a"
    assert main(["train", "--total-timesteps", "8192", "--num-envs", "8", "--learning-rate",
                 "1e-3", "--run-dir", str(run), "--quiet", "--progress-chunks", "4",
                 "--checkpoint-every", "1"]) == 0
    whole = capsys.readouterr().out.strip().splitlines()[-1]
    steps = sorted(int(p.name) for p in (run / "checkpoints").iterdir() if p.name.isdigit())
    assert steps == [6, 8]
    shutil.rmtree(run / "checkpoints" / "8")  # as if the process died before its last save
    assert main(["train", "--run-dir", str(run), "--resume", "--quiet"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert "8 updates of 8 envs" in out[0]  # the run's num_envs, not the default 4
    assert out[-1] == whole
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["update"] for r in rows] == list(range(1, 9))


def test_the_command_exits_quickly_with_every_file_written(tmp_path):
    # `python -m ppox.cli` is the console entry (`ppox`): after main() it joins threads, runs
    # the atexit handlers and ends the process without module teardown; what it printed and
    # wrote must all be there, and its status must be main's
    run = tmp_path / "quick"
    proc = _ppox(["train", "--total-timesteps", "4096", "--num-envs", "8", "--run-dir",
                  str(run), "--tensorboard", "--checkpoint-every", "1"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1].startswith("final return: ")
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["update"] for r in rows] == list(range(1, 5))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["updates_done"] == 4 and summary["status"] == "complete", summary
    assert (run / "learning_curve.png").stat().st_size > 0
    events = list((run / "tensorboard").rglob("events.out.tfevents.*"))
    assert events and all(e.stat().st_size > 0 for e in events)
    again = _ppox(["train", "--run-dir", str(run), "--resume"])  # its checkpoint verifies
    assert again.returncode == 0 and "complete" in again.stdout, again.stdout + again.stderr
    bad = _ppox(["train", "--learning-rate", "-1"])
    assert bad.returncode == 2 and bad.stderr.startswith("error:")


COUNT_COMPILES = r"""
import sys
import gymnax  # its own module-level arrays compile at import: not ppox's set-up
from jax._src import compiler
names = []
real = compiler.compile_or_get_cached
def counting(backend, module, *args, **kwargs):
    names.append(str(module.operation.attributes["sym_name"]).strip('"'))
    return real(backend, module, *args, **kwargs)
compiler.compile_or_get_cached = counting
from ppox.cli import main
assert main(sys.argv[1:]) == 0
print("COMPILED", sorted(names))
"""


def test_train_compiles_its_two_programs_and_nothing_eager(tmp_path):
    # every eager op before the training (a key, the stacked hyperparameters, the env's
    # spaces) is an XLA compile of its own: 10-40 ms each here, more on a GPU
    env = dict(os.environ, PPOX_COMPILE_CACHE_DIR=str(tmp_path / "cache"),
               PPOX_PROGRAM_CACHE="1")  # as users run it: both programs kept and exported
    proc = subprocess.run(
        [sys.executable, "-c", COUNT_COMPILES, "train", "--total-timesteps", "2048",
         "--run-dir", str(tmp_path / "r"), "--quiet"],
        capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    line = [x for x in proc.stdout.splitlines() if x.startswith("COMPILED")][-1]
    assert line == "COMPILED ['jit_chunk_program', 'jit_init_program']", line
