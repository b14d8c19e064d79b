"""ppox: end-to-end jit-compiled PPO in JAX.

Importing ppox changes nothing in JAX. On a CPU, ``use_unrolled_threefry_on_cpu()`` (which
``ppox train`` calls) makes ``jax.random`` several times faster in these programs, with the
same bits; library users call it once, first thing.
"""

from ppox import (  # first, in the command's process: a Ctrl-C kept, the collector off
    _early_signals,  # noqa: F401
    _startup_gc,  # noqa: F401
)
from ppox._platform import use_unrolled_threefry_on_cpu
from ppox.config import ConfigError, HParams, PPOConfig
from ppox.policy import Policy, load_policy
from ppox.trainer import (
    TrainState,
    build,
    init,
    make_init,
    make_train,
    make_train_chunk,
    update_step,
)

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "HParams",
    "PPOConfig",
    "Policy",
    "TrainState",
    "__version__",
    "build",
    "init",
    "load_policy",
    "make_init",
    "make_train",
    "make_train_chunk",
    "update_step",
    "use_unrolled_threefry_on_cpu",
]
