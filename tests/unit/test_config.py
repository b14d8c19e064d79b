"""Settings metadata: each field carries its help and allowed values, and everything that reads
settings (validate, config files, the command line) takes them from there."""

import dataclasses
import math
import typing

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ppox.cli.args import RunOptions, _flags, _int_or_text, resolve_train_args
from ppox.config import (
    META_KEY,
    ConfigError,
    FieldSpec,
    HParams,
    PPOConfig,
    check_value,
    coerce_value,
    config_from_dict,
    config_to_dict,
    field_specs,
    hparam_names,
    hparams_from_dict,
    option,
)
from ppox.host.configfile import read_run_file, run_file_dict, write_run_file


@pytest.mark.parametrize("cls", [PPOConfig, HParams, RunOptions])
def test_every_field_has_a_spec_with_help(cls):
    for f in dataclasses.fields(cls):
        spec = f.metadata[META_KEY]
        assert isinstance(spec, FieldSpec) and spec.help.strip(), f.name


def test_hparams_stay_a_pytree_of_their_values():
    hp = HParams()
    assert jax.tree.leaves(hp) == [getattr(hp, n) for n in hparam_names()]
    assert all(f.metadata["pytree_node"] for f in dataclasses.fields(HParams))
    batch = HParams(**{n: jnp.full((3,), float(getattr(hp, n))) for n in hparam_names()})
    doubled = jax.vmap(lambda h: h.learning_rate * 2.0)(batch)
    np.testing.assert_allclose(doubled, np.full(3, 2 * hp.learning_rate), rtol=1e-6)
    batch.validate()  # sweep arrays validate too
    with pytest.raises(ConfigError, match=r"^gamma=1\.5 is invalid: the discount must lie"):
        batch.replace(gamma=jnp.array([0.9, 1.5, 0.9])).validate()


def test_the_command_line_has_one_flag_per_field_with_its_help():
    flags = {f.name: f for f in _flags(PPOConfig(), HParams(), {}, ())}
    expected = ({f.name for f in dataclasses.fields(RunOptions)}
                | {n for n in field_specs(PPOConfig) if n != "env_id"} | set(hparam_names()))
    assert set(flags) == expected
    for cls in (PPOConfig, HParams):
        for name, spec in field_specs(cls).items():
            if name != "env_id":
                helps = [m.help for m in typing.get_args(flags[name].annotation)[1:]
                         if hasattr(m, "help")]
                assert helps == [spec.help], name


def _other_value(default: float) -> float:
    return default * 0.5 if default else -0.5


def test_every_hparam_is_a_flag_that_reaches_hparams():
    hp0, specs = HParams(), field_specs(HParams)
    for algo in typing.get_args(typing.get_type_hints(PPOConfig)["algo"]):
        names = [n for n in hparam_names() if not specs[n].algos or algo in specs[n].algos]
        argv = ["--algo", algo]
        for name in names:
            argv += [f"--{name.replace('_', '-')}", repr(_other_value(float(getattr(hp0, name))))]
        _, _, hp = resolve_train_args(argv)
        for name in names:
            assert getattr(hp, name) == _other_value(float(getattr(hp0, name))), (algo, name)
            assert isinstance(getattr(hp, name), float)


def test_every_switch_is_a_flag_both_ways():
    names = [n for n, t in typing.get_type_hints(PPOConfig).items() if t is bool]
    assert "anneal_lr" in names
    for name in names:
        flag = name.replace("_", "-")
        default = getattr(PPOConfig(), name)
        _, cfg, _ = resolve_train_args([f"--{flag}" if not default else f"--no-{flag}"])
        assert getattr(cfg, name) is (not default), name


def test_flag_values_are_converted_to_their_types():
    args, cfg, _ = resolve_train_args([
        "--actor-hidden", "32", "32", "--num-envs", "8", "--total-timesteps", "1e6",
        "--obs-clip", "5", "--seed", "3", "--num-envs=16", "--checkpoint-every", "2"])
    assert cfg.actor_hidden == (32, 32) and cfg.num_envs == 16
    assert cfg.total_timesteps == 1_000_000 and isinstance(cfg.total_timesteps, int)
    assert cfg.obs_clip == 5.0 and isinstance(cfg.obs_clip, float)
    assert (args.seed, args.checkpoint_every, args.num_seeds) == (3, 2, 1)


def test_brax_only_options_apply_to_brax_envs():
    _, cfg, _ = resolve_train_args(["--env", "brax/inverted_pendulum", "--backend",
                                    "generalized", "--episode-length", "500"])
    assert (cfg.backend, cfg.episode_length) == ("generalized", 500)
    with pytest.raises(ConfigError, match=r"^episode_length=5 applies to brax envs only"):
        PPOConfig(episode_length=5).validate()
    PPOConfig(env_id="brax/ant", episode_length=5).validate()


