"""Sharded checkpoints for FSDP2 runs: torch.distributed.checkpoint (DCP) plus full weights for export.

`checkpoints/<stage>/step-N/` holds `dcp/` (every rank writes its own shards of the weights and
AdamW moments, in parallel, no gather), `model.safetensors` (the full weights, gathered to rank
0 on CPU, so `load_model`, evaluation and export read it like any other checkpoint), `optim.pt`
(RNG states only) and `state.json` (with `sharded: true`, the world size and checksums of every
file). The folder is built as `.step-N.dcp.tmp` by all ranks and renamed by rank 0 once all are
done, so a `step-*` folder is complete, as for unsharded checkpoints.

A sharded checkpoint resumes only on the same world size: its loader positions and shards are
per rank, so any other world size is refused with a clear message. A full (DDP or single-process)
checkpoint resumes on any world size, not bit-exactly (see README).
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from safetensors.torch import save_file
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_state_dict,
)

from myllm.errors import MyLLMError
from myllm.io import replace_dir
from myllm.train.checkpoint import prune, read_state, write_state
from myllm.train.distributed import DistContext, barrier


def save_sharded(root: Path, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 state: dict[str, Any], keep_last: int, ctx: DistContext) -> Path:
    """Every rank calls this; rank 0 finishes the folder. Returns the checkpoint path."""
    path = root / f"step-{step:06d}"
    tmp = root / f".step-{step:06d}.dcp.tmp"
    if ctx.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    barrier(ctx)
    model_sd, optim_sd = get_state_dict(model, optimizer)
    dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=str(tmp / "dcp"))
    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if ctx.is_main:
        save_file({k: v.contiguous() for k, v in full.items()}, str(tmp / "model.safetensors"))
        torch.save({"optimizer": None, "rng": {"torch": torch.get_rng_state()}}, tmp / "optim.pt")
    barrier(ctx)  # every rank's shards are on disk before the checksums are taken
    if ctx.is_main:
        cfg = model.cfg
        write_state(tmp, {"step": step, **state, "sharded": True, "world_size": ctx.world_size,
                          "model_config": dataclasses.asdict(cfg)})
        replace_dir(tmp, path)
        prune(root, keep_last)
    barrier(ctx)
    return path


def load_sharded(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, ctx: DistContext) -> None:
    """Load weights and AdamW moments of a sharded checkpoint into an FSDP2 model of the same world size."""
    check_world_size(path, ctx)
    model_sd, optim_sd = get_state_dict(model, optimizer)
    blob = {"model": model_sd, "optim": optim_sd}
    dcp.load(blob, checkpoint_id=str(path / "dcp"))
    set_state_dict(model, optimizer, model_state_dict=blob["model"], optim_state_dict=blob["optim"])
    rng = torch.load(path / "optim.pt", map_location="cpu", weights_only=True)["rng"]
    torch.set_rng_state(rng["torch"])


def check_world_size(path: Path, ctx: DistContext) -> None:
    saved = read_state(path).get("world_size")
    if saved != ctx.world_size:
        raise MyLLMError(
            f"checkpoint {path} is sharded over {saved} ranks but this run has {ctx.world_size}; resume with "
            f"--nproc {saved}, or start over (--restart)"
        )


def is_sharded(path: Path) -> bool:
    return bool(read_state(path).get("sharded"))


def world_size_of(path: Path) -> int:
    return int(read_state(path).get("world_size", 1))

