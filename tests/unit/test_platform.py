"""XLA CPU flags ppox sets: per environment only where measured, 512-bit vectors only on an
AVX-512 CPU, never over the user's own."""

from __future__ import annotations

from jax._src import xla_bridge

from ppox import _platform

HALFCHEETAH_FLAGS = _platform.ENV_CPU_XLA_FLAGS["brax/halfcheetah"]


def test_flags_added_for_a_measured_env_only(fresh_backend):
    import os

    assert _platform.apply_env_cpu_xla_flags("CartPole-v1") == ()
    assert os.environ["XLA_FLAGS"] == "--xla_force_host_platform_device_count=2"
    added = _platform.apply_env_cpu_xla_flags("brax/halfcheetah")
    assert added == HALFCHEETAH_FLAGS
    assert os.environ["XLA_FLAGS"].split() == [
        "--xla_force_host_platform_device_count=2", *HALFCHEETAH_FLAGS]
    # idempotent: a second call adds nothing
    assert _platform.apply_env_cpu_xla_flags("brax/halfcheetah") == ()


def test_user_flags_win_and_opt_out(fresh_backend):
    import os

    fresh_backend.setenv("XLA_FLAGS", "--xla_cpu_use_fusion_emitters=true")
    added = _platform.apply_env_cpu_xla_flags("brax/halfcheetah")
    assert "--xla_cpu_use_fusion_emitters=false" not in added
    assert os.environ["XLA_FLAGS"].count("xla_cpu_use_fusion_emitters") == 1
    fresh_backend.setenv("XLA_FLAGS", "")
    fresh_backend.setenv("PPOX_ENV_XLA_FLAGS", "0")
    assert _platform.apply_env_cpu_xla_flags("brax/halfcheetah") == ()


def test_nothing_once_backends_run_or_off_cpu(fresh_backend):
    fresh_backend.setattr(xla_bridge, "backends_are_initialized", lambda: True)
    assert _platform.apply_env_cpu_xla_flags("brax/halfcheetah") == ()
    fresh_backend.setattr(xla_bridge, "backends_are_initialized", lambda: False)
    fresh_backend.setenv("JAX_PLATFORMS", "cuda")
    assert _platform.apply_env_cpu_xla_flags("brax/halfcheetah") == ()


def test_wide_vectors_only_on_avx512_and_never_over_the_user(fresh_backend):
    import os

    fresh_backend.delenv("PPOX_CPU_VECTOR_WIDTH", raising=False)
    fresh_backend.setattr(_platform, "cpu_has_avx512", lambda: False)
    assert _platform.use_wide_cpu_vectors() == 0
    assert os.environ["XLA_FLAGS"] == "--xla_force_host_platform_device_count=2"
    fresh_backend.setattr(_platform, "cpu_has_avx512", lambda: True)
    assert _platform.use_wide_cpu_vectors() == 512
    assert os.environ["XLA_FLAGS"].split() == [
        "--xla_force_host_platform_device_count=2", "--xla_cpu_prefer_vector_width=512"]
    assert _platform.use_wide_cpu_vectors() == 0  # set once
    fresh_backend.setenv("XLA_FLAGS", "--xla_cpu_prefer_vector_width=128")
    assert _platform.use_wide_cpu_vectors() == 0  # the user's own width wins
    fresh_backend.setenv("XLA_FLAGS", "")
    fresh_backend.setenv("PPOX_CPU_VECTOR_WIDTH", "0")
    assert _platform.use_wide_cpu_vectors() == 0 and os.environ["XLA_FLAGS"] == ""
    fresh_backend.setenv("PPOX_CPU_VECTOR_WIDTH", "256")
    fresh_backend.setattr(_platform, "cpu_has_avx512", lambda: False)
    assert _platform.use_wide_cpu_vectors() == 256
    fresh_backend.setattr(xla_bridge, "backends_are_initialized", lambda: True)
    fresh_backend.setenv("XLA_FLAGS", "")
    assert _platform.use_wide_cpu_vectors() == 0


def test_cpu_has_avx512_reads_the_flags_line():
    assert isinstance(_platform.cpu_has_avx512(), bool)
    with open("/proc/cpuinfo") as f:
        flags = next((line.split() for line in f if line.startswith("flags")), [])
    assert _platform.cpu_has_avx512() == ("avx512f" in flags)


def test_cache_events_of_the_eval_compile_thread_are_not_counted():
    import threading

    from ppox import _platform

    before = _platform.compile_cache_counts()

    def events() -> None:
        _platform._count_cache_event("/jax/compilation_cache/compile_requests_use_cache")
        _platform._count_cache_event("/jax/compilation_cache/cache_hits")

    for name in (f"{_platform.UNCOUNTED_COMPILE_THREAD}_0", "ppox-compile-init_0"):
        thread = threading.Thread(target=events, name=name)
        thread.start()
        thread.join()
    # only the init thread's request and hit count (the eval thread's are left out)
    after = _platform.compile_cache_counts()
    assert (after[0] - before[0], after[1] - before[1]) == (1, 1)


class _Cfg:
    """The fields ``use_one_cpu_thread_for`` reads (CartPole's defaults)."""

    def __init__(self, **kw: object) -> None:
        self.env_id, self.torso = "CartPole-v1", "auto"
        self.num_envs, self.num_steps, self.num_minibatches = 4, 128, 4
        self.__dict__.update(kw)


