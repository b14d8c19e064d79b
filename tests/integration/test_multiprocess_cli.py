"""``ppox train`` and ``ppox sweep`` over several processes, through the command line: two
processes on 127.0.0.1 (one CPU device each, gloo collectives) against one process with two
devices. Data-parallel CartPole gives the same metrics and parameters, only process 0
writes (each process runs in its own working directory with a relative ``--run-dir``, so a
file written by process 1 would land in its own), an interrupted 2-process run (SIGINT to
process 0 only: both stop at the same update) resumed by 2 processes equals the
uninterrupted run, and a 2-process sweep, interrupted and resumed by 2 processes, equals the
1-process sweep. Bad input is one
``error:`` line and exit status 2 on every process, before anything compiles.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

# the process helpers of the Python-API test beside this one (same folder, on sys.path)
from test_multiprocess import _finish, _free_port

import ppox
from ppox.cli import main

TRAIN = ["--num-envs", "4", "--num-steps", "32", "--total-timesteps", "2048",
         "--update-epochs", "2", "--num-minibatches", "2", "--progress-chunks", "4",
         "--no-progress", "--normalize-obs"]  # 16 updates in 4 chunks of 4
TIMEOUT_S = 30  # the runtime's start-up and heartbeat timeout in these tests
SPEC = """seeds = 1
seed = 0
[grid]
learning_rate = [2.5e-4, 1e-3]
clip_eps = [0.1, 0.2]
"""
SWEEP = ["--num-envs", "4", "--num-steps", "32", "--total-timesteps", "1024",
         "--update-epochs", "2", "--num-minibatches", "2", "--no-plots"]


class _Ppox:
    """One ``ppox`` process in its own working directory; stdout and stderr go to files
    outside it (pipes left unread would block it, and its peers with it)."""

    def __init__(self, logs: Path, name: str, cwd: Path, argv: list[str], devices: int,
                 cache: Path, extra_env: dict[str, str] | None = None) -> None:
        cwd.mkdir(parents=True, exist_ok=True)
        logs.mkdir(parents=True, exist_ok=True)
        self.cwd, self.out, self.err = cwd, logs / f"{name}.out", logs / f"{name}.err"
        env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1",
                   XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
                   PPOX_COMPILE_CACHE_DIR=str(cache), **(extra_env or {}))
        for name_ in ("PPOX_COMPILE_CACHE", "PPOX_CPU_DEVICES", "PPOX_TEST_PAUSE"):
            if name_ not in (extra_env or {}):
                env.pop(name_, None)
        with self.out.open("w") as so, self.err.open("w") as se:
            self.popen = subprocess.Popen([sys.executable, "-m", "ppox.cli", *argv], cwd=cwd,
                                          env=env, stdout=so, stderr=se)

    def text(self) -> tuple[str, str]:
        return self.out.read_text(), self.err.read_text()

    def check(self, code: int = 0) -> str:
        """Asserts the exit status; stdout, less gloo's own line at its connection (the
        runtime prints it, not ppox)."""
        out, err = self.text()
        assert self.popen.returncode == code, (self.popen.returncode, out[-2000:], err[-3000:])
        return "".join(line for line in out.splitlines(keepends=True)
                       if not line.startswith("[Gloo] "))


def _processes(logs: Path, name: str, cwds: list[Path], argv: list[str], cache: Path,
               pause: str | None = None) -> list[_Ppox]:
    """``len(cwds)`` processes of one run on 127.0.0.1 (``pause``: process 0's
    ``PPOX_TEST_PAUSE``)."""
    coord = ["--coordinator", f"127.0.0.1:{_free_port()}", "--num-processes", str(len(cwds)),
             "--distributed-timeout-s", str(TIMEOUT_S)]
    return [_Ppox(logs, f"{name}{i}", cwd, [*argv, *coord, "--process-id", str(i)], 1, cache,
                  {"PPOX_TEST_PAUSE": pause} if pause and i == 0 else None)
            for i, cwd in enumerate(cwds)]


def _metrics(run_dir: Path) -> dict[str, np.ndarray]:
    """Every metric of ``metrics.jsonl`` by update (wall-clock time left out)."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    keys = [k for k, v in rows[0].items() if isinstance(v, float) and k != "wall_s"]
    return {k: np.array([r[k] for r in rows]) for k in keys} | {
        "update": np.array([r["update"] for r in rows])}


def _same_run(a: Path, b: Path) -> None:
    """Two run directories hold the same training: metrics of every update and the final
    parameters, within float tolerance."""
    ma, mb = _metrics(a), _metrics(b)
    assert list(ma["update"]) == list(range(1, 17)) == list(mb["update"])
    for k in ma:
        np.testing.assert_allclose(ma[k], mb[k], rtol=1e-5, atol=1e-6, err_msg=k)
    pa, pb = ppox.load_policy(a).params, ppox.load_policy(b).params
    import jax

    for x, y in zip(jax.tree.leaves(pa), jax.tree.leaves(pb), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-6)


