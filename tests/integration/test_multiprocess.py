"""Several processes on one machine, JAX's distributed runtime over 127.0.0.1 (gloo on CPU):
2 processes x 1 device train CartPole data-parallel with identical parameters after every
chunk and equal 1 process x 2 devices; a batch of 2 runs split across the processes equals
the 2 runs alone; a killed process stops the other with one line and a non-zero exit;
mismatched settings and an unreachable coordinator are one clear error.

Run as a script, this file is the worker: ``python test_multiprocess.py MODE COORDINATOR
NUM_PROCESSES PROCESS_ID`` (``NUM_PROCESSES`` 1 and no coordinator: ``-``).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from ppox import HParams, PPOConfig, make_init, make_train_chunk
from ppox._platform import enable_compile_cache
from ppox.parallel import (
    Layout,
    batched_jit,
    data_parallel_jit,
    distributed,
    gather,
    local_view,
    process_rows,
    replicate,
    shard_devices,
    shard_local_batch,
    spans_processes,
)

CHUNKS, CHUNK_SIZE, SEEDS, LRS = 3, 2, (3, 4), (2.5e-4, 1e-3)
TIMEOUT_S = 15  # the runtime's start-up / heartbeat timeout in these tests
UNREACHABLE_S = 3  # how long a process without a coordinator waits for it


def _config(num_envs: int = 4):
    return PPOConfig(num_envs=num_envs, num_steps=32,
                     total_timesteps=num_envs * 32 * CHUNKS * CHUNK_SIZE, update_epochs=2,
                     num_minibatches=2, normalize_obs=True)  # statistics synced across all


def _keys(seeds) -> np.ndarray:
    return np.stack([np.asarray(jax.random.PRNGKey(s)) for s in seeds])


def _leaves(tree) -> list[list]:
    return [np.asarray(x).tolist() for x in jax.tree.leaves(tree)]


def _data_parallel(devices, chunks: int = CHUNKS) -> dict:
    """One run of seed SEEDS[0] over every device in ``devices``: the parameters after each
    chunk (this process's first device's copy) and whether every device's copy agrees."""
    cfg, n = _config(), len(devices)
    layout = Layout("data_parallel", n)
    init = data_parallel_jit(make_init(cfg, layout), n, 1, devices=devices)
    chunk = data_parallel_jit(make_train_chunk(cfg, CHUNK_SIZE, layout), n, 2,
                              donate_argnums=(0,), devices=devices)
    hp = replicate(HParams().as_arrays(), devices)
    steps = replicate(np.int32(CHUNK_SIZE), devices)
    state = init(shard_devices(_keys([SEEDS[0]] * n), n, devices), hp)
    params, in_sync, losses, wall = [], [], [], []
    for c in range(chunks):
        t = time.perf_counter()
        state, metrics = chunk(state, hp, steps)
        jax.block_until_ready(state)
        wall.append(time.perf_counter() - t)
        every = gather(state.params)  # [devices, ...] on every process
        in_sync.append(all(np.array_equal(x[0], x[d]) for x in jax.tree.leaves(every)
                           for d in range(n)))
        params.append(_leaves(jax.tree.map(lambda x: x[0], local_view(state.params))))
        losses.append(local_view(metrics)["loss"][0].tolist())
        print(f"chunk {c + 1} done", flush=True)
    obs = gather(state.env.obs if hasattr(state.env, "obs") else state.env)
    first_obs = np.asarray(jax.tree.leaves(obs)[0])
    return {"params": params, "in_sync": in_sync, "loss": losses, "wall_s": wall,
            "devices_differ": bool(not np.array_equal(first_obs[0], first_obs[-1]))}


def _seed_batch(devices) -> dict:
    """A batch of len(SEEDS) runs (own seed, own learning rate) split across ``devices``,
    each process building only its own rows of the inputs."""
    cfg, b = _config(), len(SEEDS)
    init = batched_jit(make_init(cfg), (0, 0), b, devices=devices)
    chunk = batched_jit(make_train_chunk(cfg, CHUNK_SIZE), (0, 0, None), b,
                        donate_argnums=(0,), devices=devices)
    rows = process_rows(b, devices)
    hps = [HParams(learning_rate=lr).as_arrays() for lr in LRS[rows]]
    hp = shard_local_batch(jax.tree.map(lambda *xs: np.stack(xs), *hps), b, devices)
    state = init(shard_local_batch(_keys(SEEDS[rows]), b, devices), hp)
    for _ in range(CHUNKS):
        state, metrics = chunk(state, hp, replicate(np.int32(CHUNK_SIZE), devices))
    return {"params": _leaves(gather(state.params)), "loss": gather(metrics)["loss"].tolist(),
            "rows": [rows.start, rows.stop]}