def test_one_cpu_thread_rule(monkeypatch):
    started = []
    monkeypatch.setattr(_platform, "use_one_cpu_thread", lambda: started.append(1) or True)
    monkeypatch.delenv(_platform.CPU_THREADS_ENV, raising=False)
    assert _platform.use_one_cpu_thread_for(_Cfg()) and len(started) == 1
    assert _platform.use_one_cpu_thread_for(_Cfg(num_envs=16))  # 512 rows: still one
    for cfg, runs, spread in [
            (_Cfg(num_envs=32), 1, False),  # 1024 rows
            (_Cfg(), 2, False),  # several runs (seeds): a device per core
            (_Cfg(), 1, True),  # one run spread over devices
            (_Cfg(env_id="Breakout-MinAtar", num_envs=4), 1, False),  # images, a CNN
            (_Cfg(env_id="brax/inverted_pendulum"), 1, False),
            (_Cfg(torso="cnn"), 1, False)]:
        assert not _platform.use_one_cpu_thread_for(cfg, runs, spread)
    assert len(started) == 2
    monkeypatch.setenv(_platform.CPU_THREADS_ENV, "0")
    assert not _platform.use_one_cpu_thread_for(_Cfg())
    monkeypatch.setenv(_platform.CPU_THREADS_ENV, "1")
    assert _platform.use_one_cpu_thread_for(_Cfg(num_envs=64))
    assert len(started) == 3


def test_one_cpu_thread_only_before_the_backend_on_a_cpu(fresh_backend):
    import os

    fresh_backend.setattr(os, "sched_setaffinity", _refuse)
    fresh_backend.setenv("JAX_PLATFORMS", "cuda")
    assert not _platform.use_one_cpu_thread()
    fresh_backend.setenv("JAX_PLATFORMS", "cpu")
    fresh_backend.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
    assert not _platform.use_one_cpu_thread()  # the user's device count wins
    fresh_backend.setattr(xla_bridge, "backends_are_initialized", lambda: True)
    fresh_backend.setenv("XLA_FLAGS", "")
    assert not _platform.use_one_cpu_thread()  # too late: XLA's pool exists


def _refuse(*_: object) -> None:
    raise AssertionError("the affinity must not be touched here")


_ONE_THREAD_CHILD = r"""
import collections, json, os
from ppox import _platform
cores = os.sched_getaffinity(0)
_platform.use_every_cpu_core()  # what the ppox command does first
done = _platform.use_one_cpu_thread()
import jax, jax.numpy as jnp
(jnp.ones((64, 64)) @ jnp.ones((64, 64))).block_until_ready()
tasks = os.listdir("/proc/self/task")
names = collections.Counter(open(f"/proc/self/task/{t}/comm").read().strip() for t in tasks)
print(json.dumps({"done": done, "devices": jax.local_device_count(),
                  "eigen_threads": names["tf_XLAEigen"], "note": _platform.one_cpu_thread_note(),
                  "all_cores": all(os.sched_getaffinity(int(t)) == cores for t in tasks)}))
"""


def test_one_cpu_thread_starts_xla_with_one_pool_thread_and_frees_the_cores():
    import json
    import os
    import subprocess
    import sys

    import pytest

    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs a process that may run on two cores")
    env = {k: v for k, v in os.environ.items()
           if k not in ("XLA_FLAGS", "PPOX_CPU_DEVICES", "JAX_PLATFORMS")}
    env["JAX_PLATFORMS"] = "cpu"
    proc = subprocess.run([sys.executable, "-c", _ONE_THREAD_CHILD], capture_output=True,
                          text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    # one device (not one per core), XLA's intra-op pool of one thread (the name is
    # jaxlib's: if it changes, check that the pool still takes its size from the affinity),
    # and every thread, that pool's included, allowed on every core again
    assert out == {"done": True, "devices": 1, "eigen_threads": 1,
                   "note": ", one CPU thread", "all_cores": True}


def test_rolled_threefry_lowers_jax_s_loop_in_its_block_and_thread_only():
    """With the unrolled lowering registered (tests/conftest.py), a program lowered inside
    ``rolled_threefry()`` gets JAX's rolled loop, one lowered after it or in another thread
    the straight-line form; the random bits are the same."""
    import threading

    import jax
    import jax.numpy as jnp
    import numpy as np

    from ppox._platform import UNROLLED_THREEFRY_ON_CPU, LowersRolled, rolled_threefry

    assert UNROLLED_THREEFRY_ON_CPU
    key = jax.random.PRNGKey(7)

    def bits(offset: int):  # a new function each time: JAX reuses a function's lowering
        return lambda k: jax.random.bits(k, (8,)) + jnp.uint32(offset)

    def lowered(offset: int):
        return jax.jit(bits(offset)).lower(key)

    elsewhere = []
    with rolled_threefry():
        inside = lowered(1)
        thread = threading.Thread(target=lambda: elsewhere.append(lowered(2)))
        thread.start()
        thread.join()
    after = lowered(3)
    assert "stablehlo.while" in inside.as_text()
    assert "stablehlo.while" not in elsewhere[0].as_text()
    assert "stablehlo.while" not in after.as_text()
    want = np.asarray(after.compile()(key)) - np.uint32(3)
    np.testing.assert_array_equal(np.asarray(inside.compile()(key)) - np.uint32(1), want)
    wrapped = LowersRolled(jax.jit(bits(4)))
    assert "stablehlo.while" in wrapped.lower(key).as_text()
    np.testing.assert_array_equal(np.asarray(wrapped(key)) - np.uint32(4), want)
