"""Files of one run copied into another, damaged records read back, and out-of-range flags: each is one
line and exit status 2, with nothing in the run changed (issue 16, found by bench/bad_inputs.py)."""

import json
import shutil
from pathlib import Path

import pytest

from conftest import TINY, save_trained_like_checkpoint
from fuzzing import assert_nothing_lost, assert_one_line_error, cli, snapshot
from myllm.config import load_run_config
from myllm.io import Each, Need, check_shape
from myllm.run import prepare_run_dir, stage_corpus, stage_shards, stage_tokenizer


@pytest.fixture(scope="module")
def other_run(tiny_data, tmp_path_factory) -> Path:
    """Run B: the same documents, another vocabulary and context, and a pretrain checkpoint."""
    out = tmp_path_factory.mktemp("other") / "run"
    data = load_run_config(tiny_data / "config.toml").data.source
    cfg = prepare_run_dir(out, "default", None, [*TINY, "model.vocab_size=300", "model.context=32"], data, None)
    stage_corpus(out, cfg)
    stage_tokenizer(out, cfg)
    stage_shards(out, cfg)
    save_trained_like_checkpoint(out)
    return out


@pytest.fixture
def run_a(tiny_model_run, tmp_path) -> Path:
    out = tmp_path / "a"
    shutil.copytree(tiny_model_run, out)
    return out


def _swap(src: Path, dst: Path) -> None:
    shutil.rmtree(dst)
    shutil.copytree(src, dst)


COMMANDS = {"generate": ["generate", "--run", "{A}", "--prompt", "x", "--max-new-tokens", "2"],
            "export": ["export", "hf", "{A}", "--out", "{T}/hf"],
            "quantize": ["quantize", "{A}", "--bits", "8"],
            "eval": ["eval", "--run", "{A}"]}


@pytest.mark.parametrize("part", ["tokenizer", "shards", "checkpoints"])
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_part_of_another_run_is_refused(part, command, run_a, other_run, tmp_path, capsys):
    _swap(other_run / part, run_a / part)
    before = snapshot(run_a)
    argv = [a.replace("{A}", str(run_a)).replace("{T}", str(tmp_path)) for a in COMMANDS[command]]
    rc, err = cli(argv, capsys)
    assert_one_line_error(rc, err)
    assert "different run" in err, err
    assert_nothing_lost(before, run_a)
    assert not (tmp_path / "hf").exists()


def test_retraining_the_tokenizer_of_a_trained_run_to_another_size_is_refused(run_a, capsys):
    before = snapshot(run_a)
    rc, err = cli(["tokenizer", "--run", run_a, "--set", "model.vocab_size=300"], capsys)
    assert_one_line_error(rc, err, mentions="would no longer fit")
    assert_nothing_lost(before, run_a)


def test_pretraining_on_shards_of_another_tokenizer_is_refused(tiny_run, other_run, capsys):
    _swap(other_run / "shards", tiny_run / "shards")
    rc, err = cli(["pretrain", "--run", tiny_run, "--max-steps", "1"], capsys)
    assert_one_line_error(rc, err, mentions="another tokenizer")
    assert not (tiny_run / "checkpoints").exists()


@pytest.mark.parametrize("damage", [7, [], {"val_bpb": "low"}, {"samples": [{"prompt": 1}]},
                                    {"stages": {"base": 3}}, {"corpus": {"train": {"documents": "x"}}}])
def test_report_on_a_damaged_record_is_one_line(damage, run_a, capsys):
    summary = {"val_bpb": 1.0, "samples": [{"prompt": "a", "completion": "b"}]}
    (run_a / "summary.json").write_text(json.dumps(summary))
    target = run_a / "evals" / "sft.json"
    target.parent.mkdir()
    if isinstance(damage, dict) and not set(damage) & {"val_bpb"}:
        target, damage = run_a / "summary.json", {**summary, **damage}
    target.write_text(json.dumps(damage))
    rc, err = cli(["report", "--run", run_a], capsys)
    assert_one_line_error(rc, err, mentions=target.name)


