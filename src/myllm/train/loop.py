"""The one training loop every stage shares (pretraining now; SFT/DPO/GRPO supply their own
batches and loss to the same loop).

Per optimizer step: `grad_accum` micro-batches (under `train.precision`'s autocast: bf16 on CUDA,
fp32 on CPU), gradient clipping, AdamW, the scheduled learning rate; loss, gradient norm and stage
metrics are kept on the device and read back in one sync per step. Every `eval_every` steps an evaluation; every
`ckpt_every` steps (and at the end) an atomic checkpoint with the data position and RNG, so
`resume=True` continues exactly where the last checkpoint left off. One JSON line per logged
step goes to `metrics.jsonl`; a progress bar shows loss, tok/s and ETA.

A NaN/inf loss or gradient skips its step (counted as `skipped_steps`) and `max_bad_steps` in a
row stop training; a loss above `spike_factor` x its running mean is logged as `loss_spike`.
Under torchrun (`ctx`), see `myllm.train.distributed`: the loop is the same, with the model
wrapped, losses averaged over ranks and the step time taken as the slowest rank's.

`train` tells the story; each chapter is a function: `start_state` (in `myllm.train.state`: resume
or start fresh), `prepare` (wrap the model, make the optimizer), then per step `run_step`,
`step_record` (with spike detection), `run_eval`, `show_step` and `save`; `plain_errors` turns an
out-of-memory error or a lost peer rank into advice.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from tqdm import tqdm

from myllm.config import TrainConfig
from myllm.device import attention_kernels, autocast
from myllm.errors import MyLLMError
from myllm.rundir import RunDir
from myllm.train.checkpoint import load_training_state, save_checkpoint
from myllm.train.distributed import (
    DistContext,
    all_max,
    all_mean,
    barrier,
    full_value,
    grad_sync,
    is_peer_failure,
    parallelize,
)
from myllm.train.optim import lr_at, make_optimizer
from myllm.train.sharded import load_sharded, save_sharded
from myllm.train.state import Batches, MetricsLog, TrainState, start_state
from myllm.train.trackers import Trackers

SPIKE_WARMUP = 10  # steps before the running mean is trusted


@dataclass
class TrainResult:
    step: int
    tokens: int
    seconds: float
    checkpoint: Path
    last_eval: dict[str, float]


@dataclass
class StepStats:
    """One optimizer step as logged: loss and metrics averaged over micro-batches and ranks."""

    loss: float
    grad_norm: float
    lr: float
    tokens: int  # over all ranks
    seconds: float  # the slowest rank's
    metrics: dict[str, float]
    skipped: bool  # NaN/inf loss or gradient: no update


@dataclass(frozen=True)
class Job:
    """The facts of one `train` call that its helpers share; none changes while it runs."""

    stage: str
    cfg: TrainConfig
    ctx: DistContext
    device: torch.device
    accum: int  # micro-batches per optimizer step
    ckpt_root: Path
    fingerprint: str
    extra_state: dict[str, Any]

    @property
    def sharded(self) -> bool:
        return self.ctx.mode == "fsdp"


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
    run = RunDir.of(run_dir)
    ckpt_root = run.checkpoints(stage)
    metrics = MetricsLog(run.metrics_file)
    device = next(model.parameters()).device
    job = Job(stage, cfg, ctx, device, grad_accum or cfg.grad_accum, ckpt_root, fingerprint, extra_state or {})

    state = start_state(ckpt_root, metrics, stage, ctx, model, batches, fingerprint, resume)
    forward, optimizer = prepare(job, model, state)
    if resume and state.finished(cfg):  # resumed a finished stage: its last checkpoint is the result
        return result(state)
    trackers = Trackers(cfg.loggers.split(","), run.root, stage, state.step) if ctx.is_main else None
    model.train()
    bar = tqdm(
        total=cfg.max_steps,
        initial=state.step,
        desc=stage,
        disable=not (show_progress and ctx.is_main),
        mininterval=1.0,
        dynamic_ncols=True,
    )
    try:
        with plain_errors(job, state):
            while not state.finished(cfg):
                stats = run_step(job, state, model, forward, optimizer, batches, loss_fn, tokens_in)
                record = step_record(job, state, stats)
                if evaluate is not None and (state.step % cfg.eval_every == 0 or state.finished(cfg)):
                    record.update(run_eval(model, evaluate, state))
                if ctx.is_main:
                    metrics.append(record)
                    trackers.log(record)
                show_step(bar, cfg, state, stats)
                if state.step % cfg.ckpt_every == 0 or state.finished(cfg):
                    state.checkpoint = save(job, state, model, optimizer, batches, done=state.finished(cfg))
    finally:
        if trackers is not None:
            trackers.close()  # what was logged reaches the event files, on an error too
    bar.close()
    return result(state)


def result(state: TrainState) -> TrainResult:
    return TrainResult(state.step, state.tokens, state.elapsed, state.checkpoint, state.last_eval)


def prepare(job: Job, model: torch.nn.Module, state: TrainState) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """Wrap the model (`parallelize`) and make its optimizer; on resume load the optimizer state and RNG
    (and, FSDP, the sharded weights), which must come after the wrapping."""
    forward = parallelize(model, job.cfg, job.ctx, job.device)
    optimizer = make_optimizer(model, job.cfg, job.device)
    if state.checkpoint is not None:
        if job.sharded:
            load_sharded(state.checkpoint, model, optimizer, job.ctx)
        else:
            load_training_state(state.checkpoint, optimizer)
    return forward, optimizer


def run_step(
    job: Job,
    state: TrainState,
    model: torch.nn.Module,
    forward: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Batches,
    loss_fn: Callable,
    tokens_in: Callable,
) -> StepStats:
    """One optimizer step over `job.accum` micro-batches, clipped; skipped if the loss or gradient is
    NaN/inf. Advances `state` past it."""
    cfg, ctx, device = job.cfg, job.ctx, job.device
    t0 = time.perf_counter()
    lr = lr_at(state.step, state.progress(cfg), cfg)
    for group in optimizer.param_groups:
        group["lr"] = lr
    # The loss and stage metrics stay on the device; the step's numbers reach the host in one sync.
    loss_sum, step_tokens, extras = torch.zeros((), device=device), 0, {}
    for micro in range(job.accum):
        batch = batches.next_batch()
        with grad_sync(forward, ctx, micro == job.accum - 1):
            with autocast(device, cfg.precision), attention_kernels(device):
                out = loss_fn(forward, batch)
            loss, more = out if isinstance(out, tuple) else (out, {})
            (loss / job.accum).backward()
        loss_sum += loss.detach().float()
        step_tokens += tokens_in(batch)
        for k, v in more.items():
            extras[k] = extras.get(k, 0.0) + (v.detach().float() if torch.is_tensor(v) else float(v)) / job.accum
    loss_mean = all_mean(loss_sum / job.accum, ctx, device)
    step_tokens *= ctx.world_size
    norm = full_value(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip))
    names = list(extras)
    loss_value, grad_norm, *values = torch.stack(
        [loss_mean.double(), norm.double(), *(torch.as_tensor(extras[k], dtype=torch.float64, device=device)
                                              for k in names)]).tolist()
    extras = dict(zip(names, values))
    bad = not (math.isfinite(loss_value) and math.isfinite(grad_norm))
    if bad:
        optimizer.zero_grad(set_to_none=True)  # skip the update; the batch is spent
        state.skipped_steps += 1
        state.bad_in_row += 1
        if state.bad_in_row >= cfg.max_bad_steps:
            raise MyLLMError(
                f"{job.stage}: loss or gradient was NaN/inf in {state.bad_in_row} steps in a row (up to "
                f"step {state.step + 1}); lower train.lr or raise train.warmup_steps, then --resume from the "
                f"last checkpoint (train.max_bad_steps = {cfg.max_bad_steps})"
            )
        if ctx.is_main:
            tqdm.write(
                f"{job.stage}: step {state.step + 1} skipped: loss {loss_value}, grad norm {grad_norm} "
                f"({state.bad_in_row} in a row, {state.skipped_steps} in all)"
            )
    else:
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        state.bad_in_row = 0
    if device.type == "cuda":
        torch.cuda.synchronize()
    dt = all_max(time.perf_counter() - t0, ctx, device)  # one clock for all ranks
    state.step, state.tokens, state.elapsed = state.step + 1, state.tokens + step_tokens, state.elapsed + dt
    return StepStats(loss_value, grad_norm, lr, step_tokens, dt, extras, bad)


def step_record(job: Job, state: TrainState, stats: StepStats) -> dict[str, Any]:
    """The step's metrics.jsonl line; a loss spike is flagged in it and announced."""
    ok = not stats.skipped
    record = {
        "stage": job.stage,
        "step": state.step,
        "loss": round(stats.loss, 5) if ok else None,
        "lr": stats.lr,
        "grad_norm": round(stats.grad_norm, 4) if ok else None,
        "tok_s": round(stats.tokens / stats.seconds, 1),
        "tokens": state.tokens,
        "elapsed": round(state.elapsed, 3),
        **{k: round(v, 5) for k, v in stats.metrics.items()},
    }
    if state.skipped_steps:
        record["skipped_steps"] = state.skipped_steps
    if ok and job.cfg.spike_factor > 0:
        spike = note_spike(state, stats.loss, job.cfg.spike_factor)
        if spike:
            record["loss_spike"] = True
            if job.ctx.is_main:
                tqdm.write(
                    f"{job.stage}: loss spike at step {state.step}: {stats.loss:.4f} vs running mean "
                    f"{spike:.4f} (grad norm {stats.grad_norm:.3g})"
                )
    return record


