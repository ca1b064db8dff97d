"""GGUF export: the file's metadata and layout, then the real llama.cpp (through llama-cpp-python)
tokenizes and computes what MyLLM does."""

import json

import numpy as np
import pytest
import torch

from myllm.cli import main
from myllm.errors import MyLLMError
from myllm.export.gguf import export_gguf, permute
from myllm.model import apply_rope, rope_tables
from myllm.tokenizer import Tokenizer
from myllm.train.checkpoint import latest_checkpoint, load_model

gguf = pytest.importorskip("gguf")

TEXTS = [
    "Mira Fenwick lives in Oakridge. She has 3 plums and 14 pears; 3 + 14 = 17.",
    "The baker's dog sat on the red mat, didn't it? 'Yes', said the smith.\n\nChapter 2\n",
    "héllo wörld — naïve café 👋 <|bos|> <|assistant|> tabs\tand  two  spaces",
]


@pytest.fixture(scope="module")
def files(tiny_model_run, tmp_path_factory):
    root = tmp_path_factory.mktemp("gguf")
    return {k: export_gguf(tiny_model_run, root / f"m-{k}.gguf", k) for k in ("f32", "q8_0", "q4_0")}


def interleaved_rope(x: torch.Tensor, theta: float, pos: torch.Tensor) -> torch.Tensor:
    """llama.cpp's "normal" RoPE: rotate adjacent pairs (2i, 2i+1) by pos * theta^(-2i/d)."""
    d = x.shape[-1]
    freqs = theta ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    ang = (pos[:, None].double() * freqs).float()
    a, b = x[..., 0::2], x[..., 1::2]
    out = torch.stack([a * ang.cos() - b * ang.sin(), a * ang.sin() + b * ang.cos()], dim=-1)
    return out.flatten(-2)


def test_permuted_q_k_give_the_same_attention_scores_under_llama_cpp_rope():
    torch.manual_seed(0)
    n_head, hd, d, T = 2, 16, 32, 7
    wq, wk, x = torch.randn(n_head * hd, d), torch.randn(n_head * hd, d), torch.randn(T, d)
    cos, sin = rope_tables(hd, T, 10000.0)
    pos = torch.arange(T)

    def scores(q, k):
        return torch.einsum("htd,hsd->hts", q, k)

    q = apply_rope((x @ wq.T).view(T, n_head, hd).transpose(0, 1), cos, sin)
    k = apply_rope((x @ wk.T).view(T, n_head, hd).transpose(0, 1), cos, sin)
    q2 = interleaved_rope((x @ permute(wq, n_head).T).view(T, n_head, hd).transpose(0, 1), 10000.0, pos)
    k2 = interleaved_rope((x @ permute(wk, n_head).T).view(T, n_head, hd).transpose(0, 1), 10000.0, pos)
    assert torch.allclose(scores(q, k), scores(q2, k2), atol=1e-4)
    assert not torch.allclose(scores(q, k), scores(interleaved_rope(q, 1e4, pos), interleaved_rope(k, 1e4, pos)))


def test_metadata_tokenizer_and_sizes(files, tiny_model_run):
    r = gguf.GGUFReader(files["f32"])
    field = lambda k: r.fields[k].contents()  # noqa: E731
    assert field("general.architecture") == "llama" and field("tokenizer.ggml.model") == "gpt2"
    assert field("tokenizer.ggml.bos_token_id") == 1 and field("tokenizer.ggml.eos_token_id") == 6
    assert field("tokenizer.chat_template").startswith("{{ bos_token }}")
    spec = json.loads((tiny_model_run / "tokenizer" / "tokenizer.json").read_text())
    tokens, types = field("tokenizer.ggml.tokens"), field("tokenizer.ggml.token_type")
    cfg = load_model(latest_checkpoint(tiny_model_run / "checkpoints" / "pretrain")).cfg
    assert len(tokens) == cfg.vocab_size and tokens[:7] == ["<|pad|>", "<|bos|>", "<|eos|>", "<|system|>",
                                                          "<|user|>", "<|assistant|>", "<|end|>"]
    assert types[:7] == [gguf.TokenType.CONTROL] * 7 and types[7] == gguf.TokenType.NORMAL
    assert len(field("tokenizer.ggml.merges")) == len(spec["model"]["merges"])
    assert "output.weight" not in {t.name for t in r.tensors}  # tied: llama.cpp reuses token_embd
    sizes = {k: p.stat().st_size for k, p in files.items()}
    assert sizes["f32"] > 3 * sizes["q8_0"] and sizes["q8_0"] > 1.6 * sizes["q4_0"]