def _single_runs() -> dict:
    """Each run of the seed batch alone, on one device."""
    cfg = _config()
    init, chunk = jax.jit(make_init(cfg)), jax.jit(make_train_chunk(cfg, CHUNK_SIZE))
    params, losses = [], []
    for seed, lr in zip(SEEDS, LRS, strict=True):
        hp = HParams(learning_rate=lr)
        state = init(jax.random.PRNGKey(seed), hp)
        for _ in range(CHUNKS):
            state, metrics = chunk(state, hp, np.int32(CHUNK_SIZE))
        params.append(_leaves(state.params))
        losses.append(np.asarray(metrics["loss"]).tolist())
    # as the batch's layout: leaf-major, run axis first
    return {"params": [[p[i] for p in params] for i in range(len(params[0]))], "loss": losses}


def _bench(devices, updates: int = 10, repeats: int = 3) -> dict:
    """Steady-state env steps/s of data-parallel training over ``devices`` (16 envs in all,
    128 steps, 4 epochs x 4 minibatches: 16 gradient all-reduces per update), and the time
    of 16 all-reduces of a parameter-sized vector (one update's gradient traffic)."""
    n = len(devices)
    cfg = PPOConfig(num_envs=16, num_steps=128, total_timesteps=16 * 128 * updates,
                    update_epochs=4, num_minibatches=4)
    layout = Layout("data_parallel", n)
    init = data_parallel_jit(make_init(cfg, layout), n, 1, devices=devices)
    chunk = data_parallel_jit(make_train_chunk(cfg, updates, layout), n, 2,
                              donate_argnums=(0,), devices=devices)
    hp = replicate(HParams().as_arrays(), devices)
    steps = replicate(np.int32(updates), devices)
    state = init(shard_devices(_keys([0] * n), n, devices), hp)
    size = sum(x[0].size for x in jax.tree.leaves(local_view(state.params)))
    state, _ = chunk(state, hp, steps)  # warm-up
    jax.block_until_ready(state)
    walls = []
    for _ in range(repeats):
        t = time.perf_counter()
        state, _ = chunk(state, hp, steps)
        jax.block_until_ready(state)
        walls.append(time.perf_counter() - t)

    def reduce16(x):  # [1, size] per device
        return jax.lax.fori_loop(0, 16, lambda _, v: jax.lax.pmean(v, "data") * 1.0001, x)

    from jax.sharding import Mesh
    from jax.sharding import PartitionSpec as P

    mesh = Mesh(np.array(devices), ("data",))
    allreduce = jax.jit(jax.shard_map(reduce16, mesh=mesh, in_specs=P("data"),
                                      out_specs=P("data"), check_vma=False))
    vec = shard_devices(np.ones((n, size), np.float32), n, devices)
    jax.block_until_ready(allreduce(vec))
    reduce_s = []
    for _ in range(5):
        t = time.perf_counter()
        jax.block_until_ready(allreduce(vec))
        reduce_s.append(time.perf_counter() - t)
    best = min(walls)
    return {"steps_per_s": cfg.num_envs * cfg.num_steps * updates / best,
            "update_s": best / updates, "walls": walls, "params": int(size),
            "allreduce16_s": min(reduce_s), "allreduce16_all": reduce_s}


def _agree_bench(repeats: int = 50) -> dict:
    """Milliseconds (median, best) of the host-side collectives the chunk loop adds across
    processes: one agreement per chunk (``agreed_max`` of two integers) and one barrier per
    write (``run_on_writer`` of a no-op)."""
    for _ in range(5):
        distributed.agreed_max([0, 0])
        distributed.run_on_writer(lambda: None)
    agree, write = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        distributed.agreed_max([0, 1])
        agree.append(time.perf_counter() - t)
        t = time.perf_counter()
        distributed.run_on_writer(lambda: None)
        write.append(time.perf_counter() - t)
    return {name: [round(1e3 * float(np.median(v)), 2), round(1e3 * min(v), 2)]
            for name, v in (("agreed_max_ms", agree), ("run_on_writer_ms", write))}


