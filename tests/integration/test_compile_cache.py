"""The compilation caches, on by default in ``ppox``: a second run with another seed and
other (traced) hyperparameter values loads every program from them, the output says so,
``--no-compile-cache`` turns them off, and a damaged entry is removed and rebuilt. ppox's
program cache loads the training programs without tracing them: the same numbers as the
run that compiled them, a new program for new static settings, and a damaged entry
replaced."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def _train(tmp_path: Path, cache: Path, *flags: str, run: str = "run",
           programs: bool = True) -> str:
    env = dict(os.environ, PPOX_COMPILE_CACHE_DIR=str(cache), JAX_PLATFORMS="cpu",
               PPOX_PROGRAM_CACHE="1" if programs else "0")
    env.pop("PPOX_COMPILE_CACHE", None)
    proc = subprocess.run(
        [sys.executable, "-m", "ppox.cli", "train", "--total-timesteps", "2048",
         "--num-steps", "64", "--progress-chunks", "2", "--quiet", "--overwrite",
         "--run-dir", str(tmp_path / run), *flags],
        capture_output=True, text=True, env=env, timeout=600, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout + proc.stderr


def _compile_line(out: str) -> str:
    return next(line for line in out.splitlines() if line.startswith("compile "))


@pytest.mark.slow
def test_second_run_loads_its_programs_from_the_cache(tmp_path):
    # JAX's own cache, the program cache off (it would serve the programs without it)
    cache = tmp_path / "cache"
    first = _train(tmp_path, cache, "--seed", "0", programs=False)
    assert "(compiled, now cached)" in _compile_line(first)
    assert any(cache.iterdir())
    # another seed and another learning rate: the same programs (both are data)
    second = _train(tmp_path, cache, "--seed", "1", "--learning-rate", "1e-3", programs=False)
    assert "(from the compilation cache)" in _compile_line(second)

    off = _train(tmp_path, cache, "--no-compile-cache")
    assert "(compile cache off)" in _compile_line(off)
    assert not (cache / "ppox-programs").exists()

    # a damaged entry (a process killed while writing it): removed, said in one line, and
    # cached again by the next run
    chunk = max(cache.glob("jit_chunk-*"), key=lambda p: p.stat().st_size)
    chunk.write_bytes(chunk.read_bytes()[:500])
    mended = _train(tmp_path, cache, "--seed", "2", programs=False)
    notes = [line for line in mended.splitlines() if line.startswith("note: a damaged")]
    assert len(notes) == 1 and "jit_chunk" in notes[0]
    assert "Traceback" not in mended and "UserWarning" not in mended
    again = _train(tmp_path, cache, "--seed", "3", programs=False)
    assert "(from the compilation cache)" in _compile_line(again)


def _metrics(tmp_path: Path, run: str) -> list[dict]:
    rows = [json.loads(x) for x in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "wall_s"} for r in rows]


@pytest.mark.slow
def test_program_cache_serves_the_same_programs_untraced(tmp_path):
    cache = tmp_path / "cache"
    programs = cache / "ppox-programs"
    first = _train(tmp_path, cache, "--seed", "4", run="a")
    assert "(compiled, now cached)" in _compile_line(first)
    assert len(list(programs.glob("*.programs"))) == 1
    # the same seed again: loaded, not traced, and every number the same
    second = _train(tmp_path, cache, "--seed", "4", run="b")
    assert "(from the compilation cache)" in _compile_line(second)
    assert _metrics(tmp_path, "a") == _metrics(tmp_path, "b")
    # a static setting changed: another program, compiled and kept beside the first
    other = _train(tmp_path, cache, "--seed", "4", "--num-envs", "8", run="c")
    assert "(from the compilation cache)" not in _compile_line(other)
    assert len(list(programs.glob("*.programs"))) == 2
    # a damaged entry: said in one line, removed, compiled from JAX's cache, written again
    entry = max(programs.glob("*.programs"), key=lambda p: p.stat().st_mtime)
    entry.write_bytes(entry.read_bytes()[:1000])
    mended = _train(tmp_path, cache, "--seed", "4", "--num-envs", "8", run="d")
    notes = [line for line in mended.splitlines() if "damaged program-cache entry" in line]
    assert len(notes) == 1, mended
    assert _metrics(tmp_path, "c") == _metrics(tmp_path, "d")
    assert entry.stat().st_size > 1000  # written again


LAYOUTS_SCRIPT = """
import json, os, sys
import jax, numpy as np
from ppox._platform import enable_compile_cache, compile_cache_counts
from ppox import HParams, PPOConfig
from ppox.host import run as run_module
from ppox.host.run import train_runs
enable_compile_cache(sys.argv[1])
cfg = PPOConfig(num_envs=4, num_steps=32, total_timesteps=4 * 32 * 6, update_epochs=2,
                num_minibatches=2)