def note_spike(state: TrainState, loss: float, factor: float) -> float | None:
    """Update the loss running mean; return it when `loss` is more than `factor` x above it (a spike)."""
    ema = state.loss_ema
    state.loss_ema = loss if ema is None else 0.9 * ema + 0.1 * loss
    if ema is not None and state.step > SPIKE_WARMUP and loss > factor * ema:
        return ema
    return None


def run_eval(model: torch.nn.Module, evaluate: Callable, state: TrainState) -> dict[str, float]:
    """Evaluate into `state.last_eval`; returns it with its duration, for the step's record."""
    t_eval = time.perf_counter()
    state.last_eval = {f"val_{k}": v for k, v in evaluate(model).items() if k != "tokens"}
    seconds = round(time.perf_counter() - t_eval, 3)
    model.train()  # evaluation time is not counted in `elapsed` (the time budget is for training)
    return {**state.last_eval, "eval_seconds": seconds}


def show_step(bar: tqdm, cfg: TrainConfig, state: TrainState, stats: StepStats) -> None:
    """The progress bar: loss, tok/s and an ETA from this step's time (capped by the time budget left)."""
    rate = stats.tokens / stats.seconds
    eta = (cfg.max_steps - state.step) * stats.seconds
    if cfg.time_budget > 0:
        eta = min(eta, max(cfg.time_budget - state.elapsed, 0.0))
    bar.set_postfix_str(f"loss {stats.loss:.3f} | {rate:,.0f} tok/s | eta {eta:,.0f}s", refresh=False)
    bar.update(1)


