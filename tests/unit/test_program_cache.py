"""ppox's program cache (``ppox.host.program_cache``): on only with the compilation cache,
a key that moves with everything a program is made from, verified entries, a damaged entry
removed, the newest entries kept. (Storing, loading and the numbers a loaded program gives,
on one and two devices: ``tests/integration/test_compile_cache.py``.)"""

from __future__ import annotations

import os

import jax
import pytest

from ppox import _platform
from ppox.config import PPOConfig
from ppox.host import program_cache as pc


@pytest.fixture
def cache_on(tmp_path, monkeypatch):
    monkeypatch.setattr(_platform, "_COMPILE_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv(pc.PROGRAM_CACHE_ENV, raising=False)
    return tmp_path / "ppox-programs"


DEFAULT = PPOConfig()


def _key(cfg: PPOConfig = DEFAULT, chunk: int = 10) -> str | None:
    return pc.key_for({"settings": pc.describe(cfg), "chunk_size": chunk},
                      tuple(jax.local_devices()[:1]))


def test_off_without_the_compilation_cache_or_when_asked(monkeypatch, cache_on):
    assert pc.cache_dir() == cache_on and _key() is not None
    monkeypatch.setenv(pc.PROGRAM_CACHE_ENV, "0")
    assert pc.cache_dir() is None and _key() is None
    monkeypatch.delenv(pc.PROGRAM_CACHE_ENV)
    monkeypatch.setattr(_platform, "_COMPILE_CACHE_DIR", None)  # --no-compile-cache
    assert pc.cache_dir() is None and _key() is None


def test_the_key_moves_with_what_the_program_is_made_from(monkeypatch, cache_on):
    base = _key()
    assert _key() == base  # stable
    assert _key(PPOConfig(num_envs=8)) != base
    assert _key(chunk=11) != base
    changes = [(None, "XLA_FLAGS", os.environ.get("XLA_FLAGS", "") + " --xla_foo=1"),
               (pc, "_SOURCE_DIGEST", "an edited ppox"),
               (pc, "_versions", lambda: {"gymnax": "9.9"}),
               (_platform, "UNROLLED_THREEFRY_ON_CPU", not _platform.UNROLLED_THREEFRY_ON_CPU)]
    for module, name, value in changes:
        with monkeypatch.context() as m:
            if module is None:
                m.setenv(name, value)
            else:
                m.setattr(module, name, value)
            assert _key() != base, name
    assert _key() == base


def _program(tag: bytes) -> pc.Program:
    tree = jax.tree.structure(({"a": 1}, [2, 3]))
    return pc.Program(name="chunk", module=tag, in_tree=tree, out_tree=tree, donate=(0,))


def test_entries_are_verified_and_a_damaged_one_is_removed(cache_on, capsys):
    pc.store("k1", (_program(b"init"), _program(b"chunk")))
    path = cache_on / "k1.programs"
    init, chunk = pc._decode(path.read_bytes())
    assert (init.module, chunk.module, chunk.donate) == (b"init", b"chunk", (0,))
    assert init.in_tree == jax.tree.structure(({"a": 1}, [2, 3]))
    assert not list(cache_on.glob("*.tmp"))  # written through a temporary file, renamed
    blob = bytearray(path.read_bytes())
    blob[-5] ^= 0xFF  # one flipped byte of the payload
    path.write_bytes(bytes(blob))
    with pytest.raises(ValueError, match="checksum"):
        pc._decode(path.read_bytes())
    assert pc.load("k1", (), None, None) is None
    assert not path.exists()
    assert "damaged program-cache entry k1.programs was removed" in capsys.readouterr().err
    assert pc.load("missing", (), None, None) is None


def test_the_newest_entries_are_kept(cache_on, monkeypatch):
    monkeypatch.setattr(pc, "MAX_ENTRIES", 3)
    for i in range(5):
        pc.store(f"k{i}", (_program(b"i"), _program(b"c")))
        os.utime(cache_on / f"k{i}.programs", (1000 + i, 1000 + i))
    pc._evict(cache_on)
    assert sorted(p.stem for p in cache_on.glob("*.programs")) == ["k2", "k3", "k4"]


def test_source_digest_covers_every_module():
    digest = pc.source_digest()
    assert len(digest) == 64 and digest == pc.source_digest()


def _small_programs():
    """A tiny init and chunk, as ``export_and_compile`` takes them."""
    import jax.numpy as jnp

    init = jax.jit(lambda key, scale: {"w": jnp.ones(3) * scale})
    chunk = jax.jit(lambda state, scale, n: ({"w": state["w"] * scale + n}, state["w"].sum()))
    state = jax.eval_shape(init, jnp.zeros(2, jnp.uint32), 1.0)
    return (init, (jnp.zeros(2, jnp.uint32), jnp.float32(2.0))), \
        (chunk, (state, jnp.float32(2.0), jnp.int32(1)))


def test_a_program_jax_export_cannot_take_is_not_kept(cache_on, monkeypatch):
    real_export = pc.export_program

    def export_program(name, *args, **kw):
        if name == "chunk":
            raise NotImplementedError("a custom call jax.export does not know")
        return real_export(name, *args, **kw)

    monkeypatch.setattr(pc, "export_program", export_program)
    init, chunk = _small_programs()
    assert pc.export_and_compile("k", init, chunk) is None  # the caller compiles as usual
    assert not (cache_on / "k.programs").exists()


def test_a_compile_error_is_not_taken_for_an_export_failure(cache_on, monkeypatch):
    def compile_program(program, args, options=None):
        raise RuntimeError("XLA failed")

    monkeypatch.setattr(pc, "compile_program", compile_program)
    init, chunk = _small_programs()
    with pytest.raises(RuntimeError, match="XLA failed"):
        pc.export_and_compile("k", init, chunk)
    assert not (cache_on / "k.programs").exists()


def test_the_init_compiles_without_llvm_optimizations_on_a_cpu(monkeypatch):
    assert jax.default_backend() == "cpu"
    o0 = {"xla_backend_optimization_level": 0, "xla_cpu_use_fusion_emitters": False}
    assert pc.init_compiler_options("CartPole-v1") == o0
    assert pc.init_compiler_options("brax/ant") == o0
    # a Playground reset can settle for hundreds of physics steps: its init stays optimized
    assert pc.init_compiler_options("playground/CheetahRun") is None
    monkeypatch.setenv(pc.INIT_OPT_ENV, "1")
    assert pc.init_compiler_options("CartPole-v1") is None


@pytest.mark.parametrize("program_cache", ["0", "1"])
def test_every_compile_path_gives_the_init_its_options_and_right_numbers(
        program_cache, cache_on, monkeypatch):
    """What XLA is given, on the path that compiles the traced programs (program cache off)
    and on the one that compiles the exported modules: the init the CPU options and JAX's
    rolled threefry (a loop; CartPole's init has no other), the chunk XLA's defaults. The
    init's numbers (after two Adam updates, which scale up a rounding difference where a
    gradient is near zero) agree with the optimized init's to 1e-5."""
    import re

    import numpy as np

    from ppox.config import HParams
    from ppox.host import run as run_module

    given: list[tuple[str, object]] = []
    rolled: list[bool] = []
    real_compile = jax.stages.Lowered.compile

    def compile(self, compiler_options=None):
        text = self.as_text()
        module = re.search(r"module @(\S+)", text).group(1)
        if "chunk" in module:
            given.append(("chunk", compiler_options))
        else:
            given.append(("init", compiler_options))
            rolled.append("stablehlo.while" in text)
        return real_compile(self, compiler_options)

    monkeypatch.setattr(jax.stages.Lowered, "compile", compile)
    monkeypatch.setenv(pc.PROGRAM_CACHE_ENV, program_cache)
    cfg = PPOConfig(num_envs=4, num_steps=8, total_timesteps=4 * 8 * 2, update_epochs=1,
                    num_minibatches=1)
    params = []
    for optimize in ("0", "1"):
        monkeypatch.setenv(pc.INIT_OPT_ENV, optimize)
        run_module.compiled_programs.cache_clear()
        result = run_module.train_runs(cfg, [HParams()], [3], progress_chunks=1)
        params.append([np.asarray(x) for x in jax.tree.leaves(result.state.params)])
    # (each pair in either order: the init compiles in a thread beside the chunk)
    assert sorted(given[:2], key=str) == [("chunk", None), ("init", pc.CPU_INIT_COMPILER_OPTIONS)]
    assert sorted(given[2:], key=str) == [("chunk", None), ("init", None)]
    assert rolled == [True, True]
    for fast, optimized in zip(*params, strict=True):
        np.testing.assert_allclose(fast, optimized, rtol=1e-5, atol=1e-5)


# Each in a fresh interpreter, where nothing has set LAPACK up yet: ``make`` exports a QR
# (LAPACK custom calls on a CPU) and a plain program to files, ``run NAME`` compiles one
# from its file as a program-cache hit does and runs it.
LAPACK_PROBE = """
import pickle
import sys

import jax
import jax.numpy as jnp
import numpy as np

from ppox.host import program_cache as pc

x = jax.ShapeDtypeStruct((4, 4), jnp.float32)
if sys.argv[1] == "make":
    for name, fn in (("qr", lambda a: jnp.linalg.qr(a)[0]), ("plain", lambda a: a @ a)):
        with open(sys.argv[2] + "/" + name, "wb") as f:
            pickle.dump(pc.export_program(name, jax.jit(fn), (x,)), f)
else:
    with open(sys.argv[3] + "/" + sys.argv[2], "rb") as f:
        program = pickle.load(f)
    out = np.asarray(pc.compile_program(program, (x,))(2 * np.eye(4, dtype=np.float32)))
    print(sys.argv[2], np.abs(out).diagonal().tolist(), "scipy.linalg" in sys.modules)
"""


def test_lapack_is_set_up_for_a_hit_only_if_its_module_calls_it(tmp_path):
    # jax.export's call sets LAPACK up for every module, importing scipy.linalg (~75 ms);
    # ppox skips that for a module without LAPACK calls, and a module with them must still
    # get it (run without it, the QR ends the process with a segfault)
    import subprocess
    import sys

    def probe(*args: str) -> str:
        proc = subprocess.run([sys.executable, "-c", LAPACK_PROBE, *args, str(tmp_path)],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
        return proc.stdout.strip()

    probe("make")
    assert probe("run", "qr") == "qr [1.0, 1.0, 1.0, 1.0] True"
    assert probe("run", "plain") == "plain [4.0, 4.0, 4.0, 4.0] False"


def test_the_lapack_guard_leaves_a_changed_jax_alone(monkeypatch):
    from jax._src.export import _export

    def ensure_more(platforms):  # a JAX whose step sets up more than LAPACK
        del platforms
        return os.getpid()

    monkeypatch.setattr(_export, "_ensure_backends_initialized", ensure_more)
    assert pc._guard_lapack_setup() is False
    assert _export._ensure_backends_initialized is ensure_more
