"""The persistent compilation cache's directory: bounded (``PPOX_COMPILE_CACHE_MAX_MB``, JAX's
own LRU eviction), it stays under its bound, keeps the entries used last and takes over a
directory written while it was unbounded (entries without their last-use stamp); only a
damaged entry is removed; ``ppox cache`` shows and empties it."""

import pytest

# compiles argv[2] small programs (numbered from argv[3]), each holding its own 64 kB
# constant, into the cache at argv[1]
COMPILE_MANY = """
import sys, warnings
import jax, jax.numpy as jnp, numpy as np
from ppox._platform import enable_compile_cache
enable_compile_cache(sys.argv[1])
warnings.simplefilter("error")  # a failed cache write is a warning: make it fail the run
n, start = int(sys.argv[2]), int(sys.argv[3])
x = jnp.arange(64.0)
for i in range(start, start + n):
    table = np.random.default_rng(i).standard_normal((64, 256), np.float32)  # 64 kB, random
    jax.jit(lambda v, t=table: v @ t)(x).block_until_ready()
"""

CHECK = """
import os, sys
d = sys.argv[1]
names = os.listdir(d)
caches = [n for n in names if n.endswith("-cache")]
assert caches, names
assert all(n.removesuffix("-cache") + "-atime" in names for n in caches), names
total = sum(os.path.getsize(os.path.join(d, n)) for n in caches)
print(len(caches), total)
"""


def _run(code: str, *args: str, **env: str) -> str:
    import os
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, JAX_PLATFORMS="cpu", **env))
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


@pytest.mark.slow
def test_the_cache_stays_under_its_bound_and_adopts_unbounded_entries(tmp_path):
    cache = str(tmp_path / "cache")
    # written unbounded: no last-use stamps, which JAX's eviction reads for every entry
    _run(COMPILE_MANY, cache, "10", "0", PPOX_COMPILE_CACHE_MAX_MB="-1")
    unstamped = [n for n in (tmp_path / "cache").iterdir() if n.name.endswith("-cache")]
    assert len(unstamped) >= 10
    assert not any(n.name.endswith("-atime") for n in (tmp_path / "cache").iterdir())
    # bounded at 1 MiB: the old entries are stamped, every write succeeds (warnings are
    # errors in the script), and the least recently used entries are evicted
    _run(COMPILE_MANY, cache, "40", "1000", PPOX_COMPILE_CACHE_MAX_MB="1")
    count, total = map(int, _run(CHECK, cache).split())
    assert total <= 2**20, total
    names = {n.name for n in (tmp_path / "cache").iterdir()}
    originals_left = [p for p in unstamped if p.name in names]
    assert count - len(originals_left) < 40  # 40 entries (2.5 MiB) do not fit: it evicted
    assert not originals_left  # least recently used first: every older entry went first

def test_the_bound_reaches_jax(passes_in_a_process, tmp_path):
    passes_in_a_process(
        "import jax\n"
        "from ppox._platform import enable_compile_cache\n"
        f"enable_compile_cache({str(tmp_path)!r})\n"
        "assert jax.config.jax_compilation_cache_max_size == 7 * 2**20\n"
        "print('ok')", PPOX_COMPILE_CACHE_MAX_MB="7")
    passes_in_a_process(
        "import jax\n"
        "from ppox._platform import enable_compile_cache, DEFAULT_COMPILE_CACHE_MAX_MB\n"
        f"enable_compile_cache({str(tmp_path)!r})\n"
        "assert jax.config.jax_compilation_cache_max_size == DEFAULT_COMPILE_CACHE_MAX_MB * 2**20\n"
        "print('ok')", PPOX_COMPILE_CACHE_MAX_MB="")


@pytest.mark.parametrize(("error", "damaged"), [
    ("error: Error -3 while decompressing data: invalid stored block lengths", True),
    ("XlaRuntimeError: INVALID_ARGUMENT: could not deserialize executable", True),
    ("Timeout: The file lock '/c/.lockfile' could not be acquired.", False),
    ("PermissionError: [Errno 13] Permission denied: '/c/.lockfile'", False)])
def test_only_a_damaged_entry_is_removed(tmp_path, capsys, error, damaged):
    """A read that failed because the bounded cache's lock timed out, or its directory is
    read-only, leaves the entry alone and passes JAX's warning on; a damaged entry (a
    process killed while writing it) is removed and said in one line."""
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
