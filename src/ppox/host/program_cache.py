"""A persistent cache of ppox's training programs, keyed without tracing them.

JAX's compilation cache (``ppox._platform.enable_compile_cache``) skips XLA's compile, but
its key is the lowered program, so every run first traces and lowers ppox's Python: about
0.6 s for CartPole, seconds for a brax or Playground env. This cache keeps a batch's two
programs (the init and the training chunk) as ``jax.export`` modules under a key of
everything the traced program is made from: ppox's own source, the versions of the
libraries it traces through (jax, flax, optax, gymnax, brax, ...), the batch's static
settings (``PPOConfig``, chunk size, runs, layout), the devices, JAX's configuration,
``XLA_FLAGS`` and ppox's platform set-up. A hit compiles the stored modules (which JAX's
cache then serves) without running any of that Python again. The programs are exported
from the first trace and always compiled from the exported module, so a run and the runs
after it execute the same XLA program.

It is on where JAX's cache is (``enable_compile_cache``: every ``ppox`` command unless
``--no-compile-cache``), in ``<that directory>/ppox-programs``; ``PPOX_PROGRAM_CACHE=0`` turns
it off alone. A library edited in place under an unchanged version is not seen: clear the
directory then. Entries are written atomically with a checksum; one that cannot be read or
verified is removed, said in one line, and the programs are traced anew. A program that
``jax.export`` cannot export (a custom call it does not know) is compiled as usual and not
kept. The newest ``MAX_ENTRIES`` are kept. Across ``jax.distributed`` processes it is off.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib.metadata
import json
import os
import pickle
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax

from ppox._platform import rolled_threefry

PROGRAM_CACHE_ENV = "PPOX_PROGRAM_CACHE"  # "0": off
INIT_OPT_ENV = "PPOX_OPTIMIZE_INIT"  # "1": the init compiles with XLA's default options
FORMAT = b"ppox-programs 2"
MAX_ENTRIES = 32
# the libraries a training program is traced through (its env's included); with ppox's own
# source and the platform's version they decide the program
LIBRARIES = ("jax", "jaxlib", "flax", "optax", "chex", "numpy", "ml-dtypes", "scipy",
             "gymnax", "brax", "mujoco", "mujoco-mjx", "playground", "warp-lang")
_SOURCE_DIGEST: str | None = None


@dataclass(frozen=True)
class Program:
    """One exported program over flat arguments: its name (``init``, ``chunk``; compiled as
    ``program_name(name)``), the serialized ``jax.export`` module, the trees of its
    arguments and results, and which flat arguments it donates."""

    name: str
    module: bytes
    in_tree: Any
    out_tree: Any
    donate: tuple[int, ...]


def program_name(name: str) -> str:
    """The name a stored program is compiled under (``jit(<it>)`` in JAX's compile events
    and cache entries): ``chunk`` -> ``chunk_program``."""
    return f"{name}_program"


class Compiled:
    """A compiled ``Program`` called like the jitted function it was exported from."""

    def __init__(self, compiled: Any, in_tree: Any, out_tree: Any) -> None:
        self.compiled, self.in_tree, self.out_tree = compiled, in_tree, out_tree

    def __call__(self, *args: Any) -> Any:
        return jax.tree.unflatten(self.out_tree, self.compiled(*jax.tree.leaves(args)))


def cache_dir() -> Path | None:
    """Where programs are kept; None when the cache is off."""
    from ppox import _platform

    if os.environ.get(PROGRAM_CACHE_ENV, "1").lower() in _platform.OFF_WORDS:
        return None
    base = _platform.compile_cache_dir()
    if base is None or jax.process_count() > 1:
        return None
    return Path(base) / "ppox-programs"


def source_digest() -> str:
    """sha256 of ppox's own Python source (every ``.py`` file of the package)."""
    global _SOURCE_DIGEST
    if _SOURCE_DIGEST is None:
        root = Path(__file__).resolve().parent.parent
        h = hashlib.sha256()
        for path in sorted(root.rglob("*.py")):
            h.update(str(path.relative_to(root)).encode())
            h.update(path.read_bytes())
        _SOURCE_DIGEST = h.hexdigest()
    return _SOURCE_DIGEST


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def describe(*settings: Any) -> list[Any]:
    """Static settings (dataclasses, numbers, strings) as JSON-able values for the key."""
    return [dataclasses.asdict(s) if dataclasses.is_dataclass(s) else s for s in settings]


