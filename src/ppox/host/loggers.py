"""Metric back-ends of a run: metrics.jsonl and metrics.csv always, TensorBoard and Weights &
Biases on request.

Every logger has the same two methods: ``write(start_update, metrics, run_names, wall_s)``,
called once per chunk with the chunk's metrics already on the host (``{name: [R, n]}`` for
updates ``start_update .. start_update + n - 1``), and ``close()``. Rows are the same for
every back-end (``ppox.host.metrics.metric_rows``): ``env_steps``, ``wall_s``,
``episode_return`` (missing where no episode ended) and every per-update metric.
tensorboardX and wandb are imported only by the loggers that use them.
"""

from __future__ import annotations

import csv
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from ppox.config import ConfigError
from ppox.host.metrics import (
    ROW_KEYS,
    jsonl_line,
    last_wall_s,
    metric_rows,
    truncate_metrics,
)

WandbMode = Literal["online", "offline", "disabled"]

JSONL_NAME = "metrics.jsonl"
CSV_NAME = "metrics.csv"
TENSORBOARD_DIR = "tensorboard"
WANDB_DIR = "wandb"


class Logger(Protocol):
    def write(self, start_update: int, metrics: dict[str, np.ndarray], run_names: list[str],
              wall_s: float) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class LoggerOptions:
    """Which optional back-ends a run writes to (JSONL and CSV are always written).

    Attributes:
        tensorboard: event files in ``RUN_DIR/tensorboard/<run>`` (one TensorBoard run per
            seed), x axis: env steps.
        wandb: one Weights & Biases run per seed, grouped by the run directory's name.
        wandb_project: the W&B project.
        wandb_mode: ``online``, ``offline`` (files in ``RUN_DIR/wandb``, no network; upload
            later with ``wandb sync``) or ``disabled``.
    """

    tensorboard: bool = False
    wandb: bool = False
    wandb_project: str = "ppox"
    wandb_mode: WandbMode = "online"


class JsonlLogger:
    """One JSON object per (run, update) line; non-finite floats as ``"nan"``/``"inf"``/
    ``"-inf"``, ``null`` for a value that does not exist (no episode ended)."""

    def __init__(self, path: str | Path, batch_size: int, wall_offset: float = 0.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.batch_size = batch_size
        self.wall_offset = wall_offset
        self._f = self.path.open("a")

    def write(self, start_update: int, metrics: dict[str, np.ndarray], run_names: list[str],
              wall_s: float) -> None:
        rows = metric_rows(start_update, metrics, run_names, self.batch_size,
                           self.wall_offset + wall_s)
        self._f.write("".join(jsonl_line(row) + "\n" for row in rows))
        self._f.flush()

    def close(self) -> None:
        self._f.close()


def csv_cell(v: Any) -> str:
    """A CSV cell: ``repr`` of a float (round-trips exactly; ``nan``, ``inf``, ``-inf``
    for non-finite values), the empty string for a missing value."""
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v)
    return str(v)