@pytest.mark.parametrize(("text", "value"), [
    ("12", 12), ("-3", -3), ("1_000", 1000), ("1e6", 1_000_000), ("2.5e3", 2500),
    ("2.5", "2.5"), ("1e-3", "1e-3"), ("abc", "abc"), ("1.25e1", "1.25e1")])
def test_integers_from_text(text, value):
    assert _int_or_text(text) == value


@pytest.mark.parametrize(("spec", "text"), [
    (FieldSpec(help="x", lo=0.0, lo_open=True), "> 0"),
    (FieldSpec(help="x", lo=0.0), ">= 0"),
    (FieldSpec(help="x", lo=0.0, hi=1.0), "in [0, 1]"),
    (FieldSpec(help="x", lo=0.0, hi=1.0, lo_open=True, hi_open=True), "in (0, 1)"),
    (FieldSpec(help="x", hi=5.0), "<= 5"),
    (FieldSpec(help="x", positive=True), ">= 1"),
    (FieldSpec(help="x"), "")])
def test_bounds_text(spec, text):
    assert spec.bounds_text() == text


def test_out_of_bounds_counts_nan_and_inf():
    spec = FieldSpec(help="x", lo=0.0, hi=1.0)
    bad = spec.out_of_bounds(np.array([0.0, 1.0, -0.1, 1.1, np.nan, np.inf]))
    assert bad.tolist() == [False, False, True, True, True, True]


@dataclasses.dataclass(frozen=True)
class _Demo:
    """A settings class as a new field would make it: every kind of option."""

    target: float | None = option(None, lo=0.0, lo_open=True, help="off when None",
                                  example=0.02)
    kind: typing.Literal["a", "b"] = option("a", help="a choice")
    count: int = option(3, positive=True, help="a count")
    flag: bool = option(False, help="a switch")


@pytest.mark.parametrize(("name", "value", "message"), [
    ("target", 0.0, "target=0.0 must be > 0; e.g. --target 0.02"),
    ("target", "x", "target='x' is not a number; e.g. --target 0.02"),
    ("kind", "c", "kind='c' is not one of 'a', 'b'; e.g. --kind a"),
    ("count", True, "count=True must be a positive integer; pass --count N with N >= 1"),
    ("count", 2.0, "count=2.0 must be a positive integer; pass --count N with N >= 1"),
    ("flag", 1, "flag=1 must be true or false; pass --flag or --no-flag")])
def test_check_value_messages(name, value, message):
    with pytest.raises(ConfigError) as info:
        check_value(_Demo, name, value)
    assert str(info.value) == message


def test_check_value_accepts_valid_values():
    for name, value in (("target", None), ("target", 0.01), ("kind", "b"), ("count", 1),
                        ("flag", True)):
        check_value(_Demo, name, value)


def test_coerce_value_converts_toml_values():
    assert coerce_value(PPOConfig, "actor_hidden", [32, 16]) == (32, 16)
    assert coerce_value(PPOConfig, "actor_hidden", 32) == (32,)  # one layer
    assert coerce_value(PPOConfig, "obs_clip", 5) == 5.0
    assert isinstance(coerce_value(HParams, "gamma", 1), float)
    assert coerce_value(_Demo, "target", 1) == 1.0
    for cls, name, value in ((PPOConfig, "num_envs", True), (PPOConfig, "anneal_lr", 1),
                             (HParams, "gamma", True), (HParams, "gamma", None),
                             (PPOConfig, "activation", ["tanh"])):
        with pytest.raises(ConfigError):
            coerce_value(cls, name, value)


def test_python_api_values_are_validated():
    for changes, start in (({"activation": "sigmoid"}, "activation='sigmoid' is not an "),
                           ({"anneal_lr": "yes"}, "anneal_lr='yes' must be true or false"),
                           ({"num_envs": 4.0}, "num_envs=4.0 must be a positive integer"),
                           ({"critic_hidden": ()}, "critic_hidden=() must be a non-empty"),
                           ({"grad_clip": "pernet"}, "grad_clip='pernet' is not a clip scope")):
        with pytest.raises(ConfigError) as info:
            PPOConfig(**changes).validate()
        assert str(info.value).startswith(start)
    with pytest.raises(ConfigError, match=r"^learning_rate='fast' is not a number"):
        HParams(learning_rate="fast").validate()


def test_from_dict_checks_and_converts():
    cfg = config_from_dict({"actor_hidden": [8], "num_envs": 8, "obs_clip": 3})
    assert (cfg.actor_hidden, cfg.num_envs, cfg.obs_clip) == ((8,), 8, 3.0)
    hp = hparams_from_dict({"learning_rate": 1})
    assert hp.learning_rate == 1.0 and isinstance(hp.learning_rate, float)
    with pytest.raises(ConfigError, match=r"^unknown config option 'num_envz'"):
        config_from_dict({"num_envz": 1})
    with pytest.raises(ConfigError, match=r"^anneal_lr='false' must be true or false"):
        config_from_dict({"anneal_lr": "false"})


