"""Faults, in subprocesses where a process must die: SIGINT/SIGTERM at several moments then a
resume equal to the uninterrupted run bit for bit; SIGKILL during checkpoint writes; every
kind of checkpoint corruption refused with the previous checkpoint used; a divergent run
stopped with its last finite checkpoint kept; a full disk.

The moments are hit with the ``PPOX_TEST_PAUSE`` test hook (``ppox.host.interrupts``): the
process prints ``ppox-test-pause: <point> <step>`` and waits there for the signal.
"""

import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from ppox import HParams, PPOConfig
from ppox.cli import main
from ppox.host import checkpoint as ckpt_module
from ppox.host import loop as loop_module
from ppox.host.checkpoint import MANIFEST, StateCheckpoints, restore_tree
from ppox.host.evaluation import load_config
from ppox.host.run import RunDiverged, state_shape, train_runs

TINY = ["--total-timesteps", "4096", "--progress-chunks", "8", "--quiet"]
RESUME_FLAGS = " --progress-chunks 8 --quiet"


def _env(pause: str | None = None) -> dict[str, str]:
    env = dict(os.environ, PPOX_CPU_DEVICES="1")
    env.pop("PPOX_TEST_PAUSE", None)
    if pause:
        env["PPOX_TEST_PAUSE"] = pause
    return env


def _ppox(*args: str, pause: str | None = None, timeout: float = 300):
    return subprocess.run([sys.executable, "-m", "ppox.cli", "train", *args],
                          capture_output=True, text=True, timeout=timeout, env=_env(pause))


class _Proc:
    """A `ppox train` subprocess the test signals at a test-hook pause."""

    def __init__(self, *args: str, pause: str) -> None:
        self.p = subprocess.Popen([sys.executable, "-m", "ppox.cli", "train", *args],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env=_env(pause))
        self.err: list[str] = []

    def wait_for(self, marker: str, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        for line in self.p.stderr:
            self.err.append(line.rstrip("\n"))
            if line.startswith(f"ppox-test-pause: {marker}"):
                return
            assert time.monotonic() < deadline, self.err
        raise AssertionError(f"exited before {marker!r}: {self.err}")

    def finish(self, timeout: float = 120) -> tuple[int, str, list[str]]:
        out, err = self.p.communicate(timeout=timeout)
        lines = self.err + err.strip().splitlines()
        return self.p.returncode, out, [x for x in lines if not x.startswith("ppox-test-")]


def _rows(run: Path) -> list[dict]:
    """metrics.jsonl without its wall clock."""
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "wall_s"} for r in rows]


def _template(run: Path):
    cfg, hp, n = load_config(run)
    return state_shape(cfg, [hp] * n, list(range(n)))


def _final_state(run: Path):
    return StateCheckpoints(run).restore_latest(_template(run), print)


def _assert_same_run(run: Path, reference: Path) -> None:
    """Bit for bit: every metric of every update, and the final state."""
    assert _rows(run) == _rows(reference)
    (s1, a), (s2, b) = _final_state(run), _final_state(reference)
    assert s1 == s2 == 8
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("faults") / "whole"
    proc = _ppox(*TINY, "--run-dir", str(run))
    assert proc.returncode == 0, proc.stderr[-2000:]
    return run


def test_sigint_between_chunks_and_during_compile_then_resume(reference, tmp_path):
    run = tmp_path / "cut"
    # SIGINT right after chunk 3's metrics were read (chunk 4 is in flight): the loop waits
    # for chunk 4 and saves it, whatever --checkpoint-every says (here: never)
    p = _Proc(*TINY, "--run-dir", str(run), pause="chunk@3=60")
    p.wait_for("chunk 3")
    p.p.send_signal(signal.SIGINT)
    rc, _, err = p.finish()
    assert rc == 130, err
    assert err[-1] == (f"interrupted (SIGINT): saved checkpoint {run}/checkpoints/4 (update 4 "
                       f"of 8); resume with: ppox train --run-dir {run} --resume"
                       f"{RESUME_FLAGS}")
    # the resume interrupted while it compiles: out at once, the checkpoint untouched
    p = _Proc("--run-dir", str(run), "--resume", "--progress-chunks", "8", "--quiet",
              pause="compile=0")
    p.wait_for("compile")
    time.sleep(0.3)  # inside XLA's compile (or the restore): the main thread is busy there
    t0 = time.monotonic()
    p.p.send_signal(signal.SIGINT)
    rc, _out, err = p.finish()
    assert time.monotonic() - t0 < 3.0  # promptly, not after the compile
    assert rc == 130, err
    assert err[-1] == (f"interrupted (SIGINT) before training started: {run} is unchanged; "
                       f"resume with `ppox train --run-dir {run} --resume{RESUME_FLAGS}`")
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["4"]
    proc = _ppox("--run-dir", str(run), "--resume", "--progress-chunks", "8", "--quiet")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "resumed at update 4: 2,048 env steps per run in this run" in proc.stdout
    _assert_same_run(run, reference)


