"""A ``jax.profiler`` trace of a few training updates (``--profile-updates N``).

The chunk program takes its number of updates as an argument, so the traced call is the same
compiled program run for ``N`` updates: nothing is compiled for it, and the run's numbers are
the same as without a trace (a call of ``N`` updates followed by the rest of the chunk's is the
same arithmetic as one call of all of them). The traced call is the one after the run's first
chunk -- by then the program has run once, so its first-execution costs (page faults, buffer
allocations) stay out of the trace -- or the run's first ``N`` updates when the first chunk
would finish the run. Around it the host waits for the device (before: so that the trace holds
only those updates; after: so that it holds all of them), and writing the trace is not counted
as training time. The traced updates themselves run slower: the profiler records every
kernel (on a CPU every XLA thunk, ~10x slower for CartPole's sub-microsecond ones, whose
durations in the trace are then mostly the profiler's own cost), so the run's time and its
steps/s include that.

The trace is TensorBoard's profile format (``plugins/profile/<time>/<host>.xplane.pb``, for
``tensorboard --logdir DIR`` with ``tensorboard-plugin-profile``) plus a Perfetto trace
(``perfetto_trace.json.gz``: open it at ui.perfetto.dev, nothing to install). Across
``jax.distributed`` processes each process writes its own under ``DIR/process_<i>``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax


@dataclass
class ProfileWindow:
    """The one traced call of a run: ``arm`` decides (and sizes) it, ``start`` and ``stop``
    bracket it; ``info`` says what was traced (None until then)."""

    updates: int  # how many updates to trace (>= 1)
    directory: Path
    armed: bool = False  # the next call is the traced one
    running: bool = False  # the trace is on
    done: bool = False
    info: dict[str, Any] | None = None
    _t0: float = field(default=0.0, repr=False)

    @classmethod
    def build(cls, updates: int, directory: Path | None) -> ProfileWindow | None:
        """None when ``updates`` is 0 (off); several processes: each its own directory."""
        if not updates:
            return None
        assert directory is not None  # TrainOptions.validate
        if jax.process_count() > 1:
            directory = directory / f"process_{jax.process_index()}"
        return cls(updates, Path(directory))

    def arm(self, n: int, chunks_done: int, remaining: int, chunk_size: int) -> int:
        """The number of updates of the next call (``n`` unless it is the traced one, then at
        most ``updates``); arms the trace for it."""
        if self.done or not (chunks_done >= 1 or remaining <= chunk_size):
            return n
        self.armed = True
        return min(n, self.updates)

    def start(self, state: Any) -> None:
        """Starts the trace once the calls before have run. A trace that cannot start (the
        directory cannot be made, another profile is running) is said in ``info`` and the
        run goes on untraced."""
        jax.block_until_ready(state)  # the calls before stay out of the trace
        options = jax.profiler.ProfileOptions()
        options.python_tracer_level = 0  # the program's kernels, not the host's Python
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            jax.profiler.start_trace(str(self.directory), create_perfetto_trace=True,
                                     profiler_options=options)
        except (OSError, RuntimeError) as exc:
            self.armed, self.done = False, True
            self.info = {"dir": str(self.directory), "error": f"not started: {exc}"}
            return
        self.running = True
        self._t0 = time.perf_counter()

    def stop(self, state: Any, first_update: int, n: int) -> float:
        """Waits for the traced call, ends the trace (writing it) and returns the seconds
        the writing took (not training time). A failed write is said in ``info``; the run
        goes on."""
        if not self.running:
            return 0.0
        jax.block_until_ready(state)
        traced_s = time.perf_counter() - self._t0
        t_write = time.perf_counter()
        error = None
        try:
            self._end()
        except (OSError, RuntimeError) as exc:
            error = f"not written: {exc}"
        write_s = time.perf_counter() - t_write
        runs = sorted((self.directory / "plugins" / "profile").glob("*"))
        self.info = {"dir": str(self.directory), "trace": str(runs[-1]) if runs else None,
                     "first_update": first_update + 1, "last_update": first_update + n,
                     "traced_s": traced_s, "write_s": write_s,
                     **({"error": error} if error else {})}
        return write_s

    def close(self) -> None:
        """Ends a trace left running (an exception or interrupt inside the traced call)."""
        if self.running:
            self._end()

    def _end(self) -> None:
        self.armed = self.running = False
        self.done = True
        jax.profiler.stop_trace()


def profile_line(info: dict[str, Any]) -> str:
    """One line for the summary: which updates, where, how to open it (or why not)."""
    if "error" in info:
        return f"profile: {info['error']} ({info['dir']}); the run itself was not affected"
    where = info["trace"] or info["dir"]
    first, last = info["first_update"], info["last_update"]
    which = f"update {first}" if first == last else f"updates {first}-{last}"
    return (f"profile: {which} traced in {info['traced_s']:.2f} s to {where} "
            "(perfetto_trace.json.gz: ui.perfetto.dev; *.xplane.pb: TensorBoard's profile "
            "plugin)")


def _self_times(events: list[dict[str, Any]]) -> list[tuple[dict[str, Any], float]]:
    """Each complete event with its own time: its duration less its direct children's (an
    XLA while or conditional thunk holds the thunks of its body), thread by thread."""
    threads: dict[tuple[Any, Any], list[dict[str, Any]]] = {}
    for e in events:
        threads.setdefault((e.get("pid"), e.get("tid")), []).append(e)
    out: list[tuple[dict[str, Any], float]] = []
    for evs in threads.values():
        evs.sort(key=lambda e: (float(e["ts"]), -float(e.get("dur", 0.0))))
        own = [float(e.get("dur", 0.0)) for e in evs]
        stack: list[tuple[float, int]] = []  # (end, index) of the enclosing events
        for i, e in enumerate(evs):
            start = float(e["ts"])
            while stack and stack[-1][0] <= start:
                stack.pop()
            if stack:
                own[stack[-1][1]] -= float(e.get("dur", 0.0))
            stack.append((start + float(e.get("dur", 0.0)), i))
        out += list(zip(evs, own, strict=True))
    return out


def trace_events(trace_dir: str | Path) -> list[dict[str, Any]]:
    """The events of the Perfetto trace (``perfetto_trace.json.gz``) in ``trace_dir``."""
    import gzip
    import json

    (path,) = Path(trace_dir).glob("perfetto_trace.json.gz")
    data = json.loads(gzip.decompress(path.read_bytes()))
    return data["traceEvents"] if isinstance(data, dict) else data


def kernel_table(trace_dir: str | Path, top: int = 15) -> dict[str, Any]:
    """Where a trace's device time went: the ``top`` kernels by their own time (nested
    thunks' time is their own, not their loop's) in its ``perfetto_trace.json.gz``, with
    their counts and shares.

    The kernels are the events of the ``/device:*`` processes (a GPU's or TPU's); on a CPU,
    where XLA's thunks run on the host, the events of its XLA threads that are not the
    runtime's own scopes (``ThunkExecutor::Execute`` and the like). Returns ``{"source",
    "events", "busy_us", "rows": [{"name", "count", "total_us", "share"}, ...]}``."""
    events = trace_events(trace_dir)
    procs = {e["pid"]: e["args"]["name"] for e in events
             if e.get("ph") == "M" and e.get("name") == "process_name"}
    threads = {(e["pid"], e.get("tid")): e["args"]["name"] for e in events
               if e.get("ph") == "M" and e.get("name") == "thread_name"}
    devices = {pid for pid, name in procs.items() if name.startswith("/device:")}
    source = "device" if devices else "cpu threads"
    if devices:
        chosen = [e for e in events if e.get("ph") == "X" and e.get("pid") in devices]
    else:
        chosen = [e for e in events if e.get("ph") == "X"
                  and "XLA" in threads.get((e.get("pid"), e.get("tid")), "")]
    totals: dict[str, list[float]] = {}
    for e, own in _self_times(chosen):
        if "::" in e.get("name", ""):  # the runtime's scopes, not kernels
            continue
        entry = totals.setdefault(e["name"], [0, 0.0])
        entry[0] += 1
        entry[1] += max(own, 0.0)
    busy = sum(t for _, t in totals.values())
    rows = [{"name": name, "count": int(count), "total_us": total,
             "share": total / busy if busy else 0.0}
            for name, (count, total) in sorted(totals.items(), key=lambda kv: -kv[1][1])]
    return {"source": source, "events": int(sum(c for c, _ in totals.values())),
            "busy_us": busy, "rows": rows[:top]}


__all__ = ["ProfileWindow", "kernel_table", "profile_line", "trace_events"]
