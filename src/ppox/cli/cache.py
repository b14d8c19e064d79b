"""``ppox cache [--clear]``: where the compilation caches are, what they hold, and emptying
them. Two caches share one directory (``ppox._platform.enable_compile_cache``): JAX's
compiled executables (``<name>-<key>-cache``; bounded by ``PPOX_COMPILE_CACHE_MAX_MB``,
``ppox.host.cache_prune``) and ppox's traced programs (``ppox-programs/``,
``ppox.host.program_cache``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from ppox.cli.command_flags import parse_command
from ppox.host.cache_prune import EXECUTABLE_SUFFIX, STAMP_SUFFIX


@dataclasses.dataclass(frozen=True)
class CacheArgs:
    """Show the compilation caches (JAX's compiled executables and ppox's traced programs):
    the directory, how many entries, how large, and the bound; --clear empties them (a run
    compiling meanwhile may then warn that an entry it was reading went)."""

    clear: bool = False
    """remove every cached executable and program (each compiles again on its next run)"""


def _entries(directory: Path) -> tuple[list[Path], list[Path]]:
    """The executables (with their stamps) and the stored programs in ``directory``."""
    files = [p for p in directory.iterdir() if p.is_file()] if directory.is_dir() else []
    executables = [p for p in files if p.name.endswith((EXECUTABLE_SUFFIX, STAMP_SUFFIX))]
    programs_dir = directory / "ppox-programs"
    programs = sorted(programs_dir.glob("*.programs")) if programs_dir.is_dir() else []
    return executables, programs


def _mib(paths: list[Path]) -> float:
    return sum(p.stat().st_size for p in paths if p.exists()) / 2**20


def _clear(directory: Path) -> tuple[int, int, float]:
    """Removes every entry. Returns (executables, programs, MiB) removed."""
    executables, programs = _entries(directory)
    size = _mib(executables) + _mib(programs)
    for path in executables + programs:
        path.unlink(missing_ok=True)
    return sum(p.name.endswith(EXECUTABLE_SUFFIX) for p in executables), len(programs), size


def cmd_cache(argv: Sequence[str]) -> int:
    from ppox._platform import compile_cache_bound, compile_cache_dir
    from ppox.host.program_cache import MAX_ENTRIES

    args = parse_command(CacheArgs, argv, "ppox cache")
    where = compile_cache_dir()
    if where is None:
        print("compilation cache: off (PPOX_COMPILE_CACHE=0 or --no-compile-cache)")
        return 0
    directory = Path(where)
    if args.clear:
        if not directory.is_dir():
            print(f"compilation cache: {directory} (empty: nothing to clear)")
            return 0
        executables, programs, size = _clear(directory)
        print(f"removed {executables} executables and {programs} programs ({size:.1f} MiB) "
              f"from {directory}")
        return 0
    bound = compile_cache_bound()
    executables, programs = _entries(directory)
    count = sum(p.name.endswith(EXECUTABLE_SUFFIX) for p in executables)
    print(f"compilation cache: {directory}")
    print(f"  executables: {count} ({_mib(executables):.1f} MiB; bound "
          + ("none" if bound < 0 else f"{bound / 2**20:.0f} MiB") + ", "
          "PPOX_COMPILE_CACHE_MAX_MB)")
    print(f"  programs:    {len(programs)} ({_mib(programs):.1f} MiB; ppox-programs/, the "
          f"newest {MAX_ENTRIES} kept)")
    print("(`ppox cache --clear` empties both; PPOX_COMPILE_CACHE_DIR moves them, "
          "PPOX_COMPILE_CACHE=0 turns them off)")
    return 0
