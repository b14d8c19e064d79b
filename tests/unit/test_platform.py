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
