"""Bad input: one clear line on stderr, exit status 2, no traceback, nothing compiled, and no
run directory created or changed.

Each case gives the exact message (after ``error: ``), or a regex that must match all of it.
``{tmp}`` in a case stands for the test's temporary directory.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

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

BRAX_ONLY = "applies to brax envs only and CartPole-v1 is not one; drop --{0} (or {1} from " \
            "the config file)"

# (argv, the message after "error: ": a str must equal it, a compiled regex must match all)
CASES: list[tuple[list[str], str | re.Pattern]] = [
    # environments and policies
    (["train", "--env", "CartPol-v1"], re.compile(
        r"unknown environment 'CartPol-v1' \(did you mean 'CartPole-v1'\?\); valid ids: "
        r"CartPole-v1, Pendulum-v1, .*, brax/walker2d(, .*)?")),
    (["train", "--env", "MNISTBandit-bsuite"], "MNISTBandit-bsuite is not supported: it "
     "downloads MNIST at run time; choose another id (see `ppox envs`)"),
    (["train", "--env", "Pendulum-v1", "--policy", "categorical"],
     "policy='categorical' needs discrete actions but Pendulum-v1 has continuous actions; use "
     "--policy gaussian or tanh_gaussian (or auto)"),
    (["train", "--env", "CartPole-v1", "--policy", "tanh_gaussian"],
     "policy='tanh_gaussian' needs continuous actions but CartPole-v1 has discrete actions; "
     "use --policy categorical (or auto)"),
    (["train", "--policy", "beta"], "policy='beta' is not a policy kind; choose one of 'auto', "
     "'categorical', 'gaussian', 'tanh_gaussian'; e.g. --policy auto"),
    (["train", "--activation", "sigmoid"], "activation='sigmoid' is not an activation; choose "
     "one of 'tanh', 'relu', 'elu', 'silu', 'gelu'; e.g. --activation tanh"),
    (["train", "--grad-clip", "pernet"], "grad_clip='pernet' is not a clip scope; choose one "
     "of 'global', 'per_network'; e.g. --grad-clip global"),
    # options a gymnax env does not read: refused even at their default value
    (["train", "--backend", "mjx"], "backend='mjx' " + BRAX_ONLY.format("backend", "backend")),
    (["train", "--backend", "spring"],
     "backend='spring' " + BRAX_ONLY.format("backend", "backend")),
    (["train", "--episode-length", "500"],
     "episode_length=500 " + BRAX_ONLY.format("episode-length", "episode_length")),
    (["train", "--action-repeat", "2"],
     "action_repeat=2 " + BRAX_ONLY.format("action-repeat", "action_repeat")),
    (["train", "--env", "brax/inverted_pendulum", "--backend", "warp"],
     "backend='warp' is not a brax physics backend; choose one of 'spring', 'positional', "
     "'generalized', 'mjx'; e.g. --backend spring"),
    # an algorithm's own settings under another algorithm
    (["train", "--cg-iters", "20"], "cg_iters=20 is read by algo trpo only and this run's "
     "algo is 'ppo'; drop --cg-iters (or cg_iters from the config file), or pass --algo trpo"),
    (["train", "--algo", "trpo", "--kl-coef", "1.0"], "kl_coef=1.0 is read by algo ppo_kl "
     "only and this run's algo is 'trpo'; drop --kl-coef (or kl_coef from the config file), "
     "or pass --algo ppo_kl"),
    (["train", "--algo", "sarsa"], "algo='sarsa' is not an algorithm; choose one of 'ppo', "
     "'ppo_kl', 'trpo'; e.g. --algo ppo"),
    # counts
    (["train", "--num-envs", "0"],
     "num_envs=0 must be a positive integer; pass --num-envs N with N >= 1"),
    (["train", "--num-envs", "abc"],
     "num_envs='abc' must be a positive integer; pass --num-envs N with N >= 1"),
    (["train", "--num-envs", "2.5"],
     "num_envs='2.5' must be a positive integer; pass --num-envs N with N >= 1"),
    (["train", "--num-steps", "0"],
     "num_steps=0 must be a positive integer; pass --num-steps N with N >= 1"),
    (["train", "--update-epochs", "-2"],
     "update_epochs=-2 must be a positive integer; pass --update-epochs N with N >= 1"),
    (["train", "--num-eval-episodes", "0"], "num_eval_episodes=0 must be a positive integer; "
     "pass --num-eval-episodes N with N >= 1"),
    (["train", "--num-minibatches", "3"], "num_minibatches=3 does not divide the batch "
     "num_envs*num_steps=4*128=512; choose a divisor of 512, e.g. 2"),
    (["train", "--total-timesteps", "100"], "total_timesteps=100 is smaller than one rollout "
     "(num_envs*num_steps=512); raise --total-timesteps or lower --num-envs/--num-steps"),
    (["train", "--num-seeds", "0"],
     "num_seeds=0 must be a positive integer; pass --num-seeds N with N >= 1"),
    (["train", "--progress-chunks", "0"],
     "progress_chunks=0 must be a positive integer; pass --progress-chunks N with N >= 1"),
    (["train", "--checkpoint-every", "-1"], "checkpoint_every=-1 must be >= 0 (a checkpoint "
     "every N chunks; 0: only at the end); e.g. --checkpoint-every 0"),
    (["train", "--checkpoint-every", "often"],
     "checkpoint_every='often' must be an integer; e.g. --checkpoint-every 0"),
    (["train", "--profile-updates", "-1"],
     "--profile-updates -1 must be >= 0 (the updates to trace; 0: off)"),
    (["train", "--profile-dir", "{tmp}/prof"], "--profile-dir says where --profile-updates N "
     "writes its trace; add --profile-updates N"),
    (["train", "--seed", "zero"], "seed='zero' must be an integer; e.g. --seed 0"),
    (["train", "--seed", "-1"], "seed=-1 must lie in [0, 4294967295] (a JAX key keeps 32 "
     "bits of its seed: others repeat these); e.g. --seed 0"),
    (["train", "--seed", "4294967295", "--num-seeds", "2"], "seeds 4294967295..4294967296 go "
     "past 4294967295 (a JAX key keeps 32 bits of its seed); lower --seed"),
    # layer widths
    (["train", "--actor-hidden", "big"], "actor_hidden=['big'] must be a non-empty list of "
     "positive layer widths; e.g. --actor-hidden 64 64"),
    (["train", "--actor-hidden", "64", "0"], "actor_hidden=[64, 0] must be a non-empty list of "
     "positive layer widths; e.g. --actor-hidden 64 64"),
    (["train", "--critic-hidden"], "critic_hidden=[] must be a non-empty list of positive "
     "layer widths; e.g. --critic-hidden 64 64"),
    # floats and hyperparameters
    (["train", "--learning-rate", "0"],
     "learning_rate=0 is invalid: the learning rate must be > 0 (e.g. 2.5e-4)"),
    (["train", "--learning-rate", "-0.001"],
     "learning_rate=-0.001 is invalid: the learning rate must be > 0 (e.g. 2.5e-4)"),
    (["train", "--learning-rate", "fast"],
     "learning_rate='fast' is not a number; e.g. --learning-rate 0.00025"),
    (["train", "--gamma", "1.5"],
     "gamma=1.5 is invalid: the discount must lie in [0, 1] (e.g. 0.99)"),
    (["train", "--gamma", "nan"],
     "gamma=nan is invalid: the discount must lie in [0, 1] (e.g. 0.99)"),
    (["train", "--ent-coef", "-1"],
     "ent_coef=-1 is invalid: the entropy coefficient must be >= 0"),
    (["train", "--max-grad-norm", "0"],
     "max_grad_norm=0 is invalid: the gradient-norm bound must be > 0"),
    (["train", "--init-log-std", "10"],
     "init_log_std=10 is invalid: the initial log std must lie in [-20, 5]"),
    (["train", "--obs-clip", "0"], "obs_clip=0.0 must be > 0; e.g. --obs-clip 10"),
    # the shape of the command line
    (["train", "--anneal-lr", "yes"], "--anneal-lr takes no value (got 'yes'); pass "
     "--anneal-lr to turn it on or --no-anneal-lr to turn it off"),
    (["train", "--no-anneal-lr", "false"], "--no-anneal-lr takes no value (got 'false'); pass "
     "--anneal-lr to turn it on or --no-anneal-lr to turn it off"),
    (["train", "--anneal-lr=yes"], "--anneal-lr takes no value (got 'yes'); pass "
     "--anneal-lr to turn it on or --no-anneal-lr to turn it off"),
    (["train", "--num-envs="],
     "num_envs='' must be a positive integer; pass --num-envs N with N >= 1"),
    (["train", "--seed", "1.5"], "seed='1.5' must be an integer; e.g. --seed 0"),
    (["train", "-x"], "unknown option '-x'; `ppox train --help` lists the options"),
    (["train", "--config", "{tmp}"], "config file '{tmp}' is a directory; pass a .toml file"),
    (["train", "--num-envz", "8"], "unknown option '--num-envz' (did you mean --num-envs?); "
     "`ppox train --help` lists the options"),
    (["train", "fast"], "unexpected argument 'fast': every value follows its flag (e.g. "
     "--num-envs 8); `ppox train --help` lists the options"),
    (["train", "--num-envs"], "--num-envs needs a value (e.g. --num-envs 4)"),
    (["train", "--env"], "--env needs a value (e.g. --env CartPole-v1)"),
    (["train", "--config", "/nonexistent/x.toml"],
     "config file '/nonexistent/x.toml' does not exist; pass an existing .toml file"),
    (["eval", "/nonexistent-run"], "'/nonexistent-run' is not a ppox run directory (no "
     "config.toml); pass the --run-dir of a `ppox train` run"),
    # the other commands' own flags: one line too, not the parser's box
    (["eval", "{tmp}", "--episodes", "abc"],
     "--episodes 'abc': not a whole number; pass e.g. --episodes 16"),
    (["eval", "{tmp}", "--run_index=1.5"],
     "--run_index '1.5': not a whole number; pass e.g. --run_index 0"),
    (["eval"], "ppox eval needs RUN_DIR; `ppox eval --help` lists the arguments"),
    (["eval", "--episodes", "3"], "ppox eval needs RUN_DIR; `ppox eval --help` lists the "
     "arguments"),
    (["eval", "{tmp}", "--seed"], "--seed needs a value (e.g. --seed 0)"),
    (["eval", "{tmp}", "--html"], "--html needs a value (e.g. --html PATH)"),
    (["eval", "{tmp}", "{tmp}"], "unexpected argument '{tmp}'; `ppox eval --help` lists the "
     "arguments"),
    (["bench", "--num-envs", "4", "abc"],
     "--num-envs 'abc': not a whole number; pass e.g. --num-envs 4 64 256"),
    (["bench", "--parts", "env", "fast"], "--parts 'fast': not one of {trainer,env,rollout}"),
    (["bench", "--target-s", "soon"], "--target-s 'soon': not a number; pass e.g. --target-s 1.0"),
    (["plot", "{tmp}", "--band", "wide"], "--band 'wide': not one of {std,minmax,none}"),
    (["envs", "--detals"], "unknown option '--detals' (did you mean --details?); `ppox envs "
     "--help` lists the options"),
    # layouts
    (["train", "--split-networks", "--num-seeds", "2"],
     "--split-networks spreads one run across devices; use --num-seeds 1"),
    (["train", "--split-networks", "--data-parallel"], "--data-parallel and --split-networks "
     "are two ways to spread one run over devices; choose one (a config file's `layout` sets "
     "one: --no-data-parallel / --no-split-networks turns it off)"),
    # the tests run on one device (conftest): splitting needs two, and says how to get them
    (["train", "--split-networks", "--total-timesteps", "1024"],
     re.compile(r".*needs 2 local devices.*xla_force_host_platform_device_count=2.*")),
    # ppox sweep parses the same flags
    (["sweep", "--spec", "examples/sweep_cartpole.toml", "--split-networks"],
     "ppox sweep spreads its runs across the devices itself; drop --data-parallel / "
     "--split-networks (they spread one run)"),
    (["sweep", "--spec", "examples/sweep_cartpole.toml", "--top-k", "x"],
     "top_k='x' must be an integer; e.g. --top-k 5"),
    (["sweep", "--spec", "examples/sweep_cartpole.toml", "--activation", "sigmoid"],
     "activation='sigmoid' is not an activation; choose one of 'tanh', 'relu', 'elu', 'silu', "
     "'gelu'; e.g. --activation tanh"),
]

# [config] / [hparams] / top-level values of a config file; {path} is the file
FILE = "config file '{path}': "
FILE_CASES: list[tuple[str, str | re.Pattern]] = [
    ('[hparams]\nlearning_rate = "fast"\n',
     FILE + "[hparams] learning_rate='fast' is not a number; e.g. learning_rate = 0.00025"),
    ("[hparams]\ngamma = true\n",
     FILE + "[hparams] gamma=True is not a number; e.g. gamma = 0.99"),
    ("[hparams]\ngamma = 1.5\n",
     FILE + "[hparams] gamma=1.5 is invalid: the discount must lie in [0, 1] (e.g. 0.99)"),
    ("[hparams]\nlr = 4\n", re.compile(re.escape(FILE) + r"unknown \[hparams\] key 'lr'; "
                                       r"valid keys: learning_rate, clip_eps, .*")),
    ('[config]\nactor_hidden = "big"\n', FILE + "[config] actor_hidden='big' must be a "
     "non-empty list of positive layer widths; e.g. actor_hidden = [64, 64]"),
    ('[config]\nactivation = "sigmoid"\n', FILE + "[config] activation='sigmoid' is not an "
     "activation; choose one of 'tanh', 'relu', 'elu', 'silu', 'gelu'; e.g. activation = "
     '"tanh"'),
    ('[config]\nanneal_lr = "yes"\n', FILE + "[config] anneal_lr='yes' must be true or false; "
     "write anneal_lr = true or anneal_lr = false (no quotes)"),
    ('[config]\nanneal_lr = "false"\n', FILE + "[config] anneal_lr='false' must be true or "
     "false; write anneal_lr = true or anneal_lr = false (no quotes)"),
    ('[config]\nnum_envs = "8"\n', FILE + "[config] num_envs='8' must be a positive integer; "
     "write num_envs = N with N >= 1"),
    ("[config]\nnum_envs = 0\n", FILE + "[config] num_envs=0 must be a positive integer; "
     "write num_envs = N with N >= 1"),
    ("[config]\nobs_clip = -1\n", FILE + "[config] obs_clip=-1 must be > 0; e.g. obs_clip = 10"),
    ('[config]\nbackend = "mjx"\n', "backend='mjx' " + BRAX_ONLY.format("backend", "backend")),
    ("[hparams]\nkl_coef = 2.0\n", "kl_coef=2.0 is read by algo ppo_kl only and this run's "
     "algo is 'ppo'; drop --kl-coef (or kl_coef from the config file), or pass --algo ppo_kl"),
    ('[config]\nenv_id = "Acrobot-v1"\n', FILE + "[config] env_id: the environment is the "
     "top-level key env, e.g. env = 'Acrobot-v1' before any table"),
    ("[config]\nnum_envz = 4\n", re.compile(re.escape(FILE) + r"unknown \[config\] key "
                                           r"'num_envz'; valid keys: env_id, num_envs, .*")),
    ('seed = "zero"\n', FILE + "seed='zero' must be an integer; e.g. seed = 0"),
    ("seed = -2\n", FILE + "seed=-2 must lie in [0, 4294967295]; e.g. seed = 0"),
    ("num_seeds = 0\n", FILE + "num_seeds=0 must be a positive integer; write num_seeds = N "
     "with N >= 1"),
    ('layout = "sideways"\n', FILE + "layout='sideways' is not one of 'single', "
     "'data_parallel', 'split_networks'; e.g. layout = \"single\""),
    ("env = 3\n", FILE + 'env=3 must be a string; e.g. env = "CartPole-v1"'),
    ("config = 3\n", FILE + "config = 3 must be a table: a [config] line followed by name = "
     "value lines"),
    ("learning_rate = 1e-3\n", FILE + "unknown key 'learning_rate'; top-level keys are env, "
     "seed, num_seeds, layout, layout_devices, config, hparams (PPOConfig fields go under "
     "[config], hyperparameters under [hparams])"),
    ("[config\n", re.compile(re.escape("config file '{path}' is not valid TOML: ") +
                             r"Expected ']' .* \(at line 1, column 8\)")),
]


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def _argv(argv: list[str], tmp: Path) -> list[str]:
    """The case's argv writing into ``tmp`` (a run dir / sweep dir that must stay absent)."""
    argv = [a.replace("{tmp}", str(tmp)) for a in argv]
    if argv[0] == "train" and "--run-dir" not in argv:
        argv += ["--run-dir", str(tmp / "run")]
    if argv[0] == "sweep" and "--out" not in argv:
        argv += ["--out", str(tmp / "out")]
    return argv


