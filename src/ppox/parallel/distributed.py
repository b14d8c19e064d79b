"""Several processes, one mesh: JAX's own distributed runtime (``jax.distributed``).

``initialize`` connects this process to the others before anything touches a device; after
it ``jax.devices()`` lists every process's devices and the programs of ``ppox.parallel``
built with ``devices=jax.devices()`` span all of them. Only process 0 writes
(``is_writer``); ``check_same_settings`` refuses processes started with other settings;
``exit_on_peer_failure`` turns a collective that failed because another process died into
one line and a non-zero exit instead of the runtime's abort.

Timeouts are the runtime's own: ``timeout_s`` bounds the start-up (every process must
connect within it) and the heartbeat (a process silent that long is declared dead and the
others stop).
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import jax
import numpy as np

from ppox.config import ConfigError

DEFAULT_TIMEOUT_S = 60
# A process that finished waits this long at exit for the others to finish too (a dead one is
# caught sooner, by the heartbeat): processes drift apart by more than the heartbeat timeout
# when their host is busy.
SHUTDOWN_TIMEOUT_S = 300
EXIT_PEER_FAILED = 4  # exit status of a process stopped because another one failed
# The runtime aborts the process (a C++ fatal error) when not every process joined within
# its start-up timeout; it gets this much longer, so that our own watchdog says it first.
_STARTUP_GRACE_S = 10
T = TypeVar("T")

# What the runtime's errors say when another process died or became unreachable: gloo's
# collectives fail at once on a closed connection; the coordination service after the
# heartbeat timeout.
_PEER_FAILURE_MARKERS = ("gloo", "connection closed by peer", "connection reset",
                         "heartbeat", "coordination service", "coordinationservice",
                         "deadline_exceeded", "unavailable:", "socket closed",
                         "failed to connect")


class DistributedError(ConfigError):
    """A multi-process start-up that cannot work, as one line before any compile."""


class PeerFailure(RuntimeError):
    """A collective or the runtime failed because another process stopped."""


@dataclass(frozen=True)
class Processes:
    """Where this process stands: its index among ``num_processes`` and the devices."""

    process_id: int
    num_processes: int
    local_devices: int
    devices: int

    @property
    def is_writer(self) -> bool:
        return self.process_id == 0

    @staticmethod
    def current() -> Processes:
        return Processes(jax.process_index(), jax.process_count(), jax.local_device_count(),
                         jax.device_count())


def _backends_started() -> bool:
    from jax._src import xla_bridge

    return xla_bridge.backends_are_initialized()


def _host_port(coordinator: str) -> tuple[str, int]:
    host, sep, port = coordinator.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise DistributedError(f"coordinator={coordinator!r} is not HOST:PORT (e.g. "
                               "10.0.0.1:1234, or 127.0.0.1:1234 for processes on one machine)")
    return host.strip("[]"), int(port)


def _wait_for_coordinator(host: str, port: int, timeout_s: float) -> None:
    """Waits until the coordinator accepts connections. The runtime itself aborts the whole
    process (a C++ fatal error, no Python exception) when it cannot reach the coordinator;
    probing first makes that one clear error."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host, port), timeout=min(2.0, timeout_s)):
                return
        except OSError as e:
            if time.monotonic() >= deadline:
                raise DistributedError(
                    f"cannot reach the coordinator at {host}:{port} within {timeout_s:g} s "
                    f"({e.strerror or e}): start process 0 with the same --coordinator, or "
                    "check the address, the port and the firewall") from None
            time.sleep(0.25)


