"""CPU data parallelism: 2 processes x 1 thread (DDP over gloo) vs 1 process x 2 threads, same model and step.

Both train the same model on the same global batch through MyLLM's own loop (`time_training`):
the 2-process run is what `myllm pretrain --nproc 2` does (each rank a micro-batch of half the
global batch, gradients all-reduced over gloo, `train.dist=ddp`), the 1-process run what
`myllm pretrain` does with 2 torch threads. tok/s counts the tokens of both ranks. On a machine
shared with other work, run it twice: the ratio moves with the load.

    .venv/bin/python bench/dist_cpu.py                       # micro preset, global batch 8 x 256
    .venv/bin/python bench/dist_cpu.py --preset small --steps 10
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from pathlib import Path

import torch
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from myllm.config import MODEL_PRESETS, ModelConfig, TrainConfig  # noqa: E402
from myllm.train.distributed import init_distributed, shutdown  # noqa: E402
from scale_common import time_training  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker(rank: int, world: int, port: int, args: argparse.Namespace, out) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    cfg = ModelConfig(preset=args.preset, **MODEL_PRESETS[args.preset])
    tcfg = TrainConfig(batch_size=args.global_batch // world, seq_len=args.seq_len, compile="false", dist="ddp")
    ctx = init_distributed(tcfg, torch.device("cpu"))
    try:
        result = time_training(cfg, tcfg, torch.device("cpu"), args.warmup, args.steps, ctx)
    finally:
        shutdown(ctx)
    if rank == 0:
        out.put(result)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="micro")
    p.add_argument("--global-batch", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=10)
    args = p.parse_args()

    torch.set_num_threads(2)
    cfg = ModelConfig(preset=args.preset, **MODEL_PRESETS[args.preset])
    one = time_training(cfg, TrainConfig(batch_size=args.global_batch, seq_len=args.seq_len, compile="false"),
                        torch.device("cpu"), args.warmup, args.steps)
    ctx = mp.get_context("spawn")
    out = ctx.SimpleQueue()
    mp.start_processes(worker, args=(2, free_port(), args, out), nprocs=2, start_method="spawn")
    two = out.get()
    print(f"{args.preset} ({one['params']:,} parameters), global batch {args.global_batch} x {args.seq_len} tokens, "
          f"{args.steps} timed steps after {args.warmup} warmup (median tok/s):")
    print(f"  1 process  x 2 threads : {one['tok_s']:>10,.0f} tok/s")
    print(f"  2 processes x 1 thread : {two['tok_s']:>10,.0f} tok/s  (DDP, gloo)")
    print(f"  ratio 2x1 / 1x2        : {two['tok_s'] / one['tok_s']:>10.2f}")
    print(f"  CPUs: {os.cpu_count()}, load average {os.getloadavg()[0]:.1f} (other work on the machine lowers both)")


if __name__ == "__main__":
    main()
