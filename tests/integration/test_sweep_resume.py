"""An interrupted sweep loses no work: SIGINT/SIGTERM between or inside batches and kill -9
inside a batch, then ``ppox sweep --out D --resume``, end with the results of an
uninterrupted sweep; a sweep directory is protected like a run directory.

Every sweep runs in a subprocess on one XLA CPU device. The child pauses at an exact moment
(after a batch's results are saved, or after a progress line of a batch) and says so; the
parent then sends the signal, so the signal comes from outside at a known point. The
subprocesses share a persistent compilation cache, so only the first one compiles.
"""

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from ppox.cli import main

# 4 configurations x 2 seeds = 8 runs in 3 batches of 3 (the last padded): each batch holds
# runs of two configurations with the same seed, and 8 updates in 4 chunks of 2.
SPEC = """
seeds = 2
seed = 3
[grid]
learning_rate = [2.5e-4, 1e-3]
clip_eps = [0.1, 0.2]
"""
FLAGS = ["--env", "CartPole-v1", "--total-timesteps", "512", "--num-envs", "4",
         "--num-steps", "16", "--progress-chunks", "4", "--batch-size", "3",
         "--checkpoint-every", "1", "--no-plots"]
WALL = "wall_time_s"  # the only column an interrupted sweep may change

CHILD = textwrap.dedent("""
    import os, sys, time
    import ppox.sweep.run as run
    import ppox.sweep.store as store
    from ppox.cli import main

    where = os.environ.get("PAUSE_AT", "")

    def pause():
        print("PAUSED", flush=True)
        try:  # train_runs turns SIGINT/SIGTERM into a stop request acted on between chunks
            from ppox.host.interrupts import requested
        except ImportError:  # else the signal raises KeyboardInterrupt in the sleep
            requested = lambda: None
        for _ in range(1200):  # until the parent's signal
            if requested() is not None:
                return
            time.sleep(0.1)

    if where.startswith("saved:"):  # after batch N's results are on disk
        save, saved = store.SweepDir.save_batch, []

        def save_batch(self, batch, record):
            save(self, batch, record)
            saved.append(batch)
            if len(saved) == int(where.split(":")[1]):
                pause()

        store.SweepDir.save_batch = save_batch
    elif where.startswith("report:"):  # after a progress line of a batch, mid-batch
        _, label, updates = where.split(":")
        reporter = run._Progress.reporter

        def make(self, name, real, size):
            report = reporter(self, name, real, size)

            def wrapped(info):
                report(info)
                if name == label and info["updates_done"] == int(updates):
                    pause()

            return wrapped

        run._Progress.reporter = make
    sys.exit(main(["sweep", *sys.argv[1:]]))
""")


def sweep(args, cache, pause_at="", sig=None):
    """Runs ``ppox sweep ARGS`` in a subprocess; with ``pause_at``, sends ``sig`` once the
    child has paused there. Returns (exit status, stdout, stderr)."""
    env = dict(os.environ, PAUSE_AT=pause_at, JAX_COMPILATION_CACHE_DIR=str(cache),
               JAX_PLATFORMS="cpu", PPOX_CPU_DEVICES="1")
    proc = subprocess.Popen([sys.executable, "-c", CHILD, *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    try:
        if pause_at:
            for line in proc.stdout:
                lines.append(line)
                if line.strip() == "PAUSED":
                    proc.send_signal(sig)
                    break
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, "".join(lines) + out, err


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def assert_same_results(out, reference):
    rows, ref = read_csv(out / "results.csv"), read_csv(reference / "results.csv")
    assert len(rows) == len(ref) == 4
    assert [{k: v for k, v in r.items() if k != WALL} for r in rows] == [
        {k: v for k, v in r.items() if k != WALL} for r in ref]
    a, b = np.load(out / "curves.npz"), np.load(reference / "curves.npz")
    for key in ("returns", "final_return", "auc", "diverged", "seed", "config"):
        np.testing.assert_array_equal(a[key], b[key])
    assert (out / "best.toml").read_text() == (reference / "best.toml").read_text()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """The uninterrupted sweep, run with --overwrite into a directory that holds an old
    sweep (which it clears)."""
    root = tmp_path_factory.mktemp("sweep_resume")
    spec = root / "spec.toml"
    spec.write_text(SPEC)
    cache = root / "jax_cache"
    reference = root / "reference"
    (reference / "batches").mkdir(parents=True)
    (reference / "plan.json").write_text("{}")
    (reference / "batches" / "0-0.npz").write_text("stale")
    code, out, err = sweep(["--spec", spec, "--out", reference, *FLAGS, "--overwrite"], cache)
    assert code == 0, err[-3000:]
    info = json.loads((reference / "sweep.json").read_text())
    assert (info["batches"], info["batch_size"], info["batches_read_back"]) == (3, 3, 0)
    assert "batches: 3 vmapped call(s) of 3 runs (--batch-size; 1 padding run(s))" in out
    assert sorted(p.name for p in (reference / "batches").glob("*.npz")) == [
        "0-0.npz", "0-1.npz", "0-2.npz"]  # the stale one was replaced by a real one
    return root, spec, cache, reference


def test_sigint_between_batches_then_resume(setup):
    root, spec, cache, reference = setup
    out = root / "between"
    code, _, err = sweep(["--spec", spec, "--out", out, *FLAGS], cache, "saved:1",
                         signal.SIGINT)
    assert code == 130, err[-3000:]
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == (
        f"interrupted (SIGINT): 1 of 3 batches finished and kept in {out} (at batch 2/3); "
        f"resume with: ppox sweep --out {out} --resume")
    assert sorted(p.name for p in (out / "batches").glob("*.npz")) == ["0-0.npz"]
    assert not (out / "results.csv").exists()
    code, text, err = sweep(["--out", out, "--resume"], cache)  # no other flag needed
    assert code == 0, err[-3000:]
    assert "batch 1/3: finished before, read back" in text
    assert "[batch 1/3]" not in text and "[batch 2/3] updates     8/8" in text
    info = json.loads((out / "sweep.json").read_text())
    assert (info["batches_read_back"], info["batches_resumed"]) == (1, 0)
    assert_same_results(out, reference)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "kill-9"])
