"""AdamW with explicit weight-decay groups, and the warmup + cosine learning-rate schedule."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch

from myllm.config import TrainConfig
from myllm.errors import MyLLMError


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Decay the matrices, not the RMSNorm gains.

    Weight decay is a pull toward zero that keeps the big matrices (attention, MLP and the tied
    embedding/output matrix) from growing without bound. The RMSNorm gains are per-channel
    scales initialised at 1: decaying them toward 0 would not regularize anything, it would
    just shrink every normalized activation, so they (all 1-D parameters) are exempt, as in
    nanoGPT and torchtitan.
    """
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    # The fused kernel is fastest on CUDA; on CPU the foreach implementation is.
    fused = device.type == "cuda"
    return torch.optim.AdamW(
        param_groups(model, cfg.weight_decay),
        lr=cfg.lr,
        betas=(cfg.beta1, cfg.beta2),
        eps=1e-8,
        fused=fused,
        foreach=None if fused else True,
    )


@contextlib.contextmanager
def config_rejections() -> Iterator[None]:
    """Around building the model and optimizer: a setting they reject (a NaN learning rate, a beta
    outside [0, 1), a negative init std) becomes one line. Callers build both before they clear a
    stage's checkpoints, so a rejected config never costs the user their checkpoints."""
    try:
        yield
    except (ValueError, RuntimeError) as e:
        raise MyLLMError(f"the model or optimizer rejects this config ({e}); change it with --set or in "
                         "config.toml (no checkpoint was touched)") from None


def check_optimizer(model: torch.nn.Module, cfg: TrainConfig, device: torch.device) -> None:
    """Build the optimizer once and drop it (it holds no state before its first step)."""
    with config_rejections():
        make_optimizer(model, cfg, device)


BUDGET_WARMUP_SHARE = 0.05


def lr_at(step: int, progress: float, cfg: TrainConfig) -> float:
    """Linear warmup for `warmup_steps`, then cosine decay to `lr * min_lr_ratio`.

    `progress` in [0, 1] is how far through training we are: step / max_steps, or, with a
    time budget, elapsed / budget, whichever is further, so that the schedule ends where the
    run ends. (With a budget the cosine is measured in time from 0, a negligible difference
    from starting it exactly where the warmup steps end.)
    """
    if cfg.time_budget > 0:
        # Under a time budget, warmup ends after warmup_steps or 5% of the budget, whichever
        # comes first: a slow model must not spend most of a short budget warming up.
        warm_done = max((step + 1) / max(cfg.warmup_steps, 1), progress / BUDGET_WARMUP_SHARE)
        if warm_done < 1:
            return cfg.lr * warm_done
        warm = 0.0
    else:
        if step < cfg.warmup_steps:
            return cfg.lr * (step + 1) / cfg.warmup_steps
        warm = cfg.warmup_steps / max(cfg.max_steps, 1)
    t = 0.0 if progress <= warm else min(1.0, (progress - warm) / max(1.0 - warm, 1e-9))
    floor = cfg.lr * cfg.min_lr_ratio
    return floor + 0.5 * (cfg.lr - floor) * (1.0 + math.cos(math.pi * t))
