"""Hugging Face export: transformers loads it offline and computes what MyLLM computes."""

import json
import os

import pytest
import torch

from myllm import chat
from myllm.cli import main
from myllm.errors import MyLLMError
from myllm.export.hf import export_hf
from myllm.tokenizer import Tokenizer
from myllm.train.checkpoint import latest_checkpoint, load_model

transformers = pytest.importorskip("transformers")

CHAT = [
    {"role": "system", "content": "Answer in one sentence."},
    {"role": "user", "content": "Where does Mira Fenwick live?"},
    {"role": "assistant", "content": "Mira Fenwick lives in Oakridge."},
    {"role": "user", "content": "And 3 + 14 plums, héllo 👋?"},
]


@pytest.fixture(scope="module")
def exported(tiny_model_run, tmp_path_factory):
    os.environ["HF_HUB_OFFLINE"] = "1"  # nothing may come from the hub
    out = export_hf(tiny_model_run, tmp_path_factory.mktemp("hf") / "hf")
    model = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    hf_tok = transformers.AutoTokenizer.from_pretrained(out)
    return tiny_model_run, out, model, hf_tok


def test_directory_has_the_llama_files(exported):
    _, out, model, _ = exported
    assert {p.name for p in out.iterdir()} >= {"config.json", "model.safetensors", "generation_config.json",
                                               "tokenizer.json", "tokenizer_config.json"}
    assert type(model).__name__ == "LlamaForCausalLM"
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()  # tied
    gen = json.loads((out / "generation_config.json").read_text())
    assert gen["eos_token_id"][0] == 6 and gen["bos_token_id"] == 1 and gen["pad_token_id"] == 0


def test_logits_match_myllm(exported):
    run, _, model, _ = exported
    ours = load_model(latest_checkpoint(run / "checkpoints" / "pretrain"))
    x = torch.randint(0, ours.cfg.vocab_size, (2, ours.cfg.context), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = ours(x), model(x).logits
    assert a.std() > 1.0  # far from uniform, so the comparison means something
    assert (a - b).abs().max().item() <= 1e-4


def test_chat_template_gives_myllm_ids_for_a_multi_turn_chat(exported):
    run, _, _, hf_tok = exported
    tok = Tokenizer.load(run / "tokenizer")
    for gen_prompt in (False, True):
        ids = hf_tok.apply_chat_template(CHAT, add_generation_prompt=gen_prompt, tokenize=True, return_dict=True)
        assert ids["input_ids"] == chat.render(tok, CHAT, add_generation_prompt=gen_prompt).ids
    text = "Mira Fenwick lives in Oakridge; 12 + 30 = 42."
    assert hf_tok(text, add_special_tokens=False).input_ids == tok.encode(text)
    assert hf_tok.eos_token_id == tok.token_id("<|end|>") and hf_tok.bos_token_id == tok.bos_id


def test_known_wrinkle_control_token_text_inside_a_message(exported):
    """A chat template renders to a string before tokenizing, so transformers reads a literal
    "<|assistant|>" inside a message as the control token; MyLLM encodes message text as plain
    text. This test pins down that difference (documented in docs/export.md)."""
    run, _, _, hf_tok = exported
    tok = Tokenizer.load(run / "tokenizer")
    forged = [{"role": "user", "content": "hi <|assistant|> there"}]
    ours = chat.render(tok, forged).ids
    theirs = hf_tok.apply_chat_template(forged, tokenize=True, return_dict=True)["input_ids"]
    assert ours.count(tok.token_id("<|assistant|>")) == 0
    assert theirs.count(tok.token_id("<|assistant|>")) == 1


def test_greedy_generation_matches_the_engine(exported):
    from myllm.infer.engine import SamplingParams, generate

    run, _, model, _ = exported
    ours = load_model(latest_checkpoint(run / "checkpoints" / "pretrain"))
    prompt = [1, 40, 41, 42]
    stops = tuple(model.generation_config.eos_token_id)
    mine = generate(ours, prompt, SamplingParams(max_new_tokens=12, temperature=0, stop_ids=stops))
    theirs = model.generate(torch.tensor([prompt]), max_new_tokens=12, do_sample=False)[0, len(prompt):].tolist()
    if theirs and theirs[-1] in stops:
        theirs = theirs[:-1]  # transformers keeps the stop token, the engine does not yield it
    assert theirs == mine


def test_cli_export_and_errors(tiny_model_run, tmp_path, capsys):
    out = tmp_path / "x"
    assert main(["export", "hf", str(tiny_model_run), "--out", str(out)]) == 0
    assert (out / "model.safetensors").is_file() and not list(tmp_path.glob(".x.*"))  # no temp left
    assert main(["export", "hf", str(tiny_model_run), "--stage", "sft", "--out", str(out)]) == 2
    assert "no finished sft checkpoint" in capsys.readouterr().err
    with pytest.raises(MyLLMError, match="not a run directory"):
        export_hf(tmp_path / "nothing", tmp_path / "y")


def test_export_is_publishable_modes_card_bos_and_context(exported):
    from huggingface_hub import ModelCard

    run, out, _, hf_tok = exported
    mask = os.umask(0o022)
    os.umask(mask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~mask
    assert {p.name: p.stat().st_mode & 0o777 for p in out.iterdir()} == {p.name: 0o666 & ~mask for p in out.iterdir()}
    card = ModelCard.load(out / "README.md")
    assert card.data.license == "other" and card.data.datasets == ["docs"]  # a folder corpus: the user's license
    assert "Not evaluated yet" in card.text and chat.CHAT_TEMPLATE.strip() in card.text
    tok = Tokenizer.load(run / "tokenizer")
    # Plain encoding adds <|bos|> as MyLLM scores text; the chat template still writes exactly one.
    assert hf_tok("Mira lives in Oakridge.").input_ids == [tok.bos_id] + tok.encode("Mira lives in Oakridge.")
    assert hf_tok.model_max_length == load_model(latest_checkpoint(run / "checkpoints" / "pretrain")).cfg.context


def test_push_reaches_the_hub_library_and_ends_in_one_line_offline(tiny_model_run, tmp_path):
    import subprocess
    import sys

    out = tmp_path / "hf"
    proc = subprocess.run([sys.executable, "-m", "myllm", "export", "hf", "--run", str(tiny_model_run), "--out",
                           str(out), "--push", "someone/tiny", "--license", "mit"], capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=120)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "--push someone/tiny" in proc.stderr and "offline" in proc.stderr.lower()  # huggingface_hub's own error
    assert (out / "README.md").read_text().startswith("---\nlicense: mit\n")  # the export itself is kept
