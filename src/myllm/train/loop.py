"""The one training loop every stage shares (pretraining now; SFT/DPO/GRPO supply their own
batches and loss to the same loop).

Per optimizer step: `grad_accum` micro-batches (bf16 autocast on CUDA, fp32 on CPU), gradient
clipping, AdamW, the scheduled learning rate. Every `eval_every` steps an evaluation; every
`ckpt_every` steps (and at the end) an atomic checkpoint with the data position and RNG, so
`resume=True` continues exactly where the last checkpoint left off. One JSON line per logged
step goes to `metrics.jsonl`; a progress bar shows loss, tok/s and ETA.

A NaN/inf loss or gradient skips its step (counted as `skipped_steps`) and `max_bad_steps` in a
row stop training; a loss above `spike_factor` x its running mean is logged as `loss_spike`.
Under torchrun (`ctx`), see `myllm.train.distributed`: the loop is the same, with the model
wrapped, losses averaged over ranks and the step time taken as the slowest rank's.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.distributed as dist
from tqdm import tqdm

from myllm.config import TrainConfig
from myllm.device import attention_kernels, autocast_dtype
from myllm.errors import MyLLMError
from myllm.io import atomic_write_text
from myllm.rundir import RunDir
from myllm.train.checkpoint import (
    check_compatible,
    latest_valid_checkpoint,
    list_checkpoints,
    load_training_state,
    load_weights,
    read_state,
    remove_stale_writes,
    save_checkpoint,
)
from myllm.train.distributed import (
    DistContext,
    all_max,
    all_mean,
    barrier,
    grad_sync,
    is_peer_failure,
    parallelize,
    total_norm,
)
from myllm.train.optim import lr_at, make_optimizer
from myllm.train.sharded import check_world_size, load_sharded, save_sharded


class Batches(Protocol):
    def next_batch(self) -> Any: ...
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> None: ...


@dataclass
class TrainResult:
    step: int
    tokens: int
    seconds: float
    checkpoint: Path
    last_eval: dict[str, float]


class MetricsLog:
    """Append-only `metrics.jsonl`; on resume, lines past the checkpoint are dropped."""

    def __init__(self, path: Path):
        self.path = path

    def append(self, record: dict[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def truncate(self, stage: str, after_step: int) -> None:
        """Drop this stage's lines past `after_step`, and a last line a kill cut in half (atomically)."""
        if not self.path.exists():
            return
        keep = []
        for line in self.path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # torn by a kill mid-append
            if not (record.get("stage") == stage and record["step"] > after_step):
                keep.append(line)
        atomic_write_text(self.path, "".join(line + "\n" for line in keep))

    def clear(self, stage: str) -> None:
        self.truncate(stage, -1)


