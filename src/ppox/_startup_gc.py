"""The ``ppox`` command starts with Python's cyclic garbage collector off.

Start-up -- importing JAX, flax, gymnax and optax, then tracing and compiling a run's
programs -- leaves ~200,000 objects that live as long as the process and makes almost no
cyclic garbage (~4,000 objects for ``ppox train``'s CartPole default). Python's collector
still walked all of them again at each of its full collections: four in a cold ``ppox
train``, which with the younger ones took ~0.4 s of its ~5.3 s on a 2-core CPU (README,
"Platform set-up").

In the command-line process only (``ppox ...`` or ``python -m ppox.cli``; see
``_early_signals._is_cli``), importing ppox turns the collector off. ``release()`` then
moves every object alive into the permanent generation (``gc.freeze``: kept, never walked
again; the start-up's few cyclic leftovers with them) and turns the collector back on, for
the rest of the process. It runs once a run's programs are compiled (``ChunkLoop``), or
before a command that compiles no training program starts (``ppox.cli``).

Library users' collector is never touched. Pausing it (off, then on again as it was)
around ``train_runs``' env build and compile was tried for brax/inverted_pendulum, where
brax's and MuJoCo's imports ran five full collections (~0.8 s) and the trace one (~0.3 s):
the objects made meanwhile all waited in the youngest generation, and the first collections
after the pause walked them (~0.5 s), with no gain in compile or wall time over 3 pairs
(``startup_gc_1206.txt``). Only freezing them would, and that is the process's choice.
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
