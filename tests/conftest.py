"""Test configuration: CPU only, float32, quiet."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# `ppox` (cli.main) exposes every CPU core as an XLA device unless told otherwise; tests run
# on one device, and the multi-device tests start their own subprocesses with XLA_FLAGS.
os.environ.setdefault("PPOX_CPU_DEVICES", "1")
# ppox's program cache keeps programs across processes in the user's cache directory, which
# would make what a test traces and compiles depend on earlier runs: off, except where a test
# turns it on (tests/integration/test_compile_cache.py)
os.environ.setdefault("PPOX_PROGRAM_CACHE", "0")
# XLA's own vector width in every test process: an in-process `ppox` command run before the
# process's first JAX computation would otherwise start the backend with 512-bit vectors
# (ppox._platform.use_wide_cpu_vectors), and which test comes first in a worker would move the
# pinned numbers' rounding (tests/integration/test_pinned.py)
os.environ.setdefault("PPOX_CPU_VECTOR_WIDTH", "0")
# and XLA's own CPU thread pool: an in-process `ppox train` of a small run would otherwise
# start the backend with one thread (ppox._platform.use_one_cpu_thread), the same kind of
# order dependence; tests/unit/test_platform.py and a CLI test check that path
os.environ.setdefault("PPOX_CPU_THREADS", "0")

# What `ppox train` sets up (the unrolled threefry lowering on CPU: same bits, faster).
from ppox._platform import use_unrolled_threefry_on_cpu

use_unrolled_threefry_on_cpu()


import subprocess  # noqa: E402
import sys  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture
def fresh_backend(monkeypatch):
    """Pretend JAX has not started its backends (the state `ppox train` and a benchmark
    worker start in), with a 2-device XLA_FLAGS and no platform or per-env flag overrides."""
    from jax._src import xla_bridge

    monkeypatch.setattr(xla_bridge, "backends_are_initialized", lambda: False)
    monkeypatch.delenv("JAX_PLATFORMS", raising=False)
    monkeypatch.delenv("PPOX_ENV_XLA_FLAGS", raising=False)
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
    return monkeypatch


def _passes_in_a_process(code: str, **env: str) -> None:
    """``code`` run by a fresh interpreter (with ``env`` added to this one's: JAX reads
    such variables at start-up) prints ``ok``."""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, **env))
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


@pytest.fixture
def passes_in_a_process():
    """``passes_in_a_process(code, **env)``: asserts that ``code``, run by a fresh
    interpreter, prints ``ok`` (for what one process's imports or start-up decide)."""
    return _passes_in_a_process
