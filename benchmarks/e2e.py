"""End to end: ``ppox train`` (CartPole defaults) against PureJaxRL's script, whole processes.

Each round runs, one after another (never two at once), timed from start to exit:

* ``ppox cold``: ``ppox train --seed S`` with an empty compilation cache of its own
  (``PPOX_COMPILE_CACHE_DIR`` set to a new folder), so it compiles;
* ``ppox warm``: ``ppox train --seed S`` with a cache that one untimed ``ppox train --seed
  1000`` filled before the first round: a new seed is a traced value, so the program comes
  from the cache;
* ``purejaxrl``: PureJaxRL's ``purejaxrl/ppo.py`` (same config: CartPole-v1, 4 envs x 128
  steps, 500k steps, 4 x 4 minibatches; ``benchmarks/peers/run_purejaxrl.py`` says exactly
  what runs) in the rejax venv, which has the same jax 0.10.2. PureJaxRL is not on PyPI and
  its code is not kept here: ``--purejaxrl`` names a local clone (work tree or bare git
  directory); without one that row is skipped, saying so.

Reported: wall seconds per run, medians, and ppox / PureJaxRL both of medians and pair by
pair within a round; for ppox also its own split (compile and run from its last lines, the
rest start-up and exit).

    python benchmarks/e2e.py --purejaxrl ~/src/purejaxrl --rounds 3

Writes ``benchmarks/results/<machine>/e2e.json``, or ``--out PATH``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks._common import REPO_ROOT, argv_string, machine_info, results_dir, save_json
from benchmarks.harness.peers import extract_purejaxrl
from ppox.diagnostics import median

PEER_PYTHON = REPO_ROOT / ".venvs" / "peer-rejax" / "bin" / "python"
RUNNER = REPO_ROOT / "benchmarks" / "peers" / "run_purejaxrl.py"
_COMPILE = re.compile(r"compile ([0-9.]+) s(?: \(([^)]*)\))?, run ([0-9.]+) s")
_RETURN = re.compile(r"final return: ([-0-9.]+)")


def timed(cmd: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    """Runs ``cmd`` to its exit; the wall seconds and what it printed."""
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"error: {' '.join(cmd)} exited {proc.returncode}:\n"
                         f"{proc.stderr[-2000:]}")
    return {"wall_s": wall, "stdout": proc.stdout, "stderr": proc.stderr}


def ppox_run(run_dir: Path, seed: int, cache: Path) -> dict[str, Any]:
    ppox = str(Path(sys.executable).with_name("ppox"))
    env = {**os.environ, "PPOX_COMPILE_CACHE_DIR": str(cache)}
    out = timed([ppox, "train", "--seed", str(seed), "--run-dir", str(run_dir)], env)
    text = out["stdout"] + out["stderr"]
    match, ret = _COMPILE.search(text), _RETURN.search(text)
    if match is None or ret is None:
        raise SystemExit(f"error: ppox train printed no compile/return line:\n{text[-2000:]}")
    compile_s, run_s = float(match.group(1)), float(match.group(3))
    return {"wall_s": out["wall_s"], "compile_s": compile_s, "run_s": run_s,
            "cache": match.group(2) or "", "rest_s": out["wall_s"] - compile_s - run_s,
            "final_return": float(ret.group(1))}


def peer_run(script_dir: Path, seed: int) -> dict[str, Any]:
    out = timed([str(PEER_PYTHON), str(RUNNER), "--script-dir", str(script_dir),
                 "--seed", str(seed)])
    return {"wall_s": out["wall_s"], **json.loads(out["stdout"].strip().splitlines()[-1])}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--purejaxrl", type=Path, default=None,
                        help="a local clone of github.com/luchris429/purejaxrl (work tree or "
                             "bare git directory); without it the PureJaxRL row is skipped")
    parser.add_argument("--commit", default="HEAD", help="for a git directory (default HEAD)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON path (default: benchmarks/results/<machine>/e2e.json)")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error(f"--rounds {args.rounds}: must be >= 1")
    peer = args.purejaxrl is not None
    if peer and not PEER_PYTHON.exists():
        parser.error(f"--purejaxrl needs the rejax venv ({PEER_PYTHON} is missing); build it "
                     "with benchmarks/peers/build_venv.sh rejax")
    runs: dict[str, list[dict[str, Any]]] = {"ppox cold": [], "ppox warm": []}
    record: dict[str, Any] = {"command": argv_string(), "machine": machine_info()}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if peer:
            (root / "pjx").mkdir()
            record["purejaxrl_source"] = extract_purejaxrl(args.purejaxrl, args.commit,
                                                           root / "pjx")
            runs["purejaxrl"] = []
        else:
            print("purejaxrl: skipped (no --purejaxrl clone given)")
        warm_cache = root / "warm-cache"
        first = ppox_run(root / "fill", 1000, warm_cache)
        print(f"filled the warm cache: {first['wall_s']:.1f} s ({first['cache']})")
        for r in range(args.rounds):
            cold = ppox_run(root / f"cold{r}", r, root / f"cold-cache{r}")
            runs["ppox cold"].append(cold)
            warm = ppox_run(root / f"warm{r}", 100 + r, warm_cache)
            runs["ppox warm"].append(warm)
            line = (f"round {r + 1}/{args.rounds}: ppox cold {cold['wall_s']:.1f} s "
                    f"(compile {cold['compile_s']:.1f}), warm {warm['wall_s']:.1f} s "
                    f"(compile {warm['compile_s']:.1f}, {warm['cache']})")
            if peer:
                pjx = peer_run(root / "pjx", 30 + r)
                runs["purejaxrl"].append(pjx)
                line += f", purejaxrl {pjx['wall_s']:.1f} s"
            print(line, flush=True)
    summary: dict[str, Any] = {}
    for name, rows in runs.items():
        summary[name] = {"wall_s_median": median([x["wall_s"] for x in rows]),
                         "final_return": [x["final_return"] for x in rows]}
        if name.startswith("ppox"):
            for key in ("compile_s", "run_s", "rest_s"):
                summary[name][f"{key}_median"] = median([x[key] for x in rows])
    if peer:
        base = summary["purejaxrl"]["wall_s_median"]
        for name in ("ppox cold", "ppox warm"):
            summary[name]["vs_purejaxrl"] = summary[name]["wall_s_median"] / base
            summary[name]["vs_purejaxrl_per_round"] = [
                a["wall_s"] / b["wall_s"] for a, b in zip(runs[name], runs["purejaxrl"],
                                                          strict=True)]
    record.update(runs=runs, summary=summary)
    path = save_json(args.out or results_dir() / "e2e.json", record)
    print("\n| run | wall (median) | compile | run | start-up + exit | vs PureJaxRL | return |")
    print("|---|---|---|---|---|---|---|")
    for name, s in summary.items():
        split = (f"{s['compile_s_median']:.1f} s | {s['run_s_median']:.1f} s | "
                 f"{s['rest_s_median']:.1f} s" if "run_s_median" in s else "| |")
        vs = f"{s['vs_purejaxrl']:.2f}×" if "vs_purejaxrl" in s else ""
        print(f"| {name} | {s['wall_s_median']:.1f} s | {split} | {vs} | "
              f"{', '.join(f'{x:.0f}' for x in s['final_return'])} |")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
