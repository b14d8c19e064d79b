"""The evaluation program as ppox's commands compile it (``ppox.evaluate.jit_evaluate``)."""

import jax
import numpy as np

from ppox.config import HParams, PPOConfig
from ppox.evaluate import CPU_EVAL_COMPILER_OPTIONS, jit_evaluate, make_evaluate
from ppox.host.periodic_eval import PeriodicEval
from ppox.trainer import build, init


def _options(lowered) -> dict:
    # the options jit passes to XLA with this program (jax 0.10's lowering keeps them here)
    return dict(lowered._lowering._compiler_options_kvs)


def test_evaluation_compiles_without_fusion_emitters_on_cpu_and_scores_the_same():
    """On a CPU ``ppox eval``, ``--video``, ``--eval-every`` and the benchmark worker compile
    the evaluation without XLA's fusion emitters and with JAX's rolled threefry (quicker to
    build, no slower to run); the episodes it plays are those of the plain program."""
    cfg = PPOConfig(env_id="CartPole-v1", num_envs=4, num_steps=8, total_timesteps=32,
                    num_minibatches=1)
    state = init(build(cfg), HParams().as_arrays(), jax.random.PRNGKey(0))
    args = (jax.random.PRNGKey(3), state.params, state.obs_stats)
    assert jax.default_backend() == "cpu"
    ev = jit_evaluate(cfg, 8)
    lowered = ev.lower(*args)
    assert _options(lowered) == CPU_EVAL_COMPILER_OPTIONS
    plain = jax.jit(make_evaluate(cfg, 8))
    assert _options(plain.lower(*args)) == {}
    # JAX's rolled threefry: loops beside the scan's (tests/conftest.py registers the
    # unrolled form, which has none)
    loops = plain.lower(*args).as_text().count("stablehlo.while")
    assert lowered.as_text().count("stablehlo.while") > loops
    ret, length, _ = ev(*args)
    want_ret, want_length, _ = plain(*args)
    assert (np.asarray(length) > 0).all()
    np.testing.assert_array_equal(np.asarray(length), np.asarray(want_length))
    np.testing.assert_allclose(np.asarray(ret), np.asarray(want_ret), rtol=1e-6)

    periodic = PeriodicEval(cfg, num_runs=1, every=1, episodes=4)
    batched = jax.tree.map(lambda x: x[None], (state.params, state.obs_stats))
    lowered = periodic._evaluate.lower(*batched)
    assert _options(lowered) == CPU_EVAL_COMPILER_OPTIONS
    assert lowered.as_text().count("stablehlo.while") > loops
