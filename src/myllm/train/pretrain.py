"""Pretraining: next-token prediction on the run's token shards.

Reads `shards/` (or the ordered data phases of `train.phases`) and `config.toml` from the run
directory, writes `checkpoints/pretrain/step-*` and `metrics.jsonl`. This file supplies only
what is special about pretraining, the batches and the loss; the loop is
`myllm.train.loop.train`. Under torchrun every rank calls `pretrain`: each reads its own
windows of the data, and only rank 0 logs and writes reports.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from myllm.config import RunConfig, parse_phases
from myllm.data.loader import PhasedBatches, TrainBatches
from myllm.data.shards import ShardReader
from myllm.device import resolve_device
from myllm.errors import MyLLMError
from myllm.evals.bpb import no_data_warning, run_bpb, split_tokens
from myllm.losses import AUTO_LOSS_CHUNK, LARGE_VOCAB, loss_chunk_for  # noqa: F401 (bench/)
from myllm.model import Transformer
from myllm.rundir import RunDir, resume_fingerprint
from myllm.train.distributed import barrier, batch_plan, init_distributed, local_device, shutdown
from myllm.train.loop import TrainResult, train
from myllm.train.optim import check_optimizer, config_rejections


def check_restart_flags(resume: bool, restart: bool) -> None:
    if resume and restart:
        raise MyLLMError("--resume and --restart contradict each other (continue the checkpoints, or delete "
                         "them and start over): pick one")


def pretrain(
    run_dir: RunDir | Path, cfg: RunConfig, resume: bool = False, restart: bool = False, show_progress: bool = True
) -> TrainResult:
    run = RunDir.of(run_dir)
    check_restart_flags(resume, restart)
    phases = parse_phases(cfg.train.phases)
    index = run.index()
    for folder, _ in phases:
        if not run.index_file(folder).is_file():
            raise MyLLMError(
                f"train.phases names {run.shard_folder(folder)}, which holds no shards (index.json); put that "
                f"phase's shards there (laid out like {run.shards}, same tokenizer) or change train.phases"
            )
    indexes = [run.index(folder) for folder, _ in phases]
    for folder in ["shards", *(folder for folder, _ in phases)]:
        run.check_shards(folder=folder)
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
        torch.manual_seed(cfg.train.seed)
        with config_rejections():
            model = Transformer(cfg.model).to(device)
        check_optimizer(model, cfg.train, device)
        # opens and checks the shards; pinned host memory on CUDA
        batches = make_batches(run, cfg, phases, seq_len, ctx.rank, ctx.world_size, device.type == "cuda")
        if restart and ctx.is_main:  # validate (model, optimizer, data), then delete
            shutil.rmtree(run.checkpoints("pretrain"), ignore_errors=True)
        barrier(ctx)
        chunk = loss_chunk_for(cfg)

        if ctx.is_main and split_tokens(run, "val") < 2:  # said once, not at every evaluation
            print(f"pretrain: {no_data_warning('val')}", flush=True)

        def evaluate(m: torch.nn.Module) -> dict[str, float]:
            return run_bpb(run, m, cfg, "val", device, cfg.train.eval_tokens) or {}

        def loss_fn(m, batch):
            x, y = batch
            return m(x.to(device, non_blocking=True), y.to(device, non_blocking=True), loss_chunk=chunk)

        result = train(
            model, cfg.train, run, "pretrain", batches, loss_fn,
            tokens_in=lambda batch: batch[0].numel(), evaluate=evaluate,
            fingerprint=resume_fingerprint(run, cfg, "pretrain"), resume=resume,
            show_progress=show_progress, ctx=ctx, grad_accum=plan.grad_accum,
        )
        barrier(ctx)  # a finished run: no rank tears its process group down while another still uses it
        return result
    finally:
        shutdown(ctx)


def make_batches(run: RunDir, cfg: RunConfig, phases: list[tuple[str, int]], seq_len: int, rank: int,
                 world_size: int, pin_memory: bool = False) -> TrainBatches | PhasedBatches:
    """This rank's batches: rank r reads every world_size-th window (distinct data on every rank)."""
    if not phases:
        return TrainBatches(ShardReader(run.shards, "train"), cfg.train.batch_size, seq_len,
                            seed=cfg.train.seed, rank=rank, world_size=world_size, pin_memory=pin_memory)
    readers = [(ShardReader(run.shard_folder(folder), "train"), tokens) for folder, tokens in phases]
    return PhasedBatches(readers, cfg.train.batch_size, seq_len, cfg.train.seed, rank, world_size, pin_memory)
