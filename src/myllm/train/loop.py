"""The one training loop every stage shares (pretraining now; SFT/DPO/GRPO supply their own
batches and loss to the same loop).

Per optimizer step: `grad_accum` micro-batches (bf16 autocast on CUDA, fp32 on CPU), gradient
clipping, AdamW, the scheduled learning rate. Every `eval_every` steps an evaluation; every
`ckpt_every` steps (and at the end) an atomic checkpoint with the data position and RNG, so
`resume=True` continues exactly where the last checkpoint left off. One JSON line per logged
step goes to `metrics.jsonl`; a progress bar shows loss, tok/s and ETA.
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
from tqdm import tqdm

from myllm.config import TrainConfig
from myllm.errors import MyLLMError
from myllm.train.checkpoint import (
    check_compatible,
    latest_checkpoint,
    list_checkpoints,
    load_training_state,
    load_weights,
    read_state,
    save_checkpoint,
)
from myllm.train.optim import lr_at, make_optimizer


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


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise MyLLMError("train.device = cuda but no CUDA device is visible; use train.device=cpu or auto")
    return torch.device(name)


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """bf16 autocast on CUDA; plain fp32 on CPU (CPUs without bf16 units run bf16 ~36x slower)."""
    return torch.bfloat16 if device.type == "cuda" else None


class MetricsLog:
    """Append-only `metrics.jsonl`; on resume, lines past the checkpoint are dropped."""

    def __init__(self, path: Path):
        self.path = path

    def append(self, record: dict[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def truncate(self, stage: str, after_step: int) -> None:
        if not self.path.exists():
            return
        keep = [
            line for line in self.path.read_text().splitlines()
            if line.strip() and not (json.loads(line).get("stage") == stage and json.loads(line)["step"] > after_step)
        ]
        self.path.write_text("".join(line + "\n" for line in keep))

    def clear(self, stage: str) -> None:
        self.truncate(stage, -1)


def train(
    model: torch.nn.Module,
    cfg: TrainConfig,
    run_dir: Path,
    stage: str,
    batches: Batches,
    loss_fn: Callable[[torch.nn.Module, Any], torch.Tensor | tuple[torch.Tensor, dict[str, float]]],
    tokens_in: Callable[[Any], int],
    evaluate: Callable[[torch.nn.Module], dict[str, float]] | None = None,
    fingerprint: str = "",
    resume: bool = False,
    show_progress: bool = True,
    extra_state: dict[str, Any] | None = None,
) -> TrainResult:
    """Train `model` in place; returns where its final checkpoint is.

    `loss_fn(model, batch)` returns the mean loss of one micro-batch, or (loss, {name: value})
    with stage metrics (reward, accuracy, KL, ...) that are averaged over the step's
    micro-batches and logged beside the loss; `tokens_in(batch)` the number of tokens it trains
    on (for tok/s); `evaluate(model)` returns e.g. val loss and bpb. Only parameters with
    `requires_grad` are optimized and checkpointed (LoRA); `extra_state` goes into every
    checkpoint's state.json (e.g. the base checkpoint and LoRA settings).
    """
    device = next(model.parameters()).device
    amp = autocast_dtype(device)
    ckpt_root = run_dir / "checkpoints" / stage
    metrics = MetricsLog(run_dir / "metrics.jsonl")
    optimizer = make_optimizer(model, cfg, device)
    forward = torch.compile(model) if cfg.compile else model

    step, tokens, elapsed = 0, 0, 0.0
    last_eval: dict[str, float] = {}
    if resume:
        path = latest_checkpoint(ckpt_root)
        if path is None:
            raise MyLLMError(f"--resume: no checkpoint in {ckpt_root}; run without --resume to start training")
        check_compatible(path, model.cfg)
        state = read_state(path)
        if fingerprint and state.get("fingerprint") not in ("", fingerprint):
            raise MyLLMError(
                f"--resume: checkpoint {path} was written with a different data or training config; "
                "restore it, or pass --restart to start this stage over"
            )
        load_weights(path, model)
        load_training_state(path, optimizer)
        batches.load_state_dict(state["loader"])
        step, tokens, elapsed = state["step"], state["tokens"], state["seconds"]
        last_eval = state.get("last_eval", {})
        metrics.truncate(stage, step)
    elif list_checkpoints(ckpt_root):
        raise MyLLMError(
            f"{ckpt_root} already has checkpoints; pass --resume to continue them or --restart to start over"
        )
    else:
        metrics.clear(stage)

    def budget_progress() -> float:
        by_steps = step / cfg.max_steps
        return max(by_steps, elapsed / cfg.time_budget) if cfg.time_budget > 0 else by_steps

    def finished() -> bool:
        return step >= cfg.max_steps or (cfg.time_budget > 0 and elapsed >= cfg.time_budget)

    def checkpoint(done: bool) -> Path:
        state = {"stage": stage, "tokens": tokens, "seconds": elapsed, "loader": batches.state_dict(),
                 "fingerprint": fingerprint, "last_eval": last_eval, "done": done, **(extra_state or {})}
        return save_checkpoint(ckpt_root, step, model, optimizer, state, cfg.keep_last)

    if resume and finished():
        return TrainResult(step, tokens, elapsed, latest_checkpoint(ckpt_root), last_eval)
    model.train()
    bar = tqdm(total=cfg.max_steps, initial=step, desc=stage, disable=not show_progress, mininterval=1.0,
               dynamic_ncols=True)
    path = latest_checkpoint(ckpt_root)
    while not finished():
        t0 = time.perf_counter()
        lr = lr_at(step, budget_progress(), cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss_sum, step_tokens, extras = 0.0, 0, {}
        for _ in range(cfg.grad_accum):
            batch = batches.next_batch()
            with torch.autocast(device_type=device.type, dtype=amp, enabled=amp is not None):
                out = loss_fn(forward, batch)
            loss, more = out if isinstance(out, tuple) else (out, {})
            (loss / cfg.grad_accum).backward()
            loss_sum += loss.item()
            step_tokens += tokens_in(batch)
            for k, v in more.items():
                extras[k] = extras.get(k, 0.0) + float(v) / cfg.grad_accum
        loss_value = loss_sum / cfg.grad_accum
        if not math.isfinite(loss_value):
            raise MyLLMError(
                f"{stage}: loss is {loss_value} at step {step}; lower train.lr or raise train.warmup_steps, "
                "then --resume from the last checkpoint"
            )
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip).item()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        step, tokens, elapsed = step + 1, tokens + step_tokens, elapsed + dt
        record = {"stage": stage, "step": step, "loss": round(loss_value, 5), "lr": lr,
                  "grad_norm": round(grad_norm, 4), "tok_s": round(step_tokens / dt, 1), "tokens": tokens,
                  "elapsed": round(elapsed, 3), **{k: round(v, 5) for k, v in extras.items()}}
        if evaluate is not None and (step % cfg.eval_every == 0 or finished()):
            t_eval = time.perf_counter()
            last_eval = {f"val_{k}": v for k, v in evaluate(model).items() if k != "tokens"}
            record.update(last_eval, eval_seconds=round(time.perf_counter() - t_eval, 3))
            model.train()  # evaluation time is not counted in `elapsed` (the time budget is for training)
        metrics.append(record)
        rate = step_tokens / dt
        eta = (cfg.max_steps - step) * dt
        if cfg.time_budget > 0:
            eta = min(eta, max(cfg.time_budget - elapsed, 0.0))
        bar.set_postfix_str(f"loss {loss_value:.3f} | {rate:,.0f} tok/s | eta {eta:,.0f}s", refresh=False)
        bar.update(1)
        if step % cfg.ckpt_every == 0 or finished():
            path = checkpoint(done=finished())
    bar.close()
    return TrainResult(step, tokens, elapsed, path, last_eval)
