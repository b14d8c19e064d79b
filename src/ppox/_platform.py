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
