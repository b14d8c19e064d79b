"""Metric back-ends: JSONL, CSV, TensorBoard and W&B hold the same values; non-finite values
stay distinguishable from missing ones; resuming truncates and continues every file."""

from __future__ import annotations

import csv
import json
import math
import sys

import numpy as np
import pytest

from ppox.config import ConfigError
from ppox.host.loggers import (
    CsvLogger,
    JsonlLogger,
    LoggerOptions,
    TensorBoardLogger,
    check_options,
    close_all,
    open_loggers,
    write_all,
)
from ppox.host.metrics import (
    decode_float,
    encode_float,
    episode_means,
    final_return,
    load_history,
    load_metrics,
    read_rows,
    truncate_metrics,
)

RUNS = ["seed0", "seed1"]
BATCH = 64


def chunk(n: int, offset: int = 0) -> dict[str, np.ndarray]:
    """Two runs' metrics for ``n`` updates: run 0 finishes no episode in its first update;
    run 1's loss is NaN in one update and +inf in another."""
    rng = np.random.default_rng(offset)
    count = rng.integers(0, 3, (2, n)).astype(np.float32)
    count[0, 0] = 0.0
    count[1, :] = np.maximum(count[1, :], 1)
    ret = np.where(count > 0, count * rng.uniform(5, 50, (2, n)), 0).astype(np.float32)
    loss = rng.normal(size=(2, n)).astype(np.float32)
    loss[1, 0] = np.nan
    if n > 1:
        loss[1, 1] = np.inf
    return {"episode_return_sum": ret, "episode_length_sum": 3 * ret, "episode_count": count,
            "loss": loss, "approx_kl": np.abs(loss) * 1e-3}


def test_encoding_tells_nonfinite_from_missing():
    assert [encode_float(x) for x in (1.5, math.nan, math.inf, -math.inf)] == [
        1.5, "nan", "inf", "-inf"]
    assert [decode_float(v) for v in (1.5, "inf", "-inf")] == [1.5, math.inf, -math.inf]
    assert all(math.isnan(decode_float(v)) for v in ("nan", None, ""))