class CsvLogger:
    """The same rows as metrics.jsonl, one line each; the header is the first chunk's
    columns (an existing file, when resuming, keeps its own header)."""

    def __init__(self, path: str | Path, batch_size: int, wall_offset: float = 0.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.batch_size = batch_size
        self.wall_offset = wall_offset
        self.columns: list[str] | None = None
        if self.path.exists() and self.path.stat().st_size > 0:
            with self.path.open(newline="") as f:
                self.columns = next(csv.reader(f), None)
        self._f = self.path.open("a", newline="")
        self._w = csv.writer(self._f)

    def write(self, start_update: int, metrics: dict[str, np.ndarray], run_names: list[str],
              wall_s: float) -> None:
        rows = metric_rows(start_update, metrics, run_names, self.batch_size,
                           self.wall_offset + wall_s)
        if self.columns is None:
            self.columns = list(rows[0]) if rows else [*ROW_KEYS, *metrics]
            self._w.writerow(self.columns)
        self._w.writerows([csv_cell(row.get(c)) for c in self.columns] for row in rows)
        self._f.flush()

    def close(self) -> None:
        self._f.close()


def config_text(config: dict[str, Any]) -> str:
    """The resolved config as TOML in a Markdown code block (TensorBoard's text tab)."""
    import tomli_w

    return "```toml\n" + tomli_w.dumps(_toml_safe(config)) + "```"


def _toml_safe(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _toml_safe(v) for k, v in x.items() if v is not None}
    if isinstance(x, list | tuple):
        return [_toml_safe(v) for v in x]
    if isinstance(x, np.ndarray | np.generic):
        return _toml_safe(x.tolist())
    return x


class TensorBoardLogger:
    """tensorboardX event files, one TensorBoard run per seed (``log_dir/<run>``): a scalar
    per metric at ``global_step = env_steps``, wall time = the start time plus ``wall_s``,
    and the config as text. ``episode_return`` is skipped where no episode ended;
    NaN/inf values are written as they are."""

    def __init__(self, log_dir: str | Path, batch_size: int, config: dict[str, Any] | None = None,
                 purge_update: int = 0) -> None:
        try:
            from tensorboardX import SummaryWriter
        except ImportError:
            raise ConfigError("--tensorboard needs the tensorboardX package: "
                              "pip install tensorboardX") from None
        self._writer_cls = SummaryWriter
        self.log_dir = Path(log_dir)
        self.batch_size = batch_size
        self.config = config
        # a resumed run: TensorBoard drops the events past the checkpoint it resumed from
        self._purge_step = purge_update * batch_size if purge_update > 0 else None
        self._writers: dict[str, Any] = {}
        self._t0 = time.time()

    def _writer(self, name: str) -> Any:
        if name not in self._writers:
            w = self._writer_cls(str(self.log_dir / name), purge_step=self._purge_step,
                                 flush_secs=30)
            if self.config is not None:
                w.add_text("config", config_text(self.config), global_step=0)
            self._writers[name] = w
        return self._writers[name]

    def write(self, start_update: int, metrics: dict[str, np.ndarray], run_names: list[str],
              wall_s: float) -> None:
        rows = metric_rows(start_update, metrics, run_names, self.batch_size, wall_s)
        walltime = self._t0 + wall_s
        for row in rows:
            w = self._writer(row["run"])
            for k, v in row.items():
                if k in ("run", "env_steps") or v is None:
                    continue
                w.add_scalar(k, float(v), global_step=row["env_steps"], walltime=walltime)
        for w in self._writers.values():
            w.flush()

    def close(self) -> None:
        for w in self._writers.values():
            w.close()


def import_wandb() -> Any:
    """The wandb module, or one ``ConfigError`` line saying how to install it."""
    try:
        import wandb
    except ImportError:
        raise ConfigError("--wandb needs the wandb package: pip install 'ppox[wandb]'"
                          ) from None
    return wandb


class WandbLogger:
    """One W&B run per seed (name ``<group>-<run>``, group: the run directory's name),
    files under ``root/wandb``; each update is one ``log`` at ``step=update`` with every
    metric, ``env_steps`` and ``wall_s`` (``episode_return`` left out where no episode
    ended). Runs are created at the first write."""

    def __init__(self, root: str | Path, batch_size: int, config: dict[str, Any],
                 project: str = "ppox", mode: WandbMode = "online",
                 group: str | None = None) -> None:
        self.wandb = import_wandb()
        self.root = Path(root)
        self.batch_size = batch_size
        self.config = config
        self.project = project
        self.mode = mode
        self.group = group or self.root.name
        self._runs: dict[str, Any] = {}

    def _run(self, name: str) -> Any:
        if name not in self._runs:
            (self.root / WANDB_DIR).mkdir(parents=True, exist_ok=True)
            self._runs[name] = self.wandb.init(
                project=self.project, name=f"{self.group}-{name}", group=self.group,
                dir=str(self.root), mode=self.mode, config={**self.config, "run": name},
                reinit="create_new", settings=self.wandb.Settings(console="off", silent=True))
        return self._runs[name]

    def write(self, start_update: int, metrics: dict[str, np.ndarray], run_names: list[str],
              wall_s: float) -> None:
        rows = metric_rows(start_update, metrics, run_names, self.batch_size, wall_s)
        for row in rows:
            data = {k: v for k, v in row.items() if k not in ("run", "update") and v is not None}
            self._run(row["run"]).log(data, step=row["update"])

    def close(self) -> None:
        for run in self._runs.values():
            run.finish()
        self._runs.clear()


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def open_loggers(run_dir: str | Path, batch_size: int, config: dict[str, Any] | None = None,
                 *, resume_update: int = 0, options: LoggerOptions = LoggerOptions(),
                 ) -> list[Logger]:
    """The loggers of a run directory, ready for update ``resume_update + 1``.

    A new run (``resume_update == 0``) starts metrics.jsonl and metrics.csv afresh; a resumed
    one drops their rows past ``resume_update`` and continues their ``wall_s`` clock.
    ``config``: the resolved settings (``config.toml``'s dict), shown by TensorBoard and W&B.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    jsonl, csv_path = run_dir / JSONL_NAME, run_dir / CSV_NAME
    offset = 0.0
    if resume_update > 0:
        truncate_metrics(jsonl, resume_update)
        truncate_metrics(csv_path, resume_update)
        offset = last_wall_s(jsonl)
    else:
        jsonl.unlink(missing_ok=True)
        csv_path.unlink(missing_ok=True)
    loggers: list[Logger] = [JsonlLogger(jsonl, batch_size, offset),
                             CsvLogger(csv_path, batch_size, offset)]
    if options.tensorboard:
        loggers.append(TensorBoardLogger(run_dir / TENSORBOARD_DIR, batch_size, config,
                                         purge_update=resume_update))
    if options.wandb:
        loggers.append(WandbLogger(run_dir, batch_size, config or {},
                                   project=options.wandb_project, mode=options.wandb_mode,
                                   group=_safe_name(run_dir.name)))
    return loggers


def check_options(options: LoggerOptions) -> None:
    """Fails fast (before any compile) on a back-end that cannot run: a missing package."""
    if options.wandb:
        import_wandb()
    if options.tensorboard:
        try:
            import tensorboardX  # noqa: F401
        except ImportError:
            raise ConfigError("--tensorboard needs the tensorboardX package: "
                              "pip install tensorboardX") from None


def write_all(loggers: Sequence[Logger], start_update: int, metrics: dict[str, np.ndarray],
              run_names: list[str], wall_s: float) -> None:
    """Writes one chunk to every logger."""
    for logger in loggers:
        logger.write(start_update, metrics, run_names, wall_s)


def close_all(loggers: Sequence[Logger]) -> None:
    for logger in loggers:
        logger.close()


__all__ = [
    "CsvLogger",
    "JsonlLogger",
    "Logger",
    "LoggerOptions",
    "TensorBoardLogger",
    "WandbLogger",
    "check_options",
    "close_all",
    "open_loggers",
    "write_all",
]
