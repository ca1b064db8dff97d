"""The run directory's owner: which checkpoint a command loads, what makes a stage stale, and
how a stages.json of an older format is met (one line, nothing re-run or deleted)."""

import json

import pytest

from myllm.config import RunConfig, apply_overrides, parse_overrides
from myllm.errors import MyLLMError
from myllm.records import StageRecords
from myllm.run import run
from myllm.rundir import MODEL_STAGES, POST_STAGES, STAGES, RunDir, fingerprints, resume_fingerprint


def fake_checkpoint(run_dir: RunDir, stage: str, step: int, done: bool) -> None:
    folder = run_dir.checkpoints(stage) / f"step-{step:06d}"
    folder.mkdir(parents=True)
    (folder / "state.json").write_text(json.dumps({"done": done, "step": step}))


def config(*overrides: str) -> RunConfig:
    cfg = RunConfig()
    apply_overrides(cfg, parse_overrides(list(overrides)), "--set")
    return cfg.validate()


def test_stage_table_names_every_stage_once_in_run_order():
    assert [s.name for s in STAGES] == ["corpus", "tokenizer", "shards", "pretrain", "evaluate", "sft", "dpo",
                                        "grpo", "export"]
    assert MODEL_STAGES == ("pretrain", "sft", "dpo", "grpo") and POST_STAGES == ("sft", "dpo", "grpo")


def test_model_checkpoint_rules(tmp_path):
    r = RunDir(tmp_path)
    with pytest.raises(MyLLMError, match="has no trained model"):
        r.model_checkpoint()
    fake_checkpoint(r, "pretrain", 5, done=False)
    with pytest.raises(MyLLMError, match="sft needs a pretrained model"):
        r.model_checkpoint(before="sft")
    assert r.model_checkpoint("pretrain", unfinished=True).name == "step-000005"  # chat with a model in training
    fake_checkpoint(r, "pretrain", 10, done=True)
    fake_checkpoint(r, "sft", 3, done=False)
    assert r.model_checkpoint().name == "step-000010"  # an unfinished sft is not the final model
    with pytest.raises(MyLLMError, match="no finished sft checkpoint"):
        r.model_checkpoint("sft")
    assert r.model_checkpoint("sft", unfinished=True).parent.name == "sft"
    fake_checkpoint(r, "sft", 6, done=True)
    assert r.model_checkpoint().parent.name == "sft"
    assert r.model_checkpoint(before="dpo").parent.name == "sft"
    assert r.model_checkpoint(before="grpo").parent.name == "sft"
    assert r.model_checkpoint(before="sft").parent.name == "pretrain"
    # a stage disabled in the config is passed over, whatever checkpoints it left
    assert r.model_checkpoint(before="dpo", cfg=config("sft.enabled=false")).parent.name == "pretrain"
    with pytest.raises(MyLLMError, match="not a stage"):
        r.model_checkpoint("export")


def test_fingerprints_change_for_what_changes_the_output_only(tmp_path):
    base = fingerprints(tmp_path, config())
    # speed and memory settings change nothing
    assert fingerprints(tmp_path, config("train.threads=1", "data.workers=1", "train.compile=true")) == base
    more = fingerprints(tmp_path, config("train.max_steps=5000"))  # pretrain and everything after it
    assert [s for s in base if base[s] != more[s]] == ["pretrain", "evaluate", "sft", "dpo", "grpo", "export"]
    dpo = fingerprints(tmp_path, config("dpo.lr=1e-4"))  # a post-training setting: it and the stages after it
    assert [s for s in base if base[s] != dpo[s]] == ["dpo", "grpo", "export"]
    # a different tokenizer re-runs everything from the tokenizer on
    vocab = fingerprints(tmp_path, config(f"model.vocab_size={RunConfig().model.vocab_size * 2}"))
    assert [s for s in base if base[s] == vocab[s]] == ["corpus"]


def test_pretraining_resumes_across_more_steps_but_not_another_recipe_or_data(tmp_path):
    r = RunDir(tmp_path)
    r.shards.mkdir()
    r.index_file().write_text('{"vocab_size": 300}')
    key = resume_fingerprint(r, config(), "pretrain")
    assert resume_fingerprint(r, config("train.max_steps=5000", "train.eval_every=7", "train.threads=1"),
                              "pretrain") == key
    assert resume_fingerprint(r, config("train.lr=1e-4"), "pretrain") != key
    r.index_file().write_text('{"vocab_size": 301}')  # other shards
    assert resume_fingerprint(r, config(), "pretrain") != key


