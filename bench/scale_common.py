"""What bench/gpu.py and bench/dist_cpu.py share: time MyLLM's own training loop on synthetic batches.

The timing goes through `myllm.train.loop.train` itself (parallelize, compile, autocast, chunked
loss, clipping, fused AdamW, the metrics line), not a copy of it: tok/s is read from the
`tok_s` of the metrics lines of the timed steps (after `warmup` steps, which include compilation),
the median, over all ranks.
"""

from __future__ import annotations

import json
import statistics
import tempfile
from pathlib import Path

import torch

from myllm.config import ModelConfig, TrainConfig
from myllm.model import Transformer
from myllm.plan import flops_per_token
from myllm.train.distributed import DistContext
from myllm.train.loop import train


class SyntheticBatches:
    """Random token ids (the compute does not depend on them), seeded per rank."""

    def __init__(self, batch: int, seq_len: int, vocab: int, device: torch.device, rank: int = 0):
        g = torch.Generator().manual_seed(rank)
        tokens = torch.randint(0, vocab, (batch, seq_len + 1), generator=g)
        self.x, self.y = tokens[:, :-1].to(device), tokens[:, 1:].to(device)

    def next_batch(self):
        return self.x, self.y

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def time_training(cfg: ModelConfig, train_cfg: TrainConfig, device: torch.device, warmup: int, steps: int,
                  ctx: DistContext | None = None, loss_chunk: int = 0) -> dict:
    """Train `warmup + steps` steps; returns tok/s (all ranks), model FLOPs/token and the loss."""
    ctx = ctx or DistContext()
    torch.manual_seed(0)
    model = Transformer(cfg).to(device)
    n = model.num_params()
    seq = train_cfg.seq_len or cfg.context
    batches = SyntheticBatches(train_cfg.batch_size, seq, cfg.vocab_size, device, ctx.rank)
    train_cfg.max_steps, train_cfg.ckpt_every, train_cfg.eval_every = warmup + steps, 10**9, 10**9
    train_cfg.warmup_steps = 1
    # The final checkpoint (a 1B model's is ~17 GB) goes to memory where there is a /dev/shm: seconds, not minutes.
    shm = "/dev/shm" if device.type == "cuda" and Path("/dev/shm").is_dir() else None
    with tempfile.TemporaryDirectory(dir=shm) as tmp:
        run = Path(tmp)
        train(model, train_cfg, run, "bench", batches, lambda m, b: m(*b, loss_chunk=loss_chunk),
              lambda b: b[0].numel(), show_progress=False, ctx=ctx)
        rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()] if ctx.is_main else []
    if not ctx.is_main:
        return {}
    timed = rows[warmup:]
    tok_s = statistics.median(r["tok_s"] for r in timed)
    return {"params": n, "tok_s": tok_s, "flops_per_token": flops_per_token(cfg, n, seq), "loss": timed[-1]["loss"]}
