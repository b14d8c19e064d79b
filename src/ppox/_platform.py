"""Platform set-up that the command line (and the benchmarks and tests) apply explicitly;
``import ppox`` changes nothing in JAX.

* Threefry on CPU (``use_unrolled_threefry_on_cpu``). JAX lowers the threefry2x32 hash
  (behind every ``jax.random`` call) to a *rolled* loop on CPU, to keep compile times short;
  on GPU/TPU it emits the straight-line form. A PPO rollout on CPU calls threefry several
  times per env step, each call a tiny loop whose per-iteration bookkeeping costs far more
  than the hash itself, so registering the unrolled lowering for CPU speeds rollouts up
  several times (README, "Platform set-up", has the measurement). The random bits are
  identical: it is the same function, lowered without the loop. ``PPOX_ROLLED_THREEFRY=1``
  keeps JAX's default; if JAX's internals move, this is skipped and only speed is lost.
* Per-env XLA CPU flags (``apply_env_cpu_xla_flags``), measured per env id.
* 512-bit vectors in XLA's own CPU kernels where the CPU has AVX-512
  (``use_wide_cpu_vectors``).
* One XLA CPU device per core (``use_every_cpu_core``), or, for one small run, one device
  with a single intra-op thread (``use_one_cpu_thread``).
* JAX's persistent compilation cache (``enable_compile_cache``).
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import sys
import threading
import warnings
from collections.abc import Iterator
from typing import Any

UNROLLED_THREEFRY_ON_CPU = False
_THREEFRY_LOWERING = threading.local()  # .rolled: JAX's rolled loop in this thread


def use_unrolled_threefry_on_cpu() -> bool:
    """Registers JAX's unrolled threefry lowering for the CPU platform (idempotent); a
    program lowered inside ``rolled_threefry()`` keeps JAX's rolled one."""
    global UNROLLED_THREEFRY_ON_CPU
    if UNROLLED_THREEFRY_ON_CPU or os.environ.get("PPOX_ROLLED_THREEFRY") == "1":
        return UNROLLED_THREEFRY_ON_CPU
    try:
        from jax._src.interpreters import mlir
        from jax._src.random import threefry2x32

        unrolled = threefry2x32._threefry2x32_lowering_rule
        rolled = threefry2x32._threefry2x32_cpu_lowering_rule

        def lowering(ctx: Any, *args: Any, **params: Any) -> Any:
            rule = rolled if getattr(_THREEFRY_LOWERING, "rolled", False) else unrolled
            return rule(ctx, *args, **params)

        mlir.register_lowering(threefry2x32.threefry2x32_p, lowering, platform="cpu")
    except (ImportError, AttributeError):  # pragma: no cover - depends on the jax version
        return False
    UNROLLED_THREEFRY_ON_CPU = True
    return True


@contextlib.contextmanager
def rolled_threefry() -> Iterator[None]:
    """Programs lowered in this block, in this thread, get JAX's rolled threefry loop on a
    CPU (the same bits): for a program that runs once, or draws few random numbers (the
    init, the evaluation), its smaller code compiles quicker than the unrolled form runs.
    Nothing changes where ``use_unrolled_threefry_on_cpu`` did not register that form."""
    before = getattr(_THREEFRY_LOWERING, "rolled", False)
    _THREEFRY_LOWERING.rolled = True
    try:
        yield
    finally:
        _THREEFRY_LOWERING.rolled = before


class LowersRolled:
    """A jitted function whose lowering (at its first call, or by ``lower``) takes JAX's
    rolled threefry (``rolled_threefry``); calls it otherwise unchanged."""

    def __init__(self, jitted: Any) -> None:
        self.jitted = jitted

    def __call__(self, *args: Any) -> Any:
        with rolled_threefry():
            return self.jitted(*args)

    def lower(self, *args: Any) -> Any:
        with rolled_threefry():
            return self.jitted.lower(*args)


