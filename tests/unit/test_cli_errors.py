"""Bad input: one clear line on stderr, exit status 2, no traceback, nothing compiled."""

import subprocess
import sys

import jax
import pytest

from ppox.cli import main

COMPILES: list[str] = []


def _listener(event: str, duration: float, **kwargs) -> None:
    # Building an env runs a few eager jnp ops (each a tiny jit of one primitive); what must
    # not happen is compiling a training program (init / chunk / train, vmapped or sharded).
    name = str(kwargs.get("fun_name", ""))
    if event.endswith("backend_compile_duration") and any(
            word in name for word in ("chunk", "train", "init", "vmap", "lambda", "shard")):
        COMPILES.append(name)


jax.monitoring.register_event_duration_secs_listener(_listener)

CASES = [
    (["train", "--env", "CartPol-v1"], "unknown environment 'CartPol-v1'", "CartPole-v1"),
    (["train", "--num-minibatches", "3"], "num_minibatches=3 does not divide the batch", "512"),
    (["train", "--learning-rate", "0"], "learning_rate=0 is invalid", "> 0"),
    (["train", "--learning-rate", "-0.001"], "learning_rate=-0.001 is invalid", "> 0"),
    (["train", "--num-envs", "0"], "num_envs=0 must be a positive integer", "--num-envs"),
    (["train", "--update-epochs", "-2"], "update_epochs=-2 must be a positive integer", ""),
    (["train", "--total-timesteps", "100"], "total_timesteps=100 is smaller than one rollout", ""),
    (["train", "--gamma", "1.5"], "gamma=1.5 is invalid", "[0, 1]"),
    (["train", "--env", "Pendulum-v1", "--policy", "categorical"],
     "policy='categorical' needs discrete actions but Pendulum-v1 has continuous", ""),
    (["train", "--env", "CartPole-v1", "--policy", "tanh_gaussian"],
     "policy='tanh_gaussian' needs continuous actions but CartPole-v1 has discrete", ""),
    (["train", "--config", "/nonexistent/x.toml"], "does not exist", ""),
    (["train", "--env", "MNISTBandit-bsuite"], "downloads MNIST", ""),
    (["eval", "/nonexistent-run"], "is not a ppox run directory", ""),
    (["train", "--split-networks", "--num-seeds", "2"],
     "--split-networks spreads one run across devices", "--num-seeds 1"),
    (["train", "--split-networks", "--data-parallel"], "choose one", ""),
    # the tests run on one device (conftest): splitting needs two, and says how to get them
    (["train", "--split-networks", "--total-timesteps", "1024"], "needs 2 local devices",
     "xla_force_host_platform_device_count=2"),
    (["sweep", "--spec", "examples/sweep_cartpole.toml", "--out", "/tmp/ppox-never",
      "--split-networks"], "ppox sweep spreads its runs across the devices itself", ""),
]


@pytest.mark.parametrize(("argv", "expected", "hint"), CASES)
def test_bad_input_is_one_line_before_any_compile(argv, expected, hint, capsys):
    COMPILES.clear()
    code = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    assert expected in lines[0]
    assert hint in lines[0]
    assert COMPILES == [], "bad input must be rejected before anything is compiled"


def test_unknown_config_keys(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("[config]\nnum_envz = 4\n")
    assert main(["train", "--config", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "unknown [config] key 'num_envz'" in err
    bad.write_text("[hparams]\nlr = 4\n")
    assert main(["train", "--config", str(bad)]) == 2
    assert "unknown [hparams] key 'lr'" in capsys.readouterr().err
    bad.write_text('layout = "sideways"\n')
    assert main(["train", "--config", str(bad)]) == 2
    assert "layout='sideways' is not one of 'single'" in capsys.readouterr().err


def test_cli_process_exit_code_and_no_traceback():
    proc = subprocess.run([sys.executable, "-m", "ppox.cli", "train", "--num-envs", "0"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr + proc.stdout
    assert proc.stderr.strip().splitlines() == [
        "error: num_envs=0 must be a positive integer; pass --num-envs N with N >= 1"]


def test_compile_listener_does_see_a_training_compile(tmp_path, capsys):
    # positive control for the check above: a valid run compiles the training program
    COMPILES.clear()
    assert main(["train", "--total-timesteps", "1024", "--run-dir", str(tmp_path / "r"),
                 "--quiet"]) == 0
    assert COMPILES, "the listener must see the training program being compiled"
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1].startswith("final return: ")


def test_resume_with_other_settings_is_refused_before_any_compile(tmp_path, capsys):
    # a run dir as `ppox train --num-envs 8` leaves it (its config.toml is all that is read
    # before the compile); resuming it with another num_envs or layout is one clear error
    run = tmp_path / "run"
    assert main(["train", "--num-envs", "8", "--total-timesteps", "2048", "--run-dir", str(run),
                 "--quiet"]) == 0
    stored = (run / "config.toml").read_text()
    capsys.readouterr()
    for argv, expected in (
            (["--num-envs", "4"], "num_envs: 4 here, 8 in the run"),
            (["--learning-rate", "1e-3"], "learning_rate: 0.001 here, 0.00025 in the run"),
            (["--data-parallel"], "layout: 'data_parallel' here, 'single' in the run")):
        COMPILES.clear()
        assert main(["train", "--run-dir", str(run), "--resume", *argv]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: cannot resume '{run}'"), lines
        assert expected in lines[0] and "start a new --run-dir" in lines[0]
        assert COMPILES == []
        assert (run / "config.toml").read_text() == stored  # the run's record is untouched
