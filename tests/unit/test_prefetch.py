"""The end-of-run imports that ``ppox train`` starts in a thread."""

import importlib
import sys
import threading

import pytest

from ppox.host.prefetch import TRAIN_TAIL_MODULES, prefetch_imports


def test_the_thread_imports_each_module_once(tmp_path, monkeypatch):
    (tmp_path / "ppox_prefetch_probe.py").write_text(
        "import builtins\nbuiltins.PPOX_PROBE_RUNS = getattr(builtins, 'PPOX_PROBE_RUNS', 0) + 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "ppox_prefetch_probe", raising=False)
    import builtins

    monkeypatch.setattr(builtins, "PPOX_PROBE_RUNS", 0, raising=False)
    thread = prefetch_imports(["ppox_prefetch_probe"])
    assert not thread.daemon  # the interpreter waits for it rather than stopping it mid-import
    thread.join(timeout=30)
    assert not thread.is_alive() and "ppox_prefetch_probe" in sys.modules
    importlib.import_module("ppox_prefetch_probe")  # the main thread's import: the same module
    assert builtins.PPOX_PROBE_RUNS == 1


def test_a_failed_import_is_left_to_the_real_one(monkeypatch):
    seen = []
    monkeypatch.setattr(threading, "excepthook", seen.append)
    thread = prefetch_imports(["ppox_no_such_module_here", "json"])
    thread.join(timeout=30)
    assert seen == [] and "json" in sys.modules  # the next name was still imported
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("ppox_no_such_module_here")


def test_nothing_starts_when_every_module_is_imported():
    assert prefetch_imports(["json", "sys"]) is None


def test_train_prefetches_its_learning_curve_and_a_run_dir_its_checkpoints(
        tmp_path, passes_in_a_process):
    # ppox train asks for the learning curve's module; a run dir adds orbax's
    assert TRAIN_TAIL_MODULES == ("ppox.host.plots",)
    code = (
        "import sys, threading\n"
        "from ppox import HParams, PPOConfig\n"
        "from ppox.host import prefetch\n"
        "from ppox.host.run import train_runs\n"
        "started = []\n"
        "real = prefetch.prefetch_imports\n"
        "def spy(modules):\n"
        "    started.append(('orbax.checkpoint' in sys.modules, tuple(modules)))\n"
        "    return real(modules)\n"
        "import ppox.host.loop as loop\n"
        "loop.prefetch_imports = spy\n"
        "cfg = PPOConfig(env_id='CartPole-v1', total_timesteps=1024)\n"
        f"train_runs(cfg, [HParams()], [0], run_dir={str(tmp_path / 'run')!r},\n"
        "           prefetch=prefetch.TRAIN_TAIL_MODULES)\n"
        "assert started == [(False, ('orbax.checkpoint', 'ppox.host.plots'))], started\n"
        "assert 'ppox.host.plots' in sys.modules and 'orbax.checkpoint' in sys.modules\n"
        "print('ok')\n")
    passes_in_a_process(code)
