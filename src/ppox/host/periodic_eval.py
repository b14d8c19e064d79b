"""Evaluation during training: deterministic episodes of every run's current policy between
chunks, and the best policy so far kept as a run directory of its own.

The training loop calls ``due(updates_done)`` after each chunk and, when it says so,
``evaluate(state, updates_done)``: one compiled program (``ppox.evaluate`` vmapped over the
runs) plays ``episodes`` episodes per run from the same initial states every time, so evals
are comparable. With ``best_dir`` the best policy of each run so far is saved there
(``best_dir/policy`` and a copy of ``config.toml``), so ``ppox eval RUN_DIR/best`` and
``ppox.load_policy(RUN_DIR/best)`` use it.
"""

from __future__ import annotations

import shutil
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import jax
import numpy as np

from ppox._platform import UNCOUNTED_COMPILE_THREAD
from ppox.config import PPOConfig

BEST_DIR = "best"


class PeriodicEval:
    """Evaluates every ``every`` updates (at the first chunk boundary at or past each
    multiple, and at the end of training).

    Attributes:
        history: ``(updates_done, eval returns [R])`` of every evaluation so far.
        best: ``[R]`` the best eval return of each run so far (-inf before the first).
        best_update: ``[R]`` the update at which each run's best policy was taken.
    """

    def __init__(self, cfg: PPOConfig, num_runs: int, every: int, episodes: int,
                 seed: int = 0, best_dir: str | Path | None = None,
                 config_file: str | Path | None = None) -> None:
        from ppox.evaluate import jit_eval_program, make_evaluate

        self.cfg = cfg
        self.num_runs = num_runs
        self.every = every
        self.episodes = episodes
        self.key = jax.random.PRNGKey(seed)
        self.best_dir = Path(best_dir) if best_dir is not None else None
        self.config_file = Path(config_file) if config_file is not None else None
        ev = make_evaluate(cfg, episodes, deterministic=True)
        self._evaluate = jit_eval_program(jax.vmap(lambda p, s: ev(self.key, p, s)[0]))
        self._compiled: Future | None = None  # start_compile's program
        self._last = 0
        self.history: list[tuple[int, np.ndarray]] = []
        self.best = np.full(num_runs, -np.inf)
        self.best_update = np.zeros(num_runs, np.int64)
        self._best_state: Any = None

    def start_compile(self, state_shape: Any) -> None:
        """Traces and compiles the evaluation program in a thread, for a batched TrainState
        of these shapes and dtypes on one device (``jax.eval_shape``'s leaves), so that
        the first evaluation does not wait for its compile: the training loop starts it
        beside the training programs' compile (XLA releases the GIL). ``evaluate`` then
        runs it. Its cache hits are not in ``compile_cache_counts``."""
        part = jax.tree.map(
            lambda s: jax.ShapeDtypeStruct((self.num_runs, *s.shape[1:]), s.dtype,
                                           weak_type=s.weak_type),
            (state_shape.params, state_shape.obs_stats))
        pool = ThreadPoolExecutor(1, thread_name_prefix=UNCOUNTED_COMPILE_THREAD)
        self._compiled = pool.submit(lambda: self._evaluate.lower(*part).compile())
        pool.shutdown(wait=False)  # the thread ends with its compile

    def due(self, updates_done: int) -> bool:
        """Whether an evaluation is due after ``updates_done`` updates."""
        if self.every <= 0:
            return False
        return (updates_done // self.every > self._last // self.every
                or updates_done >= self.cfg.num_updates > self._last)

    def evaluate(self, state: Any, updates_done: int) -> np.ndarray:
        """``[R]`` mean return over ``episodes`` deterministic episodes of each run's policy
        in ``state`` (a batched TrainState, leading axis: the runs); keeps the best."""
        part = jax.tree.map(lambda x: x[: self.num_runs],
                            {"params": state.params, "obs_stats": state.obs_stats})
        run = self._compiled.result() if self._compiled is not None else self._evaluate
        returns = np.asarray(run(part["params"], part["obs_stats"]))  # [R, E]
        means = returns.mean(axis=-1)
        self._last = updates_done
        self.history.append((updates_done, means))
        better = means > self.best
        if better.any():
            self.best = np.where(better, means, self.best)
            self.best_update = np.where(better, updates_done, self.best_update)
            if self.best_dir is not None:
                self._save_best(state, better)
        return means

    def _save_best(self, state: Any, better: np.ndarray) -> None:
        from ppox.host.checkpoint import policy_tree, save_policy

        current = jax.tree.map(lambda x: np.asarray(x[: self.num_runs]), policy_tree(state))
        if self._best_state is None:
            self._best_state = current
        else:
            self._best_state = jax.tree.map(
                lambda b, c: np.where(better.reshape((-1,) + (1,) * (c.ndim - 1)), c, b),
                self._best_state, current)
        best = self._best_state
        self.best_dir.mkdir(parents=True, exist_ok=True)
        save_policy(self.best_dir, SimpleNamespace(
            params=best["params"], obs_stats=best["obs_stats"],
            reward_scaler=SimpleNamespace(stats=best["reward_stats"])))
        if self.config_file is not None and self.config_file.is_file():
            shutil.copyfile(self.config_file, self.best_dir / self.config_file.name)

    def column(self, start_update: int, n: int) -> np.ndarray:
        """``[R, n]`` eval returns for updates ``start_update .. start_update + n - 1``: the
        return where an evaluation ran after that update, NaN elsewhere (written as a
        missing value)."""
        col = np.full((self.num_runs, n), np.nan, np.float32)
        for u, means in self.history:
            if start_update < u <= start_update + n:
                col[:, u - start_update - 1] = means
        return col


__all__ = ["BEST_DIR", "PeriodicEval"]