# XLA CPU flags that an environment's programs run faster with, measured per env id (README,
# "Robotics control": brax/halfcheetah trains about 2x faster with YNN fusions and the new
# fusion emitters off; CartPole and inverted_pendulum are slower with them, so per env).
ENV_CPU_XLA_FLAGS: dict[str, tuple[str, ...]] = {
    "brax/halfcheetah": ("--xla_cpu_experimental_ynn_fusion_type=",
                         "--xla_cpu_use_fusion_emitters=false"),
}


def env_cpu_xla_flags(env_id: str) -> tuple[str, ...]:
    """The XLA CPU flags measured to speed up ``env_id`` (see ``ENV_CPU_XLA_FLAGS``)."""
    return ENV_CPU_XLA_FLAGS.get(env_id, ())


def apply_env_cpu_xla_flags(env_id: str) -> tuple[str, ...]:
    """Adds ``env_cpu_xla_flags(env_id)`` to ``XLA_FLAGS`` for this process; returns what
    was added.

    XLA reads its flags once, when JAX starts its backends, so this only works before
    anything ran on a device; it does nothing then, or when ``JAX_PLATFORMS`` excludes the
    CPU, when ``PPOX_ENV_XLA_FLAGS=0``, or for a flag whose name the user's ``XLA_FLAGS``
    already sets. ``ppox train`` and ``ppox sweep`` call it; library users can call it
    first thing, or set the flags themselves.
    """
    if os.environ.get("PPOX_ENV_XLA_FLAGS") == "0":
        return ()
    added = tuple(f for f in env_cpu_xla_flags(env_id)
                  if _may_set_cpu_xla_flag(f.split("=")[0].lstrip("-")))
    _add_xla_flags(*added)
    return added


CPU_VECTOR_WIDTH_ENV = "PPOX_CPU_VECTOR_WIDTH"  # bits; "0" leaves XLA's choice
CPU_DEVICES_ENV = "PPOX_CPU_DEVICES"  # XLA CPU devices; "1": one (no per-core devices)
OFF_WORDS = ("0", "off", "false", "no")  # what an on/off PPOX_* setting takes as off


# (variable, which whole numbers it takes, in words and what to do instead)
_OWN_CHOICE = "; unset it for ppox's own choice"
_DEVICES_SETTING = (CPU_DEVICES_ENV, lambda n: n >= 1, "a CPU device count: a whole number "
                    ">= 1 (1: no per-core devices)" + _OWN_CHOICE)
_VECTOR_WIDTH_SETTING = (CPU_VECTOR_WIDTH_ENV, lambda n: n in (0, 128, 256, 512),
                         "a vector width in bits: 128, 256 or 512 (0: XLA's choice)"
                         + _OWN_CHOICE)


def _env_setting(setting: tuple[str, Any, str]) -> int | None:
    """A ``(variable, allowed, what)`` setting's value as an int, None when unset; a value
    that is not a whole number ``allowed`` takes raises ``ValueError``: one line naming the
    variable, its value and what it takes."""
    name, allowed, what = setting
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or not allowed(value):
        raise ValueError(f"{name}={raw!r} is not {what}")
    return value


def check_env_settings() -> None:
    """The ``PPOX_*`` settings the ``ppox`` command reads while it starts, checked before it
    reads any of them: a bad value is one ``ValueError`` line (the command prints it as
    ``error: ...`` and exits 2) instead of a traceback or a silent default."""
    _env_setting(_DEVICES_SETTING)
    _env_setting(_VECTOR_WIDTH_SETTING)
    _cpu_threads_setting()