def _check_port_free(port: int) -> None:
    """Process 0 binds the coordinator's port on every address; a port already taken would
    otherwise abort the process inside the runtime."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("", port))
        except OSError as e:
            raise DistributedError(f"process 0 cannot listen on port {port} for the "
                                   f"coordinator ({e.strerror or e}): choose another "
                                   "--coordinator port") from None


def _check_counts(num_processes: int | None, process_id: int | None) -> None:
    if num_processes is None or process_id is None:
        raise DistributedError("--coordinator needs --num-processes P and --process-id I "
                               "(or --distributed alone, where the cluster sets them)")
    if num_processes < 1 or not 0 <= process_id < num_processes:
        raise DistributedError(f"process_id={process_id} must be in [0, num_processes) with "
                               f"num_processes={num_processes} >= 1")


def initialize(coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, auto: bool = False,
               timeout_s: int = DEFAULT_TIMEOUT_S) -> Processes:
    """Joins this process to the others (``jax.distributed.initialize``); call it before
    anything touches a device. Nothing given and ``auto`` off: one process, nothing done.

    ``coordinator`` ("HOST:PORT", where process 0 listens), ``num_processes`` and
    ``process_id`` name this process; ``auto`` lets JAX read them from the cluster's
    environment (SLURM, Open MPI, Kubernetes, TPU pods), explicit values still winning.
    ``timeout_s``: the runtime's start-up and heartbeat timeout. On CPU the
    collectives between processes go through gloo."""
    if coordinator is None and not auto:
        if num_processes not in (None, 1) or process_id not in (None, 0):
            raise DistributedError("--num-processes/--process-id need --coordinator "
                                   "HOST:PORT (or --distributed on a cluster)")
        return Processes.current()
    if timeout_s < 1:
        raise DistributedError(f"timeout_s={timeout_s} must be at least 1 second")
    host, port = _host_port(coordinator) if coordinator is not None else ("", 0)
    if coordinator is not None and not auto:
        _check_counts(num_processes, process_id)
    if jax.distributed.is_initialized():
        raise DistributedError("the distributed runtime is already initialized in this process")
    if _backends_started():
        raise DistributedError("the distributed runtime must start before JAX uses a device "
                               "(call ppox.parallel.distributed.initialize first)")
    if coordinator is not None and not auto:
        if process_id == 0:
            _check_port_free(port)
        else:
            _wait_for_coordinator(host, port, timeout_s)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    joined = _startup_watchdog(timeout_s, process_id, num_processes)
    try:
        jax.distributed.initialize(
            coordinator, num_processes, process_id,
            cluster_detection_method=None if auto else "deactivate",
            initialization_timeout=timeout_s + _STARTUP_GRACE_S,
            heartbeat_timeout_seconds=timeout_s,
            shutdown_timeout_seconds=max(timeout_s, SHUTDOWN_TIMEOUT_S))
    except ValueError as e:  # what the cluster's environment did not say
        if not auto:
            raise
        raise DistributedError(f"--distributed found no cluster environment to read ({e}); "
                               "give --coordinator, --num-processes and --process-id") from None
    finally:
        joined.set()
    return Processes.current()


def _startup_watchdog(timeout_s: int, process_id: int | None,
                      num_processes: int | None) -> threading.Event:
    """Ends this process with one line and exit status 2 when the runtime has not started
    within ``timeout_s`` (some process never joined); set the returned event once it has.
    The runtime itself would abort a little later with a C++ stack trace."""
    joined = threading.Event()
    who = (f"process {process_id} of {num_processes}" if process_id is not None
           and num_processes is not None else "this process")

    def watch() -> None:
        if not joined.wait(timeout_s):
            sys.stdout.flush()
            sys.stderr.write(f"error: {who}: not every process joined within {timeout_s} s; "
                             "start all of them with the same --coordinator and "
                             "--num-processes (or give them more --distributed-timeout-s)\n")
            sys.stderr.flush()
            os._exit(2)

    threading.Thread(target=watch, daemon=True, name="ppox-startup-watchdog").start()
    return joined


def is_writer() -> bool:
    """Process 0 prints progress and writes every file; the others only compute."""
    return jax.process_index() == 0


def settings_digest(settings: Any) -> str:
    """sha256 of the settings as sorted JSON (values JSON cannot hold by their repr)."""
    text = json.dumps(settings, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()


def _allgather_bytes(data: bytes) -> list[bytes]:
    """Each process's ``data``, on every process (padded to the longest, via a collective)."""
    from jax.experimental import multihost_utils

    sizes = multihost_utils.process_allgather(np.array([len(data)], np.int32))
    width = int(np.max(sizes))
    buf = np.zeros(width, np.uint8)
    buf[:len(data)] = np.frombuffer(data, np.uint8)
    rows = multihost_utils.process_allgather(buf)
    return [bytes(np.asarray(r)[:int(n)]) for r, n in zip(rows, np.ravel(sizes), strict=True)]


