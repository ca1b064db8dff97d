"""Chunked cross-entropy: the loss of a large vocabulary without its logits ever existing whole.

For the 65,536-token vocabulary at context 8,192 the fp32 logits of one sequence are 2 GiB,
and their gradient, softmax and log-softmax as much again each. Here the hidden states are cut
into chunks of `chunk` tokens; each chunk's logits are computed, reduced to its summed loss and
dropped, then recomputed one chunk at a time in backward (`torch.utils.checkpoint`). Peak memory
for the head falls from ~3 x T x V x 4 bytes to ~3 x chunk x V x 4 bytes, for one extra
head matmul (~2/3 of a percent of a 1B model's FLOPs at this vocab). The result equals
`F.cross_entropy` on the full logits, and so do its gradients (tests/test_scale.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

AUTO_LOSS_CHUNK = 4096  # tokens per cross-entropy chunk when the vocabulary is large
LARGE_VOCAB = 32768


def loss_chunk_for(cfg) -> int:
    """`train.loss_chunk` of a RunConfig: 0 = auto (chunks of AUTO_LOSS_CHUNK from LARGE_VOCAB tokens up),
    -1 = off, else that many tokens per chunk."""
    if cfg.train.loss_chunk:
        return max(cfg.train.loss_chunk, 0)
    return AUTO_LOSS_CHUNK if cfg.model.vocab_size >= LARGE_VOCAB else 0


def _chunk_loss(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    logits = F.linear(h, weight).float()
    return F.cross_entropy(logits, targets, ignore_index=-100, reduction="sum")


def chunked_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk: int,
                          reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of `hidden @ weight.T` against `targets` (-100 ignored), `chunk` rows at a time.

    hidden: (N, d); weight: (V, d); targets: (N,). `reduction` is "mean" (over non-ignored targets)
    or "sum".
    """
    total = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, hidden.shape[0], chunk):
        h, t = hidden[start : start + chunk], targets[start : start + chunk]
        if hidden.requires_grad or weight.requires_grad:
            total = total + checkpoint(_chunk_loss, h, weight, t, use_reentrant=False)
        else:
            total = total + _chunk_loss(h, weight, t)
    if reduction == "sum":
        return total
    if reduction != "mean":
        raise ValueError(f"reduction {reduction!r}: chunked cross-entropy supports mean and sum")
    return total / (targets != -100).sum().clamp(min=1)
