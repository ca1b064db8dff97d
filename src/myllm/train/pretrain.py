"""Pretraining: next-token prediction on the run's token shards.

Reads `shards/` and `config.toml` from the run directory, writes
`checkpoints/pretrain/step-*` and `metrics.jsonl`. This file supplies only what is special
about pretraining, the batches and the loss; the loop is `myllm.train.loop.train`.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import torch

from myllm.config import RunConfig
from myllm.data.loader import TrainBatches
from myllm.data.shards import ShardReader
from myllm.errors import MyLLMError
from myllm.evals.bpb import evaluate_bpb
from myllm.io import read_json
from myllm.model import Transformer
from myllm.train.loop import TrainResult, autocast_dtype, resolve_device, train

# Keys that may change between a checkpoint and its resume without changing what is trained
# (extend max_steps, evaluate more often, ...).
RESUMABLE_CHANGES = {"max_steps", "time_budget", "eval_every", "eval_tokens", "ckpt_every", "keep_last",
                     "device", "compile", "threads"}


def read_index(run_dir: Path) -> dict:
    path = run_dir / "shards" / "index.json"
    if not path.is_file():
        raise MyLLMError(f"{path} not found: prepare the data first with `myllm run --out {run_dir}`")
    return read_json(path)


def resume_key(cfg: RunConfig, index: dict) -> str:
    """What a checkpoint must share with the config to be resumed: model, data and recipe."""
    train = {k: v for k, v in cfg.to_dict()["train"].items() if k not in RESUMABLE_CHANGES}
    blob = json.dumps({"model": cfg.to_dict()["model"], "train": train, "index": index}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def pretrain(
    run_dir: Path, cfg: RunConfig, resume: bool = False, restart: bool = False, show_progress: bool = True
) -> TrainResult:
    run_dir = Path(run_dir)
    index = read_index(run_dir)
    if index["vocab_size"] > cfg.model.vocab_size:
        raise MyLLMError(
            f"the tokenizer has {index['vocab_size']} tokens but model.vocab_size = {cfg.model.vocab_size}; "
            "raise model.vocab_size or retrain the tokenizer"
        )
    if restart:
        shutil.rmtree(run_dir / "checkpoints" / "pretrain", ignore_errors=True)
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    device = resolve_device(cfg.train.device)
    torch.manual_seed(cfg.train.seed)
    model = Transformer(cfg.model).to(device)
    seq_len = cfg.seq_len
    shards = run_dir / "shards"
    batches = TrainBatches(ShardReader(shards, "train"), cfg.train.batch_size, seq_len, seed=cfg.train.seed)
    val_reader = ShardReader(shards, "val")
    val_bytes = index["splits"]["val"]["bytes"]

    def evaluate(m: torch.nn.Module) -> dict[str, float]:
        return evaluate_bpb(m, val_reader, val_bytes, cfg.train.batch_size, seq_len, cfg.train.eval_tokens,
                            device, autocast_dtype(device))

    def loss_fn(m, batch):
        x, y = batch
        return m(x.to(device, non_blocking=True), y.to(device, non_blocking=True))

    return train(
        model, cfg.train, run_dir, "pretrain", batches, loss_fn,
        tokens_in=lambda batch: batch[0].numel(), evaluate=evaluate,
        fingerprint=resume_key(cfg, index), resume=resume, show_progress=show_progress,
    )
