"""The persistent compilation cache's directory: a run prunes it to its bound
(``PPOX_COMPILE_CACHE_MAX_MB``), the executables used least recently first; only a damaged
entry is removed on a failed read; ``ppox cache`` shows and empties it."""

import pytest


def _run(code: str, *args: str, **env: str) -> str:
    import os
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, JAX_PLATFORMS="cpu", **env))
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def _entry(directory, name: str, kib: int, used_s: float, written_s: float | None = None):
    """A fake executable of ``kib`` KiB, last read ``used_s`` and written ``written_s``
    seconds after the epoch (atime, mtime)."""
    import os

    path = directory / f"jit_f-{name}-cache"
    path.write_bytes(os.urandom(kib * 1024))
    os.utime(path, ns=(int(used_s * 1e9), int((written_s or used_s) * 1e9)))
    return path


def test_prune_removes_the_least_recently_used_until_the_rest_fit(tmp_path):
    from ppox.host.cache_prune import prune

    # last use: the access time where it is newer than the write, else the write
    a = _entry(tmp_path, "a", 300, used_s=1_000)  # used longest ago
    b = _entry(tmp_path, "b", 300, used_s=5_000, written_s=2_000)  # written early, read late
    c = _entry(tmp_path, "c", 300, used_s=1_000, written_s=3_000)  # written late, never read
    d = _entry(tmp_path, "d", 300, used_s=4_000)
    stamp = tmp_path / "jit_f-a-atime"  # JAX's own stamp of `a`: goes with it
    stamp.write_bytes(b"12345678")
    other = tmp_path / "README.txt"  # not an entry: never touched
    other.write_text("x")
    removed, left = prune(tmp_path, 700 * 1024)
    assert (removed, left) == (2, 600 * 1024)
    assert [p.exists() for p in (a, c, d, b)] == [False, False, True, True]
    assert not stamp.exists() and other.exists()
    assert prune(tmp_path, 700 * 1024) == (0, 600 * 1024)  # under the bound: nothing to do


def test_a_run_prunes_the_cache_to_its_bound_while_it_trains(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    old = [_entry(cache, f"old{i}", 1024, used_s=1_000 + i) for i in range(12)]  # 12 MiB
    out = _run("from ppox.cli import main; raise SystemExit(main(['train', '--total-timesteps', "
               "'1024', '--num-steps', '64', '--run-dir', " + repr(str(tmp_path / "r"))
               + "]))", PPOX_COMPILE_CACHE_DIR=str(cache), PPOX_COMPILE_CACHE_MAX_MB="8")
    assert "(compiled, now cached)" in out
    entries = [p for p in cache.iterdir() if p.name.endswith("-cache")]
    assert sum(p.stat().st_size for p in entries) <= 8 * 2**20
    assert any(p.name.startswith("jit_chunk") for p in entries)  # the run's own: kept
    assert [p.exists() for p in old][:5] == [False] * 5  # the oldest went first
    assert old[-1].exists()


@pytest.mark.parametrize(("error", "damaged"), [
    ("error: Error -3 while decompressing data: invalid stored block lengths", True),
    ("XlaRuntimeError: INVALID_ARGUMENT: could not deserialize executable", True),
    ("FileNotFoundError: [Errno 2] No such file or directory: '/c/jit_chunk_program-abc-cache'",
     False),
    ("Timeout: The file lock '/c/.lockfile' could not be acquired.", False),
    ("PermissionError: [Errno 13] Permission denied: '/c/.lockfile'", False)])
def test_only_a_damaged_entry_is_removed(tmp_path, capsys, error, damaged):
    """A read that failed because the entry went meanwhile (another process pruned it), on
    a lock or on a read-only directory leaves the entry alone and passes JAX's warning on; a
    damaged entry (a process killed while writing it) is removed and said in one line."""
    import warnings

    from ppox._platform import mending_compile_cache

    entry = tmp_path / "jit_chunk_program-abc-cache"
    entry.write_bytes(b"x")
    with warnings.catch_warnings(record=True) as seen, mending_compile_cache(str(tmp_path)):
        warnings.simplefilter("always")
        warnings.warn("Error reading persistent compilation cache entry for "
                      f"'jit_chunk_program': {error}", stacklevel=1)
    err = capsys.readouterr().err
    assert entry.exists() != damaged
    assert ("note: a damaged compilation-cache entry for jit_chunk_program" in err) == damaged
    assert (len(seen) == 1) != damaged  # otherwise JAX's warning goes on as it was


def test_ppox_cache_shows_and_clears_both_caches(tmp_path):
    cache = tmp_path / "cache"
    env = {"PPOX_COMPILE_CACHE_DIR": str(cache), "PPOX_PROGRAM_CACHE": "1"}
    _run("from ppox.cli import main; raise SystemExit(main(['train', '--total-timesteps', "
         "'1024', '--num-steps', '64', '--quiet', '--run-dir', " + repr(str(tmp_path / "r"))
         + "]))", **env)
    shown = _run("from ppox.cli import main; raise SystemExit(main(['cache']))", **env)
    lines = shown.splitlines()
    assert lines[0] == f"compilation cache: {cache}"
    assert lines[1].startswith("  executables: 2 (") and "bound 4096 MiB" in lines[1]
    assert lines[2].startswith("  programs:    1 (")
    cleared = _run("from ppox.cli import main; raise SystemExit(main(['cache', '--clear']))",
                   **env)
    assert cleared.startswith("removed 2 executables and 1 programs (") and str(cache) in cleared
    assert not [p for p in cache.iterdir() if p.name.endswith(("-cache", "-atime"))]
    assert not list((cache / "ppox-programs").glob("*.programs"))
    again = _run("from ppox.cli import main; raise SystemExit(main(['cache']))", **env)
    assert "executables: 0 (0.0 MiB" in again and "programs:    0 (0.0 MiB" in again
