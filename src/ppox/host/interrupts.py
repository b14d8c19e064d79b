"""SIGINT / SIGTERM as stop requests, acted on where it is safe; and the fault-test pauses.

A signal only records a request. The training loop acts on it between chunks: it waits for
the chunk in flight (its input state was donated to it), writes a checkpoint of that last
completed chunk and raises ``RunInterrupted``. Two facts shape this module:

* Python runs a signal handler only between bytecodes of the main thread, and a
  ``KeyboardInterrupt`` raised while a garbage-collection callback runs is swallowed
  ("Exception ignored in _xla_gc_callback"), which once let a Ctrl-C during the compile be
  ignored. So the handler never raises: it sets a flag.
* During a compile the main thread sits in XLA for seconds. The command line therefore also
  watches a ``signal.set_wakeup_fd`` pipe from a thread: before training starts (nothing is
  worth saving yet) and on a second signal it exits at once with status 130.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

EXIT_INTERRUPTED = 130
SIGNALS = (signal.SIGINT, signal.SIGTERM)
# Test hook: "point=seconds,..." pauses at named points of a run (see ``test_pause``).
TEST_PAUSE_ENV = "PPOX_TEST_PAUSE"


class RunInterrupted(KeyboardInterrupt):
    """Training stopped on SIGINT/SIGTERM; ``saved`` says what was written (a
    ``KeyboardInterrupt``, so callers that only know Python's Ctrl-C still stop)."""

    def __init__(self, saved: str, checkpoint_step: int | None, signum: int) -> None:
        super().__init__(saved)
        self.saved = saved
        self.checkpoint_step = checkpoint_step
        self.signum = signum


@dataclass
class _Requests:
    signum: int | None = None
    phase: str = "startup"  # startup (import, checks, compile) | training
    startup_note: str = "nothing was saved"
    owner: str | None = None  # "cli" or "api": who installed the handlers
    count: int = 0  # signals received
    event: threading.Event = field(default_factory=threading.Event)
    watcher: object | None = None  # the installed watcher's token; None once restored


_REQ = _Requests()


def requested() -> int | None:
    """The signal number of a pending stop request, or None."""
    return _REQ.signum


def set_phase(phase: str, startup_note: str | None = None) -> None:
    """``"startup"``: a signal ends the command line at once (``startup_note`` says what is
    kept); ``"training"``: the loop stops after the chunk in flight."""
    _REQ.phase = phase
    if startup_note is not None:
        _REQ.startup_note = startup_note


def _handler(signum: int, frame: object) -> None:
    del frame
    if _REQ.signum is None:
        _REQ.signum = signum
    _REQ.count += 1
    _REQ.event.set()


def _exit_now(message: str) -> None:
    try:
        sys.stdout.flush()
        print(message, file=sys.__stderr__, flush=True)  # sys.stderr may be captured
    finally:
        os._exit(EXIT_INTERRUPTED)


def _watch(read_fd: int, token: object) -> None:
    """Runs beside the main thread: acts even while the main thread is inside XLA. Once the
    handlers are restored (``token`` no longer current) it acts on nothing: a signal the
    command has already handled, read late by this thread on a busy machine, must not end
    the process with a second, wrong message."""
    seen = 0
    while True:
        try:
            data = os.read(read_fd, 16)
        except OSError:
            data = b""
        if not data:  # the write end was closed: the handlers are gone
            os.close(read_fd)
            return
        for signum in data:
            if signum not in SIGNALS or _REQ.watcher is not token:
                continue
            seen += 1
            name = signal.Signals(signum).name
            if _REQ.phase == "startup":
                _exit_now(f"interrupted ({name}) before training started: "
                          f"{_REQ.startup_note}")
            elif seen >= 2:
                _exit_now(f"interrupted again ({name}): exiting now; a checkpoint being "
                          "written is dropped, the earlier ones are kept")


def install_cli_handlers() -> Callable[[], None]:
    """For the command line, first thing: SIGINT/SIGTERM become stop requests, watched by a
    thread. Returns a function restoring the previous handlers."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {s: signal.getsignal(s) for s in SIGNALS}
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    old_fd = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    for s in SIGNALS:
        signal.signal(s, _handler)
    reset(owner="cli")
    token = _REQ.watcher = object()
    threading.Thread(target=_watch, args=(read_fd, token), daemon=True,
                     name="ppox-signals").start()

    def restore() -> None:
        _REQ.watcher = None  # first: the watcher ignores whatever it reads from now on
        signal.set_wakeup_fd(old_fd)
        for s, h in previous.items():
            signal.signal(s, h)
        os.close(write_fd)  # the watcher's read then ends (EOF), and it returns
        reset(owner=None)

    return restore


def reset(owner: str | None = None) -> None:
    _REQ.signum = None
    _REQ.phase = "startup"
    _REQ.startup_note = "nothing was saved"
    _REQ.owner = owner
    _REQ.event.clear()


@contextmanager
def stop_requests() -> Iterator[None]:
    """Inside ``train_runs``: when the command line has not installed its handlers (a
    library call), SIGINT/SIGTERM become stop requests for the duration (main thread only;
    a handler someone else installed is left alone)."""
    if _REQ.owner is not None or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in SIGNALS}
    ours = [s for s, h in previous.items()
            if h in (signal.default_int_handler, signal.SIG_DFL)]
    for s in ours:
        signal.signal(s, _handler)
    reset(owner="api")
    try:
        yield
    finally:
        for s in ours:
            signal.signal(s, previous[s])
        reset(owner=None)


def test_pause(point: str, step: int) -> None:
    """Test hook: when ``PPOX_TEST_PAUSE`` names ``point`` (``"chunk=2"``, or
    ``"chunk@4=2"`` for step 4 only; several comma-separated), prints
    ``ppox-test-pause: <point> <step>`` on stderr and waits that many seconds (or until a
    signal arrives), so a fault test can hit that moment. Points: ``compile`` (before the
    compile), ``chunk`` (after a chunk's metrics are read, ``step``: updates done),
    ``checkpoint_start`` (before a checkpoint's files are written), ``checkpoint_manifest``
    (its files written, its checksum manifest not yet)."""
    spec = os.environ.get(TEST_PAUSE_ENV)
    if not spec:
        return
    for item in spec.split(","):
        name, _, seconds = item.partition("=")
        name, _, at = name.strip().partition("@")
        if name == point and (not at or int(at) == step):
            print(f"ppox-test-pause: {point} {step}", file=sys.stderr, flush=True)
            seen, deadline = _REQ.count, time.monotonic() + float(seconds or 0)
            while _REQ.count == seen and time.monotonic() < deadline:
                time.sleep(0.01)
            return