def test_run_file_round_trip(tmp_path):
    cfg = PPOConfig(num_envs=8, actor_hidden=(32,), obs_clip=4.0)
    hp = HParams(gamma=0.9)
    path = tmp_path / "config.toml"
    write_run_file(path, cfg, hp, seed=3, num_seeds=2)
    file = read_run_file(path)
    assert (file.env, file.seed, file.num_seeds, file.layout) == ("CartPole-v1", 3, 2, "single")
    assert config_from_dict(file.config, PPOConfig()) == cfg
    assert hparams_from_dict(file.hparams) == hp.replace(gamma=0.9)


def test_run_file_leaves_none_options_out():
    # TOML has no null: an option that is off (None) is absent, and reads back as None
    cfg = PPOConfig()
    data = run_file_dict(cfg, HParams(), seed=0)
    assert all(v is not None for v in data["config"].values())
    assert set(data["config"]) == {k for k, v in config_to_dict(cfg).items()
                                   if v is not None} - {"env_id"}


def test_defaults_are_valid():
    PPOConfig().validate()
    HParams().validate()
    for cls in (PPOConfig, HParams, RunOptions):
        for f in dataclasses.fields(cls):
            spec = f.metadata[META_KEY]
            if isinstance(f.default, float) and not math.isnan(f.default):
                assert not spec.out_of_bounds(np.asarray(f.default)), f.name


def test_resume_compares_none_options(tmp_path):
    # an option that is off is absent from the run file; switching it on (or off) on a
    # resume is still a difference
    from ppox.host.configfile import run_file_differences

    optional = [f.name for f in dataclasses.fields(PPOConfig) if f.default is None]
    if not optional:
        pytest.skip("no PPOConfig option defaults to None")
    name = optional[0]
    spec = field_specs(PPOConfig)[name]
    value = spec.example if spec.example is not None else (
        spec.lo + 1.0 if spec.lo > -math.inf else 1.0)
    path = tmp_path / "config.toml"
    write_run_file(path, PPOConfig(), HParams(), seed=0)
    on = run_file_dict(PPOConfig().replace(**{name: value}), HParams(), seed=0)
    assert run_file_differences(path, on) == [f"{name}: {value!r} here, None in the run"]
    assert run_file_differences(path, run_file_dict(PPOConfig(), HParams(), seed=0)) == []


def test_an_algorithms_own_setting_is_refused_under_another(monkeypatch):
    # as if obs_clip and gamma were read by trpo only (FieldSpec.algos)
    import ppox.config as config

    specs = {PPOConfig: dict(field_specs(PPOConfig)), HParams: dict(field_specs(HParams))}
    specs[PPOConfig]["obs_clip"] = dataclasses.replace(specs[PPOConfig]["obs_clip"],
                                                       algos=("trpo",))
    specs[HParams]["gamma"] = dataclasses.replace(specs[HParams]["gamma"], algos=("trpo",))
    monkeypatch.setattr(config, "field_specs", lambda cls: specs.get(cls) or {})
    cfg = PPOConfig()
    config.check_applicable(cfg, HParams())  # defaults: nothing asked for
    with pytest.raises(ConfigError) as info:
        cfg.replace(obs_clip=5.0).validate()
    assert str(info.value) == (
        f"obs_clip=5.0 is read by algo trpo only and this run's algo is {cfg.algo!r}; drop "
        "--obs-clip (or obs_clip from the config file), or pass --algo trpo")
    with pytest.raises(ConfigError, match=r"^gamma=0\.9 is read by algo trpo only"):
        config.check_applicable(cfg, HParams(gamma=jnp.array([0.99, 0.9])))
    with pytest.raises(ConfigError, match=r"^gamma=0\.99 is read by algo trpo only"):
        config.check_applicable(cfg, HParams(), given={"gamma"})


def test_a_run_file_from_before_auto_reset_reads_as_fresh(tmp_path):
    # runs written before the option existed restarted episodes from fresh draws: resuming
    # one as it was is no difference, asking for first_state is
    import tomli_w

    from ppox.host.configfile import run_file_differences

    cfg = PPOConfig(env_id="brax/inverted_pendulum")
    old = run_file_dict(cfg, HParams(), seed=0)
    del old["config"]["auto_reset"]
    path = tmp_path / "config.toml"
    path.write_text(tomli_w.dumps(old))
    assert run_file_differences(path, run_file_dict(cfg, HParams(), seed=0)) == []
    other = run_file_dict(cfg.replace(auto_reset="first_state"), HParams(), seed=0)
    assert run_file_differences(path, other) == ["auto_reset: 'first_state' here, 'fresh' in "
                                                 "the run"]