def save(
    job: Job, state: TrainState, model: torch.nn.Module, optimizer: torch.optim.Optimizer, batches: Batches, done: bool
) -> Path:
    """Checkpoint the step; every rank returns its path (FSDP: every rank writes its shards)."""
    meta = {
        "stage": job.stage,
        "tokens": state.tokens,
        "seconds": state.elapsed,
        "loader": batches.state_dict(),
        "fingerprint": job.fingerprint,
        "last_eval": state.last_eval,
        "done": done,
        **state.guard(),
        **job.extra_state,
    }
    if job.sharded:
        return save_sharded(job.ckpt_root, state.step, model, optimizer, meta, job.cfg.keep_last, job.ctx)
    saved = job.ckpt_root / f"step-{state.step:06d}"
    if job.ctx.is_main:
        saved = save_checkpoint(job.ckpt_root, state.step, model, optimizer, meta, job.cfg.keep_last)
    barrier(job.ctx)
    return saved


@contextlib.contextmanager
def plain_errors(job: Job, state: TrainState) -> Iterator[None]:
    """Out of memory and a lost peer rank become a MyLLMError that says what to do."""
    try:
        yield
    except torch.OutOfMemoryError:
        raise MyLLMError(
            f"{job.stage}: out of memory at step {state.step + 1} with micro-batch {job.cfg.batch_size} on "
            f"{job.device}; lower train.batch_size (set train.global_batch to keep the recipe: accumulation makes up "
            "the rest), turn on train.activation_checkpointing=true, or use --dist fsdp"
        ) from None
    except (dist.DistBackendError, RuntimeError) as e:
        if not job.ctx.enabled or not is_peer_failure(e):
            raise
        raise MyLLMError(
            f"rank {job.ctx.rank}: lost the other ranks at step {state.step + 1} ({str(e).splitlines()[0][:120]}); "
            "one of them died or hung (its own error says why); completed checkpoints are kept: re-run with --resume"
        ) from None
