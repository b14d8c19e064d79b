"""The chunk loop of ``train_runs``: dispatch, read, log, report, check, save, stop.

The next chunk is dispatched before the previous chunk's metrics are read, so host work
overlaps device work. At the end of each chunk the host checks that every update was finite
(metrics are read once per chunk anyway), writes checkpoints when due and acts on a stop
request (``ppox.host.interrupts``).

Several processes run this loop in step: each writes nothing but process 0 writes (through
``distributed.run_on_writer``, whose failure stops every process), and the decisions at a
chunk's end -- stop on a signal any process received, checkpoint on any process's clock --
are taken together (``distributed.agreed_max``), so all stop at the same update.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ppox import _startup_gc
from ppox._platform import compile_cache_counts, compile_cache_note, mending_compile_cache
from ppox.host import interrupts
from ppox.host.cache_prune import prune_in_background
from ppox.host.checkpoint import nonfinite_leaves
from ppox.host.loggers import Logger, close_all, write_all
from ppox.host.metrics import episode_means
from ppox.host.prefetch import prefetch_imports
from ppox.host.profiling import ProfileWindow
from ppox.host.results import RunResult, make_result, summary
from ppox.host.rundir import RunDir
from ppox.parallel import distributed

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
        self.shared = batch.across_processes  # several processes decide together
        self.stop: int | None = None  # the agreed stop request (several processes)
        self.clock_due = False  # the agreed checkpoint-by-clock decision
        self._in_flight: Any = None  # the newest state, possibly still being computed
        self.start = self.done = self.chunks = self.checked = 0
        self.run_s = 0.0
        self.first_bad = np.zeros(batch.num_runs, np.int64)
        self.saved_step: int | None = None
        self.profile = ProfileWindow.build(self.opts.profile_updates,
                                           self.opts.profile_directory)
        self._t_last = self._t_train = self._t_ckpt = time.perf_counter()

    def run(self) -> RunResult:
        interrupts.test_pause("compile", self.start)
        t0, cache_before = time.perf_counter(), compile_cache_counts()
        ev = self.opts.evaluator
        if ev is not None and not self.b.layout.spans_devices and self.b.devices == 1:
            ev.start_compile(self.b.state_shape())  # beside the training programs' compile
        compiling = getattr(self.opts.reporter, "compiling", None)
        with compiling() if callable(compiling) else nullcontext(), mending_compile_cache():
            init_c, chunk_c = self.b.programs()
        compile_s = time.perf_counter() - t0
        _startup_gc.release()  # the command's start-up is over (ppox._startup_gc)
        # what the end of the run imports (orbax for a run dir's checkpoints, the caller's
        # TrainOptions.prefetch), imported while the first chunks run (ppox.host.prefetch)
        prefetch_imports((*(("orbax.checkpoint",) if self.rd is not None else ()),
                          *self.opts.prefetch))
        prune_in_background()  # the compilation cache to its bound, while this run trains
        self.compile_note = compile_cache_note(cache_before)
        state = self._in_flight = init_c(self.b.keys, self.b.hp_batch)
        if self.rd is not None:
            state = self._open_run_dir(state)
        try:
            interrupts.set_phase("training")
            state = self._loop(chunk_c, state)
            return self._finish(state, compile_s)
        finally:
            if self.profile is not None:
                self.profile.close()
            close_all(self.loggers)

    def _open_run_dir(self, state: Any) -> Any:
        rd = self.rd
        self._settle()
        if self.opts.resume:
            step, tree = rd.restore_shared(jax.eval_shape(lambda: state),
                                           allow_nonfinite=not self.opts.stops_on_nonfinite)
            state = self.b.place(tree if self.shared else jax.tree.map(jnp.asarray, tree))
            self.start = self.done = int(np.asarray(tree.update_idx).reshape(-1)[0])
            self.saved_step = step
            self.history = distributed.from_writer(
                lambda: rd.history(self.b.run_names, self.done))

        def open_files() -> list[Logger]:
            if not self.opts.resume:
                rd.start()
            return rd.loggers(self.b.cfg.batch_size, self.b.run_file, self.done,
                              self.opts.logger_options)

        self.loggers += distributed.run_on_writer(open_files) or []
        return state

    def _stop_request(self) -> int | None:
        """A pending stop request: this process's own, or (several processes) the one agreed
        at the last chunk's end."""
        return self.stop if self.shared else interrupts.requested()

    def _settle(self) -> None:
        """Several processes: waits for the program in flight before a collective of the
        host's own. On CPU another program's collectives (a data-parallel chunk's) could
        otherwise interleave with it in a different order on each process."""
        if self.shared and self._in_flight is not None:
            jax.block_until_ready(self._in_flight)

    def _agree(self) -> None:
        """Several processes: whether to stop and whether the clock asks for a checkpoint,
        decided together (a collective) at every chunk's end."""
        if not self.shared:
            return
        self._settle()
        by_clock = bool(self.opts.checkpoint_every_s and time.perf_counter() - self._t_ckpt
                        >= self.opts.checkpoint_every_s)
        signum, clock = distributed.agreed_max([interrupts.requested() or 0, int(by_clock)])
        self.stop, self.clock_due = signum or None, bool(clock)

    def _loop(self, chunk_c: Any, state: Any) -> Any:
        pending = None
        num_updates = self.b.cfg.num_updates
        self._t_last = self._t_train = self._t_ckpt = time.perf_counter()
        while self.done < num_updates and self._stop_request() is None:
            n = min(self.b.chunk_size, num_updates - self.done)
            if self.profile is not None:  # ppox.host.profiling: the traced call, once
                n = self.profile.arm(n, self.chunks, num_updates - self.done,
                                     self.b.chunk_size)
            traced = self.profile is not None and self.profile.armed
            if traced:  # the chunk before is read first: the trace holds this call alone
                self._start_trace(pending, state)
                pending = None
            state, metrics = chunk_c(state, self.b.hp_batch, self.b.steps(n))
            if traced:  # writing the trace is not training time
                self._t_last += self.profile.stop(state, self.done, n)
            self._in_flight = state
            ev = self.opts.evaluator
            if ev is not None and ev.due(self.done + n):
                ev.evaluate(state, self.done + n)  # this chunk's policy, before the next chunk
            if pending is not None:
                self._read(pending)
            pending = (metrics, self.done, n)
            self.done += n
            self.chunks += 1
            self._agree()
            if self._checkpoint_due():
                self._read(pending)
                pending = None
                self._checkpoint(state)
            if self.opts.stop_after_chunks and self.chunks >= self.opts.stop_after_chunks:
                break
        if pending is not None:
            self._read(pending)
        jax.block_until_ready(state)
        if self._stop_request() is not None and self.done < num_updates:
            self._interrupted(state)
        return state

    def _start_trace(self, pending: Any, state: Any) -> None:
        """Reads the chunk before the traced call, then starts the trace."""
        if pending is not None:
            self._read(pending)
        self.profile.start(state)

    def _read(self, pending: tuple[dict[str, Any], int, int]) -> None:
        """Fetches one chunk's metrics (blocks on it), logs and reports them, and stops a
        run whose updates were not all finite."""
        metrics, start, n = pending
        if not self.b.layout.spans_devices:
            self._settle()  # several processes: the runs' metrics are gathered
        host = self.b.metrics_view(metrics, n)  # [R, n]
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
        by_clock = self.clock_due if self.shared else (
            self.opts.checkpoint_every_s
            and time.perf_counter() - self._t_ckpt >= self.opts.checkpoint_every_s)
        return bool(by_chunks or by_clock)

    def _checkpoint(self, state: Any) -> None:
        """Writes the state at ``self.done`` (its metrics already checked); checkpoint I/O
        is not training time. Several processes: every one gathers the state, process 0
        writes it."""
        self._settle()
        tree = self.b.to_host(state)
        bad = nonfinite_leaves(tree)
        if bad and self.opts.stops_on_nonfinite:
            self._diverged_state(bad[0])
        distributed.run_on_writer(lambda: self.rd.save_checkpoint(self.done, tree))
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
            self._settle()
            head = self._summary_head("diverged")
            distributed.run_on_writer(
                lambda: self.rd.write_summary({**head, "diverged": info}))
        raise RunDiverged(message, info)

    def _interrupted(self, state: Any) -> None:
        """Saves the last completed chunk and raises ``RunInterrupted``."""
        signum = self._stop_request() or 2
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
        if self.profile is not None and self.profile.info is not None:
            result.extra["profile"] = self.profile.info
        if self.rd is not None:
            if self.saved_step != done:
                self._checkpoint(state)
            view = self.b.host_view(state)  # several processes: a collective
            final = {**self._summary_head(status), **summary(result)}

            def write_final() -> None:
                if not nonfinite_leaves(view):
                    self.rd.save_policy(view)
                self.rd.write_summary(final)

            distributed.run_on_writer(write_final)
        signum = interrupts.requested()
        if self.shared:  # arrived at any process: all of them say so
            signum = distributed.agreed_max([signum or 0])[0] or None
        if signum is not None:  # arrived during the last chunk or the final writes
            where = f": {self.rd.path} holds it" if self.rd is not None else ""
            raise interrupts.RunInterrupted(f"the run had finished{where}", done, signum)
        return result