def _assert_one_line(err: str, expected: str | re.Pattern) -> None:
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), lines[0]
    message = lines[0][len("error: "):]
    if isinstance(expected, re.Pattern):
        assert expected.fullmatch(message), message
    else:
        assert message == expected


def _check_case(argv: list[str], expected: str | re.Pattern, tmp: Path, capsys) -> None:
    before = _snapshot(tmp)
    COMPILES.clear()
    code = main(_argv(argv, tmp))
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    if isinstance(expected, str):
        expected = expected.replace("{tmp}", str(tmp))
    _assert_one_line(err, expected)
    assert "Traceback" not in out
    assert COMPILES == [], "bad input must be rejected before anything is compiled"
    assert not (tmp / "run").exists() and not (tmp / "out").exists()
    assert _snapshot(tmp) == before  # nothing written anywhere under tmp


def test_table_has_forty_cases():
    assert len(CASES) + len(FILE_CASES) >= 40


@pytest.mark.parametrize(("argv", "expected"), CASES, ids=lambda v: " ".join(v)
                         if isinstance(v, list) else None)
def test_bad_flag_is_one_line_before_any_compile(argv, expected, tmp_path, capsys):
    _check_case(argv, expected, tmp_path, capsys)


@pytest.mark.parametrize(("text", "expected"), FILE_CASES)
def test_bad_config_file_is_one_line_before_any_compile(text, expected, tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    if isinstance(expected, str):
        expected = expected.format(path=path)
    else:
        expected = re.compile(expected.pattern.replace(re.escape("{path}"),
                                                       re.escape(str(path))))
    _check_case(["train", "--config", str(path)], expected, tmp_path, capsys)


def test_bad_flag_leaves_an_existing_run_dir_unchanged(tmp_path, capsys):
    # a run dir as `ppox train` leaves it (only its config.toml is read before the compile)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.toml").write_text('env = "CartPole-v1"\nseed = 0\nnum_seeds = 1\n'
                                     '[config]\nnum_envs = 8\n[hparams]\ngamma = 0.9\n')
    (run / "metrics.jsonl").write_text('{"update": 1}\n')
    before = _snapshot(tmp_path)
    expected_for = {tuple(argv[1:]): expected for argv, expected in CASES}
    for argv in (["--activation", "sigmoid"], ["--anneal-lr", "yes"], ["--num-envs", "abc"],
                 ["--backend", "mjx"]):
        expected = expected_for[tuple(argv)]
        COMPILES.clear()
        code = main(["train", "--run-dir", str(run), "--resume", *argv])
        assert code == 2
        _assert_one_line(capsys.readouterr().err, expected)
        assert COMPILES == []
        assert _snapshot(tmp_path) == before


