"""One measurement in this fresh process; its result is the last line of stdout (JSON).

    python benchmarks/worker.py point '{"env_id": "CartPole-v1", "num_envs": 4}'
    python benchmarks/worker.py train '{"config": {...}, "hparams": {...}, "api": "fused"}'
    python benchmarks/worker.py matmul '{"n": 2048, "repeats": 5}'

The benchmark scripts start it (``benchmarks.harness.workers``); see there for the specs.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness.workers import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
