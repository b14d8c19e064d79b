"""Checkpoints: orbax writes the arrays, a checksum manifest says they are complete and intact.

orbax writes each checkpoint into a temporary directory and renames it into place once
complete. After that, ``ppox_manifest.json`` is written (atomically) into it: the sha256 and
size of every file, the step, every leaf's shape and dtype, and whether every value was
finite. A checkpoint without a manifest is one whose write did not finish; a checkpoint is
used only when the manifest, the files' checksums, orbax's restore, the shapes and the
values all pass. orbax's ``CheckpointManager`` is not used: its retention counts
checkpoints, not verified ones, and could evict the last good one.

A run directory holds:

* ``checkpoints/<updates>/``: the whole batched ``TrainState`` (every run of the batch),
  for ``ppox train --resume``; the newest two verified ones are kept.
* ``policy/``: what evaluation and deployment need: parameters, observation statistics
  and reward-scaling statistics (leading axis: the runs of the batch).
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import jax
import numpy as np

from ppox.host.configfile import atomic_write_text
from ppox.host.interrupts import test_pause

POLICY_DIR = "policy"
CHECKPOINT_DIR = "checkpoints"
MANIFEST = "ppox_manifest.json"
MANIFEST_VERSION = 1
TMP_SUFFIX = ".orbax-checkpoint-tmp"  # orbax's name for a directory being written
Notify = Callable[[str], None]


class CheckpointError(Exception):
    """A checkpoint that cannot be used; the message is one line naming its directory."""


class StorageError(Exception):
    """Writing to the run directory failed (full disk, read-only, ...); one line, which
    says what was kept."""


def _ocp():
    import orbax.checkpoint as ocp

    return ocp


def _to_host(tree: Any) -> Any:
    """Fetches every leaf to a host numpy array (also unshards multi-device arrays)."""
    return jax.tree.map(lambda x: np.asarray(x), jax.device_get(tree))


def first_line(err: BaseException) -> str:
    """An exception as one short line (orbax/tensorstore messages run to many lines)."""
    text = str(err).strip().splitlines()
    line = text[0] if text else type(err).__name__
    return line if len(line) <= 300 else line[:297] + "..."


def is_disk_full(err: BaseException) -> bool:
    while err is not None:
        if isinstance(err, OSError) and err.errno == errno.ENOSPC:
            return True
        if "No space left on device" in str(err):
            return True
        err = err.__cause__ or err.__context__
    return False


def nonfinite_leaves(tree: Any) -> list[str]:
    """The paths of the floating-point leaves of ``tree`` holding NaN or inf."""
    out = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        x = np.asarray(leaf)
        if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
            out.append(jax.tree_util.keystr(path))
    return out


def _leaf_specs(tree: Any) -> list[dict[str, Any]]:
    """Path, shape and dtype of every leaf (arrays or ``jax.ShapeDtypeStruct``)."""
    return [{"path": jax.tree_util.keystr(p), "shape": [int(d) for d in np.shape(x)],
             "dtype": str(np.dtype(x.dtype) if hasattr(x, "dtype") else np.asarray(x).dtype)}
            for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST)


def write_manifest(directory: Path, tree: Any, step: int | None) -> None:
    files = {str(p.relative_to(directory)): {"sha256": _sha256(p), "bytes": p.stat().st_size}
             for p in _files(directory)}
    manifest = {"version": MANIFEST_VERSION, "step": step, "finite": not nonfinite_leaves(tree),
                "leaves": _leaf_specs(tree), "files": files}
    atomic_write_text(directory / MANIFEST, json.dumps(manifest, indent=1))


def read_manifest(directory: Path) -> dict[str, Any]:
    """The manifest of a checkpoint whose files are all present and unchanged."""
    path = directory / MANIFEST
    if not path.is_file():
        raise CheckpointError(f"checkpoint {directory} has no {MANIFEST} (its write did not "
                              "finish)")
    try:
        manifest = json.loads(path.read_text())
        files = manifest["files"]
        if not isinstance(manifest["leaves"], list) or "step" not in manifest:
            raise KeyError("leaves/step")
    except (ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"checkpoint {directory}: unreadable {MANIFEST} "
                              f"({first_line(err)})") from None
    for rel, want in files.items():
        p = directory / rel
        if not p.is_file():
            raise CheckpointError(f"checkpoint {directory}: file {rel} is missing")
        if p.stat().st_size != want["bytes"]:
            raise CheckpointError(f"checkpoint {directory}: file {rel} has "
                                  f"{p.stat().st_size} bytes, {want['bytes']} were written")
        if _sha256(p) != want["sha256"]:
            raise CheckpointError(f"checkpoint {directory}: file {rel} has changed since it "
                                  "was written (checksum mismatch)")
    return manifest


def _check_restored(directory: Path, manifest: dict[str, Any], restored: Any,
                    template: Any, allow_nonfinite: bool) -> None:
    got, want = _leaf_specs(restored), _leaf_specs(template)
    for i in range(max(len(got), len(want))):
        g = got[i] if i < len(got) else None
        w = want[i] if i < len(want) else None
        if g != w:
            raise CheckpointError(f"checkpoint {directory} does not fit this run: {g} "
                                  f"restored where {w} is expected")
    bad_leaves = nonfinite_leaves(restored)
    # non-finite values pass only where they were saved so on purpose (a sweep's diverged run)
    if bad_leaves and not (allow_nonfinite and manifest.get("finite") is False):
        raise CheckpointError(f"checkpoint {directory}: non-finite values in {bad_leaves[0]}")


def _checkpointer() -> Any:
    """orbax's checkpointer for this process alone. With several processes only process 0
    writes, and each reads what it wrote at its own time, so orbax must not wait for the
    others (its default is every process at every save and restore)."""
    ocp = _ocp()
    if jax.process_count() == 1:
        return ocp.StandardCheckpointer()
    me = jax.process_index()
    return ocp.StandardCheckpointer(multiprocessing_options=ocp.options.MultiprocessingOptions(
        primary_host=me, active_processes={me}, barrier_sync_key_prefix=f"ppox-process-{me}"))


def _orbax_save(path: Path, tree: Any) -> None:
    with _checkpointer() as ckptr:
        ckptr.save(path, tree, force=True)
        ckptr.wait_until_finished()


def _orbax_restore(path: Path, template: Any) -> Any:
    target = jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), template)
    with _checkpointer() as ckptr:
        return jax.tree.map(np.asarray, ckptr.restore(path, target))


@contextmanager
def _orbax_noise_captured() -> Iterator[None]:
    """When a write fails (a full disk), orbax closes its event loop while tensorstore's
    other writes are in flight; each of them then prints a "RuntimeError: Event loop is
    closed" traceback on stderr, from its own thread. They are captured (with a short wait
    for the writes in flight) and dropped: the cause is in ``StorageError``'s one line."""
    real, sys.stderr = sys.stderr, io.StringIO()
    failed = False
    try:
        yield
    except BaseException:
        failed = True
        time.sleep(0.5)
        raise
    finally:
        captured, sys.stderr = sys.stderr.getvalue(), real
        if captured and not failed:
            real.write(captured)


