"""JAX's own clock of compilation, read the same way in ppox's worker and in a peer's runner.

JAX reports three spans of time for every program it builds (``jax.monitoring`` events,
the same names in jax 0.6 and 0.10): tracing to a jaxpr, lowering to StableHLO and the
backend's compile. :class:`CompileClock` collects those spans from the moment it starts
and sums them as wall time: the union of the intervals, so a trace nested inside another
trace, or two programs compiling at once in two threads, is counted once. The result is
the time a process spent building programs, whichever trainer runs, its reset, its
init, its evaluator and its training loop alike, with the backend compile time of every
program by name. A program read back from a persistent cache reports no backend compile.

Standard library only at import (the peer venvs import it too); ``jax`` is imported by
:meth:`CompileClock.start`.
"""

from __future__ import annotations

import threading
from typing import Any

TRACE = "/jax/core/compile/jaxpr_trace_duration"
LOWER = "/jax/core/compile/jaxpr_to_mlir_module_duration"
COMPILE = "/jax/core/compile/backend_compile_duration"
_NAMES = {TRACE: "trace", LOWER: "lower", COMPILE: "backend_compile"}


def union_seconds(spans: list[tuple[float, float]]) -> float:
    """Total length of the union of ``(start, end)`` intervals."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(spans):
        if end <= reach:
            continue
        total += end - max(start, reach)
        reach = end
    return total


class CompileClock:
    """Collects JAX's trace, lower and backend-compile spans (see the module docstring)."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, str, float, float]] = []  # (event, program, start, end)
        self._lock = threading.Lock()

    def start(self) -> CompileClock:
        import jax.monitoring

        jax.monitoring.register_event_time_span_listener(self._on_span)
        return self

    def _on_span(self, event: str, start_time: float, end_time: float,
                 **kwargs: Any) -> None:
        if event in _NAMES:
            with self._lock:
                self.spans.append((event, str(kwargs.get("fun_name", "?")),
                                   float(start_time), float(end_time)))

    def summary(self, top: int = 6) -> dict[str, Any]:
        """``total_s``: the union of every span; per event the union of its spans; the
        ``top`` programs by backend compile seconds, each with its seconds."""
        with self._lock:
            spans = list(self.spans)
        per_event = {name: round(union_seconds([(s, e) for ev, _, s, e in spans
                                                 if ev == event]), 3)
                     for event, name in _NAMES.items()}
        compiles: dict[str, float] = {}
        for ev, prog, s, e in spans:
            if ev == COMPILE:
                compiles[prog] = compiles.get(prog, 0.0) + (e - s)
        ranked = sorted(compiles.items(), key=lambda kv: -kv[1])
        return {"total_s": round(union_seconds([(s, e) for _, _, s, e in spans]), 3),
                **{f"{name}_s": v for name, v in per_event.items()},
                "programs_compiled": len([1 for ev, *_ in spans if ev == COMPILE]),
                "top_backend_compiles": [[p, round(t, 3)] for p, t in ranked[:top]],
                "method": "union of JAX's monitoring spans (trace, lower, backend compile) "
                          "over the whole process, evaluation included"}
