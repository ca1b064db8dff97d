"""GPU acceptance: every CUDA path runs, then one table of speed and memory against the plan and a peer.

    .venv/bin/python bench/gpu.py            # one H100/H200, about 8 minutes, nothing to configure
    .venv/bin/python bench/gpu.py --smoke    # a CPU: tiny shapes through every step, compiled (tests run it)

1. **tests**: `pytest tests/test_cuda.py tests/test_cuda_inference.py` (bf16 + compile + checkpointing +
   chunked loss, DDP and FSDP2 on one GPU through torchrun, kill-and-resume, SFT/DPO/GRPO steps, GPU
   greedy = CPU greedy on fp32 weights, `myllm serve --device cuda` answering the openai client).
2. **training**, bf16 (`train.precision=auto`), through MyLLM's own loop (`scale_common.time_training`:
   parallelize, compile per block, fused AdamW, SDPA flash kernels, chunked loss), median tok/s of the
   timed steps after the warmup ones (which include the compile), and

       MFU = tok/s x FLOPs per token / peak bf16 FLOP/s,   FLOPs per token = 6N + 12·L·d·T (PaLM)

   against the datasheet peak (`myllm.plan.GPUS`: H100/H200 989 TFLOP/s) and the bf16 matmul peak
   measured here. Cases: `gpt2-124m` eager and compiled (micro-batch 16 x 1,024); `myllm-1b` whole (28
   layers) under FSDP2 on a 1-rank NCCL group with activation checkpointing and the chunked loss
   (micro-batch 1 x 8,192), its tok/s beside the plan's prediction (peak x `GPU_MFU` / FLOPs per
   token). Every case prints `torch.cuda.max_memory_allocated` beside `myllm plan`'s estimate.
3. **decoding**, bf16 weights and KV cache: tok/s at batch 1 and 32 (128 new tokens, greedy), MyLLM's
   engine beside `transformers` `generate` on the same weights on the same GPU.
4. **`myllm run --quick`** end to end on the GPU (device auto), its wall time.

Targets (issue 17): every test passes; gpt2-124m bf16 MFU >= 50% (compiled); the plan's memory
within 15% of the measured peak; GPU greedy token-identical to CPU on fp32 weights (a test).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from myllm.config import MODEL_PRESETS, ModelConfig, TrainConfig  # noqa: E402
from myllm.device import describe, inference_dtype, place_model  # noqa: E402
from myllm.infer.engine import SamplingParams, generate, generate_many  # noqa: E402
from myllm.losses import AUTO_LOSS_CHUNK, LARGE_VOCAB  # noqa: E402
from myllm.model import Transformer  # noqa: E402
from myllm.plan import GPU_MFU, GPUS, plan  # noqa: E402
from myllm.train.distributed import init_distributed, shutdown  # noqa: E402
from scale_common import time_training  # noqa: E402

T0 = time.perf_counter()


def say(text: str) -> None:
    print(f"[{time.perf_counter() - T0:6.0f}s] {text}", flush=True)


@dataclasses.dataclass
class Case:
    model: ModelConfig
    fields: dict  # TrainConfig fields
    mode: str  # none | fsdp (a 1-rank process group, as `torchrun --nproc_per_node 1` makes)
    plan_vs_speed: bool = False  # print the plan's predicted tok/s beside the measured


def cases(smoke: bool) -> dict[str, Case]:
    gpt2 = ModelConfig(preset="gpt2-124m", **MODEL_PRESETS["gpt2-124m"])
    big = ModelConfig(preset="myllm-1b", **MODEL_PRESETS["myllm-1b"])
    batch = 16
    if smoke:  # the same code on shapes a CPU trains in seconds; vocab >= 32,768 keeps the chunked loss
        gpt2 = dataclasses.replace(gpt2, vocab_size=40000, d_model=64, n_layers=2, n_heads=4, n_kv_heads=4, d_ff=128,
                                   context=64)
        big = dataclasses.replace(big, d_model=64, n_heads=4, n_kv_heads=2, d_ff=128, context=128, n_layers=4)
        batch = 2
    common = {"lr": 3e-4, "precision": "auto"}
    return {
        "gpt2-124m eager": Case(gpt2, {**common, "batch_size": batch, "compile": "false"}, "none"),
        "gpt2-124m compiled": Case(gpt2, {**common, "batch_size": batch, "compile": "true"}, "none"),
        "myllm-1b fsdp2": Case(big, {**common, "batch_size": 1, "compile": "true", "activation_checkpointing": True,
                                     "dist": "fsdp"}, "fsdp", plan_vs_speed=True),
    }


def gpu_key(device: torch.device) -> str:
    if device.type != "cuda":
        return "cpu"
    name = torch.cuda.get_device_name(device).lower().replace(" ", "")
    return next((key for key in ("h200", "h100", "a100") if key in name), "h100")


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
    del a, b
    return best


def run_tests(smoke: bool) -> bool:
    cmd = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "tests/test_cuda.py",
           "tests/test_cuda_inference.py"]
    say("tests: " + " ".join(cmd[3:]))
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    tail = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-500:]
    if proc.returncode not in (0, 5):  # 5: nothing collected
        print(proc.stdout[-6000:], proc.stderr[-2000:], sep="\n")
    say(f"tests: {tail}")
    return proc.returncode == 0 or (smoke and "skipped" in tail)


def train_case(name: str, case: Case, device: torch.device, args) -> dict:
    tcfg = TrainConfig(**case.fields)
    ctx = None
    if case.mode == "fsdp":
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1",
                          MASTER_PORT=os.environ.get("MASTER_PORT", "29533"))
        ctx = init_distributed(tcfg, device)
    chunk = AUTO_LOSS_CHUNK if case.model.vocab_size >= LARGE_VOCAB else 0
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    try:
        result = time_training(case.model, tcfg, device, args.warmup, args.steps, ctx, loss_chunk=chunk)
    finally:
        if ctx is not None:
            shutdown(ctx)
            for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
                os.environ.pop(key, None)
    result["graphs"] = torch._dynamo.utils.counters["stats"]["unique_graphs"]  # 0 = ran eager
    result["memory"] = torch.cuda.max_memory_allocated() if device.type == "cuda" else None
    dist = "fsdp" if case.mode == "fsdp" else "ddp"
    p = plan(dataclasses.replace(case.model), gpu=gpu_key(device), dist=dist, micro_batch=tcfg.batch_size,
             checkpointing=tcfg.activation_checkpointing, loss_chunk=chunk)
    result["plan_memory"] = p["memory"]["per_gpu"][dist]["total"]
    result["plan_tok_s"] = p["training"]["peak_flops_per_gpu"] * p["training"]["mfu"] / p["training"]["flops_per_token"]
    return result


def training_table(device: torch.device, args) -> None:
    key = gpu_key(device)
    sheet = GPUS[key][0]
    measured = measured_peak(device)
    say(f"training on {describe(device, torch.bfloat16 if device.type == 'cuda' else None)}: datasheet bf16 peak "
        f"{sheet or 0:.3g} FLOP/s, measured bf16 matmul {measured or 0:.3g} FLOP/s")
    print(f"{'case':<20}{'params':>15}{'graphs':>7}{'tok/s':>12}{'plan tok/s':>12}{'MFU sheet':>11}{'MFU meas.':>11}"
          f"{'peak mem':>11}{'plan mem':>11}{'mem/plan':>10}", flush=True)
    for name in args.cases.split(","):
        case = cases(args.smoke)[name]
        r = train_case(name, case, device, args)
        flops = r["tok_s"] * r["flops_per_token"]
        mfu = f"{flops / sheet:.1%}" if sheet else "n/a"
        mfu_m = f"{flops / measured:.1%}" if measured else "n/a"
        mem = f"{r['memory'] / 1e9:.2f} GB" if r["memory"] else "n/a"
        ratio = f"{r['memory'] / r['plan_memory']:.2f}" if r["memory"] else "n/a"
        predicted = f"{r['plan_tok_s']:,.0f}" if case.plan_vs_speed and sheet else ""
        print(f"{name:<20}{r['params']:>15,}{r['graphs']:>7}{r['tok_s']:>12,.0f}{predicted:>12}{mfu:>11}{mfu_m:>11}{mem:>11}"
              f"{r['plan_memory'] / 1e9:>9.2f}GB{ratio:>10}", flush=True)
    print(f"  plan tok/s = peak x {GPU_MFU:.0%} MFU (the plan's assumption) / FLOPs per token; plan mem = "
          "`myllm plan` total for the case's dist, micro-batch, checkpointing and loss chunk; graphs = "
          "compiled graphs (one block graph serves every block; 0 = eager)", flush=True)


def hf_twin(model: Transformer):
    """transformers' LlamaForCausalLM with the same weights, dtype and device (the HF export's rename)."""
    import transformers

    from myllm.export.hf import llama_config

    weight = model.embed_tokens.weight
    hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(**llama_config(model.cfg)))
    missing, unexpected = hf.model.load_state_dict(model.state_dict(), strict=False)
    assert not unexpected and not [k for k in missing if "rotary" not in k], (missing, unexpected)
    hf.tie_weights()
    return hf.to(device=weight.device, dtype=weight.dtype).eval()


def best_seconds(fn, repeats: int, device: torch.device) -> float:
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best


def decode_table(device: torch.device, args) -> None:
    cfg = cases(args.smoke)["gpt2-124m eager"].model
    new = 16 if args.smoke else 128
    torch.manual_seed(0)
    model = place_model(Transformer(cfg), device)  # bf16 on CUDA: weights and KV cache
    hf = hf_twin(model)
    prompt = torch.randint(7, cfg.vocab_size, (16,)).tolist()
    params = SamplingParams(max_new_tokens=new, temperature=0)
    say(f"decoding on {describe(device, inference_dtype(device))}: {cfg.preset} shape, {new} new tokens, greedy")
    print(f"{'batch':>6}{'MyLLM tok/s':>14}{'transformers tok/s':>20}{'ratio':>8}", flush=True)
    for batch in (1, 32):
        x = torch.tensor([prompt] * batch, device=device)

        def ours(batch=batch):
            if batch == 1:
                return generate(model, prompt, params)
            return generate_many(model, [prompt] * batch, params, batch_size=batch)

        def theirs(x=x):
            with torch.no_grad():
                hf.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=new, min_new_tokens=new,
                            do_sample=False, pad_token_id=0)

        ours(), theirs()  # warm up kernels and caches
        a = batch * new / best_seconds(ours, args.repeats, device)
        b = batch * new / best_seconds(theirs, args.repeats, device)
        print(f"{batch:>6}{a:>14,.0f}{b:>20,.0f}{a / b:>8.2f}", flush=True)


def quick_run(device: torch.device, smoke: bool) -> None:
    if smoke:
        say("myllm run --quick: skipped in --smoke (the CPU suite runs it: tests/test_run_universe.py)")
        return
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "myllm", "run", "--quick", "--out", str(Path(tmp) / "quick"), "--no-progress"]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        seconds = time.perf_counter() - t0
    lines = [x for x in proc.stdout.splitlines() if "device" in x.lower() or "val bpb" in x.lower()][:6]
    print("\n".join(lines))
    if proc.returncode != 0:
        print(proc.stderr[-3000:])
    say(f"myllm run --quick on {device}: exit {proc.returncode}, {seconds:.0f} s end to end")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", default="gpt2-124m eager,gpt2-124m compiled,myllm-1b fsdp2")
    p.add_argument("--warmup", type=int, default=8, help="untimed steps (include compilation)")
    p.add_argument("--steps", type=int, default=15)
    p.add_argument("--repeats", type=int, default=3, help="decode timings: best of this many")
    p.add_argument("--skip", default="", help="comma-separated parts to skip: tests,training,decode,run")
    p.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU: exercise the code, measure nothing")
    args = p.parse_args()
    device = torch.device("cpu" if args.smoke else "cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("bench/gpu.py needs a CUDA GPU (or --smoke for the CPU code-path check)")
    if args.smoke:
        args.warmup, args.steps, args.repeats = min(args.warmup, 2), min(args.steps, 3), 1
    skip = set(filter(None, args.skip.split(",")))
    ok = True
    if "tests" not in skip:
        ok = run_tests(args.smoke)
    if "training" not in skip:
        training_table(device, args)
    if "decode" not in skip:
        decode_table(device, args)
    if "run" not in skip:
        quick_run(device, args.smoke)
    say("done" + ("" if ok else " (tests FAILED: see above)"))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
