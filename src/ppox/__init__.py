"""ppox: end-to-end jit-compiled PPO in JAX."""

from ppox._platform import use_unrolled_threefry_on_cpu

use_unrolled_threefry_on_cpu()

# ruff: noqa: E402

from ppox.config import ConfigError, HParams, PPOConfig
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
    "TrainState",
    "__version__",
    "build",
    "init",
    "make_init",
    "make_train",
    "make_train_chunk",
    "update_step",
]
