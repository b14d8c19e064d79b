"""Tracing a function once where a program needs both its output shapes and its values.

A scan or loop whose carry must be allocated before the loop (the chunk's metric buffers,
the rollout's packed record) needs the body's output shapes first. ``jax.eval_shape`` of
the body traces its Python again: for a brax or Playground env that is the whole physics
step (and its reset) once more, about a second of tracing each. ``trace_once`` traces the
body into a jaxpr one time (``jax.closure_convert``, which also turns the tracers the body
closes over into arguments); the shapes come from that jaxpr and the loop evaluates it,
without running the Python again. The program is the same: the jaxpr's equations are
bound as they were traced.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax


def trace_once(fn: Callable[..., Any], *example: Any) -> tuple[Callable[..., Any], Any]:
    """``(fn', out_shapes)``: ``fn'(*args)`` computes ``fn(*args)`` from one trace of
    ``fn`` at ``example``'s shapes (later calls must have those shapes), and ``out_shapes``
    is its output as ``jax.ShapeDtypeStruct`` leaves."""
    converted, consts = jax.closure_convert(fn, *example)
    shapes = jax.eval_shape(converted, *example, *consts)
    return (lambda *args: converted(*args, *consts)), shapes
