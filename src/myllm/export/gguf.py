"""GGUF export: one file that llama.cpp (and Ollama, LM Studio, llama-cpp-python) runs.

What goes in, and why:
- **Architecture `llama`**: MyLLM is Llama-shaped (RMSNorm, RoPE, GQA, SwiGLU, no biases), so
  llama.cpp's own graph runs it. The tied output matrix is not written: llama.cpp reuses
  `token_embd.weight` when `output.weight` is absent.
- **Q/K permutation**: MyLLM (like HF) rotates the two *halves* of each head; llama.cpp's
  "normal" RoPE rotates *adjacent pairs*. convert_hf_to_gguf.py's `permute` reorders the rows of
  q_proj/k_proj so that llama.cpp's pairs are HF's halves; attention scores are unchanged.
- **Tokenizer `gpt2` (byte-level BPE)**: the vocabulary in GPT-2's byte-to-unicode form, token
  types (the 7 special tokens are CONTROL), merges in rank order, BOS/EOS/PAD ids and the chat
  template. llama.cpp has no field for a pre-tokenizer regex; it picks a built-in one by name.
  `starcoder` is GPT-2's regex after splitting off every digit, which is MyLLM's regex (GPT-2's
  with one token per digit) except for a run of 2+ spaces right before a digit (llama.cpp keeps
  the run as one piece, MyLLM splits off its last space). `tests/test_export_gguf.py` checks
  that the two tokenize universe text identically.
- **Vocabulary padding**: the model's embedding may have more rows than the trained tokenizer
  has tokens (BPE ran out of merges); llama.cpp needs one token per row, so the extra rows get
  never-produced `[PAD<i>]` tokens of type UNUSED.
- **Types**: `f32`, `f16`, `q8_0`, `q4_0` for 2-D weights (llama.cpp's own block formats,
  quantized by the `gguf` package); norm gains always stay F32.

The file is written to a temp name beside `out` (`.NAME.XXXXXXXX.tmp`) and renamed: it appears
whole or not at all, and an earlier export at `out` stays as it was until then. An error or
Ctrl-C removes the temp; a temp that a kill left behind is removed by the next export to `out`
(`myllm.io.remove_leftovers`). An existing `out` that is not a GGUF file is never overwritten.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from myllm.chat import CHAT_TEMPLATE
from myllm.errors import MyLLMError
from myllm.io import remove_leftovers
from myllm.rundir import RunDir
from myllm.tokenizer import SPECIAL_TOKENS

TYPES = ("f32", "f16", "q8_0", "q4_0")
PRE_TOKENIZER = "starcoder"


def permute(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """llama.cpp's `permute` (convert_hf_to_gguf.py): HF rotate-half rows -> interleaved-pair rows."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def tensor_names(n_layers: int) -> dict[str, str]:
    """MyLLM parameter name -> GGUF tensor name (llama.cpp's llama architecture)."""
    names = {"embed_tokens.weight": "token_embd.weight", "norm.weight": "output_norm.weight"}
    per_layer = {
        "input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
        "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output", "post_attention_layernorm": "ffn_norm",
        "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
    }
    for i in range(n_layers):
        for ours, theirs in per_layer.items():
            names[f"layers.{i}.{ours}.weight"] = f"blk.{i}.{theirs}.weight"
    return names


def vocab_tokens(tokenizer_json: Path, n_vocab: int) -> tuple[list[str], list[int], list[str]]:
    """(tokens by id, token types, merges "a b" in rank order), padded to `n_vocab` tokens."""
    import gguf

    spec = json.loads(Path(tokenizer_json).read_text(encoding="utf-8"))
    by_id = {i: t for t, i in spec["model"]["vocab"].items()}
    by_id.update({a["id"]: a["content"] for a in spec.get("added_tokens", [])})
    if len(by_id) > n_vocab:
        raise MyLLMError(f"the tokenizer has {len(by_id)} tokens but the model only {n_vocab} embedding rows")
    tokens, types = [], []
    for i in range(n_vocab):
        if i in by_id:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.CONTROL if by_id[i] in SPECIAL_TOKENS else gguf.TokenType.NORMAL)
        else:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]]
    return tokens, [int(t) for t in types], merges


