"""The gradient-norm clip: global (one norm over every parameter) or per network."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ppox.algo.sgd import clip_by_norm_per_network, critic_mask, flat_params
from ppox.config import ConfigError, PPOConfig


def _params():
    k = jax.random.split(jax.random.PRNGKey(0), 3)
    return {"actor": {"w": 3.0 * jax.random.normal(k[0], (4, 3))},
            "critic": {"w": 0.01 * jax.random.normal(k[1], (4, 2))},
            "log_std": jax.random.normal(k[2], (3,))}


def test_critic_mask_marks_exactly_the_critic_entries():
    params = _params()
    flat, unravel = flat_params(params)
    mask = critic_mask(params)
    assert mask.shape == flat.shape and int(mask.sum()) == 8
    back = unravel(jnp.where(mask, flat, 0.0))
    np.testing.assert_array_equal(back["critic"]["w"], params["critic"]["w"])
    assert not np.any(back["actor"]["w"]) and not np.any(back["log_std"])


def test_per_network_clip_equals_optax_on_each_network():
    grads = _params()  # the actor part is large (clipped), the critic part small (kept)
    flat, unravel = flat_params(grads)
    tx = clip_by_norm_per_network(0.5, critic_mask(grads))
    out, _ = tx.update(flat, tx.init(flat))
    out = unravel(out)
    clip = optax.clip_by_global_norm(0.5)
    actor = {k: v for k, v in grads.items() if k != "critic"}
    want_actor, _ = clip.update(actor, clip.init(actor))
    for a, b in zip(jax.tree.leaves(want_actor),
                    jax.tree.leaves({k: out[k] for k in actor}), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    np.testing.assert_allclose(out["critic"]["w"], grads["critic"]["w"], rtol=1e-6)
    assert optax.global_norm(actor) > 0.5  # the case really clipped one part
    np.testing.assert_allclose(optax.global_norm({k: out[k] for k in actor}), 0.5, rtol=1e-5)


def test_grad_clip_scope_is_validated():
    with pytest.raises(ConfigError, match="grad_clip='pernet' is not a clip scope"):
        PPOConfig(grad_clip="pernet").validate()
