"""``benchmarks/compile_profile.py``'s same-XLA control: a dumped HLO module (as XLA's
``--xla_dump_hlo_as_proto`` writes it) compiled again by an interpreter's jax, and the
medians over rounds."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import compile_profile  # noqa: E402

DUMP = """
import jax, jax.numpy as jnp
def epoch(x):
    return jax.lax.fori_loop(0, 3, lambda i, y: jnp.tanh(y @ y.T) + i, x)
jax.jit(epoch).lower(jnp.ones((8, 8))).compile()
"""


def test_a_dumped_module_compiles_again_with_its_phases(tmp_path):
    flags = (f"--xla_dump_to={tmp_path} --xla_dump_hlo_as_proto --xla_dump_hlo_pass_re=^$ "
             "--xla_dump_hlo_module_re=.*epoch.*")
    env = {**os.environ, "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu"}
    subprocess.run([sys.executable, "-c", DUMP], check=True, env=env, timeout=300)
    dumps = sorted(tmp_path.glob("*epoch*before_optimizations.hlo.pb"))
    assert len(dumps) == 1 and dumps[0].read_bytes()[:1] == b"\n"  # an HloProto wrapper
    res = compile_profile.measure_module(dumps[0], sys.executable, timeout=300)
    assert "error" not in res, res
    import jax

    assert res["jax"] == jax.__version__ and res["compile_s"] > 0
    assert res["hlo_passes_s"] is not None and res["hlo_passes_s"] > 0


def test_a_module_that_is_not_hlo_is_one_error(tmp_path):
    bad = tmp_path / "bad.hlo.pb"
    bad.write_bytes(b"not a module")
    res = compile_profile.measure_module(bad, sys.executable, timeout=300)
    assert set(res) == {"error"} and res["error"]


def test_medians_keep_counts_whole_and_skip_failed_rounds():
    runs = [{"compile_s": 3.0, "fusions": 10, "jax": "0.10.2", "fusion_emit_s": None},
            {"error": "timed out"},
            {"compile_s": 5.0, "fusions": 11, "jax": "0.10.2", "fusion_emit_s": None},
            {"compile_s": 4.0, "fusions": 13, "jax": "0.10.2", "fusion_emit_s": None}]
    out = compile_profile._median_of(runs)
    assert out == {"compile_s": 4.0, "fusions": 11, "jax": "0.10.2", "fusion_emit_s": None}
    assert compile_profile._median_of([{"error": "x"}]) == {"error": "x"}
