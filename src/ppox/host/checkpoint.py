"""Checkpoints with orbax: atomic by construction (written to a temporary directory, renamed
into place once complete), so an interrupted save never leaves a half checkpoint behind.

A run directory holds:

* ``checkpoints/<updates>/``: the whole batched ``TrainState`` (every run of the batch),
  for ``ppox train --resume``; the last two are kept.
* ``policy/``: what evaluation and deployment need: parameters, observation statistics
  and reward-scaling statistics (leading axis: the runs of the batch).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import numpy as np

POLICY_DIR = "policy"
CHECKPOINT_DIR = "checkpoints"


def _ocp():
    import orbax.checkpoint as ocp

    return ocp


def _to_host(tree: Any) -> Any:
    """Fetches every leaf to a host numpy array (also unshards multi-device arrays)."""
    return jax.tree.map(lambda x: np.asarray(x), jax.device_get(tree))


def save_tree(path: str | Path, tree: Any) -> None:
    """Saves a pytree of arrays atomically to ``path`` (a directory; replaced if present)."""
    ocp = _ocp()
    path = Path(path).absolute()
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(path, _to_host(tree), force=True)
        ckptr.wait_until_finished()


def restore_tree(path: str | Path, template: Any) -> Any:
    """Restores a pytree saved by ``save_tree``; ``template`` gives structure, shapes and
    dtypes (arrays or ``jax.ShapeDtypeStruct``)."""
    ocp = _ocp()
    path = Path(path).absolute()
    target = jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), template)
    with ocp.StandardCheckpointer() as ckptr:
        restored = ckptr.restore(path, target)
    return jax.tree.map(np.asarray, restored)


def policy_tree(state: Any) -> dict[str, Any]:
    """The parts of a (batched) TrainState evaluation needs."""
    return {"params": state.params, "obs_stats": state.obs_stats,
            "reward_stats": state.reward_scaler.stats}


def save_policy(run_dir: str | Path, state: Any) -> Path:
    path = Path(run_dir) / POLICY_DIR
    save_tree(path, policy_tree(state))
    return path


class StateCheckpoints:
    """Periodic full-state checkpoints in ``run_dir/checkpoints`` (keeps the last two)."""

    def __init__(self, run_dir: str | Path, max_to_keep: int = 2) -> None:
        ocp = _ocp()
        self.directory = (Path(run_dir) / CHECKPOINT_DIR).absolute()
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
        )

    def save(self, step: int, state: Any) -> None:
        ocp = _ocp()
        self._manager.save(step, args=ocp.args.StandardSave(_to_host(state)), force=True)
        self._manager.wait_until_finished()

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def restore(self, template: Any, step: int | None = None) -> Any:
        ocp = _ocp()
        step = self.latest_step() if step is None else step
        target = jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), template)
        restored = self._manager.restore(step, args=ocp.args.StandardRestore(target))
        return jax.tree.map(np.asarray, restored)

    def close(self) -> None:
        self._manager.close()
