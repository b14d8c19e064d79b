"""A run directory: its rules, its files and its resume, checked before anything compiles.

Rules (each break is one ``RunDirError`` line):

* a new run needs a directory that does not exist or is empty; an existing run is replaced
  only with ``overwrite`` (which clears it, and only if it is a ppox run directory);
* ``resume`` needs ``config.toml``, the same settings and a checkpoint that passes its checks;
* the path must be a directory we can write to.

Files: ``config.toml`` (the resolved settings), the metric files (``ppox.host.loggers``),
``checkpoints/<update>/`` (``ppox.host.checkpoint``), ``policy/`` and ``summary.json``.

Several processes (``ppox.parallel.distributed``): ``RunDir.open_shared`` checks the rules
and prepares the directory on process 0 only, the others wait for it (and fail with its
error); the others get a reader (``writes`` off: a write there is a bug, refused) that reads
the checkpoint process 0 chose, from the same path: several hosts need a shared filesystem
to resume.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ppox.config import ConfigError
from ppox.host.checkpoint import (
    CHECKPOINT_DIR,
    POLICY_DIR,
    CheckpointError,
    Notify,
    StateCheckpoints,
    StorageError,
    read_manifest,
    remove_temporary,
    restore_tree,
    save_policy,
)
from ppox.host.configfile import atomic_write_text, run_file_differences
from ppox.host.loggers import JSONL_NAME, Logger, LoggerOptions, open_loggers
from ppox.host.metrics import load_history, to_jsonable
from ppox.parallel import distributed

RUN_FILE = "config.toml"
SUMMARY = "summary.json"


class RunDirError(ConfigError):
    """A run directory that breaks a rule (one line, before any compile)."""


def _writable(path: Path) -> None:
    """Creates ``path`` if needed and proves a file can be written in it."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".ppox-write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise RunDirError(f"run directory {str(path)!r} is not writable: "
                          f"{err.strerror or err}") from None


def _check_path(path: Path) -> None:
    if path.exists() and not path.is_dir():
        raise RunDirError(f"run directory {str(path)!r} is a file, not a directory; "
                          "choose another --run-dir")


def _claim_new(path: Path, overwrite: bool) -> None:
    """A new run: the directory must be absent or empty, or cleared with ``overwrite``."""
    entries = [p for p in path.iterdir()] if path.is_dir() else []
    if not entries:
        return
    if not (path / RUN_FILE).is_file():
        raise RunDirError(f"run directory {str(path)!r} is not empty and holds no ppox run "
                          "(no config.toml); choose another --run-dir")
    if not overwrite:
        raise RunDirError(f"run directory {str(path)!r} already holds a run; continue it "
                          "with --resume, replace it with --overwrite, or choose another "
                          "--run-dir")
    for p in entries:
        try:
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
        except OSError as err:
            raise RunDirError(f"cannot clear run directory {str(path)!r}: "
                              f"{err.strerror or err}") from None


def _check_resumable(path: Path, run_file: dict[str, Any]) -> None:
    """A resumed run keeps the settings it started with (its checkpoint holds state shaped
    by them; its learning-rate schedule and metrics assume them)."""
    if not path.is_dir():
        raise RunDirError(f"cannot resume {str(path)!r}: no such directory")
    if not (path / RUN_FILE).is_file():
        raise RunDirError(f"cannot resume {str(path)!r}: it has no config.toml (not a ppox "
                          "run directory)")
    try:
        diffs = run_file_differences(path / RUN_FILE, run_file)
    except (OSError, ValueError) as err:  # tomllib.TOMLDecodeError is a ValueError
        raise RunDirError(f"cannot resume {str(path)!r}: its config.toml is unreadable "
                          f"({err})") from None
    steps = [d for d in diffs if d.startswith("total_timesteps:")]
    if steps and len(diffs) == 1:
        raise RunDirError(
            f"cannot resume {str(path)!r} with another total_timesteps ({steps[0]}): "
            "extending or shortening a run is not supported (its learning-rate schedule and "
            "metrics assume its length); start a new --run-dir")
    if diffs:
        raise RunDirError(
            f"cannot resume {str(path)!r} with other settings than it started with "
            f"({'; '.join(diffs)}). `ppox train --run-dir {path} --resume` with no other "
            "flags reads them from its config.toml; to change them, start a new --run-dir")


