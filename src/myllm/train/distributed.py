"""Distribution from the outside, as torchtitan's `parallelize`: the model file knows nothing of it.

`init_distributed` reads torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT)
and joins the process group: NCCL on CUDA, gloo on CPU. `parallelize` then applies, in this
order, activation checkpointing per block, `torch.compile` per block, and the data-parallel
wrapper: DDP (every rank holds the whole model, gradients are all-reduced) or FSDP2
(`fully_shard` per block and on the root: weights, gradients and AdamW state are sharded, one
block is gathered at a time; under bf16 precision bf16 compute with fp32 reductions,
`fsdp_policies`). Parameter names stay
those of `model.py` (activation checkpointing and compile wrap each block's `forward` in place,
not the module), so checkpoints and exports are the same with or without them.

`launch` is `myllm pretrain --nproc N`: it re-runs the same command under torchrun.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import subprocess
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.checkpoint import checkpoint

from myllm.config import TrainConfig
from myllm.device import autocast_dtype
from myllm.errors import MyLLMError


@dataclass
class DistContext:
    """Where this process stands: rank 0 of 1 when not launched by torchrun."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    mode: str = "none"  # none | ddp | fsdp
    timeout: float = 600.0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def init_distributed(cfg: TrainConfig, device: torch.device) -> DistContext:
    """Join the process group when torchrun started us (even with one rank: FSDP2 on 1 GPU)."""
    if not launched_by_torchrun():
        return DistContext(timeout=cfg.dist_timeout)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        visible = torch.cuda.device_count()
        if local >= visible:
            raise MyLLMError(f"rank {rank} has local rank {local} but only {visible} CUDA devices are visible; "
                             f"launch at most --nproc_per_node {visible}")
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=cfg.dist_timeout))
    return DistContext(rank, world, local, cfg.dist, cfg.dist_timeout)


def shutdown(ctx: DistContext) -> None:
    if ctx.mode != "none" and dist.is_initialized():
        dist.destroy_process_group()


def local_device(device: torch.device, ctx: DistContext) -> torch.device:
    return torch.device("cuda", ctx.local_rank) if device.type == "cuda" else device


@dataclass
class BatchPlan:
    """The step's shape: global batch = micro-batch x accumulation x ranks (sequences)."""

    micro_batch: int
    grad_accum: int
    world_size: int
    seq_len: int

    @property
    def global_batch(self) -> int:
        return self.micro_batch * self.grad_accum * self.world_size

    @property
    def tokens_per_step(self) -> int:
        return self.global_batch * self.seq_len

    def describe(self) -> str:
        return (f"global batch {self.global_batch} sequences = micro-batch {self.micro_batch} x accumulation "
                f"{self.grad_accum} x {self.world_size} rank{'s' if self.world_size > 1 else ''}; "
                f"{self.tokens_per_step:,} tokens per step")