def test_post_training_resumes_only_from_the_same_start_and_data(tmp_path):
    r = RunDir(tmp_path)
    fake_checkpoint(r, "pretrain", 10, done=True)
    fake_checkpoint(r, "sft", 4, done=True)
    data = tmp_path / "pairs.jsonl"
    data.write_text('{"prompt": "a"}\n')
    start = r.model_checkpoint(before="dpo")
    key = resume_fingerprint(r, config(), "dpo", start, data)
    assert resume_fingerprint(r, config("sample.seed=3", "train.keep_last=9"), "dpo", start, data) == key
    assert resume_fingerprint(r, config("dpo.lr=1e-4"), "dpo", start, data) != key
    assert resume_fingerprint(r, config(), "dpo", r.model_checkpoint("pretrain"), data) != key  # another start
    data.write_text('{"prompt": "b"}\n')
    assert resume_fingerprint(r, config(), "dpo", start, data) != key


def test_post_data_file_content_is_part_of_the_fingerprint(tmp_path):
    data = tmp_path / "chats.jsonl"
    data.write_text('{"messages": []}\n')
    cfg = config(f"sft.data={data}")
    before = fingerprints(tmp_path, cfg)
    data.write_text('{"messages": [1]}\n')
    after = fingerprints(tmp_path, cfg)
    assert before["pretrain"] == after["pretrain"] and before["sft"] != after["sft"]


def test_stages_json_of_an_older_format_stops_with_one_line_and_changes_nothing(tmp_path):
    old = {"corpus": {"fingerprint": "abc", "seconds": 1.0}}
    (tmp_path / "stages.json").write_text(json.dumps(old))
    fake_checkpoint(RunDir(tmp_path), "pretrain", 10, done=True)
    with pytest.raises(MyLLMError, match="older myllm .* delete .*stages.json to re-run every stage"):
        run(tmp_path, preset="quick", show_progress=False, log=lambda _: None)
    assert json.loads((tmp_path / "stages.json").read_text()) == old
    assert RunDir(tmp_path).model_checkpoint().name == "step-000010"  # still readable: chat, serve, export
    assert StageRecords(tmp_path).stages == old  # the report still shows the old timings


def test_stage_records_round_trip(tmp_path):
    records = StageRecords(tmp_path)
    records.mark("corpus", "f1", 1.234)
    again = StageRecords(tmp_path)
    assert again.done("corpus", "f1") and not again.done("corpus", "f2")
    assert json.loads((tmp_path / "stages.json").read_text()) == {
        "format": 2, "stages": {"corpus": {"fingerprint": "f1", "seconds": 1.23}}}


# The fingerprints of the default universe config as the previous release computed them (commit
# cfd4f73): a change here re-runs every stage of every existing run, so it must be deliberate.
EARLIER_FINGERPRINTS = {"corpus": "9c5e10ed20fee2e2", "tokenizer": "4881e74b0b7bc355", "shards": "81ecdde269c137f8",
                        "pretrain": "80a1ca0fc3316dc9", "evaluate": "3570a6b35363d5fd", "sft": "7e4c0af96b71e160",
                        "dpo": "8c7f5fa3c1a40fd0", "grpo": "249f721d7271ec03", "export": "9840d0013e135e4e"}


def test_the_default_runs_fingerprints_are_those_of_earlier_runs(tmp_path):
    from myllm.config import resolve_config

    assert fingerprints(RunDir(tmp_path), resolve_config("default")) == EARLIER_FINGERPRINTS


def test_a_folder_signature_is_hashed_in_the_order_earlier_runs_used(tmp_path):
    import hashlib
    import os

    from myllm.rundir import source_signature

    for rel in ("b.txt", "a/x.txt", "a/b.txt", "b/c.txt", "readme.md", "a/z/y.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(f"text of {rel}")
    h = hashlib.sha256()  # the earlier recipe: a sorted os.walk, every file's path, size and mtime
    for dirpath, dirnames, filenames in os.walk(tmp_path):
        dirnames.sort()
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            st = os.stat(path)
            h.update(os.fsencode(os.path.relpath(path, tmp_path)) + f"|{st.st_size}|{st.st_mtime_ns}\n".encode())
    assert source_signature(str(tmp_path)) == h.hexdigest()[:16]
