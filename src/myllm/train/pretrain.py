"""Pretraining: next-token prediction on the run's token shards.

Reads `shards/` (or the ordered data phases of `train.phases`) and `config.toml` from the run
directory, writes `checkpoints/pretrain/step-*` and `metrics.jsonl`. This file supplies only
what is special about pretraining, the batches and the loss; the loop is
`myllm.train.loop.train`. Under torchrun every rank calls `pretrain`: each reads its own
windows of the data, and only rank 0 logs and writes reports.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import torch

from myllm.config import RunConfig
from myllm.data.loader import PhasedBatches, TrainBatches
from myllm.data.shards import ShardReader
from myllm.errors import MyLLMError
from myllm.evals.bpb import evaluate_bpb
from myllm.io import read_json
from myllm.model import Transformer
from myllm.train.distributed import barrier, batch_plan, init_distributed, local_device, shutdown
from myllm.device import autocast_dtype, resolve_device
from myllm.train.loop import TrainResult, train

# Keys that may change between a checkpoint and its resume without changing what is trained
# (extend max_steps, evaluate more often, switch memory savers, ...).
RESUMABLE_CHANGES = {"max_steps", "time_budget", "eval_every", "eval_tokens", "ckpt_every", "keep_last",
                     "device", "compile", "threads", "dist", "activation_checkpointing", "loss_chunk",
                     "max_bad_steps", "spike_factor", "dist_timeout"}
AUTO_LOSS_CHUNK = 4096  # tokens per cross-entropy chunk when the vocabulary is large
LARGE_VOCAB = 32768


def read_index(run_dir: Path, folder: str = "shards") -> dict:
    path = run_dir / folder / "index.json"
    if not path.is_file():
        raise MyLLMError(f"{path} not found: prepare the data first with `myllm run --out {run_dir}`")
    return read_json(path)


def parse_phases(text: str) -> list[tuple[str, int]]:
    """`"shards-math:12540000000,shards-prose:15e9"` -> [("shards-math", 12540000000), ...]."""
    phases = []
    for item in filter(None, (x.strip() for x in text.split(","))):
        folder, sep, budget = item.rpartition(":")
        try:
            tokens = int(float(budget))
        except ValueError:
            tokens = -1
        if not sep or not folder or tokens <= 0:
            raise MyLLMError(f"train.phases item {item!r}: expected SHARDS_DIR:TOKENS, e.g. shards-math:12.54e9")
        phases.append((folder, tokens))
    return phases


def resume_key(cfg: RunConfig, index: dict) -> str:
    """What a checkpoint must share with the config to be resumed: model, data and recipe."""
    train = {k: v for k, v in cfg.to_dict()["train"].items() if k not in RESUMABLE_CHANGES}
    if cfg.train.global_batch:  # the recipe is the global batch: micro-batch and accumulation may change
        del train["batch_size"], train["grad_accum"]
    blob = json.dumps({"model": cfg.to_dict()["model"], "train": train, "index": index}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def loss_chunk(cfg: RunConfig) -> int:
    if cfg.train.loss_chunk:
        return max(cfg.train.loss_chunk, 0)
    return AUTO_LOSS_CHUNK if cfg.model.vocab_size >= LARGE_VOCAB else 0


def pretrain(
    run_dir: Path, cfg: RunConfig, resume: bool = False, restart: bool = False, show_progress: bool = True
) -> TrainResult:
    run_dir = Path(run_dir)
    phases = parse_phases(cfg.train.phases)
    index = read_index(run_dir)
    for folder, _ in phases:
        if not (run_dir / folder / "index.json").is_file():
            raise MyLLMError(
                f"train.phases names {run_dir / folder}, which holds no shards (index.json); put that phase's "
                f"shards there (laid out like {run_dir / 'shards'}, same tokenizer) or change train.phases"
            )
    indexes = [read_index(run_dir, folder) for folder, _ in phases]
    for idx in [index, *indexes]:
        if idx["vocab_size"] > cfg.model.vocab_size:
            raise MyLLMError(
                f"the tokenizer has {idx['vocab_size']} tokens but model.vocab_size = {cfg.model.vocab_size}; "
                "raise model.vocab_size or retrain the tokenizer"
            )
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    device = resolve_device(cfg.train.device)
    ctx = init_distributed(cfg.train, device)
    try:
        device = local_device(device, ctx)
        seq_len = cfg.seq_len
        plan = batch_plan(cfg.train, ctx.world_size, seq_len)
        if ctx.is_main and (ctx.mode != "none" or cfg.train.global_batch):  # one process: the bar says enough
            mode = f", {ctx.mode}" if ctx.mode != "none" else ""
            print(f"pretrain: {plan.describe()}{mode}", flush=True)
        if restart and ctx.is_main:
            shutil.rmtree(run_dir / "checkpoints" / "pretrain", ignore_errors=True)
        barrier(ctx)
        torch.manual_seed(cfg.train.seed)
        model = Transformer(cfg.model).to(device)
        batches = make_batches(run_dir, cfg, phases, seq_len, ctx.rank, ctx.world_size)
        val_reader = ShardReader(run_dir / "shards", "val")
        val_bytes = index["splits"]["val"]["bytes"]
        chunk = loss_chunk(cfg)

        def evaluate(m: torch.nn.Module) -> dict[str, float]:
            return evaluate_bpb(m, val_reader, val_bytes, cfg.train.batch_size, seq_len, cfg.train.eval_tokens,
                                device, autocast_dtype(device))

        def loss_fn(m, batch):
            x, y = batch
            return m(x.to(device, non_blocking=True), y.to(device, non_blocking=True), loss_chunk=chunk)

        return train(
            model, cfg.train, run_dir, "pretrain", batches, loss_fn,
            tokens_in=lambda batch: batch[0].numel(), evaluate=evaluate,
            fingerprint=resume_key(cfg, {"shards": index, "phases": indexes} if phases else index), resume=resume,
            show_progress=show_progress, ctx=ctx, grad_accum=plan.grad_accum,
        )
    finally:
        shutdown(ctx)


def make_batches(run_dir: Path, cfg: RunConfig, phases: list[tuple[str, int]], seq_len: int, rank: int,
                 world_size: int) -> TrainBatches | PhasedBatches:
    """This rank's batches: rank r reads every world_size-th window (distinct data on every rank)."""
    if not phases:
        return TrainBatches(ShardReader(run_dir / "shards", "train"), cfg.train.batch_size, seq_len,
                            seed=cfg.train.seed, rank=rank, world_size=world_size)
    readers = [(ShardReader(run_dir / folder, "train"), tokens) for folder, tokens in phases]
    return PhasedBatches(readers, cfg.train.batch_size, seq_len, cfg.train.seed, rank, world_size)