def _files(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


@pytest.mark.slow
def test_two_processes_train_write_once_and_resume(tmp_path):
    cache, logs = tmp_path / "xla-cache", tmp_path / "logs"
    argv = ["train", *TRAIN, "--data-parallel", "--run-dir", "run"]
    ref = _Ppox(logs, "ref", tmp_path / "ref", argv, 2, cache)
    two = _processes(logs, "two", [tmp_path / "p0", tmp_path / "p1"], argv, cache)
    _finish([ref, *two], 400)
    ref.check()
    out0, out1 = two[0].check(), two[1].check()
    # process 0 reports and writes; process 1 prints nothing and writes nothing
    assert "training CartPole-v1" in out0 and "on 2 device(s)" in out0
    assert "final return:" in out0 and out1 == ""
    assert _files(tmp_path / "p1") == []
    written = _files(tmp_path / "p0" / "run")
    for name in ("config.toml", "metrics.jsonl", "summary.json", "policy", "checkpoints/16"):
        assert name in written, written
    assert 'layout_devices = 2' in (tmp_path / "p0" / "run" / "config.toml").read_text()
    _same_run(tmp_path / "p0" / "run", tmp_path / "ref" / "run")

    # SIGINT to process 0 alone, while the chunk to update 12 runs: both stop after it
    shared = tmp_path / "shared" / "run"  # one path, as on a shared filesystem
    argv = ["train", *TRAIN, "--data-parallel", "--run-dir", str(shared)]
    cut = _processes(logs, "cut", [tmp_path / "c0", tmp_path / "c1"], argv, cache,
                     pause="chunk@8=120")
    started = time.monotonic()
    while "ppox-test-pause: chunk 8" not in cut[0].text()[1]:
        assert cut[0].popen.poll() is None, cut[0].text()[1][-2000:]
        assert time.monotonic() - started < 300, "process 0 never reached update 8"
        time.sleep(0.2)
    cut[0].popen.send_signal(signal.SIGINT)
    _finish(cut, 120)
    for i, p in enumerate(cut):
        p.check(130)
        err = p.text()[1]
        assert "interrupted (SIGINT)" in err  # each says how to resume it, as this process
        assert ("--resume --progress-chunks 4 --coordinator 127.0.0.1:" in err
                and f"--num-processes 2 --process-id {i}" in err), err[-1500:]
    assert "saved checkpoint" in cut[0].text()[1] and "update 12 of 16" in cut[0].text()[1]
    assert sorted(os.listdir(shared / "checkpoints")) == ["12"]
    assert not (shared / "policy").exists()

    again = _processes(logs, "again", [tmp_path / "c0", tmp_path / "c1"],
                       ["train", "--run-dir", str(shared), "--resume", "--progress-chunks",
                        "4", "--no-progress"], cache)
    _finish(again, 300)
    assert "resuming at update 12" in again[0].check()
    assert again[1].check() == ""
    _same_run(shared, tmp_path / "ref" / "run")
    assert _files(tmp_path / "c1") == []


def _sweep_results(out: Path) -> dict[str, list[str]]:
    with (out / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    keep = [k for k in rows[0] if "return" in k or "auc" in k or k == "learning_rate"]
    return {k: [r[k] for r in rows] for k in keep}


@pytest.mark.slow
def test_two_process_sweep_interrupted_and_resumed_equals_one_process(tmp_path):
    """4 configurations in 2 batches of 2 runs (one run per process); SIGINT to process 0
    during batch 2 stops both, a 2-process resume reads batch 1 back and finishes batch 2
    from its checkpoint, and the results equal one process's with 2 devices."""
    cache, logs = tmp_path / "xla-cache", tmp_path / "logs"
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC)
    argv = ["sweep", *SWEEP, "--spec", str(spec), "--batch-size", "2", "--progress-chunks", "4"]
    one = _Ppox(logs, "one", tmp_path / "one", [*argv, "--out", "out"], 2, cache)
    # each process in its own directory with a relative --out: process 1 would write there
    cut = _processes(logs, "cut", [tmp_path / "s0", tmp_path / "s1"], [*argv, "--out", "out"],
                     cache, pause="chunk=2")
    started = time.monotonic()
    while "[batch 2/2]" not in cut[0].text()[0]:
        assert cut[0].popen.poll() is None, cut[0].text()[1][-2000:]
        assert time.monotonic() - started < 300, "process 0 never reached batch 2"
        time.sleep(0.2)
    cut[0].popen.send_signal(signal.SIGINT)
    _finish([one, *cut], 300)
    one.check()
    for p in cut:
        p.check(130)
        assert "1 of 2 batches finished and kept in out" in p.text()[1], p.text()[1][-1500:]
    assert cut[1].check(130) == "" and _files(tmp_path / "s1") == []
    # the resume reads process 0's directory by one path, as on a shared filesystem
    shared = str(tmp_path / "s0" / "out")
    again = _processes(logs, "again", [tmp_path / "s0", tmp_path / "s1"],
                       ["sweep", "--out", shared, "--resume"], cache)
    _finish(again, 300)
    out0 = again[0].check()
    assert "batch 1/2: finished before, read back" in out0
    assert "batch 2/2: resuming from its checkpoint" in out0
    assert again[1].check() == "" and _files(tmp_path / "s1") == []
    a, b = _sweep_results(tmp_path / "s0" / "out"), _sweep_results(tmp_path / "one" / "out")
    assert a.keys() == b.keys() and len(a["learning_rate"]) == 4
    for k in a:
        np.testing.assert_allclose(np.asarray(a[k], float), np.asarray(b[k], float),
                                   rtol=1e-5, err_msg=k)
    with np.load(tmp_path / "s0" / "out" / "curves.npz") as ca, \
            np.load(tmp_path / "one" / "out" / "curves.npz") as cb:
        for k in cb.files:
            if np.issubdtype(cb[k].dtype, np.floating) and "wall" not in k:
                np.testing.assert_allclose(ca[k], cb[k], rtol=1e-5, atol=1e-6, err_msg=k)


def test_bad_starts_are_one_error_on_every_process(tmp_path):
    """Envs or runs that do not divide across the 2 processes' devices, and a run directory
    that process 0 refuses (process 1's own would be fine: it does not look, it fails with
    process 0's error): exit 2 on both, nothing compiled or written."""
    cache, logs = tmp_path / "xla-cache", tmp_path / "logs"
    base = ["train", "--num-steps", "32", "--total-timesteps", "2048", "--run-dir", "run"]
    envs = _processes(logs, "envs", [tmp_path / "e0", tmp_path / "e1"],
                      [*base, "--num-envs", "3", "--data-parallel"], cache)
    runs = _processes(logs, "runs", [tmp_path / "r0", tmp_path / "r1"],
                      [*base, "--num-envs", "4", "--num-seeds", "3"], cache)
    (tmp_path / "d0" / "run").mkdir(parents=True)
    (tmp_path / "d0" / "run" / "config.toml").write_text("env = 'CartPole-v1'\n")
    taken = _processes(logs, "taken", [tmp_path / "d0", tmp_path / "d1"],
                       [*base, "--num-envs", "4", "--data-parallel"], cache)
    _finish([*envs, *runs, *taken], 200)
    for p in taken:
        p.check(2)
        assert "error: run directory 'run' already holds a run" in p.text()[1], p.text()[1]
    assert _files(tmp_path / "d0") == ["run", "run/config.toml"]
    assert _files(tmp_path / "d1") == []
    for p in envs:
        p.check(2)
        assert "error: data parallelism over 2 devices needs num_envs=3 divisible by 2" \
            in p.text()[1]
    for p in runs:
        p.check(2)
        assert "error: 3 run(s) do not split evenly across the 2 devices of 2 processes" \
            in p.text()[1]
    assert all(_files(tmp_path / d) == [] for d in ("e0", "e1", "r0", "r1"))


@pytest.mark.parametrize("argv, message", [
    (["--process-id", "1"], "--num-processes/--process-id need --coordinator HOST:PORT"),
    (["--num-processes", "2"], "--num-processes/--process-id need --coordinator HOST:PORT"),
    (["--coordinator", "localhost", "--num-processes", "2", "--process-id", "0"],
     "is not HOST:PORT"),
    (["--coordinator", "127.0.0.1:1234", "--num-processes", "2"], "needs --num-processes P"),
    (["--coordinator", "127.0.0.1:1234", "--num-processes", "2", "--process-id", "2"],
     "must be in [0, num_processes)"),
    (["--coordinator", "127.0.0.1:1234", "--num-processes", "two", "--process-id", "0"],
     "--num-processes 'two' is not a whole number"),
])
@pytest.mark.parametrize("command", ["train", "sweep"])
def test_bad_distributed_flags_are_one_error(command, argv, message, capsys, tmp_path):
    extra = ["--out", str(tmp_path / "out")] if command == "sweep" else []
    assert main([command, *argv, *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1


def test_distributed_without_a_cluster_is_one_error(tmp_path):
    p = _Ppox(tmp_path / "logs", "alone", tmp_path / "alone",
              ["train", "--distributed", "--run-dir", "run"], 1, tmp_path / "xla-cache")
    _finish([p], 120)
    p.check(2)
    err = p.text()[1]
    assert "error: --distributed found no cluster environment to read" in err, err[-2000:]
    assert _files(tmp_path / "alone") == []


def test_a_process_that_never_joins_is_one_error(tmp_path):
    """Process 0 alone: the runtime would abort with a C++ stack trace after its start-up
    timeout; the command says it in one line first, exit 2, nothing written."""
    started = time.monotonic()
    p = _Ppox(tmp_path / "logs", "first", tmp_path / "first",
              ["train", "--run-dir", "run", "--coordinator", f"127.0.0.1:{_free_port()}",
               "--num-processes", "2", "--process-id", "0", "--distributed-timeout-s", "3"],
              1, tmp_path / "xla-cache")
    _finish([p], 120)
    p.check(2)
    err = p.text()[1]
    assert err.strip() == ("error: process 0 of 2: not every process joined within 3 s; start "
                           "all of them with the same --coordinator and --num-processes (or "
                           "give them more --distributed-timeout-s)"), err[-2000:]
    assert _files(tmp_path / "first") == [] and time.monotonic() - started < 100