def test_a_damaged_metrics_log_leaves_its_bad_lines_out_of_the_plots(run_a, capsys):
    (run_a / "summary.json").write_text(json.dumps({"val_bpb": 1.0}))
    lines = [{"step": 1, "loss": 5.0}, {"step": "x", "loss": 1}, [1, 2], {"step": 2, "loss": "nan"},
             {"step": 3, "loss": 4.0, "stage": ["list"]}]
    (run_a / "metrics.jsonl").write_text("\n".join(map(json.dumps, lines)) + '\n{"step": 4, "lo')
    rc, err = cli(["report", "--run", run_a], capsys)
    assert rc == 0, err
    assert (run_a / "plots" / "loss.png").is_file()


def test_check_shape_names_the_first_bad_key():
    shape = {"vocab_size": Need(int), "splits": Each({"tokens": Need(int)}), "samples": [{"prompt": str}]}
    assert check_shape({"vocab_size": 3, "splits": {"train": {"tokens": 2}}}, shape) is None
    assert check_shape({"vocab_size": 3, "splits": {"train": {"tokens": "2"}}}, shape) == "splits.train.tokens"
    assert check_shape({"splits": {}}, shape) == "vocab_size (missing)"
    assert check_shape({"vocab_size": 1, "samples": [{"prompt": "a"}, {"prompt": 2}]}, shape) == "samples[1].prompt"
    assert check_shape(7, shape) == "the top level"


BAD_FLAGS = [
    (["generate", "--run", "{A}", "--frequency-penalty", "1e300"], "from -2 to 2"),
    (["generate", "--run", "{A}", "--presence-penalty", "-3"], "from -2 to 2"),
    (["generate", "--run", "{A}", "--seed", str(2**64)], "64-bit integer"),
    (["dpo", "--run", "{A}", "--lora-rank", str(2**63)], "64-bit integer"),
    (["dpo", "--run", "{A}", "--lora-rank", "100000"], "exceeds model.d_model"),
    (["quantize", "{A}", "--bits", "4", "--group-size", "0"], "group_size"),
    (["plan", "--gpus", "-1", "--fit-time", "60"], "--gpus"),
    (["plan", "--tokens", "inf"], "--tokens"),
    (["plan", "--tokens", "1e400"], "--tokens"),
    (["plan", "--fit-time", "1e308"], "--fit-time"),
    (["plan", "--d-model", "1000000000001", "--heads", "7"], "too large"),
    (["plan", "--layers", str(10**30)], "too large"),
    (["data", "prepare", "--out", "{A}/tokenizer/new", "--set", "model.vocab_size=300"], "inside the run directory"),
    (["data", "prepare", "--out", "{A}", "--set", "model.vocab_size=300"], "has trained models"),
    (["pretrain", "--run", "{A}", "--restart", "--set", "train.lr=1e300"], "at most 10"),
    (["grpo", "--run", "{A}", "--lr", "1e39"], "at most 10"),
    (["grpo", "--run", "{A}", "--set", "grpo.clip_eps=1e300"], "clip_eps in (0, 10]"),
    (["data", "prepare", "--out", ""], "needs a path"),
    (["generate", "--run", " ", "--prompt", "x"], "needs a path"),
    (["serve", "{A}", "--api-key", ""], "--api-key"),
    (["serve", "{A}", "--request-timeout", "1e-300"], "--request-timeout"),
]