def save_tree(path: str | Path, tree: Any, step: int | None = None) -> None:
    """Saves a pytree of arrays to ``path`` (a directory; replaced if present), then its
    manifest. Raises ``StorageError`` (one line) when the write fails."""
    path = Path(path).absolute()
    host = _to_host(tree)
    try:
        test_pause("checkpoint_start", -1 if step is None else step)
        with _orbax_noise_captured():
            _orbax_save(path, host)
        test_pause("checkpoint_manifest", -1 if step is None else step)
        write_manifest(path, host, step)
    except Exception as err:
        remove_temporary(path.parent)
        shutil.rmtree(path, ignore_errors=True)
        cause = "no space left on device" if is_disk_full(err) else first_line(err)
        raise StorageError(f"could not write {path}: {cause}") from err


def restore_tree(path: str | Path, template: Any, allow_nonfinite: bool = False) -> Any:
    """Restores and verifies a pytree saved by ``save_tree``; ``template`` gives structure,
    shapes and dtypes (arrays or ``jax.ShapeDtypeStruct``). ``CheckpointError``: one line
    (a missing or failing manifest, orbax's own error, other shapes, non-finite values)."""
    path = Path(path).absolute()
    manifest = read_manifest(path)
    try:
        restored = _orbax_restore(path, template)
    except Exception as err:
        raise CheckpointError(f"checkpoint {path} could not be read: {first_line(err)}") \
            from None
    _check_restored(path, manifest, restored, template, allow_nonfinite)
    return restored