def cpu_has_avx512() -> bool:
    """Whether this (Linux) CPU reports AVX-512 (``avx512f`` in ``/proc/cpuinfo``)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return "avx512f" in line.split()
    except OSError:
        pass
    return False


def use_wide_cpu_vectors() -> int:
    """Has XLA's own CPU kernels (the fusions around the matmuls: activations, the loss,
    Adam) use 512-bit vectors on a CPU with AVX-512, where XLA prefers 256
    (``--xla_cpu_prefer_vector_width``); README "Platform set-up" has the measurements.

    Only done when the user's ``XLA_FLAGS`` do not set the width, the CPU backend is in use
    and JAX has not started its backends; ``PPOX_CPU_VECTOR_WIDTH=N`` chooses N bits on
    any CPU (0 turns this off). Returns the width set (0: none).
    """
    if not _may_set_cpu_xla_flag("xla_cpu_prefer_vector_width"):
        return 0
    want = _env_setting(_VECTOR_WIDTH_SETTING)
    width = want if want is not None else (512 if cpu_has_avx512() else 0)
    if width <= 0:
        return 0
    _add_xla_flags(f"--xla_cpu_prefer_vector_width={width}")
    return width


def use_ppox_cpu_setup() -> None:
    """What every ``ppox`` command sets up before JAX starts, the device count aside:
    512-bit vectors on an AVX-512 CPU (``use_wide_cpu_vectors``) and the unrolled threefry
    lowering (``use_unrolled_threefry_on_cpu``). Benchmarks call it to run as ppox does."""
    use_wide_cpu_vectors()
    use_unrolled_threefry_on_cpu()


def _may_set_cpu_xla_flag(name: str) -> bool:
    """Whether ppox may add ``--<name>`` to ``XLA_FLAGS``: the user's flags do not set it,
    the CPU backend is in use and JAX has not started its backends (XLA reads its flags
    once, then)."""
    platforms = os.environ.get("JAX_PLATFORMS", "")
    if name in os.environ.get("XLA_FLAGS", "") or (platforms and "cpu" not in platforms):
        return False
    from jax._src import xla_bridge

    return not xla_bridge.backends_are_initialized()


def _add_xla_flags(*flags: str) -> None:
    """Appends ``flags`` (``--name=value`` each) to ``XLA_FLAGS``."""
    if flags:
        os.environ["XLA_FLAGS"] = " ".join([os.environ.get("XLA_FLAGS", ""), *flags]).strip()


_DEVICE_COUNT_FLAG: str | None = None  # what use_every_cpu_core added to XLA_FLAGS


def use_every_cpu_core() -> int:
    """Exposes each CPU core as an XLA device (``--xla_force_host_platform_device_count``).

    XLA runs these programs' small ops on one thread per device, so batches of runs (seeds,
    sweeps) are split across devices to use every core. Only done when the user has not
    set the device count, the CPU backend is in use, and JAX has not started its backends
    yet; ``PPOX_CPU_DEVICES=N`` chooses N (1 turns this off). Returns the count set (0: none).
    """
    if not _may_set_cpu_xla_flag("xla_force_host_platform_device_count"):
        return 0
    want = _env_setting(_DEVICES_SETTING)
    n = want if want is not None else len(os.sched_getaffinity(0))
    if n <= 1:
        return 0
    global _DEVICE_COUNT_FLAG
    _DEVICE_COUNT_FLAG = f"--xla_force_host_platform_device_count={n}"
    _add_xla_flags(_DEVICE_COUNT_FLAG)
    return n


CPU_THREADS_ENV = "PPOX_CPU_THREADS"  # unset: ppox decides; "0": XLA's pool; "1": one thread
# A run's minibatch rows up to which one XLA CPU thread trained faster than a pool of one
# per core (benchmarks/results/cpu-2core-amd-epyc-avx512/one_cpu_thread_1206.txt: CartPole 4
# and 16 envs 1.13x and 1.12x on 2 cores, 32 envs 0.99x, 64 envs 0.76x; Breakout-MinAtar's
# CNN at 512 rows 0.54x, so vector observations only)
ONE_THREAD_MAX_ROWS = 512
_ACCELERATOR_PLUGINS = ("jax_cuda12_plugin", "jax_cuda13_plugin", "jax_rocm60_plugin",
                        "jax_rocm7_plugin", "libtpu", "jax_plugins")


_ONE_CPU_THREAD = False  # use_one_cpu_thread started the backend


def one_cpu_thread_note() -> str:
    """``", one CPU thread"`` once ``use_one_cpu_thread`` started the backend, else ``""``."""
    return ", one CPU thread" if _ONE_CPU_THREAD else ""


def one_cpu_thread_wanted(minibatch_rows: int) -> bool:
    """Whether a single run whose SGD minibatches have ``minibatch_rows`` rows (of vector
    observations, an MLP) should run on one CPU thread: ``PPOX_CPU_THREADS=1`` always,
    ``0`` never, unset when ``minibatch_rows <= ONE_THREAD_MAX_ROWS``."""
    want = _cpu_threads_setting()
    if want in OFF_WORDS:
        return False
    return want == "1" or minibatch_rows <= ONE_THREAD_MAX_ROWS


def _cpu_threads_setting() -> str:
    """``$PPOX_CPU_THREADS``: ``""`` (unset: ppox decides), ``"1"`` or one of ``OFF_WORDS``;
    anything else raises ``ValueError`` (one line)."""
    want = os.environ.get(CPU_THREADS_ENV, "").strip().lower()
    if want and want not in (*OFF_WORDS, "1"):
        raise ValueError(f"{CPU_THREADS_ENV}={want!r} is not a thread setting: 1 (one "
                         "XLA CPU thread for any run) or 0 (XLA's pool); unset it for "
                         "ppox's own choice")
    return want


def use_one_cpu_thread_for(cfg: Any, runs: int = 1, spread: bool = False) -> bool:
    """What ``ppox train`` does before JAX starts: ``use_one_cpu_thread`` for a single run
    (``runs == 1``, not ``spread`` over devices) of a classic-control env (vector
    observations, an MLP; ``ppox.envs.CLASSIC_CONTROL_IDS``) whose minibatches
    (``num_envs * num_steps / num_minibatches`` rows) pass ``one_cpu_thread_wanted``.
    Returns whether it was done."""
    from ppox.envs import CLASSIC_CONTROL_IDS

    if runs != 1 or spread or cfg.env_id not in CLASSIC_CONTROL_IDS or cfg.torso == "cnn":
        return False
    rows = cfg.num_envs * cfg.num_steps // max(cfg.num_minibatches, 1)
    return one_cpu_thread_wanted(rows) and use_one_cpu_thread()


def _cpu_only() -> bool:
    """JAX will run on the CPU: ``JAX_PLATFORMS`` is ``cpu``, or unset with no accelerator
    plugin installed (their import names, not imported here)."""
    import importlib.metadata
    import importlib.util

    platforms = os.environ.get("JAX_PLATFORMS", "").strip().lower()
    if platforms:
        return platforms == "cpu"
    return (not any(importlib.util.find_spec(name) for name in _ACCELERATOR_PLUGINS)
            and not importlib.metadata.entry_points(group="jax_plugins"))


def use_one_cpu_thread() -> bool:
    """Starts JAX's CPU backend with one device and a single intra-op thread.

    XLA sizes its CPU thread pool from the cores this process may run on when the backend
    starts. For a small program (a few envs, a 128-row minibatch) a pool of one thread per
    core costs more in hand-offs than the second core gives: a 4-env CartPole run trains
    ~1.13x faster on one thread. So the backend is started while the process is held to
    one core, then every thread (the pool's included) may run on all of them again; XLA's
    compiler threads, started later, use every core as before.

    Only done on Linux, on a CPU-only JAX (``_cpu_only``), before JAX has started its
    backends, when the process may use more than one core and the user's ``XLA_FLAGS`` do
    not set the device count (ppox's own per-core devices, ``use_every_cpu_core``, are
    dropped: one run uses one device). Returns whether it was done."""
    global _DEVICE_COUNT_FLAG, _ONE_CPU_THREAD
    if not hasattr(os, "sched_setaffinity") or not _cpu_only():
        return False
    from jax._src import xla_bridge

    flags = os.environ.get("XLA_FLAGS", "")
    if _DEVICE_COUNT_FLAG is not None:
        flags = " ".join(f for f in flags.split() if f != _DEVICE_COUNT_FLAG)
    cores = os.sched_getaffinity(0)
    if (xla_bridge.backends_are_initialized() or len(cores) < 2
            or "xla_force_host_platform_device_count" in flags):
        return False
    os.environ["XLA_FLAGS"] = flags
    _DEVICE_COUNT_FLAG = None
    os.sched_setaffinity(0, {min(cores)})
    try:
        import jax

        jax.devices()
        _ONE_CPU_THREAD = True
    finally:
        for tid in os.listdir("/proc/self/task"):
            with contextlib.suppress(OSError):  # a thread that has ended meanwhile
                os.sched_setaffinity(int(tid), cores)
    return True


# The persistent compilation cache (JAX's own): a second run of the same program -- another
# seed, other hyperparameter values (they are traced), a resume -- loads the executable
# instead of compiling it.
COMPILE_CACHE_ENV = "PPOX_COMPILE_CACHE"  # "0": off
COMPILE_CACHE_DIR_ENV = "PPOX_COMPILE_CACHE_DIR"  # where (default: the user cache dir)
# its bound in MiB (-1: none), kept by ppox.host.cache_prune
COMPILE_CACHE_MAX_MB_ENV = "PPOX_COMPILE_CACHE_MAX_MB"
DEFAULT_COMPILE_CACHE_MAX_MB = 4096
_CACHE_MAX_MB_SETTING = (
    COMPILE_CACHE_MAX_MB_ENV, lambda n: n >= 1 or n == -1,
    "a cache size: give the compilation cache's bound in MiB, a positive integer (default "
    f"{DEFAULT_COMPILE_CACHE_MAX_MB}), or -1 for no bound; {COMPILE_CACHE_ENV}=0 turns the "
    "cache off")
_CACHE_EVENTS: dict[str, int] = {"requests": 0, "hits": 0, "programs": 0}
_CACHE_LISTENING = False
_COMPILE_CACHE_DIR: str | None = None
_COMPILE_CACHE_MAX_BYTES = -1  # its bound, as enable_compile_cache read it


def default_compile_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "ppox", "xla")


# Compiles in threads with this name prefix are left out of the counts: the evaluation
# program compiles beside the training programs (``PeriodicEval.start_compile``), and the
# note of the training programs' compile must not depend on which finishes first.
UNCOUNTED_COMPILE_THREAD = "ppox-compile-eval"


def _count_cache_event(event: str, **_: object) -> None:
    if threading.current_thread().name.startswith(UNCOUNTED_COMPILE_THREAD):
        return
    if event == "/jax/compilation_cache/compile_requests_use_cache":
        _CACHE_EVENTS["requests"] += 1
    elif event == "/jax/compilation_cache/cache_hits":
        _CACHE_EVENTS["hits"] += 1


def enable_compile_cache(directory: str | None = None) -> str | None:
    """Turns on JAX's persistent compilation cache in ``directory`` (default:
    ``$PPOX_COMPILE_CACHE_DIR`` or ``~/.cache/ppox/xla``) for every program, however quick
    to compile; ``PPOX_COMPILE_CACHE=0`` leaves it off. Its bound,
    ``compile_cache_max_bytes()`` (``$PPOX_COMPILE_CACHE_MAX_MB``), is checked here (a bad
    value raises ``ValueError``) and kept by ``ppox.host.cache_prune``. Returns the
    directory in use (None: off). ``compile_cache_counts`` then tells how many compiles were
    served from it."""
    global _CACHE_LISTENING, _COMPILE_CACHE_DIR, _COMPILE_CACHE_MAX_BYTES
    if os.environ.get(COMPILE_CACHE_ENV, "1").lower() in OFF_WORDS:
        return None
    _COMPILE_CACHE_MAX_BYTES = compile_cache_max_bytes()  # a bad bound: an error, first
    import jax

    directory = directory or os.environ.get(COMPILE_CACHE_DIR_ENV) or default_compile_cache_dir()
    _COMPILE_CACHE_DIR = directory
    jax.config.update("jax_compilation_cache_dir", directory)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    if not _CACHE_LISTENING:
        jax.monitoring.register_event_listener(_count_cache_event)
        _CACHE_LISTENING = True
    return directory


def compile_cache_max_bytes() -> int:
    """The compilation cache's bound in bytes, from ``$PPOX_COMPILE_CACHE_MAX_MB`` (MiB;
    default ``DEFAULT_COMPILE_CACHE_MAX_MB``; ``-1``: no bound). Raises
    ``ValueError`` (one line: the value, why, what to write) for anything else."""
    mib = _env_setting(_CACHE_MAX_MB_SETTING)
    if mib is None:
        mib = DEFAULT_COMPILE_CACHE_MAX_MB
    return -1 if mib == -1 else mib * 2**20


def compile_cache_dir() -> str | None:
    """The directory ``enable_compile_cache`` turned the cache on in (None: off)."""
    return _COMPILE_CACHE_DIR


def compile_cache_bound() -> int:
    """The bound in bytes ``enable_compile_cache`` read for the cache (-1: none)."""
    return _COMPILE_CACHE_MAX_BYTES


def count_program_cache_hit() -> None:
    """A batch's programs were loaded from ppox's program cache (``ppox.host.program_cache``):
    nothing traced or compiled, counted as served from the cache."""
    _CACHE_EVENTS["programs"] += 1


def compile_cache_counts() -> tuple[int, int, int]:
    """``(compiles that looked in the persistent cache, of those served from it, batches of
    programs loaded from the program cache)`` so far in this process; a caller takes the
    difference around a compile."""
    return _CACHE_EVENTS["requests"], _CACHE_EVENTS["hits"], _CACHE_EVENTS["programs"]


def compile_cache_note(before: tuple[int, int, int]) -> str:
    """What the compiles since ``before`` (a ``compile_cache_counts()``) were: ``"from the
    compilation cache"``, ``"compiled, now cached"``, a mix, ``"compile cache off"``, or
    ``""`` when nothing was compiled (programs reused in this process)."""
    requests, hits, programs = (a - b for a, b in zip(compile_cache_counts(), before,
                                                      strict=True))
    if requests == hits and programs:  # the training programs were not even traced
        return "from the compilation cache"
    if requests == 0:  # the cache is off, or the programs were already built in-process
        return "" if _CACHE_LISTENING else "compile cache off"
    if hits == requests:
        return "from the compilation cache"
    if hits:
        return f"{hits} of {requests} programs from the compilation cache"
    return "compiled, now cached"


_DAMAGED_ENTRY = re.compile(
    r"Error reading persistent compilation cache entry for '([^']+)': (\w+)")
# a read that failed for want of access, not because the entry is damaged: the entry went
# (pruned by another process: ppox.host.cache_prune), or a lock or the directory could not
# be had
_NOT_DAMAGE = ("Timeout", "PermissionError", "FileNotFoundError", "OSError",
               "IsADirectoryError", "NotADirectoryError")


@contextlib.contextmanager
def mending_compile_cache(directory: str | None = None) -> Iterator[None]:
    """Around a compile: JAX warns about a damaged cache entry (a process killed while
    writing it) and compiles anew, but never replaces an entry that exists. Seen as the
    warning is raised (before the new executable is written), the damaged module's entries
    are removed, so this compile caches it again; said in one line instead of the warning."""
    import jax

    directory = directory or jax.config.jax_compilation_cache_dir
    with warnings.catch_warnings():
        shown = warnings.showwarning

        def show(message: Any, category: Any, filename: str, lineno: int, file: Any = None,
                 line: str | None = None) -> None:
            match = _DAMAGED_ENTRY.search(str(message))
            if match is None or not directory or match.group(2) in _NOT_DAMAGE:
                shown(message, category, filename, lineno, file, line)
                return
            pattern = os.path.join(directory, glob.escape(match.group(1)) + "-*")
            for entry in glob.glob(pattern):
                with contextlib.suppress(OSError):
                    os.remove(entry)
            print(f"note: a damaged compilation-cache entry for {match.group(1)} in "
                  f"{directory} was replaced", file=sys.stderr)

        warnings.showwarning = show
        yield
