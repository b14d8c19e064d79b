"""Progress reporters: plain lines without a terminal, a rich bar on one, a compile status."""

from __future__ import annotations

import io
import time

import numpy as np
from rich.console import Console

from ppox.host.progress import (
    PlainProgress,
    RichProgress,
    compiling,
    format_duration,
    make_progress,
)


def info(done: int, ret: float = 21.5, **extra) -> dict:
    return {"updates_done": done, "num_updates": 10, "env_steps": done * 512, "runs": 1,
            "sps": 1024.0, "recent_return": np.array([ret]), **extra}


def test_no_tty_falls_back_to_one_plain_line_per_chunk():
    out = io.StringIO()  # isatty() is False, as for a CI log
    rep = make_progress("auto", out)
    assert isinstance(rep, PlainProgress)
    with compiling(rep):
        pass
    rep(info(5))
    rep(info(10, ret=np.nan, eval_return=np.array([40.0])))
    rep.close()
    lines = out.getvalue().splitlines()
    assert lines[0] == "compiling…" and lines[1].startswith("compiled in ")
    assert len(lines) == 4
    # 5 updates of 512 steps left at 1024 steps/s: 2.5 s
    assert "[     5/10 updates]" in lines[2] and "steps       2,560" in lines[2]
    assert "SPS      1,024" in lines[2] and "ETA 0:02" in lines[2]
    assert "SPS      1,024  return 21.50  elapsed " in lines[2]
    assert "return n/a  eval 40.00" in lines[3] and lines[3].endswith("ETA 0:00")


def test_terminal_gets_a_bar_with_steps_eta_and_return():
    buf = io.StringIO()
    rep = RichProgress(console=Console(file=buf, force_terminal=True, width=200))
    with compiling(rep):
        time.sleep(0.3)  # the status refreshes on its own while the compile blocks
    rep(info(5))
    rep(info(10, ret=30.0))
    rep.close()
    text = buf.getvalue()
    assert "compiling…" in text and "compiled in 0." in text
    for part in ("10/10", "5,120 steps", "1,024/s", "<ETA 0:00", "return 30.00"):
        assert part in text, part


def test_modes_and_durations():
    assert isinstance(make_progress("plain", io.StringIO()), PlainProgress)
    silent = make_progress("none", io.StringIO())
    with compiling(silent):
        silent(info(1))
    assert [format_duration(x) for x in (5, 65, 3725, np.nan)] == ["0:05", "1:05", "1:02:05",
                                                                    "?"]
    with compiling(print):  # a plain callable reporter has no compile status: no-op
        pass