@dataclass
class RunDir:
    """One run directory, opened by ``RunDir.open`` once its rules hold."""

    path: Path
    checkpoints: StateCheckpoints
    notify: Notify
    resume: bool
    write_config: Callable[[Path], None]
    writes: bool = True

    @classmethod
    def open(cls, path: str | Path, run_file: dict[str, Any], *, resume: bool,
             overwrite: bool, notify: Notify,
             write_config: Callable[[Path], None]) -> RunDir:
        """Checks the rules (before any compile) and prepares the directory: leftovers of an
        interrupted write are removed. ``run_file``: the settings, as
        ``configfile.run_file_dict``; ``write_config(path)`` writes them as ``config.toml``
        (``start``)."""
        path = Path(path)
        _check_path(path)
        if resume:
            _check_resumable(path, run_file)
        else:
            _claim_new(path, overwrite)
        _writable(path)
        out = cls(path=path, checkpoints=StateCheckpoints(path), notify=notify, resume=resume,
                  write_config=write_config)
        for p in remove_temporary(path) + remove_temporary(out.checkpoints.directory):
            notify(f"removed {p}, left by an interrupted write")
        if resume:
            out._check_checkpoints()
        return out

    @classmethod
    def open_shared(cls, path: str | Path, run_file: dict[str, Any], *, resume: bool,
                    overwrite: bool, notify: Notify,
                    write_config: Callable[[Path], None]) -> RunDir:
        """``open`` on process 0, a barrier, and its error (if any) raised on every process;
        the other processes get a reader of the same path. One process: ``open``."""
        opened = distributed.run_on_writer(lambda: cls.open(
            path, run_file, resume=resume, overwrite=overwrite, notify=notify,
            write_config=write_config))
        if opened is not None:
            return opened
        return cls(path=Path(path), checkpoints=StateCheckpoints(path),
                   notify=lambda _line: None, resume=resume, write_config=write_config,
                   writes=False)

    def _check_writer(self) -> None:
        if not self.writes:
            raise RuntimeError(f"process {distributed.Processes.current().process_id} must "
                               f"not write to {self.path}: only process 0 writes")

    def _check_checkpoints(self) -> None:
        """A resume needs a checkpoint whose manifest and checksums pass (the full checks,
        orbax's restore included, follow once the state's shapes are known)."""
        steps = self.checkpoints.steps()
        if not steps:
            raise RunDirError(f"cannot resume {str(self.path)!r}: it has no checkpoint yet "
                              "(the run stopped before its first save); start it again with "
                              "--overwrite")
        if self.newest_intact() is None:
            for step in reversed(steps):
                try:
                    read_manifest(self.checkpoints.path(step))
                except CheckpointError as err:
                    self.notify(f"refused: {err}")
            self._none_passes()

    def _none_passes(self) -> None:
        raise RunDirError(f"cannot resume {str(self.path)!r}: none of its checkpoints in "
                          f"{CHECKPOINT_DIR}/ passes the checks (see above); start it again "
                          "with --overwrite")

    def start(self) -> None:
        """A new run begins (after its compile, so that an interrupted compile leaves the
        directory empty and the same command can run again): writes ``config.toml``."""
        try:
            self.write_config(self.path / RUN_FILE)
        except OSError as err:
            raise StorageError(f"could not write {self.path / RUN_FILE}: "
                               f"{err.strerror or err}") from err

    def _write(self, name: str, text: str) -> None:
        self._check_writer()
        try:
            atomic_write_text(self.path / name, text)
        except OSError as err:
            raise StorageError(f"could not write {self.path / name}: "
                               f"{err.strerror or err}") from err

    def newest_intact(self) -> int | None:
        """The newest checkpoint step whose manifest and checksums pass (None: none)."""
        steps = self.checkpoints.intact_steps()
        return steps[0] if steps else None

    def is_complete(self, num_updates: int) -> bool:
        """The run's last checkpoint is at its last update (policy and summary may still be
        missing if it stopped while writing them)."""
        return self.newest_intact() == num_updates

    def has_final_outputs(self) -> bool:
        return (self.path / POLICY_DIR).is_dir() and (self.path / SUMMARY).is_file()

    def restore(self, template: Any, allow_nonfinite: bool = False) -> tuple[int, Any]:
        """The newest checkpoint that passes every check: ``(update, state tree)``."""
        found = self.checkpoints.restore_latest(template, self.notify, allow_nonfinite)
        if found is None:
            self._none_passes()
        return found

    def restore_shared(self, template: Any, allow_nonfinite: bool = False) -> tuple[int, Any]:
        """``restore`` on process 0 (which refuses what fails its checks and says so); the
        other processes then read the checkpoint it chose (checked again) from the same
        path. A collective with several processes; one process: ``restore``."""
        found = distributed.run_on_writer(lambda: self.restore(template, allow_nonfinite))
        step = distributed.broadcast(found[0] if found is not None else None)
        if found is not None:
            return found
        return step, restore_tree(self.checkpoints.path(step), template, allow_nonfinite)

    def history(self, run_names: list[str], upto: int) -> list[dict[str, Any]]:
        return load_history(self.path / JSONL_NAME, run_names, upto)

    def loggers(self, batch_size: int, config: dict[str, Any], resume_update: int,
                options: LoggerOptions | None) -> list[Logger]:
        self._check_writer()
        try:
            return open_loggers(self.path, batch_size, config, resume_update=resume_update,
                                options=options or LoggerOptions())
        except OSError as err:
            raise StorageError(f"could not open the metric files in {self.path}: "
                               f"{err.strerror or err}") from err

    def save_checkpoint(self, step: int, state: Any) -> None:
        self._check_writer()
        self.checkpoints.save(step, state)

    def latest_checkpoint(self) -> Path | None:
        step = self.newest_intact()
        return None if step is None else self.checkpoints.path(step)

    def save_policy(self, state: Any) -> None:
        self._check_writer()
        save_policy(self.path, state)

    def write_summary(self, summary: dict[str, Any]) -> None:
        self._write(SUMMARY, json.dumps(to_jsonable(summary), indent=2))

    def read_summary(self) -> dict[str, Any] | None:
        try:
            return json.loads((self.path / SUMMARY).read_text())
        except (OSError, ValueError):
            return None


def resume_command(run_dir: str | Path, extra: str = "") -> str:
    """The command that continues the run in ``run_dir``."""
    return f"ppox train --run-dir {os.fspath(run_dir)} --resume{extra}"
