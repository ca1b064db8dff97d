"""`myllm run` on the built-in universe: the smoke run CI relies on, and the default's sizing."""

import json

import pytest

from myllm.config import resolve_config
from myllm.data.shards import read_index
from myllm.run import prepare_run_dir, run, stage_corpus, stage_shards, stage_tokenizer


@pytest.fixture(scope="module")
def quick_summary(tmp_path_factory):
    out = tmp_path_factory.mktemp("quick") / "run"
    return out, run(out, preset="quick", show_progress=False)


def test_quick_run_reports_every_figure(quick_summary):
    out, s = quick_summary
    for key in ("val_bpb", "test_bpb", "floor_val_bpb", "floor_test_bpb", "probe_accuracy", "params",
                "tokens_trained", "stage_seconds"):
        assert key in s, key
    assert json.loads((out / "summary.json").read_text())["val_bpb"] == s["val_bpb"]
    # No model beats the source entropy; a trained one gets within a few times of it.
    assert s["floor_val_bpb"] < s["val_bpb"] < 4 * s["floor_val_bpb"]
    assert s["floor_test_bpb"] < s["test_bpb"] < 4 * s["floor_test_bpb"]
    assert 0.0 <= s["probe_accuracy"] <= 1.0
    assert len(s["samples"]) == 3 and all(x["completion"] for x in s["samples"])
    universe = json.loads((out / "corpus" / "universe.json").read_text())
    assert len(universe["probes"]) >= 60 * 5


def test_quick_run_post_trains_and_evaluates_every_stage(quick_summary):
    out, s = quick_summary
    assert list(s["stages"]) == ["base", "sft", "dpo", "grpo"]
    for name, m in s["stages"].items():
        assert {"fact_qa_acc", "arith_acc", "rejected_rate", "val_bpb"} <= set(m), name
        assert all(0 <= m[k] <= 1 for k in ("fact_qa_acc", "arith_acc", "rejected_rate"))
    for stage in ("sft", "dpo", "grpo"):
        assert json.loads((out / "evals" / f"{stage}.json").read_text())["val_bpb"] == s["stages"][stage]["val_bpb"]
        assert (out / "tasks" / f"{stage}.jsonl").is_file()
    assert "chat_template" in json.loads((out / "tokenizer" / "tokenizer_config.json").read_text())
    # GRPO starts from DPO, DPO from SFT, SFT from pretraining.
    from myllm.train.checkpoint import latest_checkpoint, read_state

    bases = {st: read_state(latest_checkpoint(out / "checkpoints" / st))["base"] for st in ("sft", "dpo", "grpo")}
    assert [b.split("/")[1] for b in bases.values()] == ["pretrain", "sft", "dpo"]


def test_the_hf_export_of_a_run_carries_a_model_card_the_hub_reads(quick_summary, tmp_path):
    from huggingface_hub import ModelCard

    from myllm.export.hf import export_hf

    out, s = quick_summary
    card = ModelCard.load(export_hf(out, tmp_path / "hf") / "README.md")  # the Hub library's own parser
    assert card.data.license == "apache-2.0" and card.data.datasets == ["myllm-universe"]
    assert card.data.pipeline_tag == "text-generation" and "myllm" in card.data.tags
    text = card.text
    for section in ("## Model", "## Data", "## Training", "## Evaluation", "## Chat format", "## Intended use"):
        assert section in text
    assert f"{s['params']:,} parameters" in text and f"{s['tokens_trained']:,} tokens" in text
    # A table's rows are one block (a blank line between rows would not render as a table).
    assert "| split | documents | bytes | tokens |\n|---|" in text and "\n|---|" in text.split("## Evaluation")[1]
    assert "|\n\n|" not in text
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| ")}
    assert set(rows) >= {"pretrain", "sft", "dpo", "grpo", "train", "val", "test"}
    assert f"{s['probe_accuracy']:.1%}" in rows["pretrain"] and f"{s['stages']['base']['fact_qa_acc']:.1%}" in \
        rows["pretrain"]
    assert f"{s['stages']['grpo']['arith_acc']:.1%}" in rows["grpo"]


def test_default_run_sees_every_training_book_at_least_once(tmp_path):
    out = tmp_path / "run"
    cfg = prepare_run_dir(out, "default", None, [], None, None)
    stage_corpus(out, cfg)
    stage_tokenizer(out, cfg)
    stage_shards(out, cfg)
    train_tokens = read_index(out / "shards")["splits"]["train"]["tokens"]
    per_step = cfg.train.batch_size * cfg.train.grad_accum * cfg.seq_len
    assert cfg.train.max_steps * per_step >= train_tokens
    assert cfg == resolve_config("default")


def test_quick_run_writes_a_report_card_with_every_section_and_plot(quick_summary):
    out, s = quick_summary
    report = (out / "report.md").read_text()
    for section in ("## Config", "## System", "## Stages", "## Corpus", "## Evaluation", "## Samples", "## Plots"):
        assert section in report, section
    assert f"{s['val_bpb']:.4f}" in report and f"{s['floor_val_bpb']:.4f}" in report  # base row with its floor
    images = [line.split("(")[1].rstrip(")") for line in report.splitlines() if line.startswith("![")]
    assert {"plots/loss.png", "plots/lr.png", "plots/grad_norm.png", "plots/throughput.png"} <= set(images)
    for image in images:
        assert (out / image).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and (out / image).stat().st_size > 1000
    corpus_report = (out / "corpus" / "report.md").read_text()
    assert "## Splits" in corpus_report and (out / "corpus" / "plots" / "lengths.png").is_file()
