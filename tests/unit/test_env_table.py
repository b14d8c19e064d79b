"""The config file's [env] table: a playground env's own options (as --env-config), read into
env_config, overridden key by key from the command line, written back into the run's
config.toml (so a resume keeps them), and refused in one line when wrong."""

import importlib.util
import tomllib

import jax
import pytest

from ppox.cli import main
from ppox.cli.args import resolve_train_args
from ppox.config import ConfigError, HParams, PPOConfig
from ppox.host.configfile import (
    read_run_file,
    run_file_dict,
    run_file_differences,
    write_run_file,
)

ENV = "playground/CartpoleSwingup"
TABLE = f'[env]\nid = "{ENV}"\nimpl = "jax"\nepisode_length = 500\nvision = false\n'


def _file(tmp_path, text: str):
    path = tmp_path / "run.toml"
    path.write_text(text)
    return path


def test_the_table_is_the_env_id_and_its_options(tmp_path):
    file = read_run_file(_file(tmp_path, TABLE + "[config]\nnum_envs = 8\n"))
    assert file.env == ENV
    assert file.config == {"env_config": "impl=jax,episode_length=500,vision=false",
                           "num_envs": 8}
    # nested tables are dotted keys; the id may come from the command line instead
    file = read_run_file(_file(tmp_path, "[env]\naction_repeat = 2\n[env.a]\nb = 0.5\n"))
    assert file.env is None and file.config == {"env_config": "action_repeat=2,a.b=0.5"}
    # a table with only the id is the env id
    assert read_run_file(_file(tmp_path, '[env]\nid = "CartPole-v1"\n')).env == "CartPole-v1"


@pytest.mark.parametrize(("text", "message"), [
    (TABLE + '[config]\nenv_config = "impl=jax"\n',
     "the env's options are given twice, as [config] env_config and as an [env] table; keep "
     "one (the [env] table)"),
    ('[env]\nid = "brax/ant"\nepisode_length = 500\n',
     "[env] options (episode_length) apply to playground envs only, not brax/ant; its "
     "settings are [config] fields"),
    ('[env]\nimpl = ["jax"]\n', "[env] impl = ['jax']: an env option is a number, true/false "
                                "or a word (no commas, '=' or spaces)"),
    ('[env]\nimpl = "jax,warp"\n', "[env] impl = 'jax,warp': an env option is a number"),
    (f'env = "{ENV}"\n[env]\nimpl = "jax"\n', "with an [env] table the env id is its key id, "
                                              'e.g. [env] then id = "playground/'),
])
def test_a_bad_table_is_one_error_naming_the_file(tmp_path, text, message):
    with pytest.raises(ConfigError) as err:
        read_run_file(_file(tmp_path, text))
    assert str(err.value).startswith(f"config file {str(tmp_path / 'run.toml')!r}")
    assert message in str(err.value) and "\n" not in str(err.value)


def test_the_command_line_overrides_the_files_keys(tmp_path):
    path = _file(tmp_path, TABLE)
    _, cfg, _ = resolve_train_args(["--config", str(path)])
    assert (cfg.env_id, cfg.env_config) == (ENV, "impl=jax,episode_length=500,vision=false")
    _, cfg, _ = resolve_train_args(["--config", str(path), "--env-config",
                                    "episode_length=200,action_repeat=2"])
    assert cfg.env_config == "impl=jax,episode_length=200,vision=false,action_repeat=2"


def test_the_run_file_writes_the_table_and_reads_it_back(tmp_path):
    cfg = PPOConfig(env_id=ENV, env_config="impl=jax,episode_length=500,a.b=0.5")
    path = tmp_path / "config.toml"
    write_run_file(path, cfg, HParams(), seed=0)
    stored = tomllib.loads(path.read_text())
    assert stored["env"] == {"id": ENV, "impl": "jax", "episode_length": 500, "a": {"b": 0.5}}
    assert "env_config" not in stored["config"]
    file = read_run_file(path)
    assert (file.env, file.config["env_config"]) == (ENV, cfg.env_config)
    # no options: the plain env id and an empty env_config, as before
    plain = run_file_dict(PPOConfig(env_id=ENV), HParams(), seed=0)
    assert plain["env"] == ENV and plain["config"]["env_config"] == ""


def test_resume_compares_the_options_whichever_way_the_run_wrote_them(tmp_path):
    cfg = PPOConfig(env_id=ENV, env_config="impl=jax,episode_length=500")
    new = tmp_path / "new.toml"
    write_run_file(new, cfg, HParams(), seed=0)
    old = tmp_path / "old.toml"  # a run dir written with env_config under [config]
    data = run_file_dict(cfg, HParams(), seed=0)
    data["env"], data["config"]["env_config"] = ENV, "episode_length=500,impl=jax"
    import tomli_w

    old.write_text(tomli_w.dumps(data))
    for path in (new, old):
        assert run_file_differences(path, run_file_dict(cfg, HParams(), seed=0)) == []
        other = cfg.replace(env_config="impl=jax,episode_length=200")
        assert run_file_differences(path, run_file_dict(other, HParams(), seed=0)) == [
            "env_config: 'episode_length=200,impl=jax' here, 'episode_length=500,impl=jax' "
            "in the run"]
        none = run_file_dict(cfg.replace(env_config=""), HParams(), seed=0)
        assert run_file_differences(path, none) == [
            "env_config: '' here, 'episode_length=500,impl=jax' in the run"]


COMPILES: list[str] = []
jax.monitoring.register_event_duration_secs_listener(
    lambda event, duration, **kw: COMPILES.append(str(kw.get("fun_name", "")))
    if event.endswith("backend_compile_duration") and any(
        w in str(kw.get("fun_name", "")) for w in ("chunk", "train", "init")) else None)


@pytest.mark.skipif(importlib.util.find_spec("mujoco_playground") is None,
                    reason="needs the playground extra: the env's own config names the keys")
def test_an_unknown_key_is_one_line_naming_it_and_the_valid_ones(tmp_path, capsys):
    path = _file(tmp_path, TABLE.replace("vision = false", "episode_lenght = 5"))
    COMPILES.clear()
    run = tmp_path / "run"
    assert main(["train", "--config", str(path), "--run-dir", str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(f"error: env_config key 'episode_lenght' is not in {ENV}'s "
                             "config; its keys: ")
    assert "episode_length" in err[0] and "impl" in err[0]
    assert COMPILES == [] and not run.exists()
