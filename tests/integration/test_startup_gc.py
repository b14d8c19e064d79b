"""The ``ppox`` command starts with the cyclic garbage collector off (``ppox._startup_gc``):
no collection before its programs are compiled, the collector back on (what was alive then
frozen) for the training; a library import leaves the collector alone."""

import os
import subprocess
import sys

# Run in a fresh interpreter that looks like the command's process to ppox
# (``ppox._early_signals._is_cli``); prints when ``release`` runs, from which function and
# after how many collections since ppox was imported, then the collector's state after
# ``main`` (whether it was off after the import, is on, froze the start-up's objects, and
# whether a second release did anything).
PROBE = """
import gc
import sys

sys.argv[0] = "ppox"
collections = []
gc.callbacks.append(lambda phase, info: phase == "start" and collections.append(1))
import ppox  # noqa: F401
from ppox import _startup_gc

held, before = not gc.isenabled(), len(collections)
release = _startup_gc.release


def releasing():
    print("RELEASE", sys._getframe(1).f_code.co_name, len(collections) - before, flush=True)
    return release()


_startup_gc.release = releasing
from ppox.cli import main

assert main(sys.argv[1:]) == 0
print("AFTER", held, gc.isenabled(), gc.get_freeze_count() > 50_000, release())
"""


def _probe(args, tmp_path):
    env = dict(os.environ, PPOX_COMPILE_CACHE_DIR=str(tmp_path / "cache"))
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True,
                          text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return [x for x in proc.stdout.splitlines() if x.startswith(("RELEASE", "AFTER"))]


def test_train_collects_nothing_until_its_programs_are_compiled(tmp_path):
    lines = _probe(["train", "--total-timesteps", "2048", "--run-dir", str(tmp_path / "r"),
                    "--quiet"], tmp_path)
    # released once, by the chunk loop after the compile, with no collection before it;
    # afterwards the collector is on and a second release does nothing
    assert lines == ["RELEASE run 0", "AFTER True True True False"], lines


def test_other_commands_turn_the_collector_on_before_they_start(tmp_path):
    lines = _probe(["envs", "CartPole-v1"], tmp_path)
    assert lines == ["RELEASE _main 0", "AFTER True True True False"], lines


def test_a_library_import_leaves_the_collector_alone():
    code = ("import gc, ppox; from ppox import _startup_gc; "
            "print(gc.isenabled(), _startup_gc.release(), gc.get_freeze_count())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, check=True).stdout.split()
    assert out == ["True", "False", "0"], out
