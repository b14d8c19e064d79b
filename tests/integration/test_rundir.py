"""Run-directory rules of `ppox train`: each refusal is one exact `error:` line, before any
compile, and leaves the directory as it was; a finished run resumed trains nothing; a resume
reports its own steps and time."""

import errno
import hashlib
import pathlib

import pytest

from ppox import HParams, PPOConfig
from ppox.cli import main
from ppox.host import run as run_module
from ppox.host.checkpoint import StateCheckpoints
from ppox.host.run import summary_lines, train_runs

TINY = ["--total-timesteps", "4096", "--progress-chunks", "8", "--quiet"]


def _snapshot(path: pathlib.Path) -> dict[str, str]:
    """Every file under ``path`` with its content hash (what "unchanged" means)."""
    if not path.exists():
        return {}
    if path.is_file():
        return {"": hashlib.sha256(path.read_bytes()).hexdigest()}
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


def _ppox(capsys, *args: str) -> tuple[int, str, list[str]]:
    rc = main(["train", *args])
    out = capsys.readouterr()
    return rc, out.out, out.err.strip().splitlines()


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> pathlib.Path:
    run = tmp_path_factory.mktemp("rundir") / "done"
    assert main(["train", *TINY, "--run-dir", str(run)]) == 0
    return run


def _refused(capsys, run_dir: pathlib.Path, line: str, *args: str,
             check: pathlib.Path | None = None):
    before = _snapshot(check or run_dir)
    rc, out, err = _ppox(capsys, *args)
    assert (rc, err) == (2, [line]), (rc, err)
    assert "training" not in out  # refused before it announced (or compiled) anything
    assert _snapshot(run_dir) == before


def test_existing_run_is_refused_without_resume_or_overwrite(finished, capsys):
    _refused(capsys, finished,
             f"error: run directory {str(finished)!r} already holds a run; continue it with "
             "--resume, replace it with --overwrite, or choose another --run-dir",
             *TINY, "--run-dir", str(finished))


def test_overwrite_clears_the_run(finished, tmp_path, capsys):
    import shutil

    run = tmp_path / "again"
    shutil.copytree(finished, run)
    (run / "stray.txt").write_text("from the old run")
    rc, _out, err = _ppox(capsys, *TINY, "--run-dir", str(run), "--overwrite")
    assert rc == 0, err
    assert not (run / "stray.txt").exists()
    assert (run / "metrics.jsonl").read_text().count("\n") == 8
    assert (run / "metrics.jsonl").read_text().splitlines()[0].split('"wall_s"')[0] == \
        (finished / "metrics.jsonl").read_text().splitlines()[0].split('"wall_s"')[0]


def test_overwrite_refuses_a_directory_that_is_not_a_run(tmp_path, capsys):
    other = tmp_path / "photos"
    other.mkdir()
    (other / "cat.jpg").write_bytes(b"\xff\xd8")
    _refused(capsys, other,
             f"error: run directory {str(other)!r} is not empty and holds no ppox run (no "
             "config.toml); choose another --run-dir",
             *TINY, "--run-dir", str(other), "--overwrite")


