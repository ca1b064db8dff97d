"""The MyLLM Transformer: a plain, Llama-shaped decoder in one file.

RMSNorm pre-norm blocks, rotary position embeddings (RoPE, "rotate-half" layout as in
Hugging Face Llama), grouped-query attention through `F.scaled_dot_product_attention`, a
SwiGLU MLP, tied input/output embeddings, no biases.

Parameter names follow `LlamaForCausalLM` without its `model.` prefix
(`layers.3.self_attn.q_proj.weight` <-> `model.layers.3.self_attn.q_proj.weight`), so export
to Hugging Face is a rename table, not a conversion.

The model knows nothing about distribution, compilation or checkpointing: those are applied
from outside (see `myllm.train`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from myllm.config import ModelConfig
from myllm.losses import chunked_cross_entropy


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalize in fp32 (as HF Llama does) so bf16 activations keep their precision.
        dtype = x.dtype
        x = x.float()
        # Spelled out rather than F.rms_norm: its backward measured slower on CPU, and for
        # eager decoding it measured no faster (interleaved A/B, 1 and 2 threads).
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


def rope_tables(head_dim: int, length: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables of shape (length, head_dim) in HF's rotate-half layout."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
    angles = torch.outer(torch.arange(length, dtype=torch.float64), inv_freq)
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos().float(), angles.sin().float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x (B, H, T, hd) by position; cos/sin are (T, hd)."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return (x * cos + rotated * sin).to(x.dtype)


@dataclass
class KVCache:
    """Preallocated keys/values for every layer: (layers, batch, kv_heads, max_len, head_dim).

    Its size is exactly 2 * layers * batch * kv_heads * max_len * head_dim * bytes_per_value,
    the number `myllm plan` predicts.
    """

    k: torch.Tensor
    v: torch.Tensor

    @classmethod
    def allocate(cls, cfg: ModelConfig, batch: int, max_len: int, device=None, dtype=torch.float32) -> KVCache:
        shape = (cfg.n_layers, batch, cfg.n_kv_heads, max_len, cfg.head_dim)
        return cls(torch.zeros(shape, device=device, dtype=dtype), torch.zeros(shape, device=device, dtype=dtype))

    @property
    def max_len(self) -> int:
        return self.k.shape[3]

    def nbytes(self) -> int:
        return self.k.numel() * self.k.element_size() * 2


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int):
        super().__init__()
        self.layer = layer
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.q_proj = nn.Linear(cfg.d_model, cfg.n_heads * cfg.head_dim, bias=False)
        self.k_proj = nn.Linear(cfg.d_model, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.v_proj = nn.Linear(cfg.d_model, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.o_proj = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.d_model, bias=False)

    def forward(self, x, cos, sin, cache: KVCache | None = None, start: int = 0, mask=None,
                positions: torch.Tensor | None = None) -> torch.Tensor:
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None and positions is not None:
            # One new token per row, each row at its own position (continuous batching): write
            # row b's key/value at positions[b], attend over the first mask.shape[-1] slots, and
            # let the mask hide each row's slots beyond its own length.
            rows = torch.arange(B, device=x.device)
            cache.k[self.layer, rows, :, positions] = k[:, :, 0]
            cache.v[self.layer, rows, :, positions] = v[:, :, 0]
            k = cache.k[self.layer, :B, :, : mask.shape[-1]]
            v = cache.v[self.layer, :B, :, : mask.shape[-1]]
        elif cache is not None:
            # Write this step's keys/values, then attend over everything cached so far.
            cache.k[self.layer, :B, :, start : start + T] = k
            cache.v[self.layer, :B, :, start : start + T] = v
            k = cache.k[self.layer, :B, :, : start + T]
            v = cache.v[self.layer, :B, :, : start + T]
        if T == 1 and cache is not None:
            # Decode: one query per row, so each KV head's group of query heads can be its
            # "sequence" of queries: (B, kv_heads, group, hd) against (B, kv_heads, L, hd). Grouped
            # attention without copying the cache (query head h uses KV head h // group, as below).
            q = q.reshape(B, self.n_kv_heads, self.n_heads // self.n_kv_heads, self.head_dim)
            if torch.compiler.is_compiling():
                # Spelled out, the compiler fuses it into one loop; SDPA would be an opaque call.
                scores = (q @ k.transpose(-1, -2)) * self.head_dim**-0.5
                if mask is not None:
                    scores = scores.masked_fill(~mask, float("-inf"))
                y = torch.softmax(scores.float(), dim=-1).to(v.dtype) @ v
            else:
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            return self.o_proj(y.reshape(B, 1, -1))
        if self.n_kv_heads != self.n_heads:
            # Expand shared KV heads to the query heads (GQA). repeat_interleave keeps SDPA on
            # its fast kernels on every backend; the cache itself stays small.
            rep = self.n_heads // self.n_kv_heads
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        if mask is not None:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # packed sequences (see segment_mask)
        elif start == 0:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            # A chunk after a cached prefix: query i may see keys 0 .. start + i.
            mask = torch.ones(T, start + T, dtype=torch.bool, device=x.device).tril(diagonal=start)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, -1))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.d_model, cfg.d_ff, bias=False)
        self.up_proj = nn.Linear(cfg.d_model, cfg.d_ff, bias=False)
        self.down_proj = nn.Linear(cfg.d_ff, cfg.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.self_attn = Attention(cfg, layer)
        self.post_attention_layernorm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x, cos, sin, cache=None, start=0, mask=None, positions=None):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, cache, start, mask, positions)
        return x + self.mlp(self.post_attention_layernorm(x))


def segment_positions(segments: torch.Tensor) -> torch.Tensor:
    """Each token's position within its segment: (B, T) ids like 0 0 0 1 1 -> 0 1 2 0 1."""
    T = segments.shape[1]
    index = torch.arange(T, device=segments.device).expand_as(segments)
    first = torch.ones_like(segments, dtype=torch.bool)
    first[:, 1:] = segments[:, 1:] != segments[:, :-1]
    return index - torch.where(first, index, 0).cummax(dim=1).values


