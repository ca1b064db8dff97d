"""Bits per byte: the tokenizer-independent measure of how well a model predicts text.

Loss per token depends on the tokenizer (bigger tokens, bigger loss per token); bits per
byte divides the total information by the UTF-8 bytes of the text, so it compares with any
other model, and with the universe's exact source entropy, on equal terms:

    bpb = sum over target tokens of -ln p(token) / ln 2 / bytes of text

No text, no number: a split with no tokens (a tiny corpus, `data.val_fraction = 0` with too few
documents to fill it) or an evaluation of no tokens (`train.eval_tokens = 0`) has no bpb: None,
shown as "n/a", never 0.0 (which would read as a perfect model).
"""

from __future__ import annotations

import math

import torch

from myllm.data.loader import eval_batches
from myllm.data.shards import ShardReader
from myllm.device import autocast
from myllm.losses import loss_chunk_for


@torch.no_grad()
def evaluate_bpb(
    model: torch.nn.Module,
    reader: ShardReader,
    split_bytes: int,
    batch_size: int,
    seq_len: int,
    max_tokens: int | None = None,
    device: torch.device | str = "cpu",
    precision: str = "auto",
    stride: int | None = None,
    loss_chunk: int = 0,
) -> dict[str, float | None]:
    """Mean loss (nats/token) and bpb over the split, or over its first `max_tokens` tokens
    (both None when no target token was scored: an empty split or `max_tokens = 0`).

    Windows overlap by half (`stride` = seq_len / 2 by default): every token after the first
    window is predicted with at least half a context of history, which is what the model
    offers in use and what the universe's entropy floor assumes (each choice conditioned on
    the text before it). Each target is still counted once.
    On a prefix the byte count is prorated by tokens (the split's average bytes per token);
    over the whole split it is exact.
    """
    was_training = model.training
    model.eval()
    device = torch.device(device)
    total_nats, total_tokens = torch.zeros((), dtype=torch.float64, device=device), 0
    for x, y in eval_batches(reader, batch_size, seq_len, max_tokens, stride or max(seq_len // 2, 1)):
        total_tokens += int((y != -100).sum())  # counted on the host, before the copy
        x, y = x.to(device), y.to(device)
        with autocast(device, precision):
            total_nats += model(x, y, reduction="sum", loss_chunk=loss_chunk).double()
    model.train(was_training)
    total_nats = total_nats.item()
    if total_tokens == 0:
        return {"loss": None, "bpb": None, "tokens": 0}
    all_targets = max(len(reader) - 1, 1)
    covered_bytes = split_bytes if total_tokens >= all_targets else split_bytes * total_tokens / all_targets
    return {
        "loss": total_nats / total_tokens,
        "bpb": total_nats / math.log(2) / max(covered_bytes, 1),
        "tokens": total_tokens,
    }


def split_tokens(run, split: str) -> int:
    """Tokens of a split of a run's shards (0 for a split the index does not list)."""
    return (run.index()["splits"].get(split) or {}).get("tokens", 0)


def no_data_warning(split: str) -> str:
    """The one line said once when a split has nothing to measure on."""
    return (f"warning: the {split} split has no tokens, so there is no {split} bpb (n/a); "
            f"give the corpus more documents or a {split}/ folder, or raise data.{split}_fraction")


def run_bpb(run, model: torch.nn.Module, cfg, split: str = "val", device: torch.device | str = "cpu",
            max_tokens: int | None = None) -> dict[str, float] | None:
    """Loss and bpb of `model` on a split of a run's shards (`run` a RunDir, `cfg` its RunConfig),
    at the run's batch size and context; None when nothing was measured (under two tokens in the
    split, or `max_tokens = 0`)."""
    if split_tokens(run, split) < 2:
        return None
    run.check_shards()
    info = run.index()["splits"][split]
    result = evaluate_bpb(model, ShardReader(run.shards, split), info["bytes"], cfg.train.batch_size, cfg.seq_len,
                          max_tokens, device, cfg.train.precision, loss_chunk=loss_chunk_for(cfg))
    return None if result["bpb"] is None else result