def test_signal_inside_a_batch_then_resume(setup, sig):
    root, spec, cache, reference = setup
    out = root / f"inside-{sig.name}"
    code, _, err = sweep(["--spec", spec, "--out", out, *FLAGS], cache,
                         "report:batch 2/3:4", sig)
    if sig == signal.SIGKILL:
        assert code == -signal.SIGKILL
    else:
        assert code == 130, err[-3000:]
        last = err.strip().splitlines()[-1]
        assert "Traceback" not in err
        assert last.startswith(f"interrupted ({sig.name}): 1 of 3 batches finished and kept "
                               f"in {out} (batch 2/3: ")
        assert last.endswith(f"; resume with: ppox sweep --out {out} --resume")
    assert sorted(p.name for p in (out / "batches").glob("*.npz")) == ["0-0.npz"]
    checkpoints = [p.name for p in (out / "batches" / "0-1" / "checkpoints").iterdir()
                   if p.name.isdigit()]
    assert checkpoints and max(map(int, checkpoints)) in (2, 4)
    code, text, err = sweep(["--out", out, "--resume"], cache)
    assert code == 0, err[-3000:]
    assert "batch 1/3: finished before, read back" in text
    assert "batch 2/3: resuming from its checkpoint at update " in text
    assert "[batch 2/3] updates     2/8" not in text  # continued, not restarted
    info = json.loads((out / "sweep.json").read_text())
    assert (info["batches_read_back"], info["batches_resumed"]) == (1, 1)
    assert_same_results(out, reference)


def run_cli(args, capsys):
    code = main(["sweep", *map(str, args)])
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    return code, lines


def listing(path):
    return sorted((str(p.relative_to(path)), p.stat().st_mtime_ns) for p in path.rglob("*"))


def test_existing_sweep_directory_is_refused_without_resume_or_overwrite(setup, capsys):
    _, spec, _, reference = setup
    before = listing(reference)
    code, lines = run_cli(["--spec", spec, "--out", reference, *FLAGS], capsys)
    assert code == 2 and len(lines) == 1
    assert lines[0] == (f"error: sweep directory {str(reference)!r} already holds a sweep; "
                        "pass --resume to continue the sweep in it, --overwrite to replace "
                        "it, or choose a new --out")
    assert listing(reference) == before


def test_resume_errors_are_one_line_and_change_nothing(setup, tmp_path, capsys):
    _, spec, _, reference = setup
    before = listing(reference)
    other = tmp_path / "other.toml"
    other.write_text(SPEC.replace("clip_eps = [0.1, 0.2]", "clip_eps = [0.1, 0.3]"))
    (tmp_path / "notes.txt").write_text("not a sweep")
    cases = [
        (["--out", tmp_path / "missing", "--resume"],
         f"error: --resume: sweep directory {str(tmp_path / 'missing')!r} does not exist"),
        (["--out", tmp_path, "--resume"],
         f"error: --resume: {str(tmp_path)!r} holds no sweep to resume (no plan.json)"),
        (["--out", reference, "--resume", "--gamma", "0.9", "--batch-size", "2"],
         "error: cannot resume the sweep in "
         f"{str(reference)!r} with other settings than it started with ([hparams] gamma: "
         "0.9 here, 0.99 in the sweep; batch_size: 2 here, 3 in the sweep)."),
        (["--out", reference, "--resume", "--spec", other],
         "error: cannot resume the sweep in "
         f"{str(reference)!r} with other settings than it started with ([grid] clip_eps: "
         "[0.1, 0.3] here, [0.1, 0.2] in the sweep)."),
        (["--out", reference, "--resume", "--overwrite"],
         "error: --resume continues the sweep in --out and --overwrite clears it"),
        (["--spec", spec, "--out", tmp_path, "--overwrite"],
         f"error: --overwrite clears only a sweep directory, and {str(tmp_path)!r} holds "
         "files but no sweep"),
        (["--spec", spec, "--out", tmp_path / "notes.txt"],
         f"error: --out {str(tmp_path / 'notes.txt')!r} is a file, not a directory"),
        (["--spec", spec, "--out", tmp_path / "new", "--checkpoint-every", "-1"],
         "error: checkpoint_every=-1 must be >= 0"),
        (["--out", tmp_path / "new"], "error: ppox sweep needs --spec SPEC.toml"),
    ]
    for args, expected in cases:
        code, lines = run_cli(args, capsys)
        assert code == 2, args
        assert len(lines) == 1 and lines[0].startswith(expected), (args, lines)
    assert listing(reference) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "other.toml"]