def test_sigint_while_importing_is_not_lost(tmp_path):
    # half a second in, `ppox` is still importing JAX (a Ctrl-C there used to be swallowed
    # by a garbage-collection callback, and the run trained to the end)
    p = subprocess.Popen([sys.executable, "-m", "ppox.cli", "train", *TINY, "--run-dir",
                          str(tmp_path / "r")], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=_env())
    time.sleep(0.5)
    t0 = time.monotonic()
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=120)
    assert time.monotonic() - t0 < 3.0  # at once, not once the imports are done
    assert p.returncode == 130, err
    assert re.fullmatch(r"interrupted \(SIGINT\) (while starting|before training started): "
                        r"nothing was saved", err.strip().splitlines()[-1]), err
    assert "training" not in out


def test_a_second_sigint_exits_at_once(tmp_path):
    run = tmp_path / "r"
    p = _Proc(*TINY, "--run-dir", str(run), pause="chunk@3=60,checkpoint_manifest@4=60")
    p.wait_for("chunk 3")
    p.p.send_signal(signal.SIGINT)  # the loop goes on to save chunk 4 ...
    p.wait_for("checkpoint_manifest 4")
    p.p.send_signal(signal.SIGINT)  # ... but a second one does not wait for that
    rc, _, err = p.finish()
    assert rc == 130, err
    assert err[-1] == ("interrupted again (SIGINT): exiting now; a checkpoint being written "
                       "is dropped, the earlier ones are kept")
    assert StateCheckpoints(run).intact_steps() == []  # 4 has no manifest: never used


def test_sigterm_during_a_checkpoint_write_then_resume(reference, tmp_path):
    run = tmp_path / "cut"
    p = _Proc(*TINY, "--checkpoint-every", "2", "--run-dir", str(run),
              pause="checkpoint_manifest@6=60")
    p.wait_for("checkpoint_manifest 6")
    p.p.send_signal(signal.SIGTERM)
    rc, _, err = p.finish()
    assert rc == 130, err
    assert err[-1] == (f"interrupted (SIGTERM): the checkpoint {run}/checkpoints/6 (update 6 "
                       f"of 8) holds the last completed chunk; resume with: ppox train "
                       f"--run-dir {run} --resume --progress-chunks 8 --checkpoint-every 2 "
                       "--quiet")
    assert (run / "checkpoints" / "6" / MANIFEST).is_file()  # the write was finished
    proc = _ppox("--run-dir", str(run), "--resume", "--progress-chunks", "8",
                 "--checkpoint-every", "2", "--quiet")
    assert proc.returncode == 0, proc.stderr[-2000:]
    _assert_same_run(run, reference)


@pytest.mark.parametrize("moment", ["before_manifest", "in_orbax_0.05s", "in_orbax_0.4s"])
def test_sigkill_during_a_checkpoint_write_keeps_the_previous(moment, tmp_path):
    run = tmp_path / "killed"
    point = "checkpoint_manifest" if moment == "before_manifest" else "checkpoint_start"
    p = _Proc(*TINY, "--checkpoint-every", "1", "--run-dir", str(run),
              pause=f"{point}@5={60 if moment == 'before_manifest' else 0},chunk@6=60")
    # (the chunk pause keeps a fast process alive until the kill: it lands by update 6)
    p.wait_for(f"{point} 5")
    if moment != "before_manifest":
        time.sleep(float(moment.split("_")[-1].rstrip("s")))
    p.p.kill()
    p.finish()
    notes: list[str] = []
    step, _ = StateCheckpoints(run).restore_latest(_template(run), notes.append)
    if moment == "before_manifest":
        assert step == 4
        assert notes == [f"refused: checkpoint {run}/checkpoints/5 has no {MANIFEST} (its "
                         "write did not finish)",
                         f"using checkpoint {run}/checkpoints/4 (update 4), the newest that "
                         "passes every check"]
    else:  # the kill landed somewhere in orbax's write (or just after it)
        assert step in (4, 5), notes
    # a resume cleans what the write left behind and continues from there
    proc = _ppox("--run-dir", str(run), "--resume", "--progress-chunks", "8",
                 "--checkpoint-every", "1", "--quiet")
    assert proc.returncode == 0, proc.stderr[-2000:]
    left = [p.name for p in (run / "checkpoints").iterdir() if not p.name.isdigit()]
    assert left == []


# ---- corruption: refused, the previous checkpoint used (in-process, nothing compiles) ----

