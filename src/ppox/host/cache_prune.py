"""Keeping the persistent compilation cache under its bound (``PPOX_COMPILE_CACHE_MAX_MB``).

JAX can bound its cache itself (``jax_compilation_cache_max_size``), but then every write
locks the directory and reads a last-use stamp for every entry in it: 120 ms per write in a
directory of 3,593 entries on this project's 2-core CPU, on the compile's critical path, and
an entry left without its stamp (any entry written while the cache had no bound) makes every
later write fail. So ppox leaves JAX's cache unbounded and prunes the directory itself, once
per process, in a thread started after the run's programs are compiled: it runs while the
run trains, and a small run leaves a core free for it.

The executables used least recently go first. Their last use is the file's access time where
the file system keeps one newer than its modification time (Linux's default ``relatime``
updates it on the first read after a write, then at most once a day), else its modification
time: on a file system mounted ``noatime``, the ones written longest ago go first, and one
still in use is compiled and written again by its next run. ppox's program cache
(``ppox-programs/``) keeps its own count (``ppox.host.program_cache``).
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path

EXECUTABLE_SUFFIX = "-cache"  # JAX's file cache: <name>-<key>-cache
STAMP_SUFFIX = "-atime"  # JAX's last-use stamp, where its own bound wrote one
_STARTED = False


def prune(directory: str | os.PathLike[str], max_bytes: int) -> tuple[int, int]:
    """Removes the least recently used executables from ``directory`` until the rest fit in
    ``max_bytes``. Returns (how many were removed, the bytes left). An entry that another
    process removes meanwhile is skipped, as is one that cannot be removed (a read-only
    directory)."""
    entries, total = [], 0
    with os.scandir(directory) as found:
        for entry in found:
            if not entry.name.endswith(EXECUTABLE_SUFFIX):
                continue
            with contextlib.suppress(OSError):  # gone meanwhile
                st = entry.stat(follow_symlinks=False)
                entries.append((max(st.st_atime_ns, st.st_mtime_ns), entry.name, st.st_size))
                total += st.st_size
    removed = 0
    for _, name, size in sorted(entries):
        if total <= max_bytes:
            break
        path = Path(directory) / name
        try:
            path.unlink()
            removed += 1
        except FileNotFoundError:
            pass  # another process pruned it: gone all the same
        except OSError:
            continue  # it cannot be removed (a read-only directory): it still counts
        total -= size
        with contextlib.suppress(OSError):
            path.with_name(name.removesuffix(EXECUTABLE_SUFFIX) + STAMP_SUFFIX).unlink()
    return removed, total


def prune_in_background() -> threading.Thread | None:
    """Prunes the cache directory in use (``ppox._platform.enable_compile_cache``) to its
    bound, once per process, in a thread (not a daemon: the process waits for it at exit
    rather than stopping it mid-way). None when the cache is off, unbounded, or this
    process pruned it already."""
    global _STARTED
    from ppox._platform import compile_cache_bound, compile_cache_dir

    directory, max_bytes = compile_cache_dir(), compile_cache_bound()
    if _STARTED or directory is None or max_bytes < 0 or not os.path.isdir(directory):
        return None
    _STARTED = True

    def work() -> None:
        with contextlib.suppress(OSError):
            prune(directory, max_bytes)

    thread = threading.Thread(target=work, name="ppox-cache-prune")
    thread.start()
    return thread
