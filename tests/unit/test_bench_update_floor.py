"""``benchmarks/update_floor.py``: the bare SGD step it times really trains ppox's networks,
its points and peers parse, and its report states the ceiling against a peer."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import update_floor  # noqa: E402
from benchmarks._common import parse_point  # noqa: E402


def test_points_and_peers_parse():
    assert parse_point("CartPole-v1:4") == ("CartPole-v1", 4, 1)
    assert parse_point("brax/ant:256:8") == ("brax/ant", 256, 8)
    for bad in ("CartPole-v1", "CartPole-v1:four", "CartPole-v1:4:0", ":4", "a:1:2:3"):
        with pytest.raises(ValueError, match=f"point {bad!r}: expected ENV_ID:NUM_ENVS"):
            parse_point(bad)
    assert update_floor.parse_peers(["rejax=127087"]) == {"rejax": 127087.0}


@pytest.mark.parametrize("argv, line", [
    (["--peer", "rejax"],
     "error: --peer 'rejax': expected NAME=STEPS_PER_S, e.g. --peer rejax=127087"),
    (["--points", "CartPole-v1:4", "CartPole-v1"],
     "error: point 'CartPole-v1': expected ENV_ID:NUM_ENVS[:RUNS] with positive counts, "
     "e.g. CartPole-v1:4 or CartPole-v1:4:32"),
])
def test_bad_input_is_one_error_line_before_anything_is_measured(argv, line, capsys,
                                                                 monkeypatch):
    measured = []
    monkeypatch.setattr(update_floor, "run_point", lambda *a: measured.append(a))
    with pytest.raises(SystemExit) as exit_info:
        update_floor.main(argv)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == line
    assert measured == []


def test_floor_step_moves_every_run_own_parameters():
    import jax
    import jax.numpy as jnp

    from ppox.defaults import resolve

    cfg, hp = resolve("CartPole-v1")
    init, block = update_floor.sgd_floor_program(cfg, hp.as_arrays(), runs=2)
    carry = jax.jit(init)(jax.random.PRNGKey(0))
    params, obs, action = carry
    rows = cfg.batch_size // cfg.num_minibatches
    assert obs.shape == (2, rows, 4) and action.shape == (2, rows)
    new = jax.jit(block)(jnp.int32(0), carry, jax.random.PRNGKey(1))[0]
    for old_leaf, new_leaf in zip(jax.tree.leaves(params), jax.tree.leaves(new), strict=True):
        assert old_leaf.shape[0] == 2
        assert bool(jnp.all(jnp.isfinite(new_leaf)))
    moved = [float(jnp.max(jnp.abs(a - b))) for a, b in
             zip(jax.tree.leaves(params), jax.tree.leaves(new), strict=True)]
    assert max(moved) > 0.0
    # two runs, two different initializations
    kernel = max(jax.tree.leaves(params), key=lambda x: x.size)
    assert not bool(jnp.allclose(kernel[0], kernel[1]))


def test_report_gives_the_ceiling_against_a_peer_for_one_run_only():
    one = {"point": "CartPole-v1:4", "runs": 1, "sgd_floor_step_s": 146e-6,
           "sgd_steps_per_update": 16, "rollout_per_update_s": 0.67e-3,
           "floor_update_s": 3.01e-3, "ceiling_sps": 170_000.0, "ceiling_gflops": 38.7,
           "matmul_peak_gflops_one_core": 88.0, "trainer_sps": 140_000.0,
           "trainer_over_ceiling": 140 / 170}
    many = {**one, "point": "CartPole-v1:4:32", "runs": 32, "ceiling_sps": 200_000.0}
    lines = update_floor.report([one, many], {"rejax": 100_000.0})
    assert "| CartPole-v1:4 | 146 µs × 16 | 0.67 ms | 3.01 ms | 170,000 |" in lines[2]
    assert ("CartPole-v1:4: the ceiling is 1.70x rejax (100,000 steps/s); "
            "ppox's trainer 1.40x") in lines
    assert not any(line.startswith("CartPole-v1:4:32: the ceiling") for line in lines)
    assert "CartPole-v1:4:32: 2 cores at most 400,000 steps/s aggregate" in lines[-1]
