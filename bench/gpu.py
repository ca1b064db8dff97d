"""GPU training throughput and MFU: the 124M preset, a 1B-width slice, and FSDP2 on one GPU.

Each case trains through MyLLM's own loop (`time_training`: parallelize, bf16 autocast,
`torch.compile` per block, fused AdamW, SDPA flash/efficient kernels, chunked cross-entropy for
vocabularies >= 32,768) on synthetic batches and reports the median tok/s of the timed steps and

    MFU = tok/s x FLOPs per token / peak bf16 FLOP/s,   FLOPs per token = 6N + 12·L·d·T (PaLM)

against the GPU's datasheet dense bf16 peak (`myllm.plan.GPUS`: H100/H200 989 TFLOP/s, A100 312)
and against the bf16 matmul peak measured here (8192^3 products), both printed.

Cases
    gpt2-124m        the 124M preset: micro-batch 16 x 1,024, compile, DDP-less single GPU
    1b-slice         myllm-1b's width (d 1,792, 14 heads / 2 KV heads, ff 4,864, vocab 65,536) with
                     4 of its 28 layers, micro-batch 1 x 8,192, activation checkpointing: per-layer
                     speed of the real shape in a fraction of the memory and compile time
    gpt2-124m-fsdp   the 124M preset wrapped by FSDP2 (`fully_shard` per block, bf16 params,
                     fp32 reduce) in a 1-rank process group (NCCL): the cost of the FSDP machinery

    .venv/bin/python bench/gpu.py                         # all cases, 20 timed steps after 10 warmup
    .venv/bin/python bench/gpu.py --cases 1b-slice --steps 50
    .venv/bin/python bench/gpu.py --smoke                 # tiny shapes on CPU: checks the code path only
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from myllm.config import MODEL_PRESETS, ModelConfig, TrainConfig  # noqa: E402
from myllm.plan import GPUS  # noqa: E402
from myllm.train.distributed import init_distributed, shutdown  # noqa: E402
from myllm.train.pretrain import AUTO_LOSS_CHUNK, LARGE_VOCAB  # noqa: E402
from scale_common import time_training  # noqa: E402


def cases(smoke: bool) -> dict[str, tuple[ModelConfig, dict, str]]:
    """name -> (model shape, TrainConfig fields, dist mode)."""
    gpt2 = ModelConfig(preset="gpt2-124m", **MODEL_PRESETS["gpt2-124m"])
    slice_ = ModelConfig(preset="myllm-1b-slice", **{**MODEL_PRESETS["myllm-1b"], "n_layers": 4})
    common = {"compile": "true", "lr": 3e-4}
    if smoke:
        gpt2 = dataclasses.replace(gpt2, vocab_size=40000, d_model=64, n_layers=2, n_heads=4, n_kv_heads=4, d_ff=128,
                                   context=64)
        slice_ = dataclasses.replace(slice_, d_model=64, n_heads=4, n_kv_heads=2, d_ff=128, context=64, n_layers=2)
        common = {"compile": "false", "lr": 3e-4}
    return {
        "gpt2-124m": (gpt2, {**common, "batch_size": 16 if not smoke else 2}, "none"),
        "1b-slice": (slice_, {**common, "batch_size": 1, "activation_checkpointing": True}, "none"),
        "gpt2-124m-fsdp": (gpt2, {**common, "batch_size": 16 if not smoke else 2, "dist": "fsdp"}, "fsdp"),
    }


def datasheet_peak(device: torch.device) -> tuple[float | None, str]:
    if device.type != "cuda":
        return None, "cpu"
    name = torch.cuda.get_device_name(device)
    for key in ("h200", "h100", "a100"):
        if key in name.lower().replace(" ", ""):
            return GPUS[key][0], name
    return None, name


def measured_peak(device: torch.device) -> float | None:
    """Best bf16 matmul FLOP/s of 8192^3 products (the ceiling this GPU reaches for dense GEMMs)."""
    if device.type != "cuda":
        return None
    a = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    (a @ a).sum().item()
    best = 0.0
    for _ in range(5):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(10):
            b = a @ a
        torch.cuda.synchronize()
        best = max(best, 10 * 2 * 8192**3 / (time.perf_counter() - t0))
    del b
    return best


def run_case(name: str, model: ModelConfig, fields: dict, mode: str, device: torch.device, args) -> dict:
    tcfg = TrainConfig(**fields)
    ctx = None
    if mode == "fsdp":  # a 1-rank process group, as `torchrun --nproc_per_node 1` would make
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1",
                          MASTER_PORT=os.environ.get("MASTER_PORT", "29533"))
        ctx = init_distributed(tcfg, device)
    chunk = AUTO_LOSS_CHUNK if model.vocab_size >= LARGE_VOCAB else 0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    try:
        result = time_training(model, tcfg, device, args.warmup, args.steps, ctx, loss_chunk=chunk)
    finally:
        if ctx is not None:
            shutdown(ctx)
            for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
                os.environ.pop(key, None)
    result["memory_gb"] = torch.cuda.max_memory_allocated() / 1e9 if device.type == "cuda" else None
    result["tokens_per_step"] = tcfg.batch_size * model.context
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", default="gpt2-124m,1b-slice,gpt2-124m-fsdp")
    p.add_argument("--warmup", type=int, default=10, help="untimed steps (include compilation)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--smoke", action="store_true", help="tiny shapes on CPU: exercise the code, measure nothing")
    args = p.parse_args()
    device = torch.device("cpu" if args.smoke else "cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("bench/gpu.py needs a CUDA GPU (or --smoke for the CPU code-path check)")
    if args.smoke:
        args.warmup, args.steps = min(args.warmup, 2), min(args.steps, 3)
    peak, gpu = datasheet_peak(device)
    measured = measured_peak(device)
    print(f"device {gpu}; datasheet bf16 peak {peak or 0:.3g} FLOP/s; measured bf16 matmul {measured or 0:.3g} FLOP/s")
    print(f"{'case':<16}{'params':>14}{'tokens/step':>13}{'tok/s':>12}{'MFU (sheet)':>13}{'MFU (meas.)':>13}"
          f"{'peak mem':>10}")
    table = cases(args.smoke)
    for name in args.cases.split(","):
        model, fields, mode = table[name]
        r = run_case(name, model, fields, mode, device, args)
        flops = r["tok_s"] * r["flops_per_token"]
        mfu = f"{flops / peak:.1%}" if peak else "n/a"
        mfu_m = f"{flops / measured:.1%}" if measured else "n/a"
        mem = f"{r['memory_gb']:.1f} GB" if r["memory_gb"] is not None else "n/a"
        print(f"{name:<16}{r['params']:>14,}{r['tokens_per_step']:>13,}{r['tok_s']:>12,.0f}{mfu:>13}{mfu_m:>13}"
              f"{mem:>10}", flush=True)


if __name__ == "__main__":
    main()
