"""Hugging Face export: a directory that `transformers` loads as `LlamaForCausalLM`, offline.

    export/hf/
      config.json              LlamaConfig (tied embeddings, no biases, head_dim, RoPE theta)
      model.safetensors        the weights, renamed `name` -> `model.name` (nothing else changes)
      generation_config.json   BOS/EOS/PAD ids and the run's sampling defaults
      tokenizer.json           the run's byte-level BPE, plus a post-processor adding <|bos|> to plain text
      tokenizer_config.json    special tokens, the chat template (`myllm.chat.CHAT_TEMPLATE`), context
      special_tokens_map.json
      README.md                the model card (`myllm.export.card`): front matter for the Hub, data,
                               training, the evaluation table, the chat format, limits

Every file gets the modes a plain write would (0644 under the usual umask; `myllm.io.public_modes`).
`push_to_hub` uploads the finished directory with `huggingface_hub` (`myllm export hf --push REPO`).

Why it is this simple: MyLLM's parameter names are LlamaForCausalLM's without the `model.`
prefix and its RoPE uses HF's rotate-half layout, so export is a rename table, not a conversion
(`tests/test_export_hf.py` checks logits to 1e-4 and chat-template token ids exactly).

EOS: `<|end|>` closes every chat turn, so it is the tokenizer's `eos_token` and the first of the
generation config's `eos_token_id` list; the list also holds the other markers that MyLLM's chat
stops at (`myllm.chat.stop_ids`), so `model.generate` stops where `myllm chat` does.

The directory is built in a temp folder next to `out` (`.NAME.XXXXXXXX.tmp`) and renamed into
place: it appears whole or not at all, and an earlier export at `out` stays as it was until then.
An error or Ctrl-C removes the temp folder; what a kill left (the temp folder, or the earlier
export moved aside as `.NAME.old` mid-swap, which is put back) is cleaned up by the next export to
`out` (`myllm.io.remove_leftovers`). An existing `out` is replaced only if it is an earlier export
(it holds `myllm_export.json`) or an empty folder, never a folder of other files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors.torch import save_file

from myllm.chat import CHAT_TEMPLATE
from myllm.config import ModelConfig, SampleConfig, load_run_config
from myllm.errors import MyLLMError, brief
from myllm.export.card import model_card
from myllm.io import atomic_dir, remove_leftovers
from myllm.rundir import RunDir
from myllm.tokenizer import SPECIAL_TOKENS

BOS, EOS, PAD = "<|bos|>", "<|end|>", "<|pad|>"
STOP_TOKENS = ("<|end|>", "<|eos|>", "<|bos|>", "<|user|>", "<|system|>")  # = myllm.chat.stop_ids


def llama_config(cfg: ModelConfig) -> dict[str, Any]:
    """`config.json` for LlamaForCausalLM with MyLLM's shape."""
    ids = {t: i for i, t in enumerate(SPECIAL_TOKENS)}
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.d_model,
        "intermediate_size": cfg.d_ff,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.n_kv_heads,
        "head_dim": cfg.head_dim,
        "max_position_embeddings": cfg.context,
        "rms_norm_eps": cfg.norm_eps,
        "rope_theta": cfg.rope_theta,
        "rope_scaling": None,
        "hidden_act": "silu",
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "tie_word_embeddings": True,
        "initializer_range": cfg.init_std,
        "bos_token_id": ids[BOS],
        "eos_token_id": ids[EOS],
        "pad_token_id": ids[PAD],
        "torch_dtype": "float32",
        "use_cache": True,
    }


def generation_config(sample: SampleConfig) -> dict[str, Any]:
    ids = {t: i for i, t in enumerate(SPECIAL_TOKENS)}
    out: dict[str, Any] = {
        "bos_token_id": ids[BOS],
        "eos_token_id": [ids[t] for t in STOP_TOKENS],
        "pad_token_id": ids[PAD],
        "max_new_tokens": sample.max_new_tokens,
        "do_sample": sample.temperature > 0,
    }
    if sample.temperature > 0:
        out.update(temperature=sample.temperature, top_k=sample.top_k, top_p=sample.top_p)
    return out