@pytest.mark.parametrize("argv,mentions", BAD_FLAGS, ids=[" ".join(a[:1] + a[-2:]) for a, _ in BAD_FLAGS])
def test_out_of_range_flags_are_one_line(argv, mentions, run_a, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # an empty --out must not write into the current folder
    before = snapshot(run_a)
    rc, err = cli([a.replace("{A}", str(run_a)) for a in argv], capsys)
    assert_one_line_error(rc, err, mentions=mentions)
    assert_nothing_lost(before, run_a)
    assert list(tmp_path.iterdir()) == [run_a]


def test_a_toml_integer_beyond_pythons_digit_limit_is_one_line(tmp_path, capsys):
    config = tmp_path / "big.toml"
    config.write_text("[train]\nseed = " + "9" * 4400 + "\n")
    rc, err = cli(["data", "prepare", "--out", tmp_path / "run", "--config", config], capsys)
    assert_one_line_error(rc, err, mentions="not valid TOML")
    assert not (tmp_path / "run").exists()


def test_post_data_through_a_symlink_loop_is_one_line(run_a, tmp_path, capsys):
    loop = tmp_path / "loop.jsonl"
    loop.symlink_to(loop)
    before = snapshot(run_a)
    rc, err = cli(["sft", "--run", run_a, "--data", loop], capsys)
    assert_one_line_error(rc, err, mentions="loop.jsonl")
    assert_nothing_lost(before, run_a)


def test_a_tokenizer_of_an_empty_train_split_is_refused(tiny_run, capsys):
    (tiny_run / "corpus" / "train.jsonl").write_text("")
    before = snapshot(tiny_run)
    rc, err = cli(["tokenizer", "--run", tiny_run, "--set", "data.tokenizer_train_mb=50"], capsys)
    assert_one_line_error(rc, err, mentions="train split is empty")
    assert_nothing_lost(before, tiny_run, may_change=("config.toml", "stages.json"))


@pytest.mark.parametrize("damage", [b'{"text": "cut sho', b"[1, 2]", b'{"text": 5}', b"\xff\xfe", b"[" * 5000])
def test_a_damaged_corpus_line_is_one_line_naming_it(damage, tiny_run, capsys):
    train = tiny_run / "corpus" / "train.jsonl"
    train.write_bytes(train.read_bytes() + damage + b"\n")
    before = snapshot(tiny_run)
    rc, err = cli(["tokenizer", "--run", tiny_run, "--set", "data.tokenizer_train_mb=50"], capsys)
    assert_one_line_error(rc, err, mentions="train.jsonl")
    assert_nothing_lost(before, tiny_run)


def test_plan_counts_parameters_without_building_every_layer():
    from myllm.config import ModelConfig
    from myllm.model import Transformer
    from myllm.plan import param_counts

    cfg = ModelConfig(vocab_size=300, d_model=32, n_layers=5, n_heads=4, n_kv_heads=2, d_ff=64, context=16)
    assert param_counts(cfg)["total"] == sum(p.numel() for p in Transformer(cfg).parameters())


def test_an_empty_run_config_is_one_line_not_all_defaults(run_a, capsys):
    (run_a / "config.toml").write_text("")
    before = snapshot(run_a)
    rc, err = cli(["data", "prepare", "--out", run_a], capsys)
    assert_one_line_error(rc, err, mentions="is empty")
    assert_nothing_lost(before, run_a)


def test_a_checkpoint_of_nan_weights_is_refused_at_load(run_a, capsys):
    import torch

    from myllm.model import Transformer
    from myllm.rundir import RunDir
    from myllm.train.checkpoint import save_checkpoint

    model = Transformer(RunDir(run_a).config().model)
    with torch.no_grad():
        model.norm.weight[0] = float("nan")
    save_checkpoint(run_a / "checkpoints" / "pretrain", 2, model, None, {"done": True}, keep_last=5)
    rc, err = cli(["generate", "--run", run_a, "--prompt", "x", "--max-new-tokens", "2"], capsys)
    assert_one_line_error(rc, err, mentions="NaN or inf")


def test_sampling_from_nan_logits_is_one_line():
    import torch

    from myllm.errors import MyLLMError
    from myllm.infer.engine import SamplingParams, next_token

    logits = torch.zeros(2, 5)
    assert next_token(logits, SamplingParams(temperature=1.0), None).shape == (2,)
    logits[1, 3] = float("nan")
    with pytest.raises(MyLLMError, match="NaN"):
        next_token(logits, SamplingParams(temperature=1.0), None)
