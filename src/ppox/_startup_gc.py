"""The ``ppox`` command starts with Python's cyclic garbage collector off.

Start-up -- importing JAX, flax, gymnax and optax, then tracing and compiling a run's
programs -- leaves ~200,000 objects that live as long as the process and makes almost no
cyclic garbage (~4,000 objects for ``ppox train``'s CartPole default). Python's collector
still walked all of them again at each of its full collections: four in a cold ``ppox
train``, ~0.3 s of its ~5.4 s on a 2-core CPU (README, "Where a cold run's time goes").

In the command-line process only (``ppox ...`` or ``python -m ppox.cli``; see
``_early_signals._is_cli``), importing ppox turns the collector off. ``release()`` then
moves every object alive into the permanent generation (``gc.freeze``: kept, never walked
again; the start-up's few cyclic leftovers with them) and turns the collector back on, for
the rest of the process. It runs once a run's programs are compiled (``ChunkLoop``), or
before a command that compiles no training program starts (``ppox.cli``). Library users'
collector is never touched.
"""

from __future__ import annotations

import gc

from ppox._early_signals import _is_cli

_held: list[bool] = []


def hold() -> bool:
    """Turns the collector off in the ``ppox`` command's process (idempotent); whether it is
    held off now."""
    if not _held and _is_cli() and gc.isenabled():
        gc.disable()
        _held.append(True)
    return bool(_held)


def release() -> bool:
    """Freezes what is alive and turns the collector back on, if ``hold`` turned it off;
    whether it did (then and only then: later calls do nothing)."""
    if not _held:
        return False
    _held.clear()
    gc.freeze()
    gc.enable()
    return True


hold()

__all__ = ["hold", "release"]
