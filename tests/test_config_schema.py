"""One typed schema for every config source (issue 16): `--set`, `--config` and config.toml read back
accept and refuse the same values with the same one-line messages; every section has its ranges."""

import math
import shutil

import pytest

from fuzzing import assert_nothing_lost, assert_one_line_error, cli, snapshot
from myllm.config import RunConfig, SampleConfig, apply_overrides, dump_config, load_run_config, resolve_config
from myllm.config.files import check_value
from myllm.errors import ConfigError


def test_every_import_path_of_the_post_training_sections_still_works():
    from myllm.config import DPOConfig, GRPOConfig, PostTrainConfig, SFTConfig, parse_targets, schema
    from myllm.config.post import SFTConfig as Moved

    assert schema.SFTConfig is SFTConfig is Moved and schema.parse_targets is parse_targets
    assert {schema.DPOConfig, schema.GRPOConfig, schema.PostTrainConfig} == {DPOConfig, GRPOConfig, PostTrainConfig}


def test_a_dumped_config_reads_back_exactly(tmp_path):
    cfg = resolve_config("quick", overrides=["train.compile=true", "sft.data=/x/y z.jsonl", "train.lr=1"])
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float) and cfg.train.compile == "true"
    path = tmp_path / "config.toml"
    path.write_text(dump_config(cfg))
    assert load_run_config(path) == cfg


@pytest.mark.parametrize("kind, value, fragment", [
    ("bool", "false", "true or false (unquoted), got str 'false'"),  # "false" is truthy: it must not pass
    ("bool", 1, "true or false"),
    ("int", 8.0, "an integer, e.g. 8, got float 8.0"),
    ("int", True, "an integer"),
    ("float", "0.5", "a float, e.g. 0.5, got str '0.5'"),
    ("float", math.nan, "a finite float"),
    ("float", -math.inf, "a finite float"),
    ("str", [1], "a string"),
    ("str", "\udcff", "not valid text"),
])
def test_check_value_refuses_with_the_source_key_and_expected_type(kind, value, fragment):
    with pytest.raises(ConfigError, match="^where: sec.key ") as e:
        check_value(kind, "sec.key", value, "where")
    assert fragment in str(e.value)


def test_check_value_converts_what_is_unambiguous():
    assert check_value("float", "k", 3, "o") == 3.0 and isinstance(check_value("float", "k", 3, "o"), float)
    assert check_value("str", "k", True, "o") == "true" and check_value("str", "k", 5, "o") == "5"
    assert check_value("int", "k", -2, "o") == -2 and check_value("bool", "k", False, "o") is False


def test_the_same_value_gets_the_same_message_from_each_source(tmp_path):
    """`--set`, a --config file and config.toml: one checker, one message but for the source's name."""
    messages = {}
    cfg = RunConfig()
    with pytest.raises(ConfigError) as e:
        apply_overrides(cfg, {"clean.redact_ip": "false"}, "--set")
    messages["--set"] = str(e.value)
    user = tmp_path / "user.toml"
    user.write_text('[clean]\nredact_ip = "false"\n')
    with pytest.raises(ConfigError) as e:
        resolve_config("default", user)
    messages[str(user)] = str(e.value)
    run = tmp_path / "config.toml"
    run.write_text(dump_config(RunConfig()).replace("redact_ip = true", 'redact_ip = "false"'))
    with pytest.raises(ConfigError) as e:
        load_run_config(run)
    messages[str(run)] = str(e.value)
    assert {m.replace(origin, "SOURCE") for origin, m in messages.items()} == {
        "SOURCE: clean.redact_ip must be true or false (unquoted), got str 'false'"}


