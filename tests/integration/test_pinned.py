"""Pinned arithmetic: three short runs' final parameters and per-update metrics, stored.

``tests/data/pinned_runs.npz`` was written by these same cases before the trainer was cut
into parts (algorithm, networks, layout); the parts reproduced it bit for bit on the CPU it
was made on. A later change that moves any number has to replace the file on purpose (``--write``
below); it was rewritten when the minibatch shuffle became a packed single-array sort for
batches of <= 4096 rows (another permutation from the same key), again when batches of 256
rows or more took the Feistel index shuffle instead of a sort (the cartpole and
pendulum_gauss cases; pendulum_tanh's 128 rows still sort and its stored numbers, which
still matched, were kept), and its metrics alone (``--write-metrics``, the parameters kept
as they were and still matched) when the loss diagnostics came to be measured in the SGD
steps instead of a pass of their own.
The tolerance only absorbs a different CPU's float rounding (another vector width can
change a reduction's summation order): 2e-6 relative on the parameters is far below any
change of the algorithm, which moves them by 1e-3 or more after three updates.
"""

from pathlib import Path

import jax
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from ppox import HParams, PPOConfig, make_train

PINNED = Path(__file__).resolve().parent.parent / "data" / "pinned_runs.npz"

CASES = {
    "cartpole": (PPOConfig(env_id="CartPole-v1", total_timesteps=4 * 128 * 3), HParams()),
    "pendulum_gauss": (PPOConfig(env_id="Pendulum-v1", num_envs=4, num_steps=64,
                                 total_timesteps=4 * 64 * 3, normalize_obs=True,
                                 normalize_reward=True, grad_clip="per_network",
                                 actor_hidden=(32, 32), critic_hidden=(64,)),
                       HParams(learning_rate=1e-3)),
    "pendulum_tanh": (PPOConfig(env_id="Pendulum-v1", num_envs=4, num_steps=32,
                                total_timesteps=4 * 32 * 2, policy="tanh_gaussian",
                                anneal_lr=False, clip_value_loss=False), HParams()),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_short_run_matches_the_pinned_numbers(name):
    cfg, hp = CASES[name]
    state, metrics = jax.jit(make_train(cfg))(jax.random.PRNGKey(3), hp)
    pinned = np.load(PINNED)
    np.testing.assert_allclose(np.asarray(ravel_pytree(state.params)[0]),
                               pinned[f"{name}/params"], rtol=2e-6, atol=1e-7)
    names = [k.split("/metric/")[1] for k in pinned.files if k.startswith(f"{name}/metric/")]
    assert {"loss", "approx_kl", "update_norm", "episode_return_sum"} <= set(names)
    for m in names:
        np.testing.assert_allclose(np.asarray(metrics[m]), pinned[f"{name}/metric/{m}"],
                                   rtol=2e-5, atol=1e-6, err_msg=m)


def write_pinned(path: Path = PINNED, params: bool = True) -> None:
    """Rewrite the stored numbers from the current code (on purpose, after an intended change
    of the arithmetic): ``python tests/integration/test_pinned.py --write``; with
    ``--write-metrics`` (``params=False``) the parameters are kept as stored."""
    old = np.load(path)
    out = {k: old[k] for k in old.files if not params and k.endswith("/params")}
    for name in sorted(CASES):
        cfg, hp = CASES[name]
        state, metrics = jax.jit(make_train(cfg))(jax.random.PRNGKey(3), hp)
        if params:
            out[f"{name}/params"] = np.asarray(ravel_pytree(state.params)[0])
        for k in old.files:
            if k.startswith(f"{name}/metric/"):
                out[k] = np.asarray(metrics[k.split("/metric/")[1]])
    np.savez(path, **out)


if __name__ == "__main__":
    import sys

    if sys.argv[1:] not in (["--write"], ["--write-metrics"]):
        sys.exit("usage: python tests/integration/test_pinned.py --write | --write-metrics")
    write_pinned(params=sys.argv[1] == "--write")