def worker(mode: str, coordinator: str, num_processes: int, process_id: int) -> None:
    # the test's own compilation cache: on 2 shared cores compiles are most of the time
    enable_compile_cache()
    with distributed.exit_on_peer_failure():
        procs = distributed.initialize(None if coordinator == "-" else coordinator,
                                       num_processes, process_id,
                                       timeout_s=UNREACHABLE_S if mode == "alone" else TIMEOUT_S)
        print(f"process {procs.process_id} of {procs.num_processes}: "
              f"{procs.local_devices} of {procs.devices} devices", flush=True)
        settings = {"num_envs": _config(8 if mode == "mismatch" and process_id else 4)
                    .num_envs, "seeds": SEEDS}
        distributed.check_same_settings(settings)
        out: dict = {"process_id": procs.process_id, "writer": distributed.is_writer()}
        if mode in ("train", "kill"):
            out["dp"] = _data_parallel(jax.devices(), CHUNK_KILL if mode == "kill" else CHUNKS)
        if mode == "train":
            out["seeds"] = _seed_batch(jax.devices())
        if mode == "bench":
            out["bench"] = _bench(jax.devices())
        if mode == "agree":
            out["agree"] = _agree_bench()
        if mode == "reference":
            out["dp"] = _data_parallel(jax.local_devices())
            out["seeds"] = _single_runs()
        print(json.dumps(out), flush=True)


# --- the tests: each launches this file's worker in fresh processes -------------------------

SELF = Path(__file__).resolve()
CHUNK_KILL = 50  # the run the kill test interrupts is long enough to be mid-training


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_CACHE: list[str] = []  # this module's own compilation cache (a fresh directory)


@pytest.fixture(scope="module", autouse=True)
def _compile_cache(tmp_path_factory):
    _CACHE[:] = [str(tmp_path_factory.mktemp("xla-cache"))]


def _env(devices: int) -> dict[str, str]:
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
               JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1", PPOX_COMPILE_CACHE_DIR=_CACHE[0])
    env.pop("PPOX_COMPILE_CACHE", None)
    return env


class _Proc:
    """A worker process writing stdout and stderr to files (pipes left unread would block
    it, and its peers with it)."""

    def __init__(self, logs: Path, mode: str, coord: str, num_processes: int, pid: int,
                 devices: int) -> None:
        self.out, self.err = logs / f"{mode}{pid}.out", logs / f"{mode}{pid}.err"
        with self.out.open("w") as so, self.err.open("w") as se:
            self.popen = subprocess.Popen(
                [sys.executable, str(SELF), mode, coord, str(num_processes), str(pid)],
                env=_env(devices), stdout=so, stderr=se)

    def text(self) -> tuple[str, str]:
        return self.out.read_text(), self.err.read_text()

    def result(self) -> dict:
        out, err = self.text()
        assert self.popen.returncode == 0, err[-3000:]
        return json.loads(out.strip().splitlines()[-1])


def _launch(logs: Path, mode: str, num_processes: int, devices: int = 1,
            ids: tuple[int, ...] | None = None) -> list[_Proc]:
    coord = f"127.0.0.1:{_free_port()}" if num_processes > 1 else "-"
    return [_Proc(logs, mode, coord, num_processes, i, devices)
            for i in (ids if ids is not None else range(num_processes))]


def _finish(procs: list[_Proc], timeout: float) -> list[_Proc]:
    """Waits for every process, killing them all past ``timeout``."""
    deadline = time.monotonic() + timeout
    try:
        for p in procs:
            p.popen.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        pytest.fail(f"a process did not finish within {timeout} s: "
                    f"{[p.text()[1][-1500:] for p in procs]}")
    finally:
        for p in procs:
            if p.popen.poll() is None:
                p.popen.kill()
                p.popen.wait()
    return procs


def _close(a, b, rtol=1e-5, atol=1e-6) -> None:
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


@pytest.mark.slow
def test_two_processes_equal_one_process_with_two_devices(tmp_path):
    procs = _launch(tmp_path, "train", 2) + _launch(tmp_path, "reference", 1, devices=2)
    two = [p.result() for p in _finish(procs, 300)[:2]]
    ref = procs[2].result()
    assert [r["writer"] for r in two] == [True, False]
    # data parallelism: both processes hold the same parameters after every chunk, which
    # are one process's with 2 devices (the same seed, 4 envs in all, 2 per device)
    for c in range(CHUNKS):
        assert all(r["dp"]["in_sync"][c] for r in two)
        _close(two[0]["dp"]["params"][c], two[1]["dp"]["params"][c], rtol=0, atol=0)
        _close(two[0]["dp"]["params"][c], ref["dp"]["params"][c])
    assert two[0]["dp"]["devices_differ"] and ref["dp"]["devices_differ"]
    _close(two[0]["dp"]["loss"], ref["dp"]["loss"], rtol=1e-4, atol=1e-5)
    # a batch of 2 runs, one per process, equals each run alone
    assert [r["seeds"]["rows"] for r in two] == [[0, 1], [1, 2]]
    _close(two[0]["seeds"]["params"], two[1]["seeds"]["params"], rtol=0, atol=0)
    _close(two[0]["seeds"]["params"], ref["seeds"]["params"])
    _close(two[0]["seeds"]["loss"], ref["seeds"]["loss"], rtol=1e-4, atol=1e-5)
    assert not np.allclose(two[0]["seeds"]["loss"][0], two[0]["seeds"]["loss"][1])


