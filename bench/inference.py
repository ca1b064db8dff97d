"""Inference speed: MyLLM's KV-cache engine vs transformers and llama.cpp on the same weights.

    python bench/inference.py --run runs/universe [--tokens 200] [--prompt-tokens 16] [--threads 1]

In one process, on the run's final model (exported to a temp dir as HF and F32 GGUF):
- decode tokens/s of MyLLM with fp32, int8 and int4 weights (`myllm.infer.quant`), eager and with
  the compiled decode step (`Decoder(compile=True)`, what `myllm chat --compile` uses; its one-off
  compile time is printed, not counted);
- decode tokens/s at batch 1, greedy, no stop token: MyLLM `engine.generate` vs transformers
  `generate` on the HF export vs llama.cpp (llama-cpp-python) on the F32 GGUF, each after a warm-up,
  best of `--repeats`; printed with the ratios MyLLM / peer;
- batched throughput via `engine.generate_many` at batch 1, 8 and 32 (new tokens per second, all rows);
- the memory-bandwidth bound: bytes read per decoded token (all weights + the KV cache so far, on
  average over the generation) against a measured copy bandwidth. For a model this small the
  weights sit in the CPU caches, so the bound is far above what per-step overheads allow.
All use the same number of threads (`--threads`, default torch's). On a model this small one
thread decodes faster than two for every engine here: the work per token is too small to split.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from myllm.config import ModelConfig
from myllm.infer.engine import Decoder, SamplingParams, generate, generate_many


def best_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def copy_bandwidth(mb: int = 256, repeats: int = 5) -> float:
    """Bytes per second moved by a large tensor copy (read + write counted)."""
    src = torch.ones(mb * 2**20 // 4)
    dst = torch.empty_like(src)
    return 2 * src.numel() * 4 / best_time(lambda: dst.copy_(src), repeats)


def bytes_per_token(cfg: ModelConfig, n_params: int, prompt: int, new: int, bytes_per_value: int = 4) -> float:
    """Average bytes read to decode one token: every weight once, plus the KV cache up to that position."""
    kv_per_position = 2 * cfg.n_layers * cfg.n_kv_heads * cfg.head_dim * bytes_per_value
    mean_positions = prompt + (new - 1) / 2
    return n_params * bytes_per_value + kv_per_position * mean_positions


def myllm_decode(model, prompt: list[int], new: int, repeats: int, compile: bool = False) -> tuple[float, float]:
    """(tok/s, seconds the first call took: the compile, for a compiled decoder)."""
    params = SamplingParams(max_new_tokens=new, temperature=0)
    decoder = Decoder(model, compile=compile) if compile else None
    t0 = time.perf_counter()
    generate(model, prompt, params, decoder)
    first = time.perf_counter() - t0
    return new / best_time(lambda: generate(model, prompt, params, decoder), repeats), first


def hf_decode(hf_dir: Path, prompt: list[int], new: int, repeats: int) -> float:
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    x = torch.tensor([prompt])

    def run():
        with torch.no_grad():
            model.generate(x, max_new_tokens=new, min_new_tokens=new, do_sample=False)

    return new / best_time(run, repeats)


def llama_cpp_decode(gguf: Path, prompt: list[int], new: int, repeats: int, n_ctx: int) -> float:
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(gguf), n_ctx=n_ctx, n_threads=torch.get_num_threads(),
                          n_batch=max(len(prompt), 32), type_k=0, type_v=0, verbose=False)

    def run():
        for i, _ in enumerate(llm.generate(prompt, top_k=1, temp=0.0, repeat_penalty=1.0, reset=True), 1):
            if i == new:
                break

    return new / best_time(run, repeats)


def gguf_agreement(run: Path, tmp: Path, model, stage: str | None, n_texts: int = 50) -> None:
    """llama.cpp vs MyLLM on the run's val text: tokenization, F32/Q8_0/Q4_0 logits, greedy continuation."""
    import json

    import llama_cpp
    import numpy as np

    from myllm.export.gguf import export_gguf
    from myllm.tokenizer import Tokenizer

    tok = Tokenizer.load(run / "tokenizer")
    with open(run / "corpus" / "val.jsonl", encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for line, _ in zip(f, range(n_texts))]
    ctx = model.cfg.context
    ids = ([tok.bos_id] + tok.encode(texts[0]))[:ctx]
    with torch.no_grad():
        ours = model(torch.tensor([ids]))[0].numpy()
    for kind in ("f32", "q8_0", "q4_0"):
        path = export_gguf(run, tmp / f"acc-{kind}.gguf", kind, stage)
        llm = llama_cpp.Llama(model_path=str(path), n_ctx=ctx, logits_all=True, type_k=0, type_v=0, verbose=False,
                              n_threads=torch.get_num_threads())
        if kind == "f32":
            same = sum(llm.tokenize(t.encode(), add_bos=False, special=False) == tok.encode(t) for t in texts)
            n_tok = sum(len(tok.encode(t)) for t in texts)
            print(f"llama.cpp tokenization: {same}/{len(texts)} val documents ({n_tok:,} tokens) identical")
            prompt = ids[:16]
            mine = generate(model, prompt, SamplingParams(max_new_tokens=40, temperature=0))
            theirs = [t for t, _ in zip(llm.generate(prompt, top_k=1, temp=0.0, repeat_penalty=1.0), range(40))]
            print(f"llama.cpp F32 greedy continuation, 40 tokens: {'identical' if theirs == mine else 'DIFFERENT'}")
        llm.reset()
        llm.eval(ids)
        theirs = np.array(llm.scores[: len(ids)])
        diff, top1 = np.abs(theirs - ours), (theirs.argmax(-1) == ours.argmax(-1)).mean()
        print(f"llama.cpp {kind:5s} logits vs MyLLM fp32 ({len(ids)} positions): max |diff| {diff.max():.2e}, "
              f"mean |diff| / std {diff.mean() / ours.std():.4f}, top-1 agreement {top1:.1%}")
        del llm


