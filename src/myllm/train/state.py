"""Where a training run stands, and where it starts from.

`TrainState` is what the loop carries from step to step and what a checkpoint's state.json
restores: step, tokens, training seconds, the last evaluation and the NaN/inf guard and spike
detector. `start_state` returns the latest valid checkpoint's state (`resume=True`, after checking
that the checkpoint fits this model, data, config and process layout) or a fresh one, and cuts
`metrics.jsonl` back to match it (`MetricsLog`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from myllm.config import TrainConfig
from myllm.errors import MyLLMError
from myllm.io import atomic_write_text, open_no_follow
from myllm.train.checkpoint import (
    check_compatible,
    latest_valid_checkpoint,
    list_checkpoints,
    load_weights,
    read_state,
    remove_stale_writes,
)
from myllm.train.distributed import DistContext, barrier
from myllm.train.sharded import check_world_size

# The NaN/inf guard and the spike detector, in their state.json order: every checkpoint carries them,
# so a resumed run goes on counting where the stopped one left off.
GUARD_FIELDS = ("skipped_steps", "bad_in_row", "loss_ema")


class Batches(Protocol):
    """What the loop needs of its data: micro-batches, and a position to checkpoint and resume from."""

    def next_batch(self) -> Any: ...
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> None: ...


class MetricsLog:
    """Append-only `metrics.jsonl`; on resume, lines past the checkpoint are dropped."""

    def __init__(self, path: Path):
        self.path = path

    def append(self, record: dict[str, Any]) -> None:
        with open_no_follow(self.path, "a", encoding="utf-8") as f:
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


@dataclass
class TrainState:
    """Where training stands, carried from step to step; every checkpoint saves it (all but `checkpoint`)
    beside the weights, the optimizer and the data position."""

    step: int = 0
    tokens: int = 0
    elapsed: float = 0.0  # training seconds, evaluation excluded: the clock of `time_budget`
    last_eval: dict[str, float] = field(default_factory=dict)
    checkpoint: Path | None = None  # the latest one, resumed from or written
    skipped_steps: int = 0  # NaN/inf steps skipped in all
    bad_in_row: int = 0  # ... in a row now; `max_bad_steps` of them stop training
    loss_ema: float | None = None  # the loss's running mean, which a spike is measured against

    def guard(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in GUARD_FIELDS}

    def progress(self, cfg: TrainConfig) -> float:
        """How far through its budget training is (for the LR schedule): steps, or the clock if ahead."""
        by_steps = self.step / cfg.max_steps
        return max(by_steps, self.elapsed / cfg.time_budget) if cfg.time_budget > 0 else by_steps

    def finished(self, cfg: TrainConfig) -> bool:
        return self.step >= cfg.max_steps or (cfg.time_budget > 0 and self.elapsed >= cfg.time_budget)


def start_state(
    ckpt_root: Path,
    metrics: MetricsLog,
    stage: str,
    ctx: DistContext,
    model: torch.nn.Module,
    batches: Batches,
    fingerprint: str,
    resume: bool,
) -> TrainState:
    """With `resume` the latest valid checkpoint's state (weights and data position loaded: the optimizer
    state follows once the optimizer exists), else a fresh one; a fresh start never overwrites checkpoints."""
    if resume:
        state = resume_state(ckpt_root, ctx, model, batches, fingerprint)
        if ctx.is_main:
            metrics.truncate(stage, state.step)
    elif list_checkpoints(ckpt_root):
        raise MyLLMError(
            f"{ckpt_root} already has checkpoints; pass --resume to continue them or --restart to start over"
        )
    else:
        state = TrainState()
        if ctx.is_main:
            metrics.clear(stage)
    if ctx.is_main:
        remove_stale_writes(ckpt_root)
    barrier(ctx)
    return state


def resume_state(
    ckpt_root: Path, ctx: DistContext, model: torch.nn.Module, batches: Batches, fingerprint: str
) -> TrainState:
    sharded = ctx.mode == "fsdp"
    path = latest_valid_checkpoint(ckpt_root)
    if path is None:
        raise MyLLMError(f"--resume: no checkpoint in {ckpt_root}; run without --resume to start training")
    check_compatible(path, model.cfg)
    saved = read_state(path)
    if sharded and saved.get("sharded"):
        check_world_size(path, ctx)
    if fingerprint and saved.get("fingerprint") not in ("", fingerprint):
        raise MyLLMError(
            f"--resume: checkpoint {path} was written with a different data or training config; "
            "restore it, or pass --restart to start this stage over"
        )
    if saved.get("sharded") and not sharded:
        raise MyLLMError(
            f"checkpoint {path} is sharded (FSDP); resume it with --dist fsdp --nproc {saved.get('world_size')}"
        )
    if sharded and not saved.get("sharded"):
        raise MyLLMError(
            f"checkpoint {path} is a full (DDP or single-process) checkpoint; resume it with "
            "--dist ddp (any number of processes)"
        )
    if not sharded:
        load_weights(path, model)  # sharded weights load into the sharded model, after wrapping
    batches.load_state_dict(saved["loader"])
    state = TrainState(saved["step"], saved["tokens"], saved["seconds"], saved.get("last_eval", {}), path)
    for k in GUARD_FIELDS:
        if k in saved:  # checkpoints from before the guard, or not written by this loop, lack them
            setattr(state, k, saved[k])
    return state
