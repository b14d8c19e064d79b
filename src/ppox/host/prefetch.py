"""Imports that a run needs only at its end, started in a thread once its programs compiled.

A run directory's final checkpoint is written with orbax and ``ppox train`` then draws
``learning_curve.png`` with matplotlib's Agg canvas: ~0.5 s of imports on a 2-core CPU that a
short run paid after its training. ``ChunkLoop`` starts them in a thread as the first chunk
is dispatched, while the main thread waits on the device with the GIL released, so a core
that the training leaves free imports them. Started before the compile instead, the thread
slowed the tracing as much as it saved: tracing holds the GIL (``benchmarks/results/
HISTORY.md``, "End to end against PureJaxRL's script", has both measurements). The
modules are the same, imported once: Python's import lock makes a later ``import`` in the
main thread wait for the thread's, never run it twice. A failed import is left for the real
one to report.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
import threading
from collections.abc import Sequence

# what ``ppox train`` imports after its training besides the checkpoints: its learning curve
TRAIN_TAIL_MODULES = ("ppox.host.plots",)


def prefetch_imports(modules: Sequence[str]) -> threading.Thread | None:
    """Starts importing those of ``modules`` not imported yet in a thread (not a daemon:
    the interpreter waits for it at exit rather than stopping it mid-import) and returns it
    (None: nothing to import); an error there is swallowed."""
    todo = [name for name in modules if name not in sys.modules]
    if not todo:
        return None

    def work() -> None:
        for name in todo:
            with contextlib.suppress(Exception):  # the main thread's own import reports it
                importlib.import_module(name)

    thread = threading.Thread(target=work, name="ppox-prefetch-imports")
    thread.start()
    return thread


__all__ = ["TRAIN_TAIL_MODULES", "prefetch_imports"]
