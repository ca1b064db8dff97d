"""Runs at the edges: prompts longer than a short context, an empty val split, and exports killed
mid-write (issue 16)."""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from conftest import TINY, Interrupt, write_folder_corpus
from myllm import universe
from myllm.config import MODEL_PRESETS, ModelConfig
from myllm.evals.bpb import run_bpb
from myllm.evals.chat_eval import Asker, evaluate_chat, few_shot_prefix
from myllm.evals.probes import probe_accuracy
from myllm.evals.report import write_run_report
from myllm.evals.summary import evaluate_run, format_summary
from myllm.export import hf as hf_export
from myllm.export.gguf import export_gguf
from myllm.export.hf import export_hf
from myllm.infer.engine import SamplingParams, beam_search, fit_prompt, generate, generate_many, generate_uncached
from myllm.model import Transformer
from myllm.run import prepare_run_dir, stage_corpus, stage_shards, stage_tokenizer
from myllm.rundir import RunDir
from myllm.tokenizer import train_tokenizer
from myllm.train.pretrain import pretrain
from myllm.universe import tasks

# --------------------------------------------------------------------------- prompts vs. context


@pytest.fixture(scope="module")
def world_and_tok(tmp_path_factory):
    """The universe's world and a byte-heavy tokenizer (few merges: the longest prompts in tokens)."""
    world = universe.build_world(1234)
    sets = tasks.eval_sets(world)
    texts = [few_shot_prefix(world)] + [r["prompt"][0]["content"] for rs in sets.values() for r in rs]
    return world, train_tokenizer(texts, 300, tmp_path_factory.mktemp("tok") / "tokenizer.json")


def tiny_model(context: int, vocab: int) -> Transformer:
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=vocab, d_model=32, n_layers=1, n_heads=2, n_kv_heads=1, d_ff=64, context=context)
    return Transformer(cfg).eval()


def test_fit_prompt_keeps_the_last_tokens_that_leave_room_for_the_reply():
    prompt = list(range(100))
    assert fit_prompt(prompt, 128, 28) == prompt  # fits: untouched
    assert fit_prompt(prompt, 64, 24) == prompt[-40:]
    assert fit_prompt(prompt, 64, 500) == prompt[-1:]  # a budget of the whole context still keeps one token
    assert fit_prompt(prompt, 64, 0) == prompt[-64:]


def test_every_generation_path_fits_a_prompt_longer_than_the_context():
    model = tiny_model(32, 300)
    long = [1] + list(range(10, 90))  # 81 tokens, context 32
    params = SamplingParams(max_new_tokens=12, temperature=0)
    out = generate(model, long, params)
    assert len(out) == 12 and out == generate(model, long[-20:], params)  # the last 32 - 12 tokens
    assert generate_uncached(model, long, params) == out
    many = generate_many(model, [long, long[:5], long[-40:]], params)
    assert many[0] == out and len(many[1]) == 12 and many[2] == out
    (beam, _), *_ = beam_search(model, long, 2, 12)
    assert len(beam) == 12
    assert len(generate(model, long, SamplingParams(max_new_tokens=500, temperature=0))) == 31


@pytest.mark.parametrize("context", [32, 64] + sorted({c["context"] for c in MODEL_PRESETS.values()}))
def test_evaluations_run_at_every_shipped_context_on_the_real_universe_prompts(world_and_tok, context):
    """Few-shot (base), chat-template (post-trained) and probe evaluations of an untrained model
    give numbers, not an error, at short contexts and at every preset's context."""
    world, tok = world_and_tok
    model = tiny_model(context, tok.vocab_size)
    sets = {name: records[:6] for name, records in tasks.eval_sets(world).items()}
    for few_shot in (few_shot_prefix(world), None):
        scores = evaluate_chat(model, tok, sets, few_shot, seed=0)
        assert set(scores) == {"fact_qa_acc", "arith_acc", "rejected_rate"}
        assert all(0 <= v <= 1 for v in scores.values())
    probes = [SimpleNamespace(prompt=p.prompt, answer=p.answer, attribute=p.attribute)
              for p in universe.knowledge_probes(world)[:20]]
    result = probe_accuracy(model, tok, probes)
    assert result["n"] == 20 and 0 <= result["accuracy"] <= 1