def segment_mask(segments: torch.Tensor) -> torch.Tensor:
    """(B, 1, T, T) attention mask: causal, and only within the same segment."""
    T = segments.shape[1]
    causal = torch.ones(T, T, dtype=torch.bool, device=segments.device).tril()
    return ((segments[:, :, None] == segments[:, None, :]) & causal).unsqueeze(1)


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.layers = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        # Tied embeddings: the output head reuses embed_tokens.weight (no lm_head parameter).
        cos, sin = rope_tables(cfg.head_dim, cfg.context, cfg.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        if not any(p.is_meta for p in self.parameters()):
            self.reset_parameters()

    def reset_parameters(self) -> None:
        """GPT-2 style init: N(0, 0.02), residual output projections scaled by 1/sqrt(2L)."""
        std = self.cfg.init_std
        for name, p in self.named_parameters():
            if name.endswith("layernorm.weight") or name == "norm.weight":
                nn.init.ones_(p)
            elif name.endswith(("o_proj.weight", "down_proj.weight")):
                nn.init.normal_(p, 0.0, std / math.sqrt(2 * self.cfg.n_layers))
            else:
                nn.init.normal_(p, 0.0, std)

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        cache: KVCache | None = None,
        start: int = 0,
        reduction: str = "mean",
        segments: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
        loss_chunk: int = 0,
        kv_len: int = 0,
    ) -> torch.Tensor:
        """Logits (B, T, V) or, with `targets`, the cross-entropy loss.

        Targets equal to -100 are ignored (padding, or prompt tokens in fine-tuning).
        With `cache`, positions start at `start` and keys/values are read from and written to it.
        With `segments` (B, T), a row packs several sequences (ids 0, 0, 0, 1, 1, ...): each
        token attends only within its own sequence and its position restarts at 0, so a packed
        row computes exactly what its sequences would compute one by one.
        With `cache` and `positions` (B,), each row feeds one token at its own position: rows of
        different lengths decode together (the serving engine's continuous batching). They attend
        over the first `kv_len` cache slots, by default just enough for the longest row; a fixed
        `kv_len` keeps every step the same shape, which is what a compiled decode step needs.
        With `loss_chunk` > 0 (and targets, reduction mean or sum) the loss is computed that many
        tokens at a time and the full logits never exist (`myllm.losses`).
        """
        T = idx.shape[1]
        if start + T > self.cfg.context:
            raise ValueError(f"sequence of {start + T} tokens exceeds the model context {self.cfg.context}")
        mask = None
        if positions is not None:
            if cache is None or T != 1:
                raise ValueError("per-row positions need a KV cache and exactly one new token per row")
            length = kv_len or int(positions.max()) + 1
            if length > min(self.cfg.context, cache.max_len):
                raise ValueError(f"position {length - 1} is outside the context / KV cache")
            cos, sin = self.rope_cos[positions][:, None, None, :], self.rope_sin[positions][:, None, None, :]
            mask = (torch.arange(length, device=idx.device) <= positions[:, None])[:, None, None, :]
        elif segments is None:
            cos, sin = self.rope_cos[start : start + T], self.rope_sin[start : start + T]
        else:
            pos, mask = segment_positions(segments), segment_mask(segments)
            cos, sin = self.rope_cos[pos].unsqueeze(1), self.rope_sin[pos].unsqueeze(1)
        x = self.embed_tokens(idx)
        for layer in self.layers:
            x = layer(x, cos, sin, cache, start, mask, positions)
        x = self.norm(x)
        if targets is not None and loss_chunk > 0 and reduction in ("mean", "sum"):
            return chunked_cross_entropy(x.reshape(-1, x.shape[-1]), self.embed_tokens.weight, targets.reshape(-1),
                                         loss_chunk, reduction)
        logits = F.linear(x, self.embed_tokens.weight)
        if targets is None:
            return logits
        return F.cross_entropy(
            logits.float().view(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100, reduction=reduction
        )

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