def _corruptions():
    def data_file(d: Path) -> Path:
        return max((p for p in d.rglob("*") if p.is_file() and p.parent.name == "d"),
                   key=lambda p: p.stat().st_size)

    def random_bytes(d):
        f = data_file(d)
        raw = bytearray(f.read_bytes())
        rng = np.random.default_rng(0)
        n = min(1000, len(raw))
        raw[:n] = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        f.write_bytes(bytes(raw))
        return f"file {f.relative_to(d)} has changed since it was written (checksum mismatch)"

    def truncated(d):
        f = data_file(d)
        size = f.stat().st_size
        f.write_bytes(f.read_bytes()[: size // 2])
        return f"file {f.relative_to(d)} has {size // 2} bytes, {size} were written"

    def garbled_metadata(d):
        f = d / "_METADATA"
        f.write_text(f.read_text()[::-1])
        return "file _METADATA has changed since it was written (checksum mismatch)"

    def missing_file(d):
        f = next(p for p in sorted(d.rglob("manifest.ocdbt")))
        f.unlink()
        return f"file {f.relative_to(d)} is missing"

    def missing_manifest(d):
        (d / MANIFEST).unlink()
        return f"has no {MANIFEST} (its write did not finish)"

    def garbled_manifest(d):
        (d / MANIFEST).write_text("{ not json")
        return f": unreadable {MANIFEST} ("

    return [random_bytes, truncated, garbled_metadata, missing_file, missing_manifest,
            garbled_manifest]


@pytest.fixture(scope="module")
def checkpointed(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("ckpt") / "r"
    train_runs(PPOConfig(total_timesteps=4096), [HParams()], [0], run_dir=run,
               progress_chunks=8, checkpoint_every=1)
    assert StateCheckpoints(run).steps() == [7, 8]  # the newest two verified ones
    return run


@pytest.mark.parametrize("corrupt", _corruptions(), ids=lambda f: f.__name__)
def test_corrupted_checkpoint_is_refused_and_the_previous_used(corrupt, checkpointed,
                                                               tmp_path):
    run = tmp_path / "r"
    shutil.copytree(checkpointed, run)
    reason = corrupt(run / "checkpoints" / "8")
    notes: list[str] = []
    step, tree = StateCheckpoints(run).restore_latest(_template(run), notes.append)
    assert step == 7
    assert len(notes) == 2 and notes[0].startswith(f"refused: checkpoint {run}/checkpoints/8")
    assert reason in notes[0], notes
    assert notes[1] == (f"using checkpoint {run}/checkpoints/7 (update 7), the newest that "
                        "passes every check")
    assert int(np.asarray(tree.update_idx).reshape(-1)[0]) == 7


def test_nonfinite_values_are_refused(checkpointed, tmp_path):
    run = tmp_path / "r"
    shutil.copytree(checkpointed, run)
    template = _template(run)
    _, tree = StateCheckpoints(run).restore_latest(template, print)
    bad = jax.tree.map(lambda x: np.full_like(x, np.nan) if x.dtype == np.float32 else x, tree)
    ckpt_module.save_tree(run / "checkpoints" / "9", bad, step=9)
    notes: list[str] = []
    step, _ = StateCheckpoints(run).restore_latest(template, notes.append)
    assert step == 8
    assert notes[0].startswith(f"refused: checkpoint {run}/checkpoints/9: non-finite values "
                               "in .params")


def test_resume_falls_back_and_continues_exactly(checkpointed, tmp_path, capsys):
    run = tmp_path / "r"
    shutil.copytree(checkpointed, run)
    whole = _final_state(run)[1]
    # 8 corrupt: the resume starts from 7 and trains update 8 again
    meta = run / "checkpoints" / "8" / "_METADATA"
    meta.write_text(meta.read_text()[::-1])
    assert main(["train", "--run-dir", str(run), "--resume", "--progress-chunks", "8",
                 "--quiet"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"refused: checkpoint {run}/checkpoints/8: file _METADATA has changed "
                   "since it was written (checksum mismatch)",
                   f"using checkpoint {run}/checkpoints/7 (update 7), the newest that passes "
                   "every check"]
    for x, y in zip(jax.tree.leaves(_final_state(run)[1]), jax.tree.leaves(whole),
                    strict=True):
        np.testing.assert_array_equal(x, y)
    # every checkpoint unusable: one line, nothing trained
    for step in (7, 8):
        (run / "checkpoints" / str(step) / MANIFEST).unlink()
    assert main(["train", "--run-dir", str(run), "--resume", "--progress-chunks", "8",
                 "--quiet"]) == 2
    out = capsys.readouterr()
    assert out.err.strip().splitlines()[-1] == (
        f"error: cannot resume {str(run)!r}: none of its checkpoints in checkpoints/ passes "
        "the checks (see above); start it again with --overwrite")
    assert "training" not in out.out


# ---- divergence ----

def test_divergent_run_stops_with_the_update_run_and_quantity(tmp_path):
    run = tmp_path / "nan"
    proc = _ppox(*TINY, "--learning-rate", "1e38", "--checkpoint-every", "1", "--run-dir",
                 str(run))
    assert proc.returncode == 3, proc.stderr[-2000:]
    err = proc.stderr.strip().splitlines()
    assert err == ["error: run seed0 (seed 0) diverged at update 1: the loss is nan; stopped "
                   "at update 1, nothing saved from it; no checkpoint had been written"]
    assert "final return" not in proc.stdout
    assert not (run / "policy").exists() and StateCheckpoints(run).steps() == []
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "diverged"
    assert summary["diverged"] == {"run": "seed0", "seed": 0, "update": 1,
                                   "quantity": "the loss is nan"}


def test_lr_1e10_diverges_too():
    # every number stays finite (steps of ~1e12, losses of ~1e20): the step's size stops it
    with pytest.raises(RunDiverged, match=r"^run seed0 \(seed 0\) diverged at update 1: the "
                       r"parameter step \(update_norm\) is \S+, above 1e\+06 \(the "
                       r"optimizer blew up\); stopped at update 1, nothing saved from it; no "
                       r"checkpoint had been written$"):
        train_runs(PPOConfig(total_timesteps=4096), [HParams(learning_rate=1e10)], [0],
                   progress_chunks=8, on_nonfinite="stop")


def test_divergence_keeps_the_last_finite_checkpoint(tmp_path, monkeypatch):
    # a divergence at update 6 (injected into the host's check: the compiled program is the
    # finite one) with a checkpoint after every chunk: 4 and 5 stay, nothing after them
    real = loop_module._first_diverged

    def nan_from_6(host, start):  # chunks of one update: update 6 is the chunk at start 5
        return np.full(1, 6) if start == 5 else real(host, start)

    monkeypatch.setattr(loop_module, "_first_diverged", nan_from_6)
    run = tmp_path / "r"
    with pytest.raises(RunDiverged) as err:
        train_runs(PPOConfig(total_timesteps=4096), [HParams()], [0], run_dir=run,
                   progress_chunks=8, checkpoint_every=1)
    assert str(err.value).endswith(f"stopped at update 6, nothing saved from it; the last "
                                   f"finite checkpoint {run}/checkpoints/5 is kept")
    assert StateCheckpoints(run).steps() == [4, 5]
    assert not (run / "policy").exists()


# ---- a full disk ----

def test_disk_full_during_a_checkpoint_is_one_line_and_loses_nothing(tmp_path, monkeypatch,
                                                                     capsys):
    real = ckpt_module._orbax_save
    calls = []

    def fill_up(path, tree):
        calls.append(path)
        if len(calls) == 3:  # the third write: orbax has begun (a temporary dir), then fails
            (path.parent / f"{path.name}.orbax-checkpoint-tmp-1234").mkdir()
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, tree)

    monkeypatch.setattr(ckpt_module, "_orbax_save", fill_up)
    run = tmp_path / "r"
    assert main(["train", *TINY, "--checkpoint-every", "1", "--run-dir", str(run)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: could not write {run}/checkpoints/3: no space left on device; the "
                   f"checkpoint {run}/checkpoints/2 is kept"]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["1", "2"]
    step, _ = StateCheckpoints(run).restore_latest(_template(run), print)
    assert step == 2
    restore_tree(run / "checkpoints" / "2", _template(run))


def test_a_real_full_disk(tmp_path):
    # a 420 KiB tmpfs holds two checkpoints of this run, not a third: tensorstore's own
    # error, through orbax, is one line (needs the right to mount; skipped without it)
    disk = tmp_path / "tiny"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=420k", "tmpfs", str(disk)],
                             capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        run = disk / "r"
        proc = _ppox(*TINY, "--checkpoint-every", "1", "--run-dir", str(run))
        assert proc.returncode == 1, proc.stderr[-3000:]
        assert proc.stderr.strip().splitlines() == [
            f"error: could not write {run}/checkpoints/3: no space left on device; the "
            f"checkpoint {run}/checkpoints/2 is kept"]
        assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["1", "2"]
        assert StateCheckpoints(run).restore_latest(_template(run), print)[0] == 2
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)


def test_a_signal_read_after_the_handlers_are_restored_is_ignored():
    # The watcher thread reads signals from a pipe; on a busy machine it can read one after
    # the command has handled it and restored the handlers. It must then act on nothing
    # (before, it ended the process with a second, wrong "before training started" line).
    code = textwrap.dedent("""
        import os, signal, time
        from ppox.host import interrupts
        restore = interrupts.install_cli_handlers()
        interrupts._REQ.watcher = None  # what restore() does first
        os.kill(os.getpid(), signal.SIGINT)  # still reaches the watcher's pipe
        time.sleep(1.0)
        restore()
        print("alive", flush=True)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "alive"
    assert "interrupted" not in proc.stderr