def _differences(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    keys = sorted(set(a) | set(b))
    return [f"{k}: {a.get(k, '<unset>')!r} vs {b.get(k, '<unset>')!r}" for k in keys
            if a.get(k, "<unset>") != b.get(k, "<unset>")]


def check_same_settings(settings: Mapping[str, Any], what: str = "settings") -> None:
    """Every process must run the same resolved settings: their hashes are compared across
    processes, and a mismatch raises the same ``DistributedError`` on every process, naming
    the processes and the settings that differ from process 0's. One process: nothing to do.
    Every process must call it (it is a collective)."""
    if jax.process_count() == 1:
        return
    text = json.dumps(settings, sort_keys=True, default=repr)
    digests = _allgather_bytes(hashlib.sha256(text.encode()).digest())
    odd = [i for i, d in enumerate(digests) if d != digests[0]]
    if not odd:
        return
    # every process sees the same mismatch, so all of them take this second collective
    texts = [json.loads(t) for t in _allgather_bytes(text.encode())]
    diff = _differences(texts[0], texts[odd[0]])
    raise DistributedError(
        f"process {', '.join(map(str, odd))} of {len(digests)} started with other {what} than "
        f"process 0 ({'; '.join(diff[:4]) or 'different values'}"
        f"{'; ...' if len(diff) > 4 else ''}): start every process with the same command")


def _from_process_0(data: bytes) -> bytes:
    """Process 0's ``data`` on every process (the others' is ignored); one byte in front, so
    that no process sends an empty buffer."""
    return _allgather_bytes(b"." + (data if jax.process_index() == 0 else b""))[0][1:]


def broadcast(value: T) -> T:
    """Process 0's ``value`` (anything picklable, small) on every process; one process: the
    value itself. A collective: every process must call it."""
    if jax.process_count() == 1:
        return value
    return pickle.loads(_from_process_0(pickle.dumps(value)))


def _as_payload(exc: BaseException) -> bytes:
    """An exception as bytes another process can raise (its own class and message when they
    pickle, else a ``RuntimeError`` with its first line)."""
    try:
        data = pickle.dumps(exc)
        pickle.loads(data)
        return data
    except Exception:  # e.g. an exception whose __init__ takes other arguments
        lines = str(exc).strip().splitlines()
        return pickle.dumps(RuntimeError(lines[0] if lines else type(exc).__name__))


def _on_process_0(fn: Callable[[], T]) -> tuple[T | None, Exception | None]:
    """Runs ``fn`` on process 0: its result (None elsewhere) or the exception it raised."""
    if jax.process_index() != 0:
        return None, None
    try:
        return fn(), None
    except Exception as exc:
        return None, exc


def run_on_writer(fn: Callable[[], T]) -> T | None:
    """Runs ``fn`` (a write) on process 0 only; its result there, None on the others. An
    exception it raises is raised on every process (same class and message), so a failed
    write stops all of them together; it is also a barrier. One process: ``fn()``. A
    collective: every process must call it."""
    if jax.process_count() == 1:
        return fn()
    result, error = _on_process_0(fn)
    shared = _from_process_0(b"" if error is None else _as_payload(error))
    if error is not None:
        raise error
    if shared:
        raise pickle.loads(shared)
    return result


def from_writer(fn: Callable[[], T]) -> T:
    """``fn()`` computed on process 0 (e.g. a read of a file it wrote), its result
    (picklable, small) on every process; its exception raised on every process."""
    if jax.process_count() == 1:
        return fn()
    result, error = _on_process_0(fn)
    shared = _from_process_0(b"E" + _as_payload(error) if error is not None
                             else b"R" + pickle.dumps(result))
    if error is not None:
        raise error
    if shared[:1] == b"E":
        raise pickle.loads(shared[1:])
    return pickle.loads(shared[1:])


def agreed_max(values: Sequence[int]) -> list[int]:
    """The element-wise maximum of each process's ``values`` (int32), on every process: a
    decision every process takes together (a stop request is any process's signal). One
    process: the values."""
    if jax.process_count() == 1:
        return [int(v) for v in values]
    from jax.experimental import multihost_utils

    rows = multihost_utils.process_allgather(np.asarray(values, np.int32))
    return [int(v) for v in np.max(np.asarray(rows).reshape(jax.process_count(), -1), axis=0)]


def peer_failure(exc: BaseException) -> PeerFailure | None:
    """The ``PeerFailure`` an exception means when it comes from a lost process, else None."""
    if jax.process_count() == 1 or isinstance(exc, PeerFailure):
        return exc if isinstance(exc, PeerFailure) else None
    text = str(exc).lower()
    if not any(m in text for m in _PEER_FAILURE_MARKERS):
        return None
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return PeerFailure(
        f"process {jax.process_index()} of {jax.process_count()}: another process stopped or "
        f"became unreachable, so training cannot go on ({first[:200]})")


@contextmanager
def exit_on_peer_failure(exit_code: int = EXIT_PEER_FAILED) -> Iterator[None]:
    """Runs the block; if it fails because another process died, writes one line to stderr
    and ends this process at once with ``exit_code``: the runtime's normal shutdown would
    wait at a barrier the dead process never reaches, then abort with a page of logs."""
    try:
        yield
    except Exception as exc:
        failure = peer_failure(exc)
        if failure is None:
            raise
        sys.stderr.write(f"ppox: {failure}\n")
        sys.stderr.flush()
        sys.stdout.flush()
        os._exit(exit_code)


__all__ = [
    "DEFAULT_TIMEOUT_S",
    "EXIT_PEER_FAILED",
    "DistributedError",
    "PeerFailure",
    "Processes",
    "agreed_max",
    "broadcast",
    "check_same_settings",
    "exit_on_peer_failure",
    "from_writer",
    "initialize",
    "is_writer",
    "peer_failure",
    "run_on_writer",
    "settings_digest",
]