def test_a_range_error_in_config_toml_names_the_file(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text(dump_config(RunConfig()).replace("top_p = 0.95", "top_p = 1.5"))
    with pytest.raises(ConfigError, match=r"config.toml: sample.top_p = 1.5 must be in \(0, 1\]"):
        load_run_config(path)


@pytest.mark.parametrize("key, value, fragment", [
    ("temperature", -0.1, "sample.temperature = -0.1 must be >= 0"),
    ("top_p", 0.0, "sample.top_p = 0.0 must be in (0, 1]"),
    ("top_k", -1, "sample.top_k = -1 must be >= 0"),
    ("max_new_tokens", 0, "sample.max_new_tokens = 0 must be at least 1"),
])
def test_sample_section_ranges(key, value, fragment):
    SampleConfig().validate()
    cfg = RunConfig()
    setattr(cfg.sample, key, value)
    with pytest.raises(ConfigError) as e:
        cfg.validate()
    assert fragment in str(e.value)


def test_a_nan_in_any_float_field_is_refused_even_when_built_in_code():
    cfg = RunConfig()
    cfg.grpo.kl_coef = math.nan  # `kl_coef < 0` is False for NaN: the range check alone let it through
    with pytest.raises(ConfigError, match="grpo.kl_coef = nan must be a finite number"):
        cfg.validate()


@pytest.mark.parametrize("flags, fragment", [
    (["--beams", "0"], "--beams must be from 1 (greedy) to 64"),
    (["--beams", "-3"], "--beams must be from 1 (greedy) to 64"),
    (["--top-p", "0"], "sample.top_p = 0.0 must be in (0, 1]"),
    (["--temperature", "-1"], "sample.temperature = -1.0 must be >= 0"),
    (["--top-k", "-2"], "sample.top_k = -2"),
    (["--max-new-tokens", "0"], "sample.max_new_tokens = 0"),
    (["--temperature", "nan"], "--temperature must be a finite number, got nan"),
    (["--top-p", "inf"], "--top-p must be a finite number, got inf"),
    (["--repetition-penalty", "0"], "--repetition-penalty must be a finite number > 0"),
    (["--presence-penalty", "inf"], "--presence-penalty must be from -2 to 2"),
    (["--stop", ""], "--stop needs some text"),
])
def test_generate_flags_are_refused_before_the_model_loads(tiny_run, flags, fragment, capsys):
    """tiny_run has no checkpoint: a flag checked after loading would fail with 'no trained model' instead."""
    rc, err = cli(["generate", "--run", tiny_run, "--prompt", "The cat", *flags], capsys)
    assert_one_line_error(rc, err, mentions=fragment)
    if flags[0] != "--beams":  # chat has the same sampling flags, checked as early
        rc, err = cli(["chat", "--run", tiny_run, *flags], capsys)
        assert_one_line_error(rc, err, mentions=fragment)


def test_a_bad_data_file_on_restart_keeps_the_stage_checkpoints(tiny_model_run, tmp_path, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_model_run, run_dir)
    good = tmp_path / "chats.jsonl"
    good.write_text('{"messages": [{"role": "user", "content": "the cat"}, {"role": "assistant", "content": "sat"}]}\n'
                    * 8)
    args = ["sft", "--run", run_dir, "--no-progress", "--set", "sft.batch_size=2", "--set", "sft.text_rows=0",
            "--max-steps", "2"]
    assert cli([*args, "--data", good], capsys)[0] == 0
    before = snapshot(run_dir)
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(good.read_bytes() + b'{"messages": [{"role": "user", "content": "caf\xe9"}]}\n')
    rc, err = cli([*args, "--restart", "--data", bad], capsys)
    assert_one_line_error(rc, err, mentions="bad.jsonl:9: not UTF-8 text")
    assert_nothing_lost(before, run_dir)
    assert (run_dir / "checkpoints" / "sft").is_dir()


def test_myllm_run_checks_post_training_data_before_any_stage(tmp_path, capsys):
    bad = tmp_path / "pairs.jsonl"
    bad.write_text('{"prompt": "hi", "chosen": "a"}\n')
    user = tmp_path / "user.toml"
    user.write_text(f'[dpo]\ndata = "{bad}"\n')
    out = tmp_path / "run"
    rc, err = cli(["run", "--out", out, "--config", user, "--set", "model.preset=nano"], capsys)
    assert_one_line_error(rc, err, mentions='pairs.jsonl:1: a preference pair needs "prompt", "chosen" and "rejected"')
    assert 'expected {"prompt"' in err
    assert not (out / "corpus").exists()
