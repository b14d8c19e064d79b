"""JAX's persistent compilation cache, on by default in ``ppox``: a second run with another
seed and other (traced) hyperparameter values loads every program from it, the output
says so, ``--no-compile-cache`` turns it off, and a damaged entry is removed and rebuilt."""

import os
import subprocess
import sys
from pathlib import Path

import pytest


def _train(tmp_path: Path, cache: Path, *flags: str) -> str:
    env = dict(os.environ, PPOX_COMPILE_CACHE_DIR=str(cache), JAX_PLATFORMS="cpu")
    env.pop("PPOX_COMPILE_CACHE", None)
    proc = subprocess.run(
        [sys.executable, "-m", "ppox.cli", "train", "--total-timesteps", "2048",
         "--num-steps", "64", "--progress-chunks", "2", "--quiet", "--overwrite",
         "--run-dir", str(tmp_path / "run"), *flags],
        capture_output=True, text=True, env=env, timeout=600, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout + proc.stderr


def _compile_line(out: str) -> str:
    return next(line for line in out.splitlines() if line.startswith("compile "))


@pytest.mark.slow
def test_second_run_loads_its_programs_from_the_cache(tmp_path):
    cache = tmp_path / "cache"
    first = _train(tmp_path, cache, "--seed", "0")
    assert "(compiled, now cached)" in _compile_line(first)
    assert any(cache.iterdir())
    # another seed and another learning rate: the same programs (both are data)
    second = _train(tmp_path, cache, "--seed", "1", "--learning-rate", "1e-3")
    assert "(from the compilation cache)" in _compile_line(second)

    off = _train(tmp_path, cache, "--no-compile-cache")
    assert "(compile cache off)" in _compile_line(off)

    # a damaged entry (a process killed while writing it): removed, said in one line, and
    # cached again by the next run
    chunk = max(cache.glob("jit_chunk-*"), key=lambda p: p.stat().st_size)
    chunk.write_bytes(chunk.read_bytes()[:500])
    mended = _train(tmp_path, cache, "--seed", "2")
    notes = [line for line in mended.splitlines() if line.startswith("note: a damaged")]
    assert len(notes) == 1 and "jit_chunk" in notes[0]
    assert "Traceback" not in mended and "UserWarning" not in mended
    again = _train(tmp_path, cache, "--seed", "3")
    assert "(from the compilation cache)" in _compile_line(again)
