"""Per-environment XLA CPU flags: added only where measured, never over the user's own."""

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