def key_for(program: dict[str, Any], devices: tuple[Any, ...]) -> str | None:
    """The cache key of the programs that ``program`` (their static settings, JSON-able or
    repr-able) describes on ``devices``; None when the cache is off."""
    from ppox import _platform

    if cache_dir() is None:
        return None
    parts = {
        "format": FORMAT.decode(),
        "program": program,
        "ppox_source": source_digest(),
        "libraries": _versions(),
        "python": sys.version,
        "devices": [(d.platform, d.device_kind, d.id, d.process_index) for d in devices],
        "platform_version": devices[0].client.platform_version,
        "jax_config": {k: repr(v) for k, v in sorted(jax.config.values.items())},
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "unrolled_threefry": _platform.UNROLLED_THREEFRY_ON_CPU,
    }
    text = json.dumps(parts, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()


def export_program(name: str, fn: Callable[..., Any], args: tuple[Any, ...],
                   donate_arg: int | None = None) -> Program:
    """``fn(*args)`` (a jitted function; ``args`` arrays or shape structs with their
    shardings) exported over its flat arguments; ``donate_arg``'s leaves are donated."""
    from jax import export

    leaves, in_tree = jax.tree.flatten(args)
    sizes = [len(jax.tree.leaves(a)) for a in args]
    start = sum(sizes[:donate_arg]) if donate_arg is not None else 0
    donate = tuple(range(start, start + sizes[donate_arg])) if donate_arg is not None else ()
    out_trees: list[Any] = []

    def flat(*xs: Any) -> list[Any]:
        out, tree = jax.tree.flatten(fn(*jax.tree.unflatten(in_tree, xs)))
        out_trees.append(tree)
        return out

    # shape structs carry the sharding their arrays will have; arrays bring their own
    shardings = [x.sharding if isinstance(x, jax.ShapeDtypeStruct) else None for x in leaves]
    flat.__name__ = flat.__qualname__ = name  # its trace is the one trace of ppox's Python
    jitted = jax.jit(flat, in_shardings=shardings, donate_argnums=donate)
    exported = export.export(jitted)(*leaves)
    return Program(name, bytes(exported.serialize()), in_tree, out_trees[0], donate)


# XLA's options for the init program on a CPU: it runs once, so neither LLVM's optimizations
# nor XLA's newer fusion emitters (whose kernels are faster, but slower to build) are worth
# their compile time there, unless the env's reset runs long (README, "Platform set-up")
CPU_INIT_COMPILER_OPTIONS = {"xla_backend_optimization_level": 0,
                             "xla_cpu_use_fusion_emitters": False}
# env id prefixes whose init runs the reset for long: a Playground reset can settle for
# hundreds of physics steps (CheetahRun's init ran 17.5 s unoptimized against 8.9 s)
_LONG_RESETS = ("playground/",)


def init_compiler_options(env_id: str) -> dict[str, Any] | None:
    """The XLA options the init program compiles with: ``CPU_INIT_COMPILER_OPTIONS`` on the
    CPU backend, for an env whose reset is quick (not Playground), unless
    ``PPOX_OPTIMIZE_INIT=1``; else XLA's defaults (None). The chunk always has XLA's."""
    if (jax.default_backend() == "cpu" and not env_id.startswith(_LONG_RESETS)
            and os.environ.get(INIT_OPT_ENV) != "1"):
        return dict(CPU_INIT_COMPILER_OPTIONS)
    return None


# Lowering a call of an exported module sets up LAPACK on a CPU whether or not the module
# uses it (``jax._src.export._export._ensure_backends_initialized``), and jaxlib's set-up
# imports scipy.linalg: ~75 ms, on the critical path of every run's compile. JAX's own
# lowering sets LAPACK up only when it emits a LAPACK call; for a module with none (no
# ``lapack_`` custom-call target, whose name its bytes hold verbatim) ppox skips it too.
_SKIP_LAPACK_SETUP = threading.local()


def _guard_lapack_setup() -> bool:
    """Wraps JAX's set-up step so that it is skipped in a ``lapack_setup_if_used`` block
    of a module without LAPACK calls (once; idempotent); False, and nothing wrapped, if the
    step is missing or does more than set up LAPACK in this JAX version."""
    try:
        from jax._src.export import _export
    except ImportError:  # pragma: no cover - depends on the jax version
        return False
    original = getattr(_export, "_ensure_backends_initialized", None)
    if original is None:  # pragma: no cover - depends on the jax version
        return False
    if getattr(original, "ppox_guard", False):
        return True
    code = getattr(original, "__code__", None)
    if code is None or set(code.co_names) != {"linalg", "initialize_lapack"}:
        return False  # it sets up more than LAPACK now (or is not Python): left as it is

    def ensure_backends_initialized(platforms: tuple[str, ...]) -> None:
        if not getattr(_SKIP_LAPACK_SETUP, "on", False):
            original(platforms)

    ensure_backends_initialized.ppox_guard = True  # type: ignore[attr-defined]
    _export._ensure_backends_initialized = ensure_backends_initialized
    return True


@contextlib.contextmanager
def lapack_setup_if_used(module: bytes) -> Any:
    """In this block (this thread), lowering a call of the serialized ``module`` sets up
    LAPACK only if the module calls LAPACK."""
    _SKIP_LAPACK_SETUP.on = b"lapack_" not in module and _guard_lapack_setup()
    try:
        yield
    finally:
        _SKIP_LAPACK_SETUP.on = False


def compile_program(program: Program, args: tuple[Any, ...],
                    options: dict[str, Any] | None = None) -> Compiled:
    """``program`` compiled for ``args`` (arrays or shape structs, placed as exported) with
    XLA's ``options`` (None: the defaults)."""
    from jax import export

    exported = export.deserialize(bytearray(program.module))

    def call(*xs: Any) -> Any:
        return exported.call(*xs)

    call.__name__ = call.__qualname__ = program_name(program.name)
    with lapack_setup_if_used(program.module):
        lowered = jax.jit(call, donate_argnums=program.donate).lower(*jax.tree.leaves(args))
    return Compiled(lowered.compile(compiler_options=options), program.in_tree,
                    program.out_tree)


def init_beside_chunk(init: Callable[[], Any], chunk: Callable[[], Any]) -> tuple[Any, Any]:
    """``(init(), chunk())``, the init's compile in a thread (XLA releases the GIL) while
    this one compiles the chunk."""
    with ThreadPoolExecutor(1, thread_name_prefix="ppox-compile-init") as pool:
        init_future = pool.submit(init)
        chunk_c = chunk()
        return init_future.result(), chunk_c


def _compile_pair(init: Program, init_args: tuple[Any, ...], chunk: Program,
                  chunk_args: Callable[[], tuple[Any, ...]],
                  init_options: dict[str, Any] | None) -> tuple[Compiled, Compiled]:
    """Both programs compiled, the init with ``init_options``, beside each other."""
    return init_beside_chunk(lambda: compile_program(init, init_args, init_options),
                             lambda: compile_program(chunk, chunk_args()))


def export_and_compile(key: str, init: tuple[Callable[..., Any], tuple[Any, ...]],
                       chunk: tuple[Callable[..., Any], tuple[Any, ...]],
                       init_options: dict[str, Any] | None = None
                       ) -> tuple[Compiled, Compiled] | None:
    """Exports the init and the chunk (``(jitted function, arguments)`` each; the chunk
    donates its first argument), compiles them from the exported modules and stores those
    under ``key``; None (nothing stored) if ``jax.export`` cannot export them."""
    try:
        with rolled_threefry():  # the init runs once: its smaller threefry compiles quicker
            init_program = export_program("init", *init)
        programs = (init_program, export_program("chunk", *chunk, donate_arg=0))
    except Exception:  # e.g. a custom call jax.export does not know: compile as usual
        return None
    compiled = _compile_pair(programs[0], init[1], programs[1], lambda: chunk[1],
                             init_options)
    store(key, programs)
    return compiled


def load(key: str, init_args: tuple[Any, ...], state_sharding: Any, steps: Any,
         init_options: dict[str, Any] | None = None) -> tuple[Compiled, Compiled] | None:
    """The programs stored under ``key`` compiled (from JAX's cache when it has them) for
    the init's ``init_args = (keys, hp)``, the chunk's ``(state, hp, steps)`` with the
    state's leaves placed by ``state_sharding`` (the init's outputs); None if there are
    none, or the entry is damaged (then it is removed)."""
    directory = cache_dir()
    path = None if directory is None else directory / f"{key}.programs"
    try:
        blob = path.read_bytes() if path is not None else None
    except OSError:
        blob = None
    if blob is None:
        return None
    try:
        init, chunk = _decode(blob)
    except Exception as exc:  # a damaged or foreign entry: trace instead, and replace it
        print(f"note: a damaged program-cache entry {path.name} was removed ({exc})",
              file=sys.stderr)
        with contextlib.suppress(OSError):
            path.unlink()
        return None
    with contextlib.suppress(OSError):
        os.utime(path)  # recently used: kept longest
    hp = init_args[1]

    def chunk_args() -> tuple[Any, ...]:
        from jax import export

        outs = export.deserialize(bytearray(init.module)).out_avals
        state = jax.tree.unflatten(init.out_tree, [
            jax.ShapeDtypeStruct(a.shape, a.dtype, weak_type=a.weak_type,
                                 sharding=state_sharding) for a in outs])
        return state, hp, steps

    return _compile_pair(init, init_args, chunk, chunk_args, init_options)


def _decode(blob: bytes) -> tuple[Program, Program]:
    header, _, payload = blob.partition(b"\n")
    fmt, _, digest = header.rpartition(b" ")
    if fmt != FORMAT or hashlib.sha256(payload).hexdigest().encode() != digest:
        raise ValueError("unknown format or checksum mismatch")
    init, chunk = pickle.loads(payload)
    if not (isinstance(init, Program) and isinstance(chunk, Program)):
        raise ValueError("not a pair of programs")
    return init, chunk


def store(key: str, programs: tuple[Program, Program]) -> None:
    """Writes ``programs`` under ``key``, atomically: a failed write leaves nothing (the
    cache only saves time; a later run traces again)."""
    from ppox.host.configfile import atomic_write

    directory = cache_dir()
    if directory is None:
        return
    with contextlib.suppress(Exception):  # atomic_write leaves nothing behind
        payload = pickle.dumps(programs)
        blob = FORMAT + b" " + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload
        atomic_write(directory / f"{key}.programs", lambda f: f.write(blob))
        _evict(directory)


def _evict(directory: Path) -> None:
    entries = sorted(directory.glob("*.programs"), key=lambda p: p.stat().st_mtime)
    for old in entries[:-MAX_ENTRIES]:
        with contextlib.suppress(OSError):
            old.unlink()
