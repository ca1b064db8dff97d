"""`myllm plan`: what a model shape costs to train and to serve, before anything runs.

Parameters are counted from the model itself, instantiated on PyTorch's meta device (shapes, no
memory), so even the 1,055,231,744-parameter `myllm-1b` is counted in milliseconds and the count
cannot drift from the code. Everything else is arithmetic on that count and the shape, with every
assumption (GPU peaks, MFU, prices, bytes per state) named in one table below, so a reader can
disagree with a number by changing one constant. `plan()` returns a plain dict (the `--json`
output); `format_plan()` turns it into the table the CLI prints, a one-line "why" per row.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections import OrderedDict

import torch

from myllm.config import ModelConfig
from myllm.device import dtype_name, inference_dtype
from myllm.errors import ConfigError
from myllm.model import Transformer

COMPONENTS = ("embedding (tied with output)", "attention", "mlp", "norms")

# name: (peak dense bf16 FLOP/s, HBM bytes/s, memory bytes, $ per GPU-hour). Datasheet peaks
# (dense, no sparsity); prices are assumed on-demand cloud rates, not quotes.
GPUS = {
    "h100": (989e12, 3.35e12, 80e9, 2.5),
    "a100": (312e12, 2.0e12, 80e9, 1.5),
    "h200": (989e12, 4.8e12, 141e9, 3.5),
    "cpu": (None, None, None, 0.0),  # peak measured on this machine, memory = its RAM
}
DISTS = ("ddp", "zero1", "zero2", "fsdp")
GPU_MFU = 0.40  # a well-tuned dense LLM run reaches 35-50% of peak; 40% is the planning number
CPU_MFU = 0.50  # bench/throughput.py's target for the `small` model on CPU
WEIGHT_FORMATS = {"fp32": 4, "bf16": 2, "int8": 1, "int4": 0.5}


def component_of(name: str) -> str:
    if name.startswith("embed_tokens"):
        return COMPONENTS[0]
    if ".self_attn." in name:
        return COMPONENTS[1]
    if ".mlp." in name:
        return COMPONENTS[2]
    return COMPONENTS[3]


def param_counts(cfg: ModelConfig) -> OrderedDict[str, int]:
    """Parameters per component, plus `total` and `non-embedding`, from meta-device models of one and two
    layers (every layer is the same, so layer L adds what layer 2 did: no model of all L layers is built)."""
    def per_component(layers: int) -> dict[str, int]:
        with torch.device("meta"):
            model = Transformer(dataclasses.replace(cfg, n_layers=layers))
        counts = dict.fromkeys(COMPONENTS, 0)
        for name, p in model.named_parameters():
            counts[component_of(name)] += p.numel()
        return counts

    one, two = per_component(1), per_component(2)
    counts: OrderedDict[str, int] = OrderedDict(
        (c, one[c] + (cfg.n_layers - 1) * (two[c] - one[c])) for c in COMPONENTS)
    counts["total"] = sum(counts.values())
    counts["non-embedding"] = counts["total"] - counts[COMPONENTS[0]]
    return counts


def flops_per_token(cfg: ModelConfig, n_params: int, seq_len: int) -> int:
    """Training FLOPs per token, PaLM appendix B: 6N + 12·L·d·T (bench/throughput.py's convention).

    N counts the tied embedding once: it is the output head's matmul (the input lookup is free).
    The attention term is the full T x T score and value matmuls, forward (4·L·d·T) x 3.
    """
    return 6 * n_params + 12 * cfg.n_layers * cfg.d_model * seq_len


def activation_bytes_per_token(cfg: ModelConfig, mixed: bool) -> dict[str, float]:
    """Bytes the autograd graph keeps per token, read off the tensors model.py saves for backward.

    Per layer, fp32 (CPU): each of the 2 RMSNorms saves its input x, the rsqrt (1 value) and the
    normalized x, and the following linear saves its input (3d+1); attention saves q, k, v (k/v
    already expanded to all heads for GQA), the SDPA output (also o_proj's input: a view) and its
    logsumexp (n_heads values): 4d + H; SwiGLU saves gate, silu(gate), up and their product: 4ff.
    RoPE saves only its cos/sin buffers. Sum 4·(10d + 4ff + H + 2) bytes (matches a saved-tensor
    hook count exactly). Under bf16 autocast (GPU) the residual stream, the norm input and the
    logsumexp stay fp32 while the matmul inputs and outputs are bf16: 24d + 8ff + 4H + 8 bytes.
    Outside the layers: the final norm (like one norm above) and the token ids and targets (int64).
    With checkpointing a layer keeps only its input (fp32 residual, 4d) and one layer at a time is
    recomputed in backward. The loss: the fp32 log-probs of B·T·V values are saved, and in backward
    their gradient and the logits' gradient exist at the same moment: 3 x 4 bytes per vocab entry.
    """
    d, ff, h = cfg.d_model, cfg.d_ff, cfg.n_heads
    layer = 24 * d + 8 * ff + 4 * h + 8 if mixed else 4 * (10 * d + 4 * ff + h + 2)
    final = (8 * d + 4 if mixed else 4 * (3 * d + 1)) + 16
    return {
        "layer": layer,
        "all_layers": cfg.n_layers * layer + final,
        "checkpointed": cfg.n_layers * 4 * d + layer + final,
        "logits": 3 * 4 * cfg.vocab_size,
    }


def state_bytes(counts: dict[str, int], n_layers: int, gpu: str, dist: str, gpus: int) -> dict[str, float]:
    """Weights, gradients, AdamW state and the copies the code makes, per GPU: what MyLLM allocates.

    Weights and gradients are fp32 everywhere (4 + 4 bytes/param) and AdamW keeps two fp32 moments
    (8): bf16 on a GPU is autocast (`myllm.device`), so the weights are their own master copy.
    - GPU, not FSDP: autocast casts every matmul weight to bf16 once per forward and keeps the copy
      for backward: "copies" = 2 B/param. DDP's gradient buckets are the gradients themselves
      (`gradient_as_bucket_view=True` in `parallelize`): nothing more.
    - FSDP (`fully_shard` per block, weights gathered in bf16 on a GPU, fp32 on a CPU): weights,
      gradients and moments / gpus; "copies" = the gathered root (the tied embedding, kept from
      forward to backward) plus two blocks' gathered weights and unsharded gradients at a time (the
      block computing and the one prefetched).
    - zero1 / zero2 are ZeRO's layouts for comparison (`myllm pretrain` runs ddp or fsdp): the
      moments, then also the gradients, sharded over the GPUs.
    """
    n = counts["total"]
    low = 4 if gpu == "cpu" else 2  # bytes of a gathered or autocast-cast value
    shard = {"ddp": (1, 1, 1), "zero1": (1, 1, gpus), "zero2": (1, gpus, gpus), "fsdp": (gpus, gpus, gpus)}[dist]
    if dist == "fsdp":
        block = (n - counts[COMPONENTS[0]]) / n_layers
        copies = low * counts[COMPONENTS[0]] + 2 * 2 * low * block
    else:
        copies = 0 if gpu == "cpu" else low * n
    return {"weights": n * 4 / shard[0], "grads": n * 4 / shard[1], "optimizer": n * 8 / shard[2], "copies": copies}


def cpu_peak_flops() -> float:
    """This machine's fp32 matmul FLOP/s: best of a few 1024^3 products (about 0.1 s)."""
    import time

    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    best = math.inf
    for _ in range(4):  # the first is a warmup
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * 1024**3 / best


# `myllm plan`'s flags when neither they nor a training preset say otherwise.
PLAN_DEFAULTS = {"gpus": 1, "micro_batch": 1, "checkpointing": False, "loss_chunk": 0}


def training_recipe(preset: str) -> dict:
    """What the training preset `preset` (`myllm pretrain --preset`) implies for the plan: its GPUs (global
    batch / micro-batch), micro-batch, tokens (its data phases), checkpointing and loss chunk; {} for a
    name that is only a model shape."""
    from myllm.config import TRAIN_PRESETS, RunConfig, parse_phases
    from myllm.losses import loss_chunk_for

    if preset not in TRAIN_PRESETS:
        return {}
    cfg = RunConfig()
    TRAIN_PRESETS[preset](cfg)
    t = cfg.train
    recipe = {"gpus": t.global_batch // t.batch_size, "micro_batch": t.batch_size,
              "tokens": float(sum(tokens for _, tokens in parse_phases(t.phases))),
              "checkpointing": t.activation_checkpointing, "loss_chunk": loss_chunk_for(cfg)}
    return {k: v for k, v in recipe.items() if v}  # no phases: no token count of its own


def check_choice(kind: str, value: str, choices) -> None:
    if value not in choices:
        raise ConfigError(f"unknown {kind} {value!r}; choose from {', '.join(choices)}")


def check_plan_flags(tokens: float | None = None, gpus: int = 1, gpu: str = "h100", dist: str = "ddp",
                     micro_batch: int = 1, loss_chunk: int = 0) -> None:
    """The hardware and budget flags of `myllm plan`, each in range (also with --fit-time, which ignores some)."""
    check_choice("--gpu", gpu, GPUS)
    check_choice("--dist", dist, DISTS)
    if tokens is not None and not 0 < tokens < math.inf:
        raise ConfigError(f"--tokens = {tokens:g} must be a finite positive number, e.g. 27.54e9")
    for name, v in (("--gpus", gpus), ("--micro-batch", micro_batch)):
        if v < 1:
            raise ConfigError(f"{name} = {v} must be at least 1")
    if loss_chunk < 0:  # unlike train.loss_chunk (0 = auto, -1 = off), the plan has no auto: 0 is whole logits
        raise ConfigError(f"--loss-chunk = {loss_chunk} must be >= 0 (tokens per cross-entropy chunk; "
                          "0 = whole logits)")


def plan(cfg: ModelConfig, tokens: float | None = None, gpus: int = 1, gpu: str = "h100", dist: str = "ddp",
         micro_batch: int = 1, checkpointing: bool = False, loss_chunk: int = 0) -> dict:
    """Everything `myllm plan` reports, as a JSON-ready dict (bytes, FLOPs, seconds, dollars)."""
    cfg.validate()
    check_plan_flags(tokens, gpus, gpu, dist, micro_batch, loss_chunk)
    counts = param_counts(cfg)
    n, T, L = counts["total"], cfg.context, cfg.n_layers
    tokens = float(tokens if tokens is not None else 20 * n)
    per_token = flops_per_token(cfg, n, T)
    peak, bandwidth, capacity, price = GPUS[gpu]
    mfu = GPU_MFU if gpu != "cpu" else CPU_MFU
    if gpu == "cpu":
        peak, capacity = cpu_peak_flops(), os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    seconds = per_token * tokens / (gpus * peak * mfu)
    step_tokens = gpus * micro_batch * T
    act = activation_bytes_per_token(cfg, mixed=gpu != "cpu")
    # Chunked cross-entropy (train.loss_chunk) holds one chunk's logits at a time, not B·T·V.
    loss_chunk = min(loss_chunk, micro_batch * cfg.context)  # a chunk larger than the micro-batch is all of it
    logits = loss_chunk * act["logits"] if loss_chunk else micro_batch * T * act["logits"]
    seq_bytes = T * act["checkpointed" if checkpointing else "all_layers"] + (0 if loss_chunk else T * act["logits"])
    memory = {}
    for d in DISTS:
        s = state_bytes(counts, L, gpu, d, gpus)
        static = sum(s.values())
        memory[d] = {**s, "activations": micro_batch * T * act["all_layers"],
                     "activations_checkpointed": micro_batch * T * act["checkpointed"],
                     "logits": logits}
        memory[d]["total"] = static + micro_batch * seq_bytes + (logits if loss_chunk else 0)
        memory[d]["max_micro_batch"] = max(0, int((capacity - static - (logits if loss_chunk else 0)) // seq_bytes))
    # The KV cache is in the weights' dtype (`myllm.device.inference_dtype`): bf16 on a GPU, fp32 on the CPU.
    kv_dtype = inference_dtype(torch.device("cpu" if gpu == "cpu" else "cuda"))
    kv_bytes = kv_dtype.itemsize
    kv_token = 2 * L * cfg.n_kv_heads * cfg.head_dim * kv_bytes
    weights_bf16 = n * WEIGHT_FORMATS["bf16"]
    return {
        "model": {k: getattr(cfg, k) for k in ("preset", "vocab_size", "d_model", "n_layers", "n_heads",
                                                "n_kv_heads", "d_ff", "context")},
        "parameters": dict(counts),
        "initial_loss": math.log(cfg.vocab_size),
        "training": {
            "flops_per_token": per_token, "tokens": tokens, "tokens_per_parameter": tokens / n,
            "total_flops": per_token * tokens, "gpu": gpu, "gpus": gpus, "peak_flops_per_gpu": peak, "mfu": mfu,
            "seconds": seconds, "gpu_hours": seconds * gpus / 3600, "cost_usd": seconds * gpus / 3600 * price,
            "micro_batch": micro_batch, "tokens_per_step": step_tokens, "steps": math.ceil(tokens / step_tokens),
        },
        "memory": {"dist": dist, "checkpointing": checkpointing, "loss_chunk": loss_chunk, "capacity_bytes": capacity,
                   "per_gpu": memory},
        "inference": {
            "weights_bytes": {f: n * b for f, b in WEIGHT_FORMATS.items()},
            "kv_dtype": dtype_name(kv_dtype), "kv_bytes_per_value": kv_bytes, "kv_cache_bytes_per_token": kv_token,
            "kv_cache_bytes_at_context": kv_token * T,
            "decode_tokens_per_s_at_context": bandwidth / (weights_bf16 + kv_token * T) if bandwidth else None,
            "prefill_flops_at_context": 2 * n * T + 4 * L * cfg.d_model * T * T,
        },
    }


def _b(x: float) -> str:
    """Bytes in decimal units (GB = 1e9), as GPU memory is sold."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if x >= scale:
            return f"{x / scale:.2f} {unit}"
    return f"{x:.0f} B"


def format_plan(p: dict) -> str:
    """The CLI's text form of `plan()`: one row per quantity, each with why it is what it is."""
    m, c, t, mem, inf = p["model"], p["parameters"], p["training"], p["memory"], p["inference"]
    out = [
        f"model {m['preset']}: d_model {m['d_model']}, layers {m['n_layers']}, heads {m['n_heads']} x "
        f"{m['d_model'] // m['n_heads']} (kv heads {m['n_kv_heads']}), ff {m['d_ff']}, vocab {m['vocab_size']:,}, "
        f"context {m['context']:,}",
        "",
        f"{'component':<30}{'parameters':>16}{'share':>9}",
    ]
    for name, n in c.items():
        if name == "total":
            out.append("-" * 55)
        out.append(f"{name:<30}{n:>16,}{n / c['total']:>9.1%}")
    hours = t["seconds"] / 3600
    rows = [
        ("initial loss", f"{p['initial_loss']:.3f} nats", "ln(V): a uniform guess over the vocabulary"),
        ("FLOPs / token", f"{t['flops_per_token']:.3e}", "6N + 12·L·d·T (PaLM; tied embedding counted once)"),
        ("tokens", f"{t['tokens']:.4g}", f"{t['tokens_per_parameter']:.1f} tokens/parameter (Chinchilla: ~20)"),
        ("training FLOPs", f"{t['total_flops']:.3e}", "FLOPs/token x tokens"),
        ("tokens / step", f"{t['tokens_per_step']:,}", f"{t['gpus']} GPUs x micro-batch {t['micro_batch']} x "
         f"context; {t['steps']:,} steps"),
        ("time", f"{hours:,.1f} h ({hours / 24:.1f} days)", f"{t['gpus']} x {t['gpu']} at "
         f"{t['peak_flops_per_gpu']:.3g} FLOP/s peak x {t['mfu']:.0%} MFU (assumed)"),
        ("cost", f"${t['cost_usd']:,.0f}", f"{t['gpu_hours']:,.0f} GPU-hours at an assumed on-demand price"),
    ]
    out += ["", f"{'training':<18}{'':>24}  why"] + [f"{a:<18}{b:>24}  {c}" for a, b, c in rows]
    out += ["", f"memory per GPU, micro-batch {t['micro_batch']} x {m['context']:,} tokens "
            f"({'with' if mem['checkpointing'] else 'without'} activation checkpointing; "
            f"{_b(mem['capacity_bytes'])} available):"]
    cols = ("weights", "grads", "optimizer", "copies", "activations", "activations_checkpointed", "logits", "total")
    heads = ("weights", "grads", "optimizer", "copies", "activations", "act. ckpt", "logits", "total", "max batch")
    out.append(f"{'dist':<7}" + "".join(f"{h:>13}" for h in heads))
    for d, r in mem["per_gpu"].items():
        mark = " <" if d == mem["dist"] else ""
        out.append(f"{d:<7}" + "".join(f"{_b(r[k]):>13}" for k in cols) + f"{r['max_micro_batch']:>13}{mark}")
    out += [
        "  weights/grads/optimizer: fp32 weights and grads, 2 fp32 AdamW moments (16 B/param; bf16 is autocast);",
        "  copies: bf16 weights autocast keeps for backward (2 B/param), or under fsdp the gathered embedding and",
        "  two blocks' weights and grads; zero1 shards the optimizer over GPUs, zero2 also grads, fsdp also",
        "  weights (ddp and fsdp are what `myllm pretrain` runs); activations = tensors saved",
        "  for backward (see activation_bytes_per_token); logits = fp32 log-probs + 2 gradients of B·T·V",
        "  (with --loss-chunk: of one chunk of tokens at a time, chunked cross-entropy);",
        "  total counts activations or checkpointed ones per the flag; max batch = largest micro-batch that fits",
    ]
    w = inf["weights_bytes"]
    dec = inf["decode_tokens_per_s_at_context"]
    rows = [
        ("weights", " / ".join(f"{k} {_b(v)}" for k, v in w.items()), "parameters x bytes (fp32/bf16/int8/int4)"),
        ("KV cache / token", _b(inf["kv_cache_bytes_per_token"]),
         f"2 (K,V) x L x kv_heads x head_dim x {inf['kv_bytes_per_value']} B ({inf['kv_dtype']}, the inference "
         "dtype on this target; GQA shares KV heads)"),
        ("KV cache @ context", _b(inf["kv_cache_bytes_at_context"]), "per sequence at the full context"),
        ("decode tok/s", f"<= {dec:,.0f}" if dec else "n/a", "HBM bandwidth / (bf16 weights + full KV cache), "
         "batch 1"),
        ("prefill FLOPs", f"{inf['prefill_flops_at_context']:.3e}", "2N·T + 4·L·d·T² for a full-context prompt"),
    ]
    out += ["", f"{'inference':<18}{'':>24}  why"]
    out += [f"{a:<18}{b:>24}  {c}" if a != "weights" else f"{a:<18}{b}\n{'':<44}{c}" for a, b, c in rows]
    return "\n".join(out)


# Hoffmann et al. 2022 (Chinchilla), approach 3: L(N, D) = E + A / N^alpha + B / D^beta (nats/token).
# Fitted on MassiveText with a 32k SentencePiece vocabulary, so the losses are not this corpus's; what
# transfers is the trade-off between parameters and tokens, which is all `fit_time` uses them for.
CHINCHILLA = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}
FIT_WIDTHS = (64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048)


def shape_family(vocab_size: int, context: int) -> list[ModelConfig]:
    """Candidate shapes, one per width: head size 64, depth width/32 (>= 2), MLP 3x, kv heads = heads/2."""
    shapes = []
    for d in FIT_WIDTHS:
        heads = max(1, d // 64)
        shapes.append(ModelConfig(preset=f"fit-{d}", vocab_size=vocab_size, d_model=d, n_layers=max(2, d // 32),
                                  n_heads=heads, n_kv_heads=max(1, heads // 2), d_ff=3 * d, context=context))
    return shapes


def measured_flops_per_second() -> tuple[float, str]:
    """This machine's achievable training FLOP/s: a measured matmul peak times the planning MFU."""
    if torch.cuda.is_available():
        import time

        a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
        (a @ a).sum().item()  # warmup
        t0 = time.perf_counter()
        for _ in range(10):
            b = a @ a
        b.sum().item()
        peak = 10 * 2 * 8192**3 / (time.perf_counter() - t0)
        return peak * GPU_MFU, f"{torch.cuda.get_device_name()} bf16 matmul {peak:.3g} FLOP/s x {GPU_MFU:.0%} MFU"
    peak = cpu_peak_flops()
    return peak * CPU_MFU, f"CPU fp32 matmul {peak:.3g} FLOP/s x {CPU_MFU:.0%} MFU"


MAX_FIT_SECONDS = 365 * 86400.0  # beyond a year of CPU time the answer is the largest shape of the family anyway


def fit_time(seconds: float, vocab_size: int, context: int, flops_per_second: float | None = None) -> dict:
    """The shape and token count that minimize Chinchilla's L(N, D) for `seconds` of training here.

    Each candidate of `shape_family` gets D = seconds x FLOP/s / (FLOPs per token) tokens; the one with
    the lowest predicted loss wins. Smaller models see more tokens, larger ones learn more per token;
    the optimum lands near Chinchilla's ~20 tokens per parameter. `command` is the `myllm run` line.
    """
    if not 0 < seconds <= MAX_FIT_SECONDS:
        raise ConfigError(f"--fit-time = {seconds:g} must be a positive number of seconds, at most "
                          f"{MAX_FIT_SECONDS:.0f} (a year of this machine), e.g. 600")
    how = "given"
    if flops_per_second is None:
        flops_per_second, how = measured_flops_per_second()
    k = CHINCHILLA
    rows = []
    for cfg in shape_family(vocab_size, context):
        n = param_counts(cfg)["total"]
        tokens = seconds * flops_per_second / flops_per_token(cfg, n, context)
        loss = k["E"] + k["A"] / n ** k["alpha"] + k["B"] / tokens ** k["beta"]
        rows.append({"model": {f: getattr(cfg, f) for f in ("d_model", "n_layers", "n_heads", "n_kv_heads", "d_ff")},
                     "parameters": n, "tokens": tokens, "tokens_per_parameter": tokens / n, "predicted_loss": loss})
    best = min(rows, key=lambda r: r["predicted_loss"])
    shape = {**best["model"], "vocab_size": vocab_size, "context": context}  # everything the loss assumed
    sets = " ".join(f"--set model.{f}={v}" for f, v in shape.items())
    return {"seconds": seconds, "flops_per_second": flops_per_second, "throughput": how, "candidates": rows,
            "best": best, "command": f"myllm run --time-budget {seconds:g} {sets}"}


def format_fit(f: dict) -> str:
    lines = [f"compute-optimal shape for {f['seconds']:g} s of training at {f['flops_per_second']:.3g} FLOP/s "
             f"({f['throughput']}), by Chinchilla's L(N, D):", "",
             f"{'d_model':>8}{'layers':>8}{'parameters':>16}{'tokens':>12}{'tok/param':>11}{'pred. loss':>12}"]
    for r in f["candidates"]:
        mark = "  <" if r is f["best"] else ""
        lines.append(f"{r['model']['d_model']:>8}{r['model']['n_layers']:>8}{r['parameters']:>16,}"
                     f"{r['tokens']:>12.3g}{r['tokens_per_parameter']:>11.1f}{r['predicted_loss']:>12.3f}{mark}")
    lines += ["", "run it:", f"  {f['command']}"]
    return "\n".join(lines)
