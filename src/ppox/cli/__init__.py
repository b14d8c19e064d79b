"""``ppox train | eval | sweep | bench | envs``: the command line (tyro).

Settings resolve in this order, later wins: built-in defaults, the per-environment table
(``ppox.defaults``), ``--config file.toml``, then explicit flags. Every ``PPOConfig`` and
``HParams`` field is a flag. Bad input exits with status 2 and one ``error:`` line, before
anything is compiled. A run that diverges (a non-finite update) exits with 3, a failed write
or an unusable checkpoint with 1, an interrupt (SIGINT/SIGTERM) with 130; each says so in
one ``error:``/``interrupted`` line. One module per command: ``args`` (the shared
train-style flags), ``train`` (train, eval, envs), ``sweep``, ``bench``.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import threading
from collections.abc import Callable, Sequence
from typing import NoReturn

from ppox import _startup_gc
from ppox._platform import (
    DEFAULT_COMPILE_CACHE_MAX_MB,
    check_env_settings,
    enable_compile_cache,
    use_every_cpu_core,
    use_ppox_cpu_setup,
)
from ppox.cli.args import resolve_train_args
from ppox.config import ConfigError


def cmd_train(argv: Sequence[str]) -> int:
    from ppox.cli.train import cmd_train as run

    return run(argv)


def cmd_eval(argv: Sequence[str]) -> int:
    from ppox.cli.train import cmd_eval as run

    return run(argv)


def cmd_envs(argv: Sequence[str]) -> int:
    from ppox.cli.envs import cmd_envs as run

    return run(argv)


def cmd_plot(argv: Sequence[str]) -> int:
    from ppox.cli.plot import cmd_plot as run

    return run(argv)


def cmd_sweep(argv: Sequence[str]) -> int:
    from ppox.cli.sweep import cmd_sweep as run

    return run(argv)


def cmd_cache(argv: Sequence[str]) -> int:
    from ppox.cli.cache import cmd_cache as run

    return run(argv)


def cmd_bench(argv: Sequence[str]) -> int:
    from ppox.cli.bench import cmd_bench as run

    return run(argv)


__all__ = ["COMMANDS", "console", "main", "resolve_train_args"]

NO_COMPILE_CACHE = "--no-compile-cache"
# commands whose runs turn the garbage collector back on once compiled (ppox.host.loop)
COMPILES_TRAINING = ("train", "sweep")

COMMANDS: dict[str, tuple[Callable[[Sequence[str]], int], str]] = {
    "train": (cmd_train, "train PPO (default: CartPole-v1)"),
    "eval": (cmd_eval, "evaluate a run dir deterministically; brax: write an HTML episode"),
    "sweep": (cmd_sweep, "hyperparameter sweep: every configuration and seed in one program"),
    "bench": (cmd_bench, "throughput diagnostics: env-only / rollout-only / trainer "
                         "steps/s, FLOP/s"),
    "plot": (cmd_plot, "learning curves of run dirs (mean and band over seeds) as a PNG"),
    "envs": (cmd_envs, "list environment ids; with ids: obs shape, action space, defaults"),
    "cache": (cmd_cache, "the compilation caches: where, how many entries, how large; "
                         "--clear empties them"),
}


def _usage() -> str:
    lines = ["usage: ppox {" + ",".join(COMMANDS) + "} [options]", ""]
    lines += [f"  {name:6s} {text}" for name, (_, text) in COMMANDS.items()]
    lines += ["", "`ppox <command> --help` lists a command's options. Every command takes",
              f"{NO_COMPILE_CACHE}: do not use JAX's persistent compilation cache (default:",
              "on, in $PPOX_COMPILE_CACHE_DIR or ~/.cache/ppox/xla; PPOX_COMPILE_CACHE=0 turns "
              "it off;", "PPOX_COMPILE_CACHE_MAX_MB=N bounds it, least recently used "
              "executables evicted first:",
              f"default {DEFAULT_COMPILE_CACHE_MAX_MB}, -1 for no bound)."]
    return "\n".join(lines)


def console() -> NoReturn:
    """The ``ppox`` command: ``main``, then a quick exit. Once ``main`` has returned, the
    process does what Python's own exit does first -- waits for its non-daemon threads and
    runs the ``atexit`` handlers (loggers', W&B's, JAX's) -- and then ends without tearing
    down every module and JAX's runtime object by object, which takes ~0.5 s and writes
    nothing: every file ppox writes is closed (and checkpoints verified) before ``main``
    returns. An exception leaves the usual way."""
    code = main()
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    from ppox.host.interrupts import install_cli_handlers

    restore_signals = install_cli_handlers()  # first: a Ctrl-C from here on is never lost
    try:
        return _main(list(sys.argv[1:] if argv is None else argv))
    finally:
        restore_signals()


def _quiet_library_logs() -> None:
    """orbax logs a failed write's traceback through absl, several times over; its cause
    reaches the user as one ``error:`` line instead."""
    import logging

    logging.getLogger("absl").setLevel(logging.CRITICAL)


def _main(argv: list[str]) -> int:
    from ppox.host.checkpoint import CheckpointError, StorageError
    from ppox.host.run import EXIT_DIVERGED, RunDiverged

    _quiet_library_logs()
    cache = NO_COMPILE_CACHE not in argv  # a flag of every command
    argv = [a for a in argv if a != NO_COMPILE_CACHE]
    try:  # a bad PPOX_* setting: one line, before anything
        check_env_settings()
        use_every_cpu_core()
        use_ppox_cpu_setup()
        if cache:
            enable_compile_cache()
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not argv or argv[0] not in COMMANDS:
        if argv and argv[0] in ("-h", "--help"):
            print(_usage())
            return 0
        if not argv:
            argv = ["train"]  # `ppox` alone trains the embedded default, like `ppox train`
        else:
            print(f"error: unknown command {argv[0]!r}\n{_usage()}", file=sys.stderr)
            return 2
    command, _ = COMMANDS[argv[0]]
    if argv[0] not in COMPILES_TRAINING:
        _startup_gc.release()  # (ppox._startup_gc) train and sweep: once compiled
    try:
        return command(argv[1:])
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except RunDiverged as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_DIVERGED
    except (StorageError, CheckpointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except OSError as err:  # an I/O failure outside a checkpoint write (metrics, summary)
        print(f"error: {err.strerror or err}: {err.filename or ''}".rstrip(": "),
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130

