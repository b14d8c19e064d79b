"""What a result depends on and how it is saved: machine name and info, the command line,
JSON files, medians and ratios, interleaved timing."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import json
import os
import platform
import re
import shlex
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ppox.diagnostics import median


def _cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux) or platform (elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _cpu_avx512() -> bool:
    from ppox._platform import cpu_has_avx512

    return cpu_has_avx512()


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _slug(text: str) -> str:
    s = re.sub(r"\(r\)|\(tm\)|cpu @.*$|processor", "", text.lower())
    return re.sub(r"[^a-z0-9]+", "-", s).strip("-") or "unknown"


def machine_name() -> str:
    """A short, file-name-safe name of this machine's compute.

    ``<gpu-name>`` (e.g. ``nvidia-h100-80gb-hbm3``) when JAX's default backend is a GPU/TPU,
    otherwise ``cpu-<n>core-<model slug>`` (e.g. ``cpu-2core-amd-epyc``), ``n`` being the
    cores this process may run on, with ``-avx512`` on a CPU that has AVX-512: a virtual
    machine may report only the vendor's family name (``AMD EPYC``) for CPUs of different
    generations, whose figures must not share a folder. ``PPOX_BENCH_MACHINE`` overrides it.
    """
    override = os.environ.get("PPOX_BENCH_MACHINE")
    if override:
        return _slug(override)
    try:
        import jax

        dev = jax.devices()[0]
        if dev.platform != "cpu":
            return _slug(getattr(dev, "device_kind", dev.platform))
    except Exception:  # no backend: fall back to the CPU description
        pass
    isa = "-avx512" if _cpu_avx512() else ""
    return f"cpu-{_cpu_count()}core-{_slug(_cpu_model())}{isa}"


def _memory_total_gb() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2**20, 2)
    except OSError:
        pass
    return None


def dist_version(dist: str) -> str | None:
    """The installed version of a distribution, None if it is not installed."""
    import importlib.metadata as md

    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def machine_info() -> dict[str, Any]:
    """What a result depends on: CPU model, cores, memory, versions, devices, date, flags."""
    import jax

    devices = jax.devices()
    return {
        "machine": machine_name(),
        "cpu_model": _cpu_model(),
        "cpu_avx512": _cpu_avx512(),
        "cpu_cores": _cpu_count(),
        "cpu_count_os": os.cpu_count(),
        "memory_gb": _memory_total_gb(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        **{d: dist_version(d) for d in ("jaxlib", "ppox", "flax", "optax", "gymnax", "brax")},
        "backend": jax.default_backend(),
        "devices": [str(d) for d in devices],
        "device_kind": devices[0].device_kind if devices else None,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }


def argv_string(argv: Sequence[str] | None = None) -> str:
    """The command line that made a result, shell-quoted (``python benchmarks/x.py ...``)."""
    args = list(sys.argv if argv is None else argv)
    if args and args[0].endswith(".py"):
        with contextlib.suppress(ValueError):
            args[0] = os.path.relpath(args[0])
        return "python " + shlex.join(args)
    return shlex.join(args)


def jsonable(x: Any) -> Any:
    """``json.dumps(default=...)``: numpy scalars and arrays, paths, sets, dataclasses."""
    try:
        import numpy as np

        if isinstance(x, np.generic):
            return x.item()
        if isinstance(x, np.ndarray):
            return x.tolist()
    except ImportError:
        pass
    if isinstance(x, Path):
        return str(x)
    if isinstance(x, set | tuple):
        return list(x)
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return dataclasses.asdict(x)
    return str(x)


def save_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Writes ``obj`` as indented JSON (see :func:`jsonable`), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=jsonable) + "\n")
    tmp.replace(path)
    return path


def ratio(a: float | Sequence[float], b: float | Sequence[float]) -> float:
    """``a / b`` where lists are first reduced to their medians; NaN when ``b`` is 0/NaN."""
    num = median(a) if isinstance(a, list | tuple) else float(a)
    den = median(b) if isinstance(b, list | tuple) else float(b)
    if den == 0 or den != den:
        return float("nan")
    return num / den


def interleaved(fns: Mapping[str, Callable[[], Any]], repeats: int, *,
                warmup: bool = False) -> dict[str, list[float]]:
    """Times each function ``repeats`` times in interleaved order (seconds).

    The order alternates every round (A B, then B A, ...) so a slow drift in the machine's
    load (other processes, thermal) hits every function alike. The functions must block
    until their work is done (e.g. end with ``jax.block_until_ready``). ``warmup`` calls
    each once first, untimed.
    """
    names = list(fns)
    if warmup:
        for name in names:
            fns[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            t0 = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - t0)
    return times
