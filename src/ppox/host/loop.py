"""The chunk loop of ``train_runs``: dispatch, read, log, report, check, save, stop.

The next chunk is dispatched before the previous chunk's metrics are read, so host work
overlaps device work. At the end of each chunk the host checks that every update was finite
(metrics are read once per chunk anyway), writes checkpoints when due and acts on a stop
request (``ppox.host.interrupts``).
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ppox._platform import compile_cache_counts, compile_cache_note, mending_compile_cache
from ppox.host import interrupts
from ppox.host.checkpoint import nonfinite_leaves
from ppox.host.loggers import Logger, close_all, write_all
from ppox.host.metrics import episode_means
from ppox.host.results import RunResult, make_result, summary
from ppox.host.rundir import RunDir

EXIT_DIVERGED = 3  # `ppox train` exit status of a run stopped by a non-finite update


class RunDiverged(Exception):
    """A run's loss, parameter step or state became non-finite; one line naming the update,
    the run and the quantity, and what was kept."""

    def __init__(self, message: str, info: dict[str, Any]) -> None:
        super().__init__(message)
        self.info = info



MAX_PARAMETER_STEP = 1e6


def _first_diverged(host: dict[str, np.ndarray], start: int) -> np.ndarray:
    """``[R]`` the first update (1-based) of a chunk that diverged, 0 where none did: its
    loss or parameter step not finite (``nonfinite``, computed in the program), or the step
    above ``MAX_PARAMETER_STEP``."""
    step = np.asarray(host["update_norm"], np.float64)
    flags = (np.asarray(host["nonfinite"]) > 0) | (np.abs(step) > MAX_PARAMETER_STEP)
    return np.where(flags.any(axis=-1), start + 1 + flags.argmax(axis=-1), 0)


def _quantity(host: dict[str, np.ndarray], run: int, i: int) -> str:
    """What diverged in update ``i`` of a chunk, in words."""
    loss, step = float(host["loss"][run, i]), float(host["update_norm"][run, i])
    if not math.isfinite(loss):
        return f"the loss is {loss}"
    if not math.isfinite(step):
        return f"the parameter step (update_norm) is {step}"
    return (f"the parameter step (update_norm) is {step:.3g}, above {MAX_PARAMETER_STEP:g} "
            "(the optimizer blew up)")


class ChunkLoop:
    """One call's chunk loop and what it writes; state lives on the instance so every step
    is a short method."""

    def __init__(self, batch: Any, rundir: RunDir | None) -> None:
        self.b, self.rd, self.opts = batch, rundir, batch.opts
        self.history: list[dict[str, np.ndarray]] = []
        self.loggers: list[Logger] = list(self.opts.loggers)
        self.start = self.done = self.chunks = self.checked = 0
        self.run_s = 0.0
        self.first_bad = np.zeros(batch.num_runs, np.int64)
        self.saved_step: int | None = None
        self._t_last = self._t_train = self._t_ckpt = time.perf_counter()

    def run(self) -> RunResult:
        interrupts.test_pause("compile", self.start)
        t0, cache_before = time.perf_counter(), compile_cache_counts()
        compiling = getattr(self.opts.reporter, "compiling", None)
        with compiling() if callable(compiling) else nullcontext(), mending_compile_cache():
            init_c, chunk_c = self.b.programs()
        compile_s = time.perf_counter() - t0
        self.compile_note = compile_cache_note(cache_before)
        state = init_c(self.b.keys, self.b.hp_batch)
        if self.rd is not None:
            state = self._open_run_dir(state)
        try:
            interrupts.set_phase("training")
            state = self._loop(chunk_c, state)
            return self._finish(state, compile_s)
        finally:
            close_all(self.loggers)

    def _open_run_dir(self, state: Any) -> Any:
        rd = self.rd
        if self.opts.resume:
            step, tree = rd.restore(jax.eval_shape(lambda: state),
                                    allow_nonfinite=not self.opts.stops_on_nonfinite)
            state = self.b.place(jax.tree.map(jnp.asarray, tree))
            self.start = self.done = int(np.asarray(state.update_idx).reshape(-1)[0])
            self.saved_step = step
            self.history = rd.history(self.b.run_names, self.done)
        else:
            rd.start()
        self.loggers += rd.loggers(self.b.cfg.batch_size, self.b.run_file, self.done,
                                   self.opts.logger_options)
        return state

    def _loop(self, chunk_c: Any, state: Any) -> Any:
        pending = None
        num_updates = self.b.cfg.num_updates
        self._t_last = self._t_train = self._t_ckpt = time.perf_counter()
        while self.done < num_updates and interrupts.requested() is None:
            n = min(self.b.chunk_size, num_updates - self.done)
            state, metrics = chunk_c(state, self.b.hp_batch, jnp.int32(n))
            ev = self.opts.evaluator
            if ev is not None and ev.due(self.done + n):
                ev.evaluate(state, self.done + n)  # this chunk's policy, before the next chunk
            if pending is not None:
                self._read(pending)
            pending = (metrics, self.done, n)
            self.done += n
            self.chunks += 1
            if self._checkpoint_due():
                self._read(pending)
                pending = None
                self._checkpoint(state)
            if self.opts.stop_after_chunks and self.chunks >= self.opts.stop_after_chunks:
                break
        if pending is not None:
            self._read(pending)
        jax.block_until_ready(state)
        if interrupts.requested() is not None and self.done < num_updates:
            self._interrupted(state)
        return state

    def _read(self, pending: tuple[dict[str, Any], int, int]) -> None:
        """Fetches one chunk's metrics (blocks on it), logs and reports them, and stops a
        run whose updates were not all finite."""
        metrics, start, n = pending
        # [R, n]; under data parallelism every device holds the same (reduced) metrics
        host = {k: np.asarray(v)[:self.b.num_runs, :n] for k, v in metrics.items()}
        now = time.perf_counter()
        elapsed, self._t_last = now - self._t_last, now
        self.run_s += elapsed
        self.history.append(host)
        logged = host if self.opts.evaluator is None else {
            **host, "eval_return": self.opts.evaluator.column(start, n)}
        write_all(self.loggers, start, logged, self.b.run_names, now - self._t_train)
        self._report(host, start + n, elapsed)
        interrupts.test_pause("chunk", start + n)
        self.checked = start + n  # every update up to here was looked at
        bad = _first_diverged(host, start)
        new = (bad > 0) & (self.first_bad == 0)
        self.first_bad[new] = bad[new]
        if new.any() and self.opts.stops_on_nonfinite:
            self._diverged(host, start, bad)

    def _report(self, host: dict[str, np.ndarray], updates_done: int, elapsed: float) -> None:
        if self.opts.reporter is None:
            return
        means = episode_means(host)
        recent = (np.nanmean(means, axis=-1) if np.isfinite(means).any()
                  else np.full(self.b.num_runs, np.nan))
        n = host["nonfinite"].shape[-1]
        self.opts.reporter({
            "updates_done": updates_done, "num_updates": self.b.cfg.num_updates,
            "env_steps": updates_done * self.b.cfg.batch_size, "runs": self.b.num_runs,
            "sps": self.b.num_runs * n * self.b.cfg.batch_size / max(elapsed, 1e-9),
            "recent_return": recent,
            "eval_return": (self.opts.evaluator.history[-1][1]
                            if self.opts.evaluator is not None and self.opts.evaluator.history
                            else None),
        })

    def _checkpoint_due(self) -> bool:
        if self.rd is None:
            return False
        by_chunks = self.opts.checkpoint_every and self.chunks % self.opts.checkpoint_every == 0
        by_clock = (self.opts.checkpoint_every_s
                    and time.perf_counter() - self._t_ckpt >= self.opts.checkpoint_every_s)
        return bool(by_chunks or by_clock)

    def _checkpoint(self, state: Any) -> None:
        """Writes the state at ``self.done`` (its metrics already checked); checkpoint I/O
        is not training time."""
        tree = jax.device_get(state)
        bad = nonfinite_leaves(tree)
        if bad and self.opts.stops_on_nonfinite:
            self._diverged_state(bad[0])
        self.rd.save_checkpoint(self.done, tree)
        self.saved_step = self.done
        self._t_last = self._t_ckpt = time.perf_counter()

    def _kept(self) -> str:
        path = self.rd.latest_checkpoint() if self.rd is not None else None
        if path is None:
            return "no checkpoint had been written"
        return f"the last finite checkpoint {path} is kept"

    def _diverged(self, host: dict[str, np.ndarray], start: int, bad: np.ndarray) -> None:
        run = int(np.argmin(np.where(bad > 0, bad, np.iinfo(np.int64).max)))
        update = int(bad[run])
        quantity = _quantity(host, run, update - start - 1)
        others = int((bad > 0).sum()) - 1
        also = f" (and {others} other run(s))" if others > 0 else ""
        info = {"run": self.b.run_names[run], "seed": self.b.seeds[run], "update": update,
                "quantity": quantity}
        self._raise_diverged(f"run {info['run']} (seed {info['seed']}) diverged at update "
                             f"{update}{also}: {quantity}", info)

    def _diverged_state(self, leaf: str) -> None:
        self.checked = self.done
        info = {"run": None, "seed": None, "update": self.done,
                "quantity": f"non-finite values in the state's {leaf}"}
        self._raise_diverged(f"training diverged by update {self.done}: non-finite values "
                             f"in the state's {leaf}", info)

    def _raise_diverged(self, what: str, info: dict[str, Any]) -> None:
        message = (f"{what}; stopped at update {self.checked}, nothing saved from it; "
                   f"{self._kept()}")
        if self.rd is not None:
            self.rd.write_summary({**self._summary_head("diverged"), "diverged": info})
        raise RunDiverged(message, info)

    def _interrupted(self, state: Any) -> None:
        """Saves the last completed chunk and raises ``RunInterrupted``."""
        signum = interrupts.requested() or 2
        total = self.b.cfg.num_updates
        step: int | None = self.done
        if self.rd is None:
            saved, step = "nothing was saved (no run directory)", None
        elif self.done == 0:
            saved, step = (f"nothing was saved (no chunk had completed); start again with "
                           f"--overwrite (--run-dir {self.rd.path})"), None
        elif self.saved_step == self.done:
            saved = (f"the checkpoint {self.rd.checkpoints.path(self.done)} (update "
                     f"{self.done} of {total}) holds the last completed chunk")
        else:
            self._checkpoint(state)
            saved = (f"saved checkpoint {self.rd.checkpoints.path(self.done)} (update "
                     f"{self.done} of {total})")
        raise interrupts.RunInterrupted(saved, step, signum)

    def _summary_head(self, status: str) -> dict[str, Any]:
        return {"env": self.b.cfg.env_id, "seeds": self.b.seeds, "status": status,
                "updates_done": self.done, "num_updates": self.b.cfg.num_updates,
                "start_update": self.start}

    def _finish(self, state: Any, compile_s: float) -> RunResult:
        done = self.done
        status = "complete" if done == self.b.cfg.num_updates else "stopped"
        result = make_result(self.b, self.history, state, done, compile_s=compile_s,
                         run_s=self.run_s, start=self.start, status=status,
                         run_dir=self.rd.path if self.rd is not None else None)
        result.nonfinite_update = self.first_bad.copy()
        result.extra["compile_cache"] = self.compile_note
        if self.rd is not None:
            if self.saved_step != done:
                self._checkpoint(state)
            if not nonfinite_leaves(self.b.host_view(state)):
                self.rd.save_policy(self.b.host_view(state))
            self.rd.write_summary({**self._summary_head(status), **summary(result)})
        signum = interrupts.requested()
        if signum is not None:  # arrived during the last chunk or the final writes
            where = f": {self.rd.path} holds it" if self.rd is not None else ""
            raise interrupts.RunInterrupted(f"the run had finished{where}", done, signum)
        return result