SUBPROCESS_CASES = [
    (["train", "--num-envs", "0"],
     "num_envs=0 must be a positive integer; pass --num-envs N with N >= 1"),
    (["train", "--anneal-lr", "yes"], "--anneal-lr takes no value (got 'yes'); pass "
     "--anneal-lr to turn it on or --no-anneal-lr to turn it off"),
    (["train", "--config", "{tmp}/bad.toml"], "config file '{tmp}/bad.toml': [config] "
     "activation='sigmoid' is not an activation; choose one of 'tanh', 'relu', 'elu', 'silu', "
     "'gelu'; e.g. activation = \"tanh\""),
]


@pytest.mark.parametrize(("argv", "expected"), SUBPROCESS_CASES)
def test_cli_process_exit_code_and_no_traceback(argv, expected, tmp_path):
    (tmp_path / "bad.toml").write_text('[config]\nactivation = "sigmoid"\n')
    before = _snapshot(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "ppox.cli", *_argv(argv, tmp_path)],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PPOX_CPU_DEVICES": "1"})
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr + proc.stdout
    assert proc.stderr.strip().splitlines() == [
        "error: " + expected.replace("{tmp}", str(tmp_path))]
    assert _snapshot(tmp_path) == before and not (tmp_path / "run").exists()


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


