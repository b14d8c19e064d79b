"""The sweep directory: what makes a sweep safe to interrupt and to resume.

Layout of ``--out D``::

    D/base.toml              the base settings (a run file: env, seed, seeds, [config], [hparams])
    D/spec.toml              the resolved spec
    D/plan.json              the batch plan; written last at the start: D holds a sweep
    D/batches/<g>-<b>/       the run directory of batch b of static group g (train_runs:
                             config, metrics, checkpoints, policy)
    D/batches/<g>-<b>.npz    that batch's results, written atomically once it has finished
    D/results.csv, ...       the report, written at the end

A resume reads the finished batches back, continues the running one from its checkpoint and
starts the others; it refuses settings that differ from the recorded ones (before any
compile), since a changed spec, base or plan would mix two different sweeps in one table.
"""

from __future__ import annotations

import json
import shutil
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tomli_w

from ppox.config import ConfigError
from ppox.host.configfile import atomic_write, atomic_write_text
from ppox.sweep.plan import Batch, BatchPlan

BASE_FILE = "base.toml"
SPEC_FILE = "spec.toml"
PLAN_FILE = "plan.json"
BATCHES_DIR = "batches"
# Files that mark a directory as a sweep's (older sweeps wrote no plan.json).
SWEEP_MARKERS = (PLAN_FILE, "results.csv", "sweep.json")


@dataclass(frozen=True)
class SweepRecord:
    """The settings a sweep started with, as plain TOML/JSON-ready mappings.

    Attributes:
        base: the base settings (``ppox.host.configfile.run_file_dict``), with the seed and
            number of seeds the sweep resolved.
        spec: the resolved spec (``SweepSpec.to_dict``).
        plan: ``batch_size`` (the ``--batch-size`` given, or None), ``progress_chunks``,
            ``checkpoint_every``, ``devices`` and ``groups`` (``[batch_size, num_batches,
            num_runs]`` per static group).
    """

    base: dict[str, Any]
    spec: dict[str, Any]
    plan: dict[str, Any]

    def plans(self) -> list[BatchPlan]:
        """The recorded batch plan of each static group."""
        return [BatchPlan(num_runs=n, batch_size=size, num_batches=batches,
                          num_devices=self.plan["devices"])
                for size, batches, n in self.plan["groups"]]


@dataclass(frozen=True)
class BatchRecord:
    """What one finished batch contributes to the results, its real runs only.

    Attributes:
        final_return, auc: ``[n]`` per run.
        curves: ``[n, U]`` mean return of the episodes that ended in each update.
        diverged: ``[n]`` bool.
        wall_s: seconds of the ``train_runs`` call that finished the batch.
        compile_s, run_s: its compile and training seconds.
        env_steps: env steps its real runs trained in that call (a resumed batch counts
            only the updates after its checkpoint).
    """

    final_return: np.ndarray
    auc: np.ndarray
    curves: np.ndarray
    diverged: np.ndarray
    wall_s: float
    compile_s: float
    run_s: float
    env_steps: int


