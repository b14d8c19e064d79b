"""Progress of a training run: a rich progress bar on a terminal, one plain line per chunk
elsewhere (CI logs, pipes, ``--no-progress``).

A reporter is a callable receiving one dict per chunk, with keys ``updates_done``,
``num_updates``, ``env_steps`` (per run), ``runs``, ``sps`` (all runs together, this chunk)
and ``recent_return`` (``[R]``, NaN where no episode ended in the chunk); optionally
``eval_return`` (``[R]`` or a float). The reporters here also have ``compiling()``, a context
manager showing a "compiling…" status with the seconds elapsed while XLA compiles, and
``close()``.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, Literal, TextIO

import numpy as np

Reporter = Callable[[dict[str, Any]], None]
ProgressMode = Literal["auto", "bar", "plain", "none"]


def _mean(x: Any) -> float:
    a = np.asarray(x, np.float64).reshape(-1)
    a = a[np.isfinite(a)]
    return float(a.mean()) if a.size else float("nan")


def format_duration(seconds: float) -> str:
    """``h:mm:ss`` (``m:ss`` under an hour); ``?`` for an unknown duration."""
    if not np.isfinite(seconds) or seconds < 0:
        return "?"
    s = round(seconds)
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class _Clock:
    """Elapsed time since the compile ended (or the first report), and the ETA at the last
    chunk's speed (``sps``), so a resumed run's earlier updates do not skew it."""

    def __init__(self) -> None:
        self.t0: float | None = None

    def start(self) -> None:
        self.t0 = time.perf_counter()

    def times(self, info: dict[str, Any]) -> tuple[float, float]:
        if self.t0 is None:
            self.t0 = time.perf_counter()
        elapsed = time.perf_counter() - self.t0
        done, total = info["updates_done"], info["num_updates"]
        per_run_sps = info["sps"] / max(info["runs"], 1)
        if done <= 0 or per_run_sps <= 0:
            return elapsed, float("nan")
        steps_left = (total - done) * info["env_steps"] / done
        return elapsed, steps_left / per_run_sps


def _return_text(info: dict[str, Any]) -> str:
    ret = _mean(info["recent_return"])
    text = "n/a" if np.isnan(ret) else f"{ret:.2f}"
    if info.get("eval_return") is not None:
        ev = _mean(info["eval_return"])
        text += "  eval " + ("n/a" if np.isnan(ev) else f"{ev:.2f}")
    return text


class PlainProgress:
    """One line per chunk: updates, env steps, steps/s, recent mean return, elapsed, ETA."""

    def __init__(self, out: TextIO | None = None) -> None:
        self.out = out or sys.stdout
        self.clock = _Clock()

    @contextlib.contextmanager
    def compiling(self) -> Iterator[None]:
        print("compiling…", file=self.out, flush=True)
        t = time.perf_counter()
        yield
        print(f"compiled in {time.perf_counter() - t:.1f} s", file=self.out, flush=True)
        self.clock.start()

    def __call__(self, info: dict[str, Any]) -> None:
        elapsed, eta = self.clock.times(info)
        runs = f" ({info['runs']} runs)" if info["runs"] > 1 else ""
        print(f"[{info['updates_done']:>6d}/{info['num_updates']} updates] "
              f"steps {info['env_steps']:>11,d}{runs}  SPS {info['sps']:>10,.0f}  "
              f"return {_return_text(info)}  elapsed {format_duration(elapsed)}  "
              f"ETA {format_duration(eta)}", file=self.out, flush=True)

    def close(self) -> None:
        pass


class RichProgress:
    """A rich progress bar over updates, with env steps, steps/s, elapsed time, ETA and the
    recent mean return; a spinner with elapsed seconds while compiling."""

    def __init__(self, out: TextIO | None = None, console: Any = None) -> None:
        from rich.console import Console

        self.console = console or Console(file=out or sys.stdout)
        self.clock = _Clock()
        self._progress: Any = None
        self._task: Any = None

    @contextlib.contextmanager
    def compiling(self) -> Iterator[None]:
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        t = time.perf_counter()
        with Progress(SpinnerColumn(), TextColumn("compiling…"), TimeElapsedColumn(),
                      console=self.console, transient=True) as status:
            status.add_task("compile", total=None)
            yield
        self.console.print(f"compiled in {time.perf_counter() - t:.1f} s", highlight=False)
        self.clock.start()

    def _open(self, info: dict[str, Any]) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        # compact enough for an 80-column terminal: bar, updates, steps, steps/s,
        # elapsed<ETA, return
        self._progress = Progress(
            BarColumn(bar_width=12), MofNCompleteColumn(),
            TextColumn("{task.fields[steps]} steps"), TextColumn("{task.fields[sps]}/s"),
            TextColumn("{task.fields[elapsed]}<ETA {task.fields[eta]}"),
            TextColumn("return {task.fields[ret]}"),
            console=self.console, auto_refresh=False)
        self._progress.start()
        self._task = self._progress.add_task("train", total=info["num_updates"], steps="0",
                                             sps="-", elapsed="0:00", eta="?", ret="n/a")

    def __call__(self, info: dict[str, Any]) -> None:
        if self._progress is None:
            self._open(info)
        elapsed, eta = self.clock.times(info)
        runs = f" x{info['runs']}" if info["runs"] > 1 else ""
        self._progress.update(
            self._task, completed=info["updates_done"], steps=f"{info['env_steps']:,d}{runs}",
            sps=f"{info['sps']:,.0f}", elapsed=format_duration(elapsed),
            eta=format_duration(eta), ret=_return_text(info))
        self._progress.refresh()

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


class _Silent:
    @contextlib.contextmanager
    def compiling(self) -> Iterator[None]:
        yield

    def __call__(self, info: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


def make_progress(mode: ProgressMode = "auto", out: TextIO | None = None,
                  ) -> RichProgress | PlainProgress | _Silent:
    """``auto``: the bar when ``out`` (default stdout) is a terminal, plain lines otherwise;
    ``bar``, ``plain``, or ``none`` (silent)."""
    out = out or sys.stdout
    if mode == "auto":
        isatty = getattr(out, "isatty", None)
        mode = "bar" if isatty is not None and isatty() else "plain"
    if mode == "bar":
        return RichProgress(out)
    if mode == "plain":
        return PlainProgress(out)
    return _Silent()


def compiling(reporter: Any) -> contextlib.AbstractContextManager[None]:
    """``reporter.compiling()`` when the reporter has one (those made here), else nothing:
    wrap the compile in ``with compiling(reporter):``."""
    fn = getattr(reporter, "compiling", None)
    return fn() if callable(fn) else contextlib.nullcontext()


def close(reporter: Any) -> None:
    """``reporter.close()`` when it has one: ends the bar before the summary lines."""
    fn = getattr(reporter, "close", None)
    if callable(fn):
        fn()


__all__ = ["PlainProgress", "Reporter", "RichProgress", "close", "compiling",
           "format_duration", "make_progress"]