_CACHE_BOUND = ("is not a cache size: give the compilation cache's bound in MiB, a positive "
                "integer (default 4096), or -1 for no bound; PPOX_COMPILE_CACHE=0 turns the "
                "cache off")
_OWN_CHOICE = "; unset it for ppox's own choice"
ENV_CASES = [
    *[("PPOX_COMPILE_CACHE_MAX_MB", v, _CACHE_BOUND) for v in ("abc", "0", "-5", "1.5")],
    *[("PPOX_CPU_DEVICES", v, "is not a CPU device count: a whole number >= 1 (1: no per-core "
       "devices)" + _OWN_CHOICE) for v in ("abc", "0")],
    ("PPOX_CPU_VECTOR_WIDTH", "300", "is not a vector width in bits: 128, 256 or 512 (0: "
     "XLA's choice)" + _OWN_CHOICE),
    ("PPOX_CPU_THREADS", "two", "is not a thread setting: 1 (one XLA CPU thread for any run) "
     "or 0 (XLA's pool)" + _OWN_CHOICE),
]


@pytest.mark.parametrize(("name", "value", "why"), ENV_CASES)
def test_bad_setting_in_the_environment_is_one_line_before_anything(name, value, why, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "ppox.cli", "train", "--run-dir",
                           str(tmp_path / "run")], capture_output=True, text=True, timeout=120,
                          env={**os.environ, name: value,
                               "PPOX_COMPILE_CACHE_DIR": str(tmp_path / "cache")})
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: {name}={value!r} {why}"]
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()