def test_the_few_shot_prompt_drops_whole_examples_to_fit(world_and_tok):
    world, tok = world_and_tok
    prefix = few_shot_prefix(world)
    question = [{"role": "user", "content": tasks.eval_sets(world)["arith"][0]["prompt"][0]["content"]}]
    wide = Asker(tiny_model(8192, tok.vocab_size), tok, prefix)
    assert tok.decode(wide.ids(question)[1:]).startswith(prefix)  # room: all four examples
    ask = Asker(tiny_model(128, tok.vocab_size), tok, prefix)
    ids = ask.ids(question)
    text = tok.decode(ids[1:])
    assert len(ids) <= 128 - ask.reply_tokens and ids[0] == tok.bos_id
    assert text.startswith("Question: ") and text.endswith(f"Question: {question[0]['content']}\nAnswer:")
    assert 0 < text.count("Question: ") < 5  # some examples kept, the first ones dropped


# --------------------------------------------------------------------------- an empty val split


@pytest.fixture(scope="module")
def no_val_run(tmp_path_factory):
    """A run of two documents (both train: the hash leaves val and test empty), with a checkpoint."""
    root = tmp_path_factory.mktemp("noval")
    data = write_folder_corpus(root / "docs", n_docs=2)
    out = root / "run"
    cfg = prepare_run_dir(out, "default", None, TINY + ["data.val_fraction=0"], str(data), None)
    stage_corpus(out, cfg)
    stage_tokenizer(out, cfg)
    stage_shards(out, cfg)
    assert RunDir(out).index()["splits"]["val"]["tokens"] == 0
    return out, cfg


def test_an_empty_val_split_reports_no_val_bpb_never_zero(no_val_run, tmp_path, capsys):
    run, cfg = tmp_path / "run", no_val_run[1]
    shutil.copytree(no_val_run[0], run)
    result = pretrain(run, cfg, show_progress=False)
    out = capsys.readouterr().out
    assert out.count("warning: the val split has no tokens") == 1  # once, not at every evaluation
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert not any("val_bpb" in r for r in rows) and "val_bpb" not in result.last_eval
    summary = evaluate_run(run, cfg)
    assert summary["val_bpb"] is None and summary["test_bpb"] is None and summary["val_loss"] is None
    assert summary["stages"]["base"]["val_bpb"] is None
    assert json.loads((run / "summary.json").read_text())["val_bpb"] is None
    text = format_summary(summary)
    assert "val  bpb  n/a (no val data" in text and "0.0000" not in text
    write_run_report(run)
    assert "No val or test data" in (run / "report.md").read_text()


def test_an_evaluation_of_no_tokens_is_no_bpb(tiny_model_run):
    from myllm.train.checkpoint import load_model

    run = RunDir(tiny_model_run)
    model = load_model(run.model_checkpoint("pretrain"))
    assert run_bpb(run, model, run.config(), "val", max_tokens=0) is None  # train.eval_tokens = 0
    assert run_bpb(run, model, run.config(), "val", max_tokens=64)["bpb"] > 0


# --------------------------------------------------------------------------- exports killed mid-write

# A real kill: a child process exports with one step replaced by SIGKILL to itself, so no
# `except`/`finally` runs, as when the machine or the user kills the export.
KILLED_EXPORT = """
import os, signal, sys
import gguf, myllm.io
from pathlib import Path
from myllm.export.gguf import export_gguf
from myllm.export.hf import export_hf
kind, run, out = sys.argv[1:]
def die(*a, **k):
    os.kill(os.getpid(), signal.SIGKILL)
if kind == "gguf":
    gguf.GGUFWriter.write_tensors_to_file = die  # header and metadata are in the temp file
    export_gguf(run, out, "f32")
elif kind == "hf-write":
    import myllm.export.hf as hf
    hf._write_json = die  # the weights are in the temp folder
    export_hf(run, out)
else:  # hf-swap: the earlier export moved aside, the new one not yet in place
    rename = Path.rename
    def rename_or_die(self, target):
        if self.name.endswith(".tmp"):
            die()
        return rename(self, target)
    Path.rename = rename_or_die
    export_hf(run, out)
"""


def kill_export(kind: str, run, out) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", KILLED_EXPORT, kind, str(run), str(out)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr


def snapshot(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_a_killed_gguf_export_leaves_nothing_after_the_next_one(tiny_model_run, tmp_path, monkeypatch):
    import gguf

    out = tmp_path / "export" / "model-f32.gguf"
    export_gguf(tiny_model_run, out, "f32")
    before = out.read_bytes()
    for _ in range(2):  # each kill leaves its temp; the next export removes it, so they never pile up
        kill_export("gguf", tiny_model_run, out)
        assert len(leftovers(out.parent)) == 1 and out.read_bytes() == before
    kill = Interrupt(monkeypatch, gguf.GGUFWriter, "write_tensors_to_file", at=1)  # Ctrl-C: a failing export
    with pytest.raises(KeyboardInterrupt):
        export_gguf(tiny_model_run, out, "f32")
    assert out.read_bytes() == before and leftovers(out.parent) == []  # it cleaned up the kills' temps too
    kill.disarm()
    export_gguf(tiny_model_run, out, "f32")
    assert leftovers(out.parent) == [] and out.read_bytes() == before  # same model, same bytes


def test_a_killed_hf_export_leaves_nothing_and_the_earlier_export_survives(tiny_model_run, tmp_path, monkeypatch):
    out = tmp_path / "export" / "hf"
    export_hf(tiny_model_run, out)
    before = snapshot(out)
    kill_export("hf-write", tiny_model_run, out)
    kill_export("hf-swap", tiny_model_run, out)
    assert not out.exists()  # killed mid-swap: the earlier export is aside, as .hf.old
    assert ".hf.old" in leftovers(out.parent) and len(leftovers(out.parent)) == 2  # and the new export's temp
    Interrupt(monkeypatch, hf_export, "save_file", at=1)
    with pytest.raises(KeyboardInterrupt):
        export_hf(tiny_model_run, out)
    assert snapshot(out) == before and leftovers(out.parent) == []  # put back byte for byte; temps gone
    monkeypatch.undo()
    export_hf(tiny_model_run, out)
    assert snapshot(out) == before and leftovers(out.parent) == []


def test_an_interrupted_swap_puts_the_earlier_export_back_at_once(tiny_model_run, tmp_path, monkeypatch):
    out = tmp_path / "hf"
    export_hf(tiny_model_run, out)
    before = snapshot(out)
    rename = Path.rename
    monkeypatch.setattr(Path, "rename", lambda self, target: (_ for _ in ()).throw(KeyboardInterrupt)
                        if self.name.endswith(".tmp") else rename(self, target))
    with pytest.raises(KeyboardInterrupt):
        export_hf(tiny_model_run, out)
    assert snapshot(out) == before and leftovers(tmp_path) == []


def test_exports_never_replace_what_is_not_an_export(tiny_model_run, tmp_path):
    from myllm.errors import MyLLMError

    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("keep me")
    (tmp_path / "a.gguf").write_text("not a gguf")
    for call in (lambda: export_hf(tiny_model_run, notes), lambda: export_hf(tiny_model_run, tmp_path / "a.gguf"),
                 lambda: export_gguf(tiny_model_run, tmp_path / "a.gguf"), lambda: export_gguf(tiny_model_run, notes)):
        with pytest.raises(MyLLMError, match="--out"):
            call()
    assert (notes / "todo.txt").read_text() == "keep me" and (tmp_path / "a.gguf").read_text() == "not a gguf"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.gguf", "notes"]


def test_a_killed_quantize_leaves_nothing_after_the_next_one(tiny_model_run, tmp_path, monkeypatch):
    from myllm.export.quantize import quantize_run
    from myllm.infer import quant

    run = tmp_path / "run"
    shutil.copytree(tiny_model_run, run)
    first = quantize_run(run, 8, evaluate=False)["path"]
    before = open(first, "rb").read()
    stale = RunDir(run).quantized(8).with_name(".model-int8.safetensors.abcd_123.tmp")  # a kill's temp
    stale.write_bytes(b"partial")
    Interrupt(monkeypatch, quant, "save", at=1)
    with pytest.raises(KeyboardInterrupt):
        quantize_run(run, 8, evaluate=False)
    assert open(first, "rb").read() == before and leftovers(stale.parent) == []
