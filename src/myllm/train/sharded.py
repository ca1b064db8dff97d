"""Sharded checkpoints for FSDP2 runs: torch.distributed.checkpoint (DCP) plus full weights for export.

`checkpoints/<stage>/step-N/` holds `dcp/` (every rank writes its own shards of the weights and
AdamW moments, in parallel, no gather), `model.safetensors` (the full weights, gathered to rank
0 on CPU, so `load_model`, evaluation and export read it like any other checkpoint), `optim.pt`
(RNG states only) and `state.json` (with `sharded: true`, the world size and checksums of every
file). The folder is built as `.step-N.dcp.tmp` by all ranks and renamed by rank 0 once all are
done, so a `step-*` folder is complete, as for unsharded checkpoints.

DCP describes the shards in `dcp/.metadata`, a pickle, and stores non-tensor values (optimizer
hyperparameters) as pickles too; torch's reader unpickles both with no restriction, so a planted
file would run code. `SafeReader` and `SafePlanner` read the same files through an unpickler that
only builds DCP's own metadata classes, and `torch.load(weights_only=True)`: a checkpoint cannot
execute anything, whoever wrote its checksums.

A sharded checkpoint resumes only on the same world size: its loader positions and shards are
per rank, so any other world size is refused with a clear message. A full (DDP or single-process)
checkpoint resumes on any world size, not bit-exactly (see README).
"""

from __future__ import annotations

import dataclasses
import io
import pickle
import shutil
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from safetensors.torch import save_file
from torch.distributed.checkpoint import DefaultLoadPlanner, FileSystemReader
from torch.distributed.checkpoint._traverse import set_element  # what DefaultLoadPlanner.load_bytes uses
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.metadata import Metadata, StorageMeta
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_state_dict,
)

from myllm.errors import MyLLMError, brief
from myllm.io import public_modes, replace_dir
from myllm.train.checkpoint import load_training_state, make_room, prune, read_state, write_state
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
        public_modes(tmp)
        make_room(root, keep_last, step)
        replace_dir(tmp, path)
        prune(root, keep_last)
    barrier(ctx)
    return path


def load_sharded(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, ctx: DistContext) -> None:
    """Load weights and AdamW moments of a sharded checkpoint into an FSDP2 model of the same world size."""
    check_world_size(path, ctx)
    model_sd, optim_sd = get_state_dict(model, optimizer)
    blob = read_dcp(path / "dcp", {"model": model_sd, "optim": optim_sd})
    set_state_dict(model, optimizer, model_state_dict=blob["model"], optim_state_dict=blob["optim"])
    load_training_state(path, None)  # optim.pt holds only the RNG states here


def read_dcp(folder: Path, blob: dict[str, Any]) -> dict[str, Any]:
    """Fill `blob` (a state dict of the right shapes) from the DCP folder, never unpickling anything unsafe."""
    try:
        SafeReader(folder).read_metadata()  # first on its own, so a refused file is refused before DCP logs
        dcp.load(blob, storage_reader=SafeReader(folder), planner=SafePlanner())
    except (CheckpointException, Exception) as e:  # CheckpointException is a BaseException; anything is damage
        if isinstance(e, MyLLMError):
            raise
        raise MyLLMError(f"sharded checkpoint {folder.parent} cannot be read safely ({brief(e, 300)}); "
                         "delete it to fall back to an older one, or start over (--restart)") from None
    return blob


# Everything `dcp/.metadata` may name: DCP's own dataclasses and enums, and the torch types in them.
SAFE_METADATA_GLOBALS = {
    ("torch.distributed.checkpoint.metadata", name) for name in (
        "Metadata", "MetadataIndex", "TensorStorageMetadata", "BytesStorageMetadata", "ChunkStorageMetadata",
        "TensorProperties", "StorageMeta", "_MEM_FORMAT_ENCODING")
} | {("torch.distributed.checkpoint.filesystem", "_StorageInfo"), ("torch", "Size"),
     ("torch.serialization", "_get_layout"),  # a layout by its name, looked up among torch's layouts
     ("collections", "OrderedDict"), ("pathlib", "PosixPath")}


class MetadataUnpickler(pickle.Unpickler):
    """Unpickles DCP metadata only: any other class or function in the file is refused, never called."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in SAFE_METADATA_GLOBALS or (module == "torch" and isinstance(getattr(torch, name, None),
                                                                                          torch.dtype)):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"dcp/.metadata names {module}.{name}, which a checkpoint never holds")


class SafeReader(FileSystemReader):
    """torch's DCP file reader, with the metadata read by `MetadataUnpickler` and stream transforms refused."""

    def read_metadata(self, *args: Any, **kwargs: Any):
        with open(self._get_metadata_path(kwargs.get("rank")), "rb") as f:
            metadata = MetadataUnpickler(f).load()
        if not isinstance(metadata, Metadata) or not isinstance(metadata.storage_data, dict):
            raise pickle.UnpicklingError("dcp/.metadata does not hold DCP metadata")
        for info in metadata.storage_data.values():
            if getattr(info, "transform_descriptors", None):
                raise pickle.UnpicklingError("dcp/.metadata asks for stream transforms, which myllm never writes")
            name = getattr(info, "relative_path", None)
            if not isinstance(name, str) or not name or "/" in name or name.startswith(".") or \
                    not (Path(self.path) / name).is_file() or (Path(self.path) / name).is_symlink():
                raise pickle.UnpicklingError(f"dcp/.metadata names {name!r}, not a shard file inside dcp/")
        if metadata.storage_meta is None:
            metadata.storage_meta = StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata


class SafePlanner(DefaultLoadPlanner):
    """Non-tensor values (optimizer hyperparameters) read with `torch.load(weights_only=True)`, as tensors are
    (torch's planner reads them with weights_only=False); otherwise as `DefaultLoadPlanner.load_bytes`."""

    def load_bytes(self, read_item, value: io.BytesIO) -> None:
        loaded = torch.load(value, weights_only=True)
        if self.flatten_state_dict:
            set_element(self.original_state_dict, self.mappings[read_item.dest_index.fqn], loaded)
        else:
            self.state_dict[read_item.dest_index.fqn] = loaded


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

