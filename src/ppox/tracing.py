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
import jax.numpy as jnp
from jax.extend.core import jaxpr_as_fun


def trace_once(fn: Callable[..., Any], *example: Any) -> tuple[Callable[..., Any], Any]:
    """``(fn', out_shapes)``: ``fn'(*args)`` computes ``fn(*args)`` from one trace of
    ``fn`` at ``example``'s shapes (later calls must have those shapes), and ``out_shapes``
    is its output as ``jax.ShapeDtypeStruct`` leaves."""
    converted, consts = jax.closure_convert(fn, *example)
    shapes = jax.eval_shape(converted, *example, *consts)
    return (lambda *args: converted(*args, *consts)), shapes


class CachedTrace:
    """A function of its arguments alone (it closes over no tracer: an env's ``reset(key)``),
    traced once per argument shapes and then evaluated from that jaxpr wherever it is called:
    in the init program, in the auto-reset inside the training program, in ``eval_shape``s.

    A Playground reset (CheetahRun settles for 200 physics steps) takes seconds to trace, and
    a run traces it in several programs. If the trace closes over a tracer after all, nothing
    is cached: each call traces ``fn`` as usual (and evaluates that trace at once).
    """

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self._cache: dict[Any, tuple[Any, Any]] = {}

    def __call__(self, *args: Any) -> Any:
        leaves, in_tree = jax.tree.flatten(args)
        signature = (in_tree, tuple((jnp.shape(x), jnp.result_type(x)) for x in leaves))
        entry = self._cache.get(signature)
        if entry is None:
            closed, out_shape = jax.make_jaxpr(self.fn, return_shape=True)(*args)
            entry = (jaxpr_as_fun(closed), jax.tree.structure(out_shape))
            if not any(isinstance(c, jax.core.Tracer) for c in closed.consts):
                self._cache[signature] = entry  # else its tracers die with this trace
        fn, out_tree = entry
        return jax.tree.unflatten(out_tree, fn(*leaves))