def test_resume_of_a_directory_without_config(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    _refused(capsys, empty,
             f"error: cannot resume {str(empty)!r}: it has no config.toml (not a ppox run "
             "directory)", "--run-dir", str(empty), "--resume", "--quiet")
    missing = tmp_path / "missing"
    _refused(capsys, missing, f"error: cannot resume {str(missing)!r}: no such directory",
             "--run-dir", str(missing), "--resume", "--quiet")
    assert not missing.exists()


def test_resume_of_a_run_without_checkpoint(finished, tmp_path, capsys):
    run = tmp_path / "young"
    run.mkdir()
    (run / "config.toml").write_bytes((finished / "config.toml").read_bytes())
    _refused(capsys, run,
             f"error: cannot resume {str(run)!r}: it has no checkpoint yet (the run stopped "
             "before its first save); start it again with --overwrite",
             "--run-dir", str(run), "--resume", "--quiet")


def test_run_dir_that_is_a_file(tmp_path, capsys):
    f = tmp_path / "notes.txt"
    f.write_text("mine")
    _refused(capsys, f,
             f"error: run directory {str(f)!r} is a file, not a directory; choose another "
             "--run-dir", *TINY, "--run-dir", str(f))


def test_unwritable_run_dir(tmp_path, capsys, monkeypatch):
    # a read-only file system, injected (a chmod does not stop root)
    target = tmp_path / "ro"
    real = pathlib.Path.write_text

    def read_only(self, *a, **k):
        if self.parent == target:
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real(self, *a, **k)

    monkeypatch.setattr(pathlib.Path, "write_text", read_only)
    _refused(capsys, target,
             f"error: run directory {str(target)!r} is not writable: Read-only file system",
             *TINY, "--run-dir", str(target))


def test_resume_and_overwrite_together(finished, capsys):
    _refused(capsys, finished,
             "error: --resume continues a run and --overwrite replaces it; choose one",
             "--run-dir", str(finished), "--resume", "--overwrite", "--quiet")


def test_extending_a_finished_run_is_refused(finished, capsys):
    _refused(capsys, finished,
             f"error: cannot resume {str(finished)!r} with another total_timesteps "
             "(total_timesteps: 8192 here, 4096 in the run): extending or shortening a run is "
             "not supported (its learning-rate schedule and metrics assume its length); start "
             "a new --run-dir",
             "--run-dir", str(finished), "--resume", "--total-timesteps", "8192", "--quiet")


def test_finished_run_resumed_is_complete_without_compiling(finished, capsys):
    before = _snapshot(finished)
    programs = run_module.compiled_programs.cache_info()
    rc, out, err = _ppox(capsys, "--run-dir", str(finished), "--resume", "--quiet")
    assert (rc, err) == (0, [])
    lines = out.strip().splitlines()
    assert lines[0] == f"{finished}: the run is complete (8 updates); nothing to train"
    assert "the run was already complete (8 updates): nothing to train, nothing compiled" in lines
    assert "env steps/s" not in out
    info = run_module.compiled_programs.cache_info()
    assert (info.hits, info.misses) == (programs.hits, programs.misses)
    assert _snapshot(finished) == before


def test_finished_run_that_stopped_before_its_policy(finished, tmp_path, capsys):
    import shutil

    run = tmp_path / "r"
    shutil.copytree(finished, run)
    shutil.rmtree(run / "policy")  # as if killed after the last checkpoint
    (run / "summary.json").unlink()
    programs = run_module.compiled_programs.cache_info()
    rc, out, err = _ppox(capsys, "--run-dir", str(run), "--resume", "--quiet")
    assert (rc, err) == (0, [])
    assert out.splitlines()[0] == f"{run}: the run is complete (8 updates); nothing to train"
    assert (run / "policy").is_dir() and (run / "summary.json").is_file()
    import jax
    import numpy as np

    from ppox.host.evaluation import load_policy

    for a, b in zip(jax.tree.leaves(load_policy(run).params),
                    jax.tree.leaves(load_policy(finished).params), strict=True):
        np.testing.assert_array_equal(a, b)  # the policy of the last checkpoint
    info = run_module.compiled_programs.cache_info()
    assert (info.hits, info.misses) == (programs.hits, programs.misses)


def test_resume_reports_its_own_steps(tmp_path):
    cfg = PPOConfig(total_timesteps=4096)
    run = tmp_path / "r"
    train_runs(cfg, [HParams()], [0], run_dir=run, progress_chunks=8, stop_after_chunks=5)
    res = train_runs(cfg, [HParams()], [0], run_dir=run, progress_chunks=8, resume=True)
    assert res.start_update == 5 and res.env_steps == 4096
    assert res.env_steps_this_process == 3 * cfg.batch_size
    assert res.steps_per_second == pytest.approx(3 * cfg.batch_size / res.run_s)
    assert "resumed at update 5: 1,536 env steps per run in this run" in summary_lines(res)


def test_time_based_checkpoints(tmp_path):
    run = tmp_path / "r"
    train_runs(PPOConfig(total_timesteps=4096), [HParams()], [0], run_dir=run,
               progress_chunks=8, checkpoint_every_s=1e-9)  # due after every chunk
    assert StateCheckpoints(run).intact_steps() == [8, 7]  # the newest two verified


def test_atomic_writes_get_the_umask_mode_not_the_temporary_files(tmp_path):
    import os
    import stat

    from ppox.host.configfile import atomic_write_text

    old = os.umask(0o027)
    try:
        atomic_write_text(tmp_path / "a.toml", "x = 1\n")
    finally:
        os.umask(old)
    assert (tmp_path / "a.toml").read_text() == "x = 1\n"
    assert stat.S_IMODE((tmp_path / "a.toml").stat().st_mode) == 0o640  # 0666 & ~0027
    assert [p.name for p in tmp_path.iterdir()] == ["a.toml"]  # no temporary file left