def train(
    model: torch.nn.Module,
    cfg: TrainConfig,
    run_dir: RunDir | Path,
    stage: str,
    batches: Batches,
    loss_fn: Callable[[torch.nn.Module, Any], torch.Tensor | tuple[torch.Tensor, dict[str, float]]],
    tokens_in: Callable[[Any], int],
    evaluate: Callable[[torch.nn.Module], dict[str, float]] | None = None,
    fingerprint: str = "",
    resume: bool = False,
    show_progress: bool = True,
    extra_state: dict[str, Any] | None = None,
    ctx: DistContext | None = None,
    grad_accum: int | None = None,
) -> TrainResult:
    """Train `model` in place; returns where its final checkpoint is.

    `loss_fn(model, batch)` returns the mean loss of one micro-batch, or (loss, {name: value})
    with stage metrics (reward, accuracy, KL, ...) that are averaged over the step's
    micro-batches and logged beside the loss; `tokens_in(batch)` the number of tokens it trains
    on (for tok/s); `evaluate(model)` returns e.g. val loss and bpb. Only parameters with
    `requires_grad` are optimized and checkpointed (LoRA); `extra_state` goes into every
    checkpoint's state.json (e.g. the base checkpoint and LoRA settings).

    With `ctx` (torchrun), `batches` yields this rank's micro-batches, `grad_accum` (default
    `cfg.grad_accum`) comes from the global batch; the model is wrapped here (DDP/FSDP2,
    checkpointing, compile: `parallelize`), losses are averaged over ranks, and only rank 0 logs
    and writes (FSDP: every rank writes its shards).
    """
    ctx = ctx or DistContext()
    accum = grad_accum or cfg.grad_accum
    device = next(model.parameters()).device
    amp = autocast_dtype(device)
    ckpt_root = RunDir.of(run_dir).checkpoints(stage)
    metrics = MetricsLog(RunDir.of(run_dir).metrics_file)
    sharded = ctx.mode == "fsdp"

    step, tokens, elapsed = 0, 0, 0.0
    guard = {"skipped_steps": 0, "bad_in_row": 0, "loss_ema": None}
    last_eval: dict[str, float] = {}
    path = None
    if resume:
        path = latest_valid_checkpoint(ckpt_root)
        if path is None:
            raise MyLLMError(f"--resume: no checkpoint in {ckpt_root}; run without --resume to start training")
        check_compatible(path, model.cfg)
        state = read_state(path)
        if sharded and state.get("sharded"):
            check_world_size(path, ctx)
        if fingerprint and state.get("fingerprint") not in ("", fingerprint):
            raise MyLLMError(
                f"--resume: checkpoint {path} was written with a different data or training config; "
                "restore it, or pass --restart to start this stage over"
            )
        if state.get("sharded") and not sharded:
            raise MyLLMError(f"checkpoint {path} is sharded (FSDP); resume it with --dist fsdp "
                             f"--nproc {state.get('world_size')}")
        if sharded and not state.get("sharded"):
            raise MyLLMError(f"checkpoint {path} is a full (DDP or single-process) checkpoint; resume it with "
                             "--dist ddp (any number of processes)")
        if not sharded:
            load_weights(path, model)
        batches.load_state_dict(state["loader"])
        step, tokens, elapsed = state["step"], state["tokens"], state["seconds"]
        last_eval = state.get("last_eval", {})
        guard.update({k: state[k] for k in guard if k in state})
        if ctx.is_main:
            metrics.truncate(stage, step)
    elif list_checkpoints(ckpt_root):
        raise MyLLMError(
            f"{ckpt_root} already has checkpoints; pass --resume to continue them or --restart to start over"
        )
    elif ctx.is_main:
        metrics.clear(stage)
    if ctx.is_main:
        remove_stale_writes(ckpt_root)
    barrier(ctx)

    forward = parallelize(model, cfg, ctx, device)
    optimizer = make_optimizer(model, cfg, device)
    if path is not None:
        if sharded:
            load_sharded(path, model, optimizer, ctx)
        else:
            load_training_state(path, optimizer)

    def budget_progress() -> float:
        by_steps = step / cfg.max_steps
        return max(by_steps, elapsed / cfg.time_budget) if cfg.time_budget > 0 else by_steps

    def finished() -> bool:
        return step >= cfg.max_steps or (cfg.time_budget > 0 and elapsed >= cfg.time_budget)

    def checkpoint(done: bool) -> Path:
        state = {"stage": stage, "tokens": tokens, "seconds": elapsed, "loader": batches.state_dict(),
                 "fingerprint": fingerprint, "last_eval": last_eval, "done": done, **guard, **(extra_state or {})}
        if sharded:
            return save_sharded(ckpt_root, step, model, optimizer, state, cfg.keep_last, ctx)
        saved = ckpt_root / f"step-{step:06d}"
        if ctx.is_main:
            saved = save_checkpoint(ckpt_root, step, model, optimizer, state, cfg.keep_last)
        barrier(ctx)
        return saved

    if resume and finished():
        return TrainResult(step, tokens, elapsed, path, last_eval)
    model.train()
    bar = tqdm(total=cfg.max_steps, initial=step, desc=stage, disable=not (show_progress and ctx.is_main),
               mininterval=1.0, dynamic_ncols=True)
    try:
        while not finished():
            t0 = time.perf_counter()
            lr = lr_at(step, budget_progress(), cfg)
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss_sum, step_tokens, extras = 0.0, 0, {}
            for micro in range(accum):
                batch = batches.next_batch()
                with grad_sync(forward, ctx, micro == accum - 1):
                    with torch.autocast(device_type=device.type, dtype=amp, enabled=amp is not None), \
                            attention_kernels(device):
                        out = loss_fn(forward, batch)
                    loss, more = out if isinstance(out, tuple) else (out, {})
                    (loss / accum).backward()
                loss_sum += loss.item()
                step_tokens += tokens_in(batch)
                for k, v in more.items():
                    extras[k] = extras.get(k, 0.0) + float(v) / accum
            loss_value = all_mean(loss_sum / accum, ctx, device)
            step_tokens *= ctx.world_size
            grad_norm = total_norm(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip))
            bad = not (math.isfinite(loss_value) and math.isfinite(grad_norm))
            if bad:
                optimizer.zero_grad(set_to_none=True)  # skip the update; the batch is spent
                guard["skipped_steps"] += 1
                guard["bad_in_row"] += 1
                if guard["bad_in_row"] >= cfg.max_bad_steps:
                    raise MyLLMError(
                        f"{stage}: loss or gradient was NaN/inf in {guard['bad_in_row']} steps in a row (up to "
                        f"step {step + 1}); lower train.lr or raise train.warmup_steps, then --resume from the "
                        f"last checkpoint (train.max_bad_steps = {cfg.max_bad_steps})")
                if ctx.is_main:
                    tqdm.write(f"{stage}: step {step + 1} skipped: loss {loss_value}, grad norm {grad_norm} "
                               f"({guard['bad_in_row']} in a row, {guard['skipped_steps']} in all)")
            else:
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                guard["bad_in_row"] = 0
            if device.type == "cuda":
                torch.cuda.synchronize()
            dt = all_max(time.perf_counter() - t0, ctx, device)  # one clock for all ranks
            step, tokens, elapsed = step + 1, tokens + step_tokens, elapsed + dt
            record = {"stage": stage, "step": step, "loss": round(loss_value, 5) if not bad else None, "lr": lr,
                      "grad_norm": round(grad_norm, 4) if not bad else None, "tok_s": round(step_tokens / dt, 1),
                      "tokens": tokens, "elapsed": round(elapsed, 3),
                      **{k: round(v, 5) for k, v in extras.items()}}
            if guard["skipped_steps"]:
                record["skipped_steps"] = guard["skipped_steps"]
            if not bad and cfg.spike_factor > 0:
                spike = note_spike(guard, loss_value, step, cfg.spike_factor)
                if spike:
                    record["loss_spike"] = True
                    if ctx.is_main:
                        tqdm.write(f"{stage}: loss spike at step {step}: {loss_value:.4f} vs running mean "
                                   f"{spike:.4f} (grad norm {grad_norm:.3g})")
            if evaluate is not None and (step % cfg.eval_every == 0 or finished()):
                t_eval = time.perf_counter()
                last_eval = {f"val_{k}": v for k, v in evaluate(model).items() if k != "tokens"}
                record.update(last_eval, eval_seconds=round(time.perf_counter() - t_eval, 3))
                model.train()  # evaluation time is not counted in `elapsed` (the time budget is for training)
            if ctx.is_main:
                metrics.append(record)
            rate = step_tokens / dt
            eta = (cfg.max_steps - step) * dt
            if cfg.time_budget > 0:
                eta = min(eta, max(cfg.time_budget - elapsed, 0.0))
            bar.set_postfix_str(f"loss {loss_value:.3f} | {rate:,.0f} tok/s | eta {eta:,.0f}s", refresh=False)
            bar.update(1)
            if step % cfg.ckpt_every == 0 or finished():
                path = checkpoint(done=finished())
    except torch.OutOfMemoryError:
        raise MyLLMError(
            f"{stage}: out of memory at step {step + 1} with micro-batch {cfg.batch_size} on {device}; lower "
            "train.batch_size (set train.global_batch to keep the recipe: accumulation makes up the rest), "
            "turn on train.activation_checkpointing=true, or use --dist fsdp"
        ) from None
    except (dist.DistBackendError, RuntimeError) as e:
        if not ctx.enabled or not is_peer_failure(e):
            raise
        raise MyLLMError(
            f"rank {ctx.rank}: lost the other ranks at step {step + 1} ({str(e).splitlines()[0][:120]}); one of "
            "them died or hung (its own error says why); completed checkpoints are kept: re-run with --resume"
        ) from None
    bar.close()
    return TrainResult(step, tokens, elapsed, path, last_eval)


SPIKE_WARMUP = 10  # steps before the running mean is trusted


def note_spike(guard: dict, loss: float, step: int, factor: float) -> float | None:
    """Update the loss running mean; return it when `loss` is more than `factor` x above it (a spike)."""
    ema = guard["loss_ema"]
    guard["loss_ema"] = loss if ema is None else 0.9 * ema + 0.1 * loss
    if ema is not None and step > SPIKE_WARMUP and loss > factor * ema:
        return ema
    return None