def _tensor_data(w: np.ndarray, kind: str):
    """(data, raw_dtype) for one tensor; 1-D tensors (norm gains) always stay F32."""
    import gguf

    if w.ndim == 1 or kind == "f32":
        return w.astype(np.float32), None
    if kind == "f16":
        return w.astype(np.float16), None
    qtype = {"q8_0": gguf.GGMLQuantizationType.Q8_0, "q4_0": gguf.GGMLQuantizationType.Q4_0}[kind]
    return gguf.quants.quantize(w.astype(np.float32), qtype), qtype


def check_out(out: Path) -> None:
    """Refuse an `out` that an export must not replace: a folder, or a file that is not a GGUF file."""
    if out.is_dir():
        raise MyLLMError(f"--out {out} is a folder; give a file name, e.g. {out / 'model.gguf'}")
    if out.exists():
        try:
            with open(out, "rb") as f:
                magic = f.read(4)
        except OSError as e:
            raise MyLLMError(f"--out {out} cannot be read ({e.strerror}); pick another --out") from None
        if magic != b"GGUF":
            raise MyLLMError(f"--out {out} exists and is not a GGUF file; it is left as it is: "
                             "pick another --out or move it away")


def export_gguf(run_dir: RunDir | str | Path, out: str | Path, kind: str = "f16", stage: str | None = None) -> Path:
    """Write the run's final model (or `stage`'s) as a GGUF file of weight type `kind`; return `out`."""
    import gguf

    if kind not in TYPES:
        raise MyLLMError(f"--type {kind!r} is not supported; pick one of {', '.join(TYPES)}")
    run, out = RunDir.of(run_dir), Path(out)
    check_out(out)
    run.require_tokenizer()
    ckpt = run.model_checkpoint(stage)
    model = run.load_model(ckpt)  # no --device: fp32 CPU weights, so the same file whatever device trained
    cfg = model.cfg
    if kind in ("q8_0", "q4_0") and (cfg.d_model % 32 or cfg.d_ff % 32):
        raise MyLLMError(f"--type {kind} needs model.d_model and model.d_ff divisible by 32 (llama.cpp's block "
                         f"size); this model has {cfg.d_model} and {cfg.d_ff}: use f16 or f32")
    tokens, types, merges = vocab_tokens(run.tokenizer_file, cfg.vocab_size)

    out.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(out)  # what killed exports to `out` left
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")  # atomic_open's names
    os.close(fd)
    try:
        w = gguf.GGUFWriter(tmp, "llama")
        w.add_name(f"myllm-{cfg.preset}")
        w.add_context_length(cfg.context)
        w.add_embedding_length(cfg.d_model)
        w.add_block_count(cfg.n_layers)
        w.add_feed_forward_length(cfg.d_ff)
        w.add_head_count(cfg.n_heads)
        w.add_head_count_kv(cfg.n_kv_heads)
        w.add_key_length(cfg.head_dim)
        w.add_value_length(cfg.head_dim)
        w.add_rope_dimension_count(cfg.head_dim)
        w.add_rope_freq_base(cfg.rope_theta)
        w.add_layer_norm_rms_eps(cfg.norm_eps)
        w.add_vocab_size(cfg.vocab_size)
        ftype = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                 "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0, "q4_0": gguf.LlamaFileType.MOSTLY_Q4_0}[kind]
        w.add_file_type(ftype)
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre(PRE_TOKENIZER)
        w.add_token_list(tokens)
        w.add_token_types(types)
        w.add_token_merges(merges)
        w.add_bos_token_id(SPECIAL_TOKENS.index("<|bos|>"))
        w.add_eos_token_id(SPECIAL_TOKENS.index("<|end|>"))  # ends every chat turn
        w.add_pad_token_id(SPECIAL_TOKENS.index("<|pad|>"))
        w.add_add_bos_token(True)  # a plain prompt starts with BOS, as in `myllm generate`
        w.add_add_eos_token(False)
        w.add_chat_template(CHAT_TEMPLATE)

        names = tensor_names(cfg.n_layers)
        for name, t in model.state_dict().items():
            t = t.detach().float()
            if name.endswith("q_proj.weight"):
                t = permute(t, cfg.n_heads)
            elif name.endswith("k_proj.weight"):
                t = permute(t, cfg.n_kv_heads)
            data, raw_dtype = _tensor_data(t.numpy(), kind)
            w.add_tensor(names[name], data, raw_dtype=raw_dtype)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        os.replace(tmp, out)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return out