def remove_temporary(directory: Path) -> list[Path]:
    """Deletes what an interrupted write left in ``directory`` (orbax's temporary
    directories, ``atomic_write_text``'s temporary files, a half-replaced policy)."""
    if not directory.is_dir():
        return []
    gone = [p for p in directory.iterdir()
            if TMP_SUFFIX in p.name or (p.name.startswith(".") and p.name.endswith(".tmp"))
            or p.name in (_NEW_POLICY, _OLD_POLICY)]
    for p in gone:
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    return gone


def policy_tree(state: Any) -> dict[str, Any]:
    """The parts of a (batched) TrainState evaluation needs."""
    return {"params": state.params, "obs_stats": state.obs_stats,
            "reward_stats": state.reward_scaler.stats}


_NEW_POLICY, _OLD_POLICY = ".policy-new", ".policy-old"


def save_policy(run_dir: str | Path, state: Any) -> Path:
    """Writes ``run_dir/policy``; the previous one stays until the new one is complete."""
    run_dir = Path(run_dir)
    path, new, old = run_dir / POLICY_DIR, run_dir / _NEW_POLICY, run_dir / _OLD_POLICY
    save_tree(new, policy_tree(state))
    if path.exists():
        os.replace(path, old)
    os.replace(new, path)
    shutil.rmtree(old, ignore_errors=True)
    return path


class StateCheckpoints:
    """Full-state checkpoints in ``run_dir/checkpoints/<step>``, each verified on restore;
    the newest ``keep`` verified ones are kept."""

    def __init__(self, run_dir: str | Path, keep: int = 2) -> None:
        self.directory = (Path(run_dir) / CHECKPOINT_DIR).absolute()
        self.keep = keep

    def steps(self) -> list[int]:
        """Every step directory, verified or not, oldest first."""
        if not self.directory.is_dir():
            return []
        return sorted(int(p.name) for p in self.directory.iterdir()
                      if p.is_dir() and p.name.isdigit())

    def path(self, step: int) -> Path:
        return self.directory / str(step)

    def intact_steps(self) -> list[int]:
        """Steps whose manifest and checksums pass (newest first)."""
        out = []
        for step in reversed(self.steps()):
            try:
                read_manifest(self.path(step))
            except CheckpointError:
                continue
            out.append(step)
        return out

    def save(self, step: int, state: Any) -> Path:
        """Writes the checkpoint of ``step``, then drops the verified ones beyond ``keep``
        (never the one just written). ``StorageError`` names what is kept."""
        path = self.path(step)
        self.directory.mkdir(parents=True, exist_ok=True)
        try:
            save_tree(path, state, step)
        except StorageError as err:
            kept = self.intact_steps()
            note = (f"; the checkpoint {self.path(kept[0])} is kept" if kept
                    else "; no earlier checkpoint exists")
            raise StorageError(f"{err}{note}") from err
        self._prune(step)
        return path

    def _prune(self, newest: int) -> None:
        good = [s for s in self.intact_steps() if s <= newest]
        for step in good[self.keep:]:
            shutil.rmtree(self.path(step), ignore_errors=True)
        for step in self.steps():  # unfinished writes older than a verified checkpoint
            if step < newest and step not in good:
                shutil.rmtree(self.path(step), ignore_errors=True)

    def restore_latest(self, template: Any, notify: Notify,
                       allow_nonfinite: bool = False) -> tuple[int, Any] | None:
        """The newest checkpoint that passes every check, as ``(step, tree)``; each refused
        one is one ``notify`` line, and so is the fallback. None when none passes."""
        refused = []
        for step in reversed(self.steps()):
            path = self.path(step)
            try:
                manifest = read_manifest(path)
                tree = restore_tree(path, template, allow_nonfinite)
            except CheckpointError as err:
                notify(f"refused: {err}")
                refused.append(step)
                continue
            if manifest["step"] != step:
                notify(f"refused: checkpoint {path} holds step {manifest['step']}")
                refused.append(step)
                continue
            if refused:  # left in place: training writes those steps again
                notify(f"using checkpoint {path} (update {step}), the newest that passes "
                       "every check")
            return step, tree
        return None
