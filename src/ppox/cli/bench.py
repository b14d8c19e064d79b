"""``ppox bench``: the quick throughput diagnostics."""

from __future__ import annotations

from collections.abc import Sequence


def cmd_bench(argv: Sequence[str]) -> int:
    from ppox.bench import cmd_bench as run

    return run(argv)