def test_jsonl_and_csv_hold_the_same_values(tmp_path):
    js, cs = JsonlLogger(tmp_path / "m.jsonl", BATCH), CsvLogger(tmp_path / "m.csv", BATCH)
    first, second = chunk(3, 0), chunk(2, 1)
    for logger in (js, cs):
        logger.write(0, first, RUNS, 1.25)
        logger.write(3, second, RUNS, 2.5)
        logger.close()
    raw = [json.loads(line) for line in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert len(raw) == 2 * 5
    r0u1 = next(r for r in raw if r["run"] == "seed0" and r["update"] == 1)
    assert r0u1["episode_return"] is None  # no episode ended: missing, not NaN
    r1u1 = next(r for r in raw if r["run"] == "seed1" and r["update"] == 1)
    assert r1u1["loss"] == "nan" and r1u1["env_steps"] == BATCH and r1u1["wall_s"] == 1.25
    r1u2 = next(r for r in raw if r["run"] == "seed1" and r["update"] == 2)
    assert r1u2["loss"] == "inf"
    with (tmp_path / "m.csv").open(newline="") as f:
        cells = list(csv.DictReader(f))
    assert [c["run"] for c in cells] == [r["run"] for r in raw]
    assert cells[0]["episode_return"] == ""
    assert next(c for c in cells if c["run"] == "seed1" and c["update"] == "1")["loss"] == "nan"
    # decoded, both files are the same table, and equal to the arrays written
    rows_j, rows_c = read_rows(tmp_path / "m.jsonl"), read_rows(tmp_path / "m.csv")
    assert list(rows_j[0]) == list(rows_c[0])
    for a, b in zip(rows_j, rows_c, strict=True):
        for k in a:
            assert a[k] == b[k] or (np.isnan(a[k]) and np.isnan(b[k])), k
    names, cols = load_metrics(tmp_path / "m.csv")
    assert names == RUNS
    whole = {k: np.concatenate([first[k], second[k]], axis=1) for k in first}
    for k, v in whole.items():
        np.testing.assert_array_equal(cols[k].astype(np.float32), v)
    np.testing.assert_array_equal(cols["episode_return"], episode_means(whole))
    np.testing.assert_array_equal(cols["env_steps"][0], BATCH * np.arange(1, 6))
    np.testing.assert_array_equal(cols["wall_s"][1], [1.25] * 3 + [2.5] * 2)
    hist = load_history(tmp_path / "m.jsonl", RUNS, 5)[0]
    assert set(hist) == set(whole)
    np.testing.assert_array_equal(final_return(hist), final_return(whole))


def test_tensorboard_scalars_equal_the_jsonl(tmp_path):
    event_accumulator = pytest.importorskip(
        "tensorboard.backend.event_processing.event_accumulator")
    config = {"env": "CartPole-v1", "seed": 0, "config": {"num_envs": 4},
              "hparams": {"learning_rate": 2.5e-4}}
    loggers = [JsonlLogger(tmp_path / "m.jsonl", BATCH),
               TensorBoardLogger(tmp_path / "tb", BATCH, config)]
    write_all(loggers, 0, chunk(3, 0), RUNS, 1.0)
    write_all(loggers, 3, chunk(2, 1), RUNS, 2.0)
    close_all(loggers)
    rows = read_rows(tmp_path / "m.jsonl")
    for name in RUNS:
        acc = event_accumulator.EventAccumulator(
            str(tmp_path / "tb" / name), size_guidance={"scalars": 0, "tensors": 0})
        acc.Reload()
        mine = [r for r in rows if r["run"] == name]
        expected_tags = {k for k in mine[0] if k not in ("run", "env_steps")}
        assert set(acc.Tags()["scalars"]) == expected_tags
        for tag in expected_tags:
            events = acc.Scalars(tag)
            want = [(r["env_steps"], r[tag]) for r in mine if not np.isnan(r[tag])
                    or tag != "episode_return"]
            assert [e.step for e in events] == [s for s, _ in want], tag
            np.testing.assert_array_equal(np.float32([e.value for e in events]),
                                          np.float32([v for _, v in want]), err_msg=tag)
        text = acc.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
        assert "learning_rate = 0.00025" in text and "CartPole-v1" in text


def test_resume_truncates_and_continues_the_clock(tmp_path):
    loggers = open_loggers(tmp_path, BATCH)
    write_all(loggers, 0, chunk(3, 0), RUNS, 4.0)
    write_all(loggers, 3, chunk(3, 1), RUNS, 8.0)
    close_all(loggers)
    # resumed from the checkpoint at update 3: rows 4..6 go, the clock goes on from 4.0 s
    loggers = open_loggers(tmp_path, BATCH, resume_update=3)
    redo = chunk(3, 2)
    write_all(loggers, 3, redo, RUNS, 1.5)
    close_all(loggers)
    for name in ("metrics.jsonl", "metrics.csv"):
        rows = read_rows(tmp_path / name)
        assert [r["update"] for r in rows] == [1, 2, 3] * 2 + [4, 5, 6] * 2, name
        assert [r["wall_s"] for r in rows] == [4.0] * 6 + [5.5] * 6, name
        assert (tmp_path / name).read_text().count("run,update") <= 1
        _, cols = load_metrics(tmp_path / name)
        np.testing.assert_array_equal(cols["loss"][:, 3:].astype(np.float32), redo["loss"])
    # a new run in the same directory starts afresh
    close_all(open_loggers(tmp_path, BATCH))
    assert read_rows(tmp_path / "metrics.jsonl") == []


def test_truncate_keeps_the_csv_header(tmp_path):
    logger = CsvLogger(tmp_path / "m.csv", BATCH)
    logger.write(0, chunk(4), RUNS, 1.0)
    logger.close()
    truncate_metrics(tmp_path / "m.csv", 0)
    assert (tmp_path / "m.csv").read_text().splitlines()[0].startswith("run,update,env_steps")
    assert read_rows(tmp_path / "m.csv") == []


def test_missing_wandb_is_one_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb raises ImportError
    with pytest.raises(ConfigError, match=r"pip install 'ppox\[wandb\]'"):
        check_options(LoggerOptions(wandb=True))


def test_wandb_offline_writes_a_run_directory(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DISABLE_GIT", "true")
    config = {"env": "CartPole-v1", "config": {"num_envs": 4}}
    loggers = open_loggers(tmp_path / "run", BATCH, config,
                           options=LoggerOptions(wandb=True, wandb_mode="offline"))
    write_all(loggers, 0, chunk(2), RUNS[:1], 1.0)
    close_all(loggers)
    runs = sorted((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    files = list(runs[0].glob("*.wandb"))
    assert files and files[0].stat().st_size > 0


def test_eval_return_is_missing_where_no_evaluation_ran(tmp_path):
    metrics = chunk(3)
    metrics["eval_return"] = np.array([[np.nan, np.nan, 20.0], [np.nan, np.nan, 30.5]],
                                      np.float32)
    loggers = open_loggers(tmp_path, BATCH)
    write_all(loggers, 0, metrics, RUNS, 1.0)
    close_all(loggers)
    raw = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["eval_return"] for r in raw] == [None, None, 20.0, None, None, 30.5]
    rows = read_rows(tmp_path / "metrics.csv")
    assert [r["eval_return"] for r in rows][2::3] == [20.0, 30.5]
    assert "eval_return" not in load_history(tmp_path / "metrics.jsonl", RUNS, 3)[0]