class SweepDir:
    """The sweep directory ``path``: its protection, its record and its batches."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def holds_sweep(self) -> bool:
        return any((self.path / name).is_file() for name in SWEEP_MARKERS)

    def create(self, record: SweepRecord, overwrite: bool) -> None:
        """Starts a new sweep in ``path``: refuses an existing non-empty directory unless
        ``overwrite`` (which clears it; only a sweep's directory is cleared), then writes
        the record. One ``ConfigError`` line for every problem."""
        if self.path.exists() and not self.path.is_dir():
            raise ConfigError(f"--out {str(self.path)!r} is a file, not a directory; choose "
                              "a directory for the sweep")
        if self.path.is_dir() and any(self.path.iterdir()):
            if not overwrite:
                what = "a sweep" if self.holds_sweep() else "files"
                raise ConfigError(
                    f"sweep directory {str(self.path)!r} already holds {what}; pass --resume "
                    "to continue the sweep in it, --overwrite to replace it, or choose a new "
                    "--out")
            if not self.holds_sweep():
                raise ConfigError(
                    f"--overwrite clears only a sweep directory, and {str(self.path)!r} holds "
                    f"files but no sweep (no {PLAN_FILE}); choose a new --out")
            self._clear()
        self._write_record(record)

    def _clear(self) -> None:
        for child in self.path.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()

    def _write_record(self, record: SweepRecord) -> None:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.path / BASE_FILE, tomli_w.dumps(record.base))
            atomic_write_text(self.path / SPEC_FILE, tomli_w.dumps(record.spec))
            atomic_write_text(self.path / PLAN_FILE, json.dumps(record.plan, indent=2))
        except OSError as err:
            raise ConfigError(f"cannot write the sweep directory {str(self.path)!r}: "
                              f"{err.strerror or err}") from None

    def read_record(self) -> SweepRecord:
        """The record of the sweep in ``path`` (``--resume``); one ``ConfigError`` line when
        there is none."""
        if not self.path.is_dir():
            raise ConfigError(f"--resume: sweep directory {str(self.path)!r} does not exist; "
                              "start the sweep without --resume")
        if not (self.path / PLAN_FILE).is_file():
            raise ConfigError(f"--resume: {str(self.path)!r} holds no sweep to resume (no "
                              f"{PLAN_FILE}); start one with ppox sweep --spec SPEC --out DIR")
        try:
            return SweepRecord(
                base=tomllib.loads((self.path / BASE_FILE).read_text()),
                spec=tomllib.loads((self.path / SPEC_FILE).read_text()),
                plan=json.loads((self.path / PLAN_FILE).read_text()))
        except (OSError, ValueError) as err:
            raise ConfigError(f"--resume: the sweep record in {str(self.path)!r} is "
                              f"unreadable ({err}); start a new sweep with --overwrite") from None

    def check_resume(self, stored: SweepRecord, given: SweepRecord) -> None:
        """Refuses, naming every difference, a resume whose settings differ from the
        recorded ones (the plan's ``batch_size`` only when one was given)."""
        plan = dict(given.plan)
        if plan.get("batch_size") is None:
            plan["batch_size"] = stored.plan.get("batch_size")
        free = ("groups", "checkpoint_every")  # groups follows from the rest; checkpoints
        plan = {k: v for k, v in plan.items() if k not in free}  # change no number
        old_plan = {k: v for k, v in stored.plan.items() if k not in free}
        diffs = (differences(stored.base, given.base, new_keys=False)
                 + differences(stored.spec, given.spec)
                 + differences(old_plan, plan))
        if diffs:
            raise ConfigError(
                f"cannot resume the sweep in {str(self.path)!r} with other settings than it "
                f"started with ({'; '.join(diffs)}). `ppox sweep --out {self.path} --resume` "
                "with no other flags reads them from it; to change them, start a new --out")

    # --- batches

    def batch_dir(self, batch: Batch) -> Path:
        return self.path / BATCHES_DIR / batch.name

    def _record_path(self, batch: Batch) -> Path:
        return self.path / BATCHES_DIR / f"{batch.name}.npz"

    def is_finished(self, batch: Batch) -> bool:
        return self._record_path(batch).is_file()

    def load_batch(self, batch: Batch) -> BatchRecord | None:
        """The finished batch's results, or None when it has not finished."""
        path = self._record_path(batch)
        if not path.is_file():
            return None
        with np.load(path) as f:
            scalars = json.loads(str(f["scalars"]))
            return BatchRecord(final_return=f["final_return"], auc=f["auc"],
                               curves=f["curves"], diverged=f["diverged"], **scalars)

    def save_batch(self, batch: Batch, record: BatchRecord) -> None:
        """Writes the batch's results atomically: after a crash the file is whole or
        absent."""
        path = self._record_path(batch)
        scalars = {"wall_s": record.wall_s, "compile_s": record.compile_s,
                   "run_s": record.run_s, "env_steps": int(record.env_steps)}
        write_npz(path, final_return=record.final_return, auc=record.auc,
                  curves=record.curves, diverged=record.diverged,
                  scalars=np.asarray(json.dumps(scalars)))

    def checkpoint_step(self, batch: Batch) -> int | None:
        """The update of the batch's newest checkpoint, or None when it has none."""
        from ppox.host.checkpoint import CHECKPOINT_DIR

        ckpts = self.batch_dir(batch) / CHECKPOINT_DIR
        steps = [int(p.name) for p in ckpts.iterdir()
                 if p.is_dir() and p.name.isdigit()] if ckpts.is_dir() else []
        return max(steps) if steps else None

    def start_batch(self, batch: Batch) -> int | None:
        """Prepares the batch's run directory; returns the update its checkpoint resumes
        from, or None (the directory was cleared: whatever an interrupted start left there
        is not a run to continue)."""
        step = self.checkpoint_step(batch)
        if step is None:
            self.restart_batch(batch)
        return step

    def restart_batch(self, batch: Batch) -> None:
        """Clears the batch's run directory: it trains again from update 0."""
        shutil.rmtree(self.batch_dir(batch), ignore_errors=True)


def write_npz(path: Path, compressed: bool = False, **arrays: np.ndarray) -> None:
    """``np.savez`` written atomically: after a crash the file is whole or absent."""
    save = np.savez_compressed if compressed else np.savez
    atomic_write(path, lambda f: save(f, **arrays))


def differences(old: dict[str, Any], new: dict[str, Any], where: str = "",
                new_keys: bool = True) -> list[str]:
    """``"name: X here, Y in the sweep"`` for every setting of ``new`` that differs from
    ``old``; tables compare key by key (``[grid] learning_rate: ...``). ``new_keys=False``:
    keys ``old`` lacks are not compared (a sweep recorded before the setting existed)."""
    old, new = _as_toml(old), _as_toml(new)
    out = []
    for key in [*new, *(k for k in old if k not in new)]:
        if not new_keys and key not in old:
            continue
        o, n = old.get(key), new.get(key)
        if isinstance(o, dict) and isinstance(n, dict):
            out += differences(o, n, f"{where}[{key}] ", new_keys)
        elif o != n:
            out.append(f"{where}{key}: {_show(n)} here, {_show(o)} in the sweep")
    return out


def _as_toml(d: dict[str, Any]) -> dict[str, Any]:
    """As TOML reads it back (tuples become lists, None entries dropped)."""
    return tomllib.loads(tomli_w.dumps({k: v for k, v in d.items() if v is not None}))


def _show(v: Any) -> str:
    return "none" if v is None else repr(v)


# The per-update metrics a sweep's results are computed from.
_RESULT_METRICS = ("episode_count", "episode_return_sum", "loss", "nonfinite")


def read_batch_metrics(run_dir: Path, num_runs: int, num_updates: int) -> dict[str, np.ndarray]:
    """A resumed batch's ``[R, U]`` metrics from its ``metrics.jsonl``.

    ``train_runs`` names runs by seed, so a batch that holds several configurations has
    runs of the same name, which its resumed history cannot tell apart; the rows of one
    update are written in run order, so the k-th row of an update is run k.
    """
    path = run_dir / "metrics.jsonl"
    out: dict[str, np.ndarray] = {}
    seen = np.zeros(num_updates, int)
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        u = int(row["update"]) - 1
        if not 0 <= u < num_updates or seen[u] >= num_runs:
            raise RuntimeError(f"{path}: unexpected row for update {u + 1}")
        for k in _RESULT_METRICS:
            if k in row:
                arr = out.setdefault(k, np.full((num_runs, num_updates), np.nan, np.float32))
                arr[seen[u], u] = np.nan if row[k] is None else float(row[k])
        seen[u] += 1
    if not (seen == num_runs).all():
        raise RuntimeError(f"{path}: holds {int(seen.min())} of {num_runs} runs' rows for "
                           "some update; cannot rebuild the batch's results")
    return out
