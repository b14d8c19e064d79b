import jax.numpy as jnp
import numpy as np

from ppox.packing import pack, unpack


def test_pack_unpack_roundtrip_mixed_dtypes():
    tree = {"a": jnp.arange(6, dtype=jnp.int32).reshape(3, 2), "b": jnp.array([True, False, True]),
            "c": jnp.ones((3, 2, 2), jnp.float32) * 0.5}
    packed = pack(tree, batch_ndim=1)
    assert packed.shape == (3, 2 + 1 + 4)
    back = unpack(packed, tree, batch_ndim=1)
    for k in tree:
        assert back[k].dtype == tree[k].dtype
        np.testing.assert_array_equal(np.asarray(back[k]), np.asarray(tree[k]))
    # a stacked [T, B, F] block unpacks with a per-step [B, ...] template
    stacked = jnp.stack([packed, packed])
    back2 = unpack(stacked, tree, batch_ndim=1)
    assert back2["c"].shape == (2, 3, 2, 2)