def batched(model, prompt: list[int], new: int, batch: int, repeats: int) -> float:
    params = SamplingParams(max_new_tokens=new, temperature=0)
    return batch * new / best_time(lambda: generate_many(model, [prompt] * batch, params), repeats)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default="runs/universe", help="run directory with a trained model")
    ap.add_argument("--tokens", type=int, default=200, help="new tokens per generation")
    ap.add_argument("--prompt-tokens", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=10, help="best of this many timed runs (short runs are noisy)")
    ap.add_argument("--skip", default="", help="comma-separated parts to skip: hf,llama,accuracy")
    ap.add_argument("--stage", choices=["pretrain", "sft", "dpo", "grpo"], help="default: the run's final model")
    ap.add_argument("--threads", type=int, default=0, help="threads for every engine (default: torch's)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)

    from myllm.rundir import RunDir
    from myllm.train.checkpoint import load_model

    run = Path(a.run)
    ckpt = RunDir(run).model_checkpoint(a.stage)
    model = load_model(ckpt)
    cfg = model.cfg
    new = min(a.tokens, cfg.context - a.prompt_tokens)
    g = torch.Generator().manual_seed(0)
    prompt = [1] + torch.randint(7, cfg.vocab_size, (a.prompt_tokens - 1,), generator=g).tolist()
    n_params = model.num_params()
    print(f"model {ckpt} ({n_params:,} parameters), {torch.get_num_threads()} threads, "
          f"prompt {len(prompt)} tokens, {new} new tokens, best of {a.repeats}")

    ours, _ = myllm_decode(model, prompt, new, a.repeats)
    print(f"MyLLM engine decode, batch 1, eager:  {ours:8.1f} tok/s")
    fast, took = myllm_decode(model, prompt, new, a.repeats, compile=True)
    print(f"MyLLM engine decode, compiled:        {fast:8.1f} tok/s   compiled / eager = {fast / ours:.2f}x "
          f"(compiling took {took:.0f} s)")
    from myllm.infer.quant import quantize_model

    for bits in (8, 4):
        q, _ = myllm_decode(quantize_model(load_model(ckpt), bits, 64), prompt, new, a.repeats)
        qc, _ = myllm_decode(quantize_model(load_model(ckpt), bits, 64), prompt, new, a.repeats, compile=True)
        print(f"MyLLM engine decode, int{bits} weights:   {q:8.1f} tok/s eager, {qc:8.1f} compiled   "
              f"int{bits} / fp32 = {q / ours:.2f}x eager, {qc / fast:.2f}x compiled")
    skip = set(a.skip.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        if "hf" not in skip:
            from myllm.export.hf import export_hf

            hf = hf_decode(export_hf(run, Path(tmp) / "hf", a.stage), prompt, new, a.repeats)
            print(f"transformers generate (HF export):    {hf:8.1f} tok/s   MyLLM / transformers = "
                  f"{ours / hf:.2f}x eager, {fast / hf:.2f}x compiled")
        if "llama" not in skip:
            from myllm.export.gguf import export_gguf

            path = export_gguf(run, Path(tmp) / "m.gguf", "f32", a.stage)
            lc = llama_cpp_decode(path, prompt, new, a.repeats, cfg.context)
            print(f"llama.cpp (F32 GGUF, F32 KV cache):   {lc:8.1f} tok/s   MyLLM / llama.cpp = "
                  f"{ours / lc:.2f}x eager, {fast / lc:.2f}x compiled")
        if "accuracy" not in skip:
            gguf_agreement(run, Path(tmp), model, a.stage)
    for batch in (1, 8, 32):
        tps = batched(model, prompt, new, batch, a.repeats)
        print(f"MyLLM generate_many, batch {batch:2d}:        {tps:8.1f} tok/s")
    bw = copy_bandwidth()
    per_token = bytes_per_token(cfg, n_params, len(prompt), new)
    bound = bw / per_token
    print(f"memory bandwidth (copy): {bw / 1e9:.1f} GB/s; {per_token / 1e6:.2f} MB read per decoded token "
          f"(fp32 weights + KV cache) -> bound {bound:,.0f} tok/s; MyLLM batch 1 reaches {ours / bound:.1%} of it "
          f"eager, {fast / bound:.1%} compiled")


if __name__ == "__main__":
    main()