out = {}
for name, kw, seeds in (("seeds", {}, [0, 1]), ("data_parallel", {"data_parallel": True}, [0]),
                        ("split_networks", {"split_networks": True}, [0])):
    runs = []
    for mode in ("0", "1", "1"):  # program cache off, then it stores, then it loads
        os.environ["PPOX_PROGRAM_CACHE"] = mode
        run_module.compiled_programs.cache_clear()
        before = compile_cache_counts()[2]
        r = train_runs(cfg, [HParams()] * len(seeds), seeds, progress_chunks=3, **kw)
        runs.append({"params": [np.asarray(x).tolist() for x in jax.tree.leaves(r.state.params)],
                     "loss": np.asarray(r.metrics["loss"]).tolist(), "devices": r.devices,
                     "loaded": compile_cache_counts()[2] - before})
    out[name] = runs
print(json.dumps(out))
"""


@pytest.mark.slow
def test_program_cache_on_two_devices_gives_every_layout_the_same_numbers(tmp_path):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
               JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", LAYOUTS_SCRIPT, str(tmp_path / "cache")],
                          capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    for name, (off, stored, loaded) in out.items():
        assert [r["loaded"] for r in (off, stored, loaded)] == [0, 0, 1], name
        assert off["devices"] == stored["devices"] == loaded["devices"] == 2, name
        for run in (stored, loaded):  # bit for bit: the same XLA program every time
            assert run["params"] == off["params"] and run["loss"] == off["loss"], name
    assert len(list((tmp_path / "cache" / "ppox-programs").glob("*.programs"))) == 3


@pytest.mark.slow
def test_a_repeated_sweep_traces_nothing(tmp_path):
    spec = tmp_path / "spec.toml"
    spec.write_text("seeds = 2\n[grid]\nlearning_rate = [1e-3, 2.5e-4]\n")
    env = dict(os.environ, PPOX_COMPILE_CACHE_DIR=str(tmp_path / "cache"), JAX_PLATFORMS="cpu",
               PPOX_PROGRAM_CACHE="1")
    env.pop("PPOX_COMPILE_CACHE", None)
    counts = []
    for out in ("a", "b"):
        proc = subprocess.run(
            [sys.executable, "-m", "ppox.cli", "sweep", "--env", "CartPole-v1", "--spec",
             str(spec), "--out", str(tmp_path / out), "--total-timesteps", "4096"],
            capture_output=True, text=True, env=env, timeout=600, stdin=subprocess.DEVNULL)
        assert proc.returncode == 0, proc.stderr[-2000:]
        info = json.loads((tmp_path / out / "sweep.json").read_text())
        counts.append((info["chunk_traces"], info["compiles"]))
    # the first sweep traces its chunk once and compiles it; the second loads the stored
    # program (compiled again from JAX's cache: one compile call, nothing traced)
    assert counts == [(1, 1), (0, 1)], counts
    rows = [[line.rsplit(",", 1)[0] for line in (tmp_path / out / "results.csv").read_text()
             .splitlines()] for out in ("a", "b")]  # all but the wall time: the same numbers
    assert rows[0] == rows[1] and len(rows[0]) == 3
