"""Platform tweaks applied when ppox is imported.

Threefry on CPU. JAX lowers the threefry2x32 hash (behind every ``jax.random`` call) to a
*rolled* loop of 5 iterations on CPU, to keep compile times short; on GPU/TPU it emits the
straight-line (unrolled) form. A PPO rollout on CPU calls threefry several times per env step
(action sampling, the env's own key splits and auto-reset draws), each call a tiny loop
whose per-iteration bookkeeping (13 loop-carried buffer copies) costs far more than the hash
itself. Registering the unrolled lowering for CPU made CartPole at 4 envs 6.1x faster env-only
(2.48M vs 406k steps/s) and 2.4x faster rollout-only (483k vs 205k) on a 2-core CPU
(2026-11-23: ``python -m ppox.bench point '{"env_id": "CartPole-v1", "num_envs": 4,
"parts": ["env", "rollout"], "target_s": 2, "repeats": 3}'`` with and without
``PPOX_ROLLED_THREEFRY=1``). The
random bits are bit-for-bit identical -- it is the same function, lowered without the loop.

Set ``PPOX_ROLLED_THREEFRY=1`` to keep JAX's default. If JAX's internals move, this is
skipped silently and everything still works, only slower on CPU.
"""

from __future__ import annotations

import os

UNROLLED_THREEFRY_ON_CPU = False


def use_unrolled_threefry_on_cpu() -> bool:
    """Registers JAX's unrolled threefry lowering for the CPU platform (idempotent)."""
    global UNROLLED_THREEFRY_ON_CPU
    if UNROLLED_THREEFRY_ON_CPU or os.environ.get("PPOX_ROLLED_THREEFRY") == "1":
        return UNROLLED_THREEFRY_ON_CPU
    try:
        from jax._src.interpreters import mlir
        from jax._src.random import threefry2x32

        mlir.register_lowering(threefry2x32.threefry2x32_p,
                               threefry2x32._threefry2x32_lowering_rule, platform="cpu")
    except (ImportError, AttributeError):  # pragma: no cover - depends on the jax version
        return False
    UNROLLED_THREEFRY_ON_CPU = True
    return True


# XLA CPU flags that an environment's programs run faster with, measured per env id.
# brax/halfcheetah (spring backend) with the YNN library fusions and the new fusion emitters
# off, on a 2-core CPU (2026-11-23): env alone 1.7x (256 envs, random actions: medians
# 10.6-11.4k vs 5.5-7.1k steps/s over 3 interleaved rounds), the whole trainer 2.0x (256
# envs: 6,951-7,575 vs 3,560-3,689 steps/s) and compile 42 s vs 61 s
# (``python -m ppox.bench point '{"env_id": "brax/halfcheetah", "num_envs": 256, "parts":
# ["trainer"], "target_s": 6, "repeats": 2}'`` with and without these XLA_FLAGS).
# Measured and left out: CartPole-v1 (4 envs) trains 1.7x SLOWER with them, and
# brax/inverted_pendulum (256 envs) ~10% slower; brax ant (env alone) 1.4x slower, hopper
# no change. So they are per env, not global.
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
    flags = os.environ.get("XLA_FLAGS", "")
    platforms = os.environ.get("JAX_PLATFORMS", "")
    if os.environ.get("PPOX_ENV_XLA_FLAGS") == "0" or (platforms and "cpu" not in platforms):
        return ()
    from jax._src import xla_bridge

    if xla_bridge.backends_are_initialized():
        return ()
    added = tuple(f for f in env_cpu_xla_flags(env_id) if f.split("=")[0] not in flags)
    if added:
        os.environ["XLA_FLAGS"] = " ".join([flags, *added]).strip()
    return added


def use_every_cpu_core() -> int:
    """Exposes each CPU core as an XLA device (``--xla_force_host_platform_device_count``).

    XLA runs these programs' small ops on one thread per device, so batches of runs (seeds,
    sweeps) are split across devices to use every core. Only done when the user has not
    set the device count, the CPU backend is in use, and JAX has not started its backends
    yet; ``PPOX_CPU_DEVICES=N`` chooses N (1 turns this off). Returns the count set (0: none).
    """
    flags = os.environ.get("XLA_FLAGS", "")
    platforms = os.environ.get("JAX_PLATFORMS", "")
    if "xla_force_host_platform_device_count" in flags or (platforms and "cpu" not in platforms):
        return 0
    from jax._src import xla_bridge

    if xla_bridge.backends_are_initialized():
        return 0
    want = os.environ.get("PPOX_CPU_DEVICES")
    n = int(want) if want else len(os.sched_getaffinity(0))
    if n <= 1:
        return 0
    os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={n}".strip()
    return n