def batch_plan(cfg: TrainConfig, world_size: int, seq_len: int) -> BatchPlan:
    """Accumulation follows from a fixed `global_batch`, so the recipe survives a change of GPU count."""
    if cfg.global_batch == 0:
        return BatchPlan(cfg.batch_size, cfg.grad_accum, world_size, seq_len)
    per_step = cfg.batch_size * world_size
    if cfg.global_batch % per_step:
        raise MyLLMError(
            f"train.global_batch = {cfg.global_batch} is not a multiple of micro-batch {cfg.batch_size} x "
            f"{world_size} ranks = {per_step}; change train.batch_size or the number of processes"
        )
    return BatchPlan(cfg.batch_size, cfg.global_batch // per_step, world_size, seq_len)


def compile_enabled(cfg: TrainConfig, device: torch.device) -> bool:
    return cfg.compile == "true" or (cfg.compile == "auto" and device.type == "cuda")


def apply_activation_checkpointing(model: torch.nn.Module) -> None:
    """Each block keeps only its input and recomputes its insides in backward (names unchanged).

    A plain function, not `functools.partial(checkpoint, ...)`: with a partial as `forward`, a block's
    `torch.compile` silently traced nothing and ran eager (tests/test_compile.py counts the graphs).
    """
    for block in model.layers:
        def forward(*args, _inner=block.forward, **kwargs):
            return checkpoint(_inner, *args, use_reentrant=False, **kwargs)

        block.forward = forward


def parallelize(model: torch.nn.Module, cfg: TrainConfig, ctx: DistContext, device: torch.device) -> torch.nn.Module:
    """Apply checkpointing, compile and DDP/FSDP2 to `model`; returns the module to call forward on.

    The returned module may be a DDP wrapper; its `.module` (or, for FSDP2, the model itself,
    sharded in place) holds the parameters the optimizer steps.
    """
    if cfg.activation_checkpointing:
        apply_activation_checkpointing(model)
    if compile_enabled(cfg, device):
        for block in model.layers:
            block.compile()
    if ctx.mode == "fsdp":
        from torch.distributed.fsdp import fully_shard

        mesh = dist.device_mesh.init_device_mesh(device.type, (ctx.world_size,))
        block_mp, root_mp = fsdp_policies(autocast_dtype(device, cfg.precision))
        for i, block in enumerate(model.layers):
            # The last block's weights are needed again at once by backward: keep them gathered.
            fully_shard(block, mesh=mesh, mp_policy=block_mp, reshard_after_forward=i < len(model.layers) - 1)
        fully_shard(model, mesh=mesh, mp_policy=root_mp)
        return model
    if ctx.mode == "ddp" and ctx.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [ctx.local_rank] if device.type == "cuda" else None
        # The only buffers are the RoPE tables, equal on every rank and never changed: no broadcast per
        # forward. The gradients live in DDP's all-reduce buckets instead of beside them: 4 B/param less.
        return DDP(model, device_ids=ids, broadcast_buffers=False, gradient_as_bucket_view=True)
    return model


def fsdp_policies(compute: torch.dtype | None):
    """FSDP2's mixed precision for the blocks and the root: weights gathered in the autocast dtype (bf16),
    gradients reduced in fp32. The blocks do not cast their inputs: the residual stream already arrives in
    the weights' dtype from the embedding, and the RoPE tables passed to every block must stay fp32, as
    they are under DDP (cast to bf16 they would move angles by up to 0.4%)."""
    from torch.distributed.fsdp import MixedPrecisionPolicy

    if compute is None:
        return MixedPrecisionPolicy(), MixedPrecisionPolicy()
    block = MixedPrecisionPolicy(param_dtype=compute, reduce_dtype=torch.float32, cast_forward_inputs=False)
    return block, MixedPrecisionPolicy(param_dtype=compute, reduce_dtype=torch.float32)


def unwrap(module: torch.nn.Module) -> torch.nn.Module:
    return getattr(module, "module", module)


def all_mean(value: torch.Tensor, ctx: DistContext, device: torch.device) -> torch.Tensor:
    """The mean of a per-rank scalar tensor over all ranks (every rank gets it; no host sync)."""
    if not ctx.enabled:
        return value
    t = value.detach().to(device=device, dtype=torch.float64).reshape(1)
    dist.all_reduce(t)
    return t[0] / ctx.world_size


def all_max(value: float, ctx: DistContext, device: torch.device) -> float:
    """The largest per-rank value: step times, so a time budget ends on the same step on every rank."""
    if not ctx.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.item()


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


def is_peer_failure(e: BaseException) -> bool:
    """Errors a collective raises when a peer process is gone or silent (gloo/NCCL wording)."""
    text = str(e).lower()
    return isinstance(e, dist.DistBackendError) or any(
        w in text for w in ("connection closed", "connection reset", "timed out", "timeout", "broken pipe",
                            "peer", "nccl", "gloo"))


def full_value(norm: torch.Tensor) -> torch.Tensor:
    """clip_grad_norm_'s result as a plain tensor (under FSDP2 a DTensor: its full value)."""
    full = getattr(norm, "full_tensor", None)
    return full() if full else norm


def grad_sync(forward: torch.nn.Module, ctx: DistContext, sync: bool):
    """Skip the gradient all-reduce on all but the last micro-batch of a step (same result, less traffic)."""
    if not ctx.enabled or sync:
        return contextlib.nullcontext()
    if hasattr(forward, "no_sync"):
        return forward.no_sync()  # DDP
    if hasattr(forward, "set_requires_gradient_sync"):  # FSDP2: flag, then restore before the last micro-batch
        forward.set_requires_gradient_sync(False)

        @contextlib.contextmanager
        def restore():
            yield
            forward.set_requires_gradient_sync(True)

        return restore()
    return contextlib.nullcontext()


def device_count(kind: str) -> int:
    """How many ranks a machine can take: its CUDA devices, or on CPU its cores."""
    if kind == "cuda" or (kind == "auto" and torch.cuda.is_available()):
        return torch.cuda.device_count()
    return os.cpu_count() or 1


def launch(nproc: int, argv: list[str], device: str = "auto") -> int:
    """`myllm pretrain --nproc N ...`: the same command under `torchrun --nproc_per_node N`.

    torchrun watches the ranks: when one dies, it stops the others and exits non-zero, so no
    rank waits forever on a collective its peer will never join.
    """
    have = device_count(device)
    if nproc < 1:
        raise MyLLMError(f"--nproc = {nproc} must be at least 1")
    if nproc > have:
        what = "CUDA devices" if device == "cuda" or (device == "auto" and torch.cuda.is_available()) else "CPU cores"
        raise MyLLMError(f"--nproc {nproc} is more than the {have} {what} on this machine; use --nproc {have} "
                         "or fewer (several machines: torchrun --nnodes, see the README)")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "myllm", *argv]
    env = dict(os.environ)
    if device != "cuda" and not torch.cuda.is_available():
        env.setdefault("OMP_NUM_THREADS", str(max(1, have // nproc)))
    code = subprocess.run(cmd, env=env).returncode
    if code not in (0, 2):
        raise MyLLMError(f"a rank failed (torchrun exit {code}; its error is above) and the others were stopped; "
                         "completed checkpoints are kept: fix the cause and re-run with --resume")
    return code
