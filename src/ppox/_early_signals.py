"""A Ctrl-C while the ``ppox`` command starts is recorded, not lost.

``import ppox`` takes seconds (JAX, flax, gymnax). A SIGINT there raises ``KeyboardInterrupt``
wherever the main thread is, and inside a garbage-collection callback it is swallowed, so
the run went on. In the command-line process only (``ppox ...`` or ``python -m ppox.cli``),
importing ppox therefore first sets a handler that exits at once with 130 (nothing has been
written yet), until ``ppox.cli.main`` installs its own (``ppox.host.interrupts``). Library
users' handlers are untouched.
"""

from __future__ import annotations

import os
import signal
import sys

_installed: list[int] = []


def _is_cli() -> bool:
    argv = list(getattr(sys, "orig_argv", []))
    if "-m" in argv[:-1] and argv[argv.index("-m") + 1] == "ppox.cli":
        return True
    return bool(sys.argv) and os.path.basename(sys.argv[0]) == "ppox"


def _exit_now(signum: int, frame: object) -> None:
    del frame
    print(f"interrupted ({signal.Signals(signum).name}) while starting: nothing was saved",
          file=sys.stderr, flush=True)
    os._exit(130)


if _is_cli() and not _installed:
    for _s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(_s, _exit_now)
        _installed.append(_s)