def test_q8_0_tensors_dequantize_close_to_the_weights(files, tiny_model_run):
    model = load_model(latest_checkpoint(tiny_model_run / "checkpoints" / "pretrain"))
    t = {t.name: t for t in gguf.GGUFReader(files["q8_0"]).tensors}["blk.0.ffn_down.weight"]
    w = gguf.quants.dequantize(t.data, t.tensor_type).reshape(model.layers[0].mlp.down_proj.weight.shape)
    ref = model.layers[0].mlp.down_proj.weight.detach().numpy()
    assert np.abs(w - ref).max() <= np.abs(ref).max() / 127  # at most one step of the block scale


def test_cli_and_errors(tiny_model_run, tmp_path, capsys):
    assert main(["export", "gguf", str(tiny_model_run), "--type", "q8_0", "--out", str(tmp_path / "m.gguf")]) == 0
    assert "MiB" in capsys.readouterr().out and not list(tmp_path.glob(".m.gguf*"))  # no temp file left
    with pytest.raises(MyLLMError, match="pick one of f32, f16, q8_0, q4_0"):
        export_gguf(tiny_model_run, tmp_path / "x.gguf", "q2_k")


# --- the real llama.cpp -------------------------------------------------------------------------------


def llama(path, n_ctx: int):
    import llama_cpp

    f32 = 0  # GGML_TYPE_F32: an F32 KV cache, so only the weights' type differs from MyLLM
    return llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, logits_all=True, verbose=False, n_threads=2,
                           type_k=f32, type_v=f32, seed=0)


def logits_of(llm, ids: list[int]) -> np.ndarray:
    llm.reset()
    llm.eval(ids)
    return np.array(llm.scores[: len(ids)])


@pytest.fixture(scope="module")
def run_model(tiny_model_run):
    pytest.importorskip("llama_cpp")
    model = load_model(latest_checkpoint(tiny_model_run / "checkpoints" / "pretrain"))
    return model, Tokenizer.load(tiny_model_run / "tokenizer")


def test_llama_cpp_tokenizes_like_myllm(files, run_model, tiny_model_run):
    model, tok = run_model
    llm = llama(files["f32"], model.cfg.context)
    texts = TEXTS + [json.loads(line)["text"] for line in (tiny_model_run / "corpus" / "val.jsonl").open()][:20]
    for text in texts:
        assert llm.tokenize(text.encode(), add_bos=False, special=False) == tok.encode(text), text
    assert llm.detokenize(tok.encode(TEXTS[2])).decode() == TEXTS[2]
    assert llm.token_bos() == 1 and llm.token_eos() == 6


def test_llama_cpp_f32_logits_and_greedy_continuation_match(files, run_model):
    model, tok = run_model
    llm = llama(files["f32"], model.cfg.context)
    ids = [tok.bos_id] + tok.encode(TEXTS[0] + " " + TEXTS[1])[: model.cfg.context - 24]
    with torch.no_grad():
        ours = model(torch.tensor([ids]))[0].numpy()
    assert ours.std() > 1.0  # far from uniform, so the comparison means something
    assert np.abs(logits_of(llm, ids) - ours).max() <= 1e-3

    from myllm.infer.engine import SamplingParams, generate

    prompt = ids[:12]
    mine = generate(model, prompt, SamplingParams(max_new_tokens=20, temperature=0))
    llm.reset()
    theirs = []
    for t in llm.generate(prompt, top_k=1, temp=0.0, repeat_penalty=1.0, reset=True):
        if llm.token_eos() == t or len(theirs) == 20:
            break
        theirs.append(t)
    assert theirs == mine[: len(theirs)] and len(theirs) >= min(len(mine), 20) - 1


def test_llama_cpp_q8_0_and_q4_0_logits_within_tolerance(files, run_model):
    """Quantized GGUFs against MyLLM's fp32 logits, as mean |error| / std of the logits and top-1
    agreement. Q8_0: mean error <= 5%, top-1 >= 90%; Q4_0: <= 60%. The random test model amplifies
    weight error layer by layer (MyLLM's own int8 scores alike); on the trained default model Q8_0's
    mean error is ~1% (docs/export.md)."""
    model, tok = run_model
    ids = ([tok.bos_id] + tok.encode(TEXTS[0] + " " + TEXTS[1]))[: model.cfg.context]
    with torch.no_grad():
        ours = model(torch.tensor([ids]))[0].numpy()
    for kind, tol, top1 in (("q8_0", 0.05, 0.9), ("q4_0", 0.6, 0.0)):
        theirs = logits_of(llama(files[kind], model.cfg.context), ids)
        err = np.abs(theirs - ours).mean() / ours.std()
        agree = (theirs.argmax(-1) == ours.argmax(-1)).mean()
        assert err <= tol and agree >= top1, (kind, err, agree)