def tokenizer_config(context: int) -> dict[str, Any]:
    """Special tokens and the chat template. Plain encoding adds `<|bos|>` (`export_tokenizer`), as MyLLM
    scores text, so `transformers` and lm-eval score the export exactly as MyLLM does without flags;
    the chat template writes its own BOS (`apply_chat_template` encodes without special tokens)."""
    decoder = {str(i): {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                        "single_word": False, "special": True} for i, t in enumerate(SPECIAL_TOKENS)}
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS, "eos_token": EOS, "pad_token": PAD,
        "additional_special_tokens": [t for t in SPECIAL_TOKENS if t not in (BOS, EOS, PAD)],
        "added_tokens_decoder": decoder,
        "chat_template": CHAT_TEMPLATE,
        "add_bos_token": True, "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": context,
    }


def export_tokenizer(src: Path, dst: Path) -> None:
    """The run's tokenizer.json with a post-processor that puts `<|bos|>` before every encoded text."""
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import processors

    tok = HFTokenizer.from_file(str(src))
    tok.post_processor = processors.TemplateProcessing(single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B:1",
                                                       special_tokens=[(BOS, SPECIAL_TOKENS.index(BOS))])
    tok.save(str(dst))


def check_out(out: Path) -> None:
    """Refuse an `out` that an export must not replace: a file, or a folder that is not an earlier export."""
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise MyLLMError(f"--out {out} exists and is not a folder; pick another --out")
    if out.is_dir() and any(out.iterdir()) and not (out / "myllm_export.json").is_file():
        raise MyLLMError(f"--out {out} is a folder of other files (no myllm_export.json); it is left as it "
                         "is: pick a new or empty folder")


def export_hf(run_dir: RunDir | str | Path, out: str | Path, stage: str | None = None,
              license_id: str | None = None) -> Path:
    """Write the HF directory for the run's final model (or `stage`'s) to `out`, with its model card
    (`myllm.export.card`); return `out`."""
    run, out = RunDir.of(run_dir), Path(out)
    remove_leftovers(out)  # what killed exports to `out` left; puts back an earlier export caught mid-swap
    check_out(out)
    run.require_tokenizer()
    ckpt = run.model_checkpoint(stage)
    # No --device: the files are the checkpoint's fp32 weights read on the CPU, so an export is the same bytes
    # whatever device trained the run or is present now (tests/test_device_inference.py).
    model = run.load_model(ckpt)  # LoRA adapters are merged here
    sample = load_run_config(run.config_file).sample if run.config_file.is_file() else SampleConfig()
    weights = {f"model.{k}": v.detach().float().contiguous() for k, v in model.state_dict().items()}
    with atomic_dir(out) as tmp:
        save_file(weights, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        _write_json(tmp / "config.json", llama_config(model.cfg))
        _write_json(tmp / "generation_config.json", generation_config(sample))
        export_tokenizer(run.tokenizer_file, tmp / "tokenizer.json")
        _write_json(tmp / "tokenizer_config.json", tokenizer_config(model.cfg.context))
        (tmp / "README.md").write_text(model_card(run, model.cfg, ckpt, model.num_params(), license_id),
                                       encoding="utf-8")
        _write_json(tmp / "special_tokens_map.json", {"bos_token": BOS, "eos_token": EOS, "pad_token": PAD})
        _write_json(tmp / "myllm_export.json", {"checkpoint": str(ckpt.relative_to(run.root))
                                                if ckpt.is_relative_to(run.root) else str(ckpt)})
    return out


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")


def push_to_hub(folder: Path, repo: str, private: bool = False) -> str:
    """Upload an export to the Hugging Face Hub repo `repo` (created if missing); returns its URL.

    The Hub's own errors (offline, no token, no permission, a bad name) end as one line."""
    try:
        from huggingface_hub import HfApi
        from huggingface_hub.errors import OfflineModeIsEnabled
    except ImportError:
        raise MyLLMError("--push needs huggingface_hub: pip install huggingface_hub") from None
    api = HfApi()
    try:
        url = api.create_repo(repo, private=private, exist_ok=True, repo_type="model")
        api.upload_folder(folder_path=str(folder), repo_id=repo, repo_type="model",
                          commit_message="Upload MyLLM export")
    except OfflineModeIsEnabled as e:
        raise MyLLMError(f"--push {repo}: {e} (HF_HUB_OFFLINE is set); the export is at {folder}: push it "
                         "later with `huggingface-cli upload`") from None
    except Exception as e:  # noqa: BLE001 (the network, the Hub, a token: any of them is one line here)
        raise MyLLMError(f"--push {repo} failed ({brief(e, 200)}); the export is at {folder}. Log in with "
                         "`huggingface-cli login` (or set HF_TOKEN) and check the repo name (user/name)") from None
    return str(url)
