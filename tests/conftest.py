"""Test configuration: CPU only, float32, quiet."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# `ppox` (cli.main) exposes every CPU core as an XLA device unless told otherwise; tests run
# on one device, and the multi-device tests start their own subprocesses with XLA_FLAGS.
os.environ.setdefault("PPOX_CPU_DEVICES", "1")

# What `ppox train` sets up (the unrolled threefry lowering on CPU: same bits, faster).
from ppox._platform import use_unrolled_threefry_on_cpu

use_unrolled_threefry_on_cpu()