def test_killed_process_stops_the_other_with_a_clear_error(tmp_path):
    started = time.monotonic()
    p0, p1 = _launch(tmp_path, "kill", 2)
    try:
        while "chunk 1 done" not in p1.text()[0]:  # process 1 is training: kill it mid-run
            assert p1.popen.poll() is None, p1.text()[1][-2000:]
            assert time.monotonic() - started < 70, "process 1 never finished a chunk"
            time.sleep(0.2)
        p1.popen.send_signal(signal.SIGKILL)
        _finish([p0], max(1.0, 85 - (time.monotonic() - started)))
    finally:
        _finish([p0, p1], 1)
    err = p0.text()[1]
    assert p0.popen.returncode == distributed.EXIT_PEER_FAILED, err[-2000:]
    assert "ppox: process 0 of 2: another process stopped or became unreachable" in err
    assert time.monotonic() - started < 90


def test_mismatched_settings_are_one_error_on_every_process(tmp_path):
    for p in _finish(_launch(tmp_path, "mismatch", 2), 80):
        err = p.text()[1]
        assert p.popen.returncode not in (0, None)
        assert "process 1 of 2 started with other settings than process 0 (num_envs: 4 vs 8)" \
            in err, err[-2000:]


def test_unreachable_coordinator_is_a_clear_error(tmp_path):
    started = time.monotonic()
    p, = _finish(_launch(tmp_path, "alone", 2, ids=(1,)), 80)  # no process 0
    err = p.text()[1]
    assert p.popen.returncode not in (0, None)
    assert "cannot reach the coordinator at 127.0.0.1" in err and \
        f"within {UNREACHABLE_S} s" in err, err[-2000:]
    assert time.monotonic() - started < 60


def test_one_process_helpers_and_bad_starts_in_process():
    """Without the runtime: the helpers are identities over this process's devices, and bad
    arguments are one error before anything connects."""
    devices = jax.local_devices()
    assert distributed.initialize() == distributed.Processes.current()
    assert distributed.is_writer() and not spans_processes(devices)
    assert process_rows(2 * len(devices), devices) == slice(0, 2 * len(devices))
    tree = {"a": np.arange(6.0).reshape(3, 2)}
    assert replicate(tree, devices) is tree
    assert np.array_equal(local_view(jax.numpy.asarray(tree["a"])), tree["a"])
    assert np.array_equal(gather(tree)["a"], tree["a"])
    distributed.check_same_settings({"num_envs": 4})  # one process: nothing to compare
    # the shared decisions and writes are the plain values and calls with one process
    assert distributed.broadcast({"a": [1, 2]}) == {"a": [1, 2]}
    assert distributed.agreed_max([3, 0]) == [3, 0]
    assert distributed.from_writer(lambda: "read") == "read"
    assert distributed.run_on_writer(lambda: 7) == 7
    with pytest.raises(OSError, match="disk full"):
        distributed.run_on_writer(lambda: (_ for _ in ()).throw(OSError("disk full")))

    class TwoArgs(Exception):  # unpicklable as is: another process gets its first line
        def __init__(self, message, info):
            super().__init__(message)

    import pickle

    again = pickle.loads(distributed._as_payload(TwoArgs("write failed\nmore", {})))
    assert type(again) is RuntimeError and str(again) == "write failed"
    same = pickle.loads(distributed._as_payload(distributed.DistributedError("refused")))
    assert type(same) is distributed.DistributedError and str(same) == "refused"
    assert distributed.settings_digest({"a": 1, "b": 2}) == \
        distributed.settings_digest({"b": 2, "a": 1})
    for args, message in [(("localhost", 2, 0), "is not HOST:PORT"),
                          (("127.0.0.1:1234", 2, None), "needs --num-processes P"),
                          (("127.0.0.1:1234", 2, 2), "must be in [0, num_processes)"),
                          ((None, 2, 1), "need --coordinator HOST:PORT"),
                          (("127.0.0.1:1234", 2, 1), "before JAX uses a device")]:
        with pytest.raises(distributed.DistributedError, match=re.escape(message)):
            distributed.initialize(*args)


if __name__ == "__main__":
    worker(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
