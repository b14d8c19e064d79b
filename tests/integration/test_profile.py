"""``--profile-updates N``: a ``jax.profiler`` trace of N updates, with the run's numbers
unchanged (ppox.host.profiling)."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from ppox import HParams, PPOConfig
from ppox.config import ConfigError
from ppox.host.profiling import _self_times, kernel_table, trace_events
from ppox.host.run import train_runs

SMALL = PPOConfig(num_envs=4, num_steps=32, total_timesteps=4 * 32 * 8, update_epochs=2,
                  num_minibatches=2)


def test_profiled_run_traces_the_updates_after_the_first_chunk_and_changes_nothing(tmp_path):
    hp = [HParams()]
    plain = train_runs(SMALL, hp, [3], run_dir=tmp_path / "plain", chunk_size=3)
    traced = train_runs(SMALL, hp, [3], run_dir=tmp_path / "traced", chunk_size=3,
                        profile_updates=2)
    # the same numbers: the traced call is the same program over 2 of the chunk's updates
    for a, b in zip(jax.tree.leaves(plain.state.params), jax.tree.leaves(traced.state.params),
                    strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
    for k in ("loss", "episode_return_sum", "episode_count"):
        np.testing.assert_allclose(traced.metrics[k], plain.metrics[k], rtol=1e-5, atol=1e-6)
    rows = [json.loads(x) for x in
            (tmp_path / "traced" / "metrics.jsonl").read_text().splitlines()]
    assert [r["update"] for r in rows] == list(range(1, SMALL.num_updates + 1))
    # updates 4-5: the 2 after the first chunk of 3
    info = traced.extra["profile"]
    assert (info["first_update"], info["last_update"]) == (4, 5)
    assert "profile" not in plain.extra
    summary = json.loads((tmp_path / "traced" / "summary.json").read_text())
    assert summary["profile"]["first_update"] == 4
    trace = tmp_path / "traced" / "profile" / "plugins" / "profile"
    (run,) = list(trace.iterdir())
    assert info["trace"] == str(run)
    assert list(run.glob("*.xplane.pb"))  # TensorBoard's profile plugin reads these
    names = {e.get("name", "") for e in trace_events(run)}
    # the program's own kernels were recorded, not just the host
    assert any("fusion" in n for n in names), sorted(names)[:40]
    # the kernel table: the rollout's kernels ran 2 updates x 32 steps times, the SGD
    # step's 2 updates x 2 epochs x 2 minibatches times
    table = kernel_table(run, top=10_000)
    counts = {r["count"] for r in table["rows"]}
    assert table["source"] == "cpu threads" and {64, 8} <= counts, sorted(counts)
    assert table["busy_us"] > 0 and abs(sum(r["share"] for r in table["rows"]) - 1) < 1e-9


def test_kernel_times_are_their_own_not_their_loops():
    events = [{"name": "while.1", "ph": "X", "pid": 1, "tid": 2, "ts": 0.0, "dur": 10.0},
              {"name": "a", "ph": "X", "pid": 1, "tid": 2, "ts": 1.0, "dur": 2.0},
              {"name": "cond.2", "ph": "X", "pid": 1, "tid": 2, "ts": 4.0, "dur": 2.0},
              {"name": "b", "ph": "X", "pid": 1, "tid": 2, "ts": 4.5, "dur": 0.5},
              {"name": "c", "ph": "X", "pid": 1, "tid": 3, "ts": 4.0, "dur": 7.0}]
    own = {e["name"]: t for e, t in _self_times(events)}
    assert own == {"while.1": 6.0, "a": 2.0, "cond.2": 1.5, "b": 0.5, "c": 7.0}


def test_a_one_chunk_run_traces_its_first_updates_into_profile_dir(tmp_path):
    out = train_runs(SMALL, [HParams()], [0], chunk_size=SMALL.num_updates,
                     profile_updates=3, profile_dir=tmp_path / "prof")
    info = out.extra["profile"]
    assert (info["first_update"], info["last_update"]) == (1, 3)
    assert info["dir"] == str(tmp_path / "prof")
    assert list((tmp_path / "prof" / "plugins" / "profile").glob("*/perfetto_trace.json.gz"))
    assert out.metrics["loss"].shape[-1] == SMALL.num_updates


@pytest.mark.parametrize(("options", "message"), [
    ({"profile_updates": -1}, "profile_updates=-1 must be >= 0"),
    ({"profile_dir": "somewhere"}, "add --profile-updates N"),
    ({"profile_updates": 2}, "needs a directory for its trace"),
])
def test_bad_profile_options_are_refused_before_anything_runs(options, message, tmp_path):
    with pytest.raises(ConfigError, match=message):
        train_runs(SMALL, [HParams()], [0], **options)


def test_a_run_that_stops_inside_its_traced_call_ends_the_trace(tmp_path, monkeypatch):
    """An exception while the trace is on (here: the traced call's wait) ends the trace, so
    the next run can trace again; one before it starts leaves nothing to end."""
    from ppox.host import profiling

    real_stop = profiling.ProfileWindow.stop

    def failing_stop(self, state, first_update, n):
        raise KeyboardInterrupt

    monkeypatch.setattr(profiling.ProfileWindow, "stop", failing_stop)
    with pytest.raises(KeyboardInterrupt):
        train_runs(SMALL, [HParams()], [0], chunk_size=3, profile_updates=2,
                   profile_dir=tmp_path / "a")
    monkeypatch.setattr(profiling.ProfileWindow, "stop", real_stop)
    out = train_runs(SMALL, [HParams()], [0], chunk_size=3, profile_updates=2,
                     profile_dir=tmp_path / "b")  # starting a trace would fail if one were on
    assert (out.extra["profile"]["first_update"], out.extra["profile"]["last_update"]) == (4, 5)


def test_ppox_train_profile_updates_writes_run_dir_profile(tmp_path, capsys):
    from ppox.cli import main

    run = tmp_path / "run"
    assert main(["train", "--total-timesteps", "2048", "--num-envs", "4", "--num-steps", "64",
                 "--update-epochs", "1", "--num-minibatches", "2", "--progress-chunks", "4",
                 "--no-progress", "--profile-updates", "1", "--run-dir", str(run)]) == 0
    out = capsys.readouterr().out
    (line,) = [x for x in out.splitlines() if x.startswith("profile: ")]
    # 8 updates in chunks of 2: the one after the first chunk is traced
    assert line.startswith("profile: update 3 traced in ") and str(run / "profile") in line
    assert list((run / "profile" / "plugins" / "profile").glob("*/perfetto_trace.json.gz"))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["profile"]["last_update"] == 3


def test_each_of_several_processes_traces_into_its_own_directory(tmp_path, monkeypatch):
    from ppox.host import profiling

    assert profiling.ProfileWindow.build(0, tmp_path) is None
    assert profiling.ProfileWindow.build(2, tmp_path).directory == tmp_path
    monkeypatch.setattr(profiling.jax, "process_count", lambda: 2)
    monkeypatch.setattr(profiling.jax, "process_index", lambda: 1)
    window = profiling.ProfileWindow.build(2, tmp_path)
    assert window.directory == tmp_path / "process_1" and window.updates == 2


def test_a_trace_that_cannot_start_leaves_the_run_untraced_and_says_so(tmp_path):
    """Another profile already running (the caller's own): the run trains on, the same
    numbers, and its result and summary line say the trace was not started."""
    from ppox.host.profiling import profile_line

    plain = train_runs(SMALL, [HParams()], [1], chunk_size=3)
    jax.profiler.start_trace(str(tmp_path / "caller"))
    try:
        out = train_runs(SMALL, [HParams()], [1], chunk_size=3, profile_updates=2,
                         profile_dir=tmp_path / "ours")
    finally:
        jax.profiler.stop_trace()
    info = out.extra["profile"]
    assert info["error"].startswith("not started: ") and "first_update" not in info
    assert profile_line(info).startswith("profile: not started: ")
    for a, b in zip(jax.tree.leaves(plain.state.params), jax.tree.leaves(out.state.params),
                    strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
