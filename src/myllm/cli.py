"""The `myllm` command: parses flags and calls library functions, nothing more.

Errors a user can cause (`MyLLMError`) print one line and exit with status 2; Ctrl-C exits
with 130 and says how to resume.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from myllm.errors import MyLLMError

COMPILING_NOTE = "--compile: the decode step compiles before the first token (tens of seconds on a CPU), then runs fast"


def _add_config_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config value, e.g. --set train.lr=1e-3 (repeatable)")


def cmd_run(a: argparse.Namespace) -> int:
    from myllm.evals.summary import format_summary
    from myllm.run import run

    default_name = Path(a.data).name if a.data else ("quick" if a.quick else "universe")
    out = Path(a.out) if a.out else Path("runs") / default_name
    summary = run(out, preset="quick" if a.quick else "default", config_file=a.config, overrides=a.overrides,
                  data=a.data, time_budget=a.time_budget, show_progress=not a.no_progress)
    print()
    print(format_summary(summary))
    print(f"\nsummary: {out / 'summary.json'}")
    return 0


def cmd_data_prepare(a: argparse.Namespace) -> int:
    from myllm.data.report import build_report
    from myllm.run import prepare_run_dir, run_stage, stage_corpus, stage_shards, stage_tokenizer

    out = Path(a.out)
    cfg = prepare_run_dir(out, "default", a.config, a.overrides, a.data, None)
    run_stage(out, "corpus", cfg, lambda: stage_corpus(out, cfg))
    run_stage(out, "tokenizer", cfg, lambda: stage_tokenizer(out, cfg))
    run_stage(out, "shards", cfg, lambda: stage_shards(out, cfg))
    print(build_report(out) if a.report else f"report: {out / 'corpus' / 'report.md'}")
    return 0


def cmd_data_stats(a: argparse.Namespace) -> int:
    path = Path(a.run) / "corpus" / "report.md"
    if not path.is_file():
        raise MyLLMError(f"{path} does not exist; prepare the data first: `myllm data prepare --out {a.run}`")
    print(path.read_text())
    return 0


def cmd_tokenizer(a: argparse.Namespace) -> int:
    from myllm.run import load_run, run_stage, stage_shards, stage_tokenizer

    out = Path(a.run)
    cfg = load_run(out, a.overrides)
    if not (out / "corpus" / "manifest.json").is_file():
        raise MyLLMError(f"{out} has no corpus yet; run `myllm data prepare --out {out}` first")
    run_stage(out, "tokenizer", cfg, lambda: stage_tokenizer(out, cfg))
    run_stage(out, "shards", cfg, lambda: stage_shards(out, cfg))
    index = json.loads((out / "shards" / "index.json").read_text())
    print(f"tokenizer: {index['vocab_size']:,} tokens; shards: " +
          ", ".join(f"{s} {v['tokens']:,} tokens ({v['bytes'] / max(v['tokens'], 1):.2f} bytes/token)"
                    for s, v in index["splits"].items()))
    return 0


def cmd_pretrain(a: argparse.Namespace) -> int:
    from myllm.config import apply_overrides, parse_overrides, train_preset
    from myllm.run import BUDGET_MAX_STEPS, load_run, run_stage
    from myllm.train.distributed import launch, launched_by_torchrun
    from myllm.train.pretrain import pretrain

    out = Path(a.run)
    preset = train_preset(a.preset) if a.preset else None  # an unknown name stops before the run is read
    extra = []
    if a.time_budget is not None:  # the budget is the stopping rule unless --max-steps is given too
        extra += [f"train.time_budget={float(a.time_budget)}", f"train.max_steps={BUDGET_MAX_STEPS}"]
    if a.max_steps is not None:
        extra.append(f"train.max_steps={a.max_steps}")
    if a.dist is not None:
        extra.append(f"train.dist={a.dist}")
    extra += a.overrides
    cfg = load_run(out)
    if preset:  # the preset's fields, then the flags and --set over them
        preset(cfg)
    apply_overrides(cfg, parse_overrides(extra), "--set")
    cfg.validate()
    if a.nproc is not None and not launched_by_torchrun():
        return launch(a.nproc, _without_nproc(a.argv), cfg.train.device)
    if launched_by_torchrun() and int(os.environ["RANK"]) != 0:
        pretrain(out, cfg, resume=a.resume, restart=a.restart, show_progress=False)  # rank 0 records the stage
        return 0
    result = run_stage(out, "pretrain", cfg, lambda: pretrain(out, cfg, resume=a.resume, restart=a.restart,
                                                               show_progress=not a.no_progress))
    print(f"pretrain: step {result.step}, {result.tokens:,} tokens in {result.seconds:.0f}s; "
          f"checkpoint {result.checkpoint}; {result.last_eval}")
    return 0


def _without_nproc(argv: list[str]) -> list[str]:
    """The command line to hand to torchrun: the same, minus `--nproc N`, with `--run` spelled `--run-dir`
    (torchrun's own parser would take `--run` for its `--run-path`)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            out.append("--run-dir" + arg[5:] if arg == "--run" or arg.startswith("--run=") else arg)
    return out


def cmd_post(a: argparse.Namespace) -> int:
    """`myllm sft|dpo|grpo --run DIR`: train the stage, then evaluate it like `myllm run` does."""
    import time

    from myllm.config import dump_config
    from myllm.evals.stages import format_stages
    from myllm.io import atomic_write_text
    from myllm.run import RunState, fingerprints, load_run, stage_post

    out, stage = Path(a.run), a.command
    extra = [f"{stage}.enabled=true"]
    if a.data:
        extra.append(f"{stage}.data={Path(a.data).resolve()}")
    for flag in ("lora_rank", "lora_alpha", "lora_targets", "max_steps", "lr"):
        if getattr(a, flag) is not None:
            extra.append(f"{stage}.{flag}={getattr(a, flag)}")
    cfg = load_run(out, extra + a.overrides)
    atomic_write_text(out / "config.toml", dump_config(cfg))
    t0 = time.perf_counter()
    metrics = stage_post(out, cfg, stage, show_progress=not a.no_progress, restart=a.restart)
    RunState.load(out).mark(stage, fingerprints(cfg)[stage], time.perf_counter() - t0)
    print(format_stages({stage: metrics}))
    print(f"evaluation: {out / 'evals' / (stage + '.json')}")
    return 0


def cmd_chat(a: argparse.Namespace) -> int:
    from myllm.infer.chat_repl import ChatSession, repl
    from myllm.infer.quant import quantized_path
    from myllm.run import load_run
    from myllm.tokenizer import Tokenizer
    from myllm.train.checkpoint import latest_checkpoint
    from myllm.train.post import final_model_checkpoint

    out = Path(a.run)
    cfg = load_run(out)
    if a.quantized:
        path = quantized_path(out, a.quantized)
    elif a.checkpoint:
        path = Path(a.checkpoint)
    elif a.stage:
        path = latest_checkpoint(out / "checkpoints" / a.stage)
        if path is None:
            raise MyLLMError(f"{out} has no {a.stage} checkpoint; train it (`myllm {a.stage} --run {out}`) "
                             "or pick another --stage")
    else:
        path = final_model_checkpoint(out)
    model = _load_for_inference(a, out, lambda: path)
    tok = Tokenizer.load(out / "tokenizer" / "tokenizer.json")
    print(f"model: {path}")
    if a.compile:
        print(COMPILING_NOTE)
    repl(ChatSession(model, tok, _sampling(a, cfg, tok), a.system or "", compile=a.compile))
    return 0


def _sampling(a: argparse.Namespace, cfg, tok):
    from myllm.infer.engine import SamplingParams

    s = cfg.sample
    return SamplingParams(
        max_new_tokens=a.max_new_tokens if a.max_new_tokens is not None else s.max_new_tokens,
        temperature=a.temperature if a.temperature is not None else s.temperature,
        top_k=a.top_k if a.top_k is not None else s.top_k,
        top_p=a.top_p if a.top_p is not None else s.top_p,
        stop_ids=(tok.bos_id, tok.eos_id),
        seed=a.seed if a.seed is not None else s.seed,
        repetition_penalty=a.repetition_penalty,
        frequency_penalty=a.frequency_penalty,
        presence_penalty=a.presence_penalty,
        stop=tuple(a.stop),
    )


def _add_sampling_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-new-tokens", type=int)
    p.add_argument("--temperature", type=float, help="0 = greedy")
    p.add_argument("--top-k", type=int)
    p.add_argument("--top-p", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--repetition-penalty", type=float, default=1.0, help="> 1 discourages tokens already seen")
    p.add_argument("--frequency-penalty", type=float, default=0.0, help="subtracted per earlier occurrence")
    p.add_argument("--presence-penalty", type=float, default=0.0, help="subtracted once a token has occurred")
    p.add_argument("--stop", action="append", default=[], metavar="TEXT", help="stop before this text (repeatable)")
    p.add_argument("--compile", action="store_true",
                   help="compile the one-token decode step (torch.compile): tens of seconds once, then several "
                        "times faster per token (see bench/inference.py)")


def cmd_eval(a: argparse.Namespace) -> int:
    from myllm.evals.summary import evaluate_run, format_summary
    from myllm.run import load_run, run_stage

    out = Path(a.run)
    cfg = load_run(out, a.overrides)
    summary = run_stage(out, "evaluate", cfg, lambda: evaluate_run(out, cfg))
    print(format_summary(summary))
    return 0


def cmd_report(a: argparse.Namespace) -> int:
    from myllm.evals.report import write_run_report

    print(write_run_report(Path(a.run)))
    return 0


def cmd_generate(a: argparse.Namespace) -> int:
    from myllm.evals.summary import final_checkpoint
    from myllm.infer.engine import Decoder, beam_search
    from myllm.infer.text import TextStream, stream_text
    from myllm.run import load_run
    from myllm.tokenizer import Tokenizer

    out = Path(a.run)
    cfg = load_run(out)
    model = _load_for_inference(a, out, lambda: final_checkpoint(out))
    tok = Tokenizer.load(out / "tokenizer" / "tokenizer.json")
    params = _sampling(a, cfg, tok)
    prompt = [tok.bos_id] + tok.encode(a.prompt)
    sys.stdout.write(a.prompt)
    if a.beams:  # the best beam, printed whole (beams are only ranked at the end)
        if a.beams < 1:
            raise MyLLMError(f"--beams must be at least 1, got {a.beams}")
        if a.compile:
            print("note: --compile applies to sampling and greedy decoding, not to --beams; ignored", file=sys.stderr)
        (ids, _), *_ = beam_search(model, prompt, a.beams, params.max_new_tokens, params.stop_ids)
        text = TextStream(tok, params.stop)
        sys.stdout.write("".join(text.push(t) for t in ids) + ("" if text.stopped else text.flush()))
    else:
        decoder = None
        if a.compile:
            print(COMPILING_NOTE, file=sys.stderr)
            decoder = Decoder(model, compile=True)
        for piece in stream_text(model, tok, prompt, params, decoder):
            sys.stdout.write(piece)
            sys.stdout.flush()
    sys.stdout.write("\n")
    return 0


def cmd_serve(a: argparse.Namespace) -> int:
    from myllm.serve.server import serve

    if a.max_batch < 1:
        raise MyLLMError(f"--max-batch must be at least 1, got {a.max_batch}")
    serve(Path(a.run_dir), stage=a.stage, host=a.host, port=a.port, api_key=a.api_key, max_batch=a.max_batch,
          threads=a.threads)
    return 0


def cmd_export_hf(a: argparse.Namespace) -> int:
    from myllm.export.hf import export_hf

    run_dir = Path(a.run_dir)
    out = export_hf(run_dir, Path(a.out) if a.out else run_dir / "export" / "hf", a.stage)
    print(f"exported {out}")
    return 0


def cmd_export_gguf(a: argparse.Namespace) -> int:
    from myllm.export.gguf import export_gguf

    run_dir = Path(a.run_dir)
    out = Path(a.out) if a.out else run_dir / "export" / f"model-{a.kind}.gguf"
    out = export_gguf(run_dir, out, a.kind, a.stage)
    print(f"exported {out} ({out.stat().st_size / 2**20:.2f} MiB)")
    return 0


def cmd_quantize(a: argparse.Namespace) -> int:
    from myllm.infer.quant import quantize_run

    r = quantize_run(Path(a.run_dir), a.bits, a.group_size, a.stage, evaluate=not a.no_eval)
    group = f", group size {r['group_size']}" if r["group_size"] else ""
    print(f"int{r['bits']}{group}: {r['path']}: {r['bytes']:,} bytes vs fp32 {r['fp32_bytes']:,} "
          f"({r['size_ratio']:.3f}x)")
    if "bpb_ratio" in r:
        print(f"val bpb: {r['quantized_val_bpb']:.5f} vs fp32 {r['fp32_val_bpb']:.5f} ({r['bpb_ratio'] - 1:+.2%})")
    return 0


def _load_for_inference(a: argparse.Namespace, out: Path, default):
    """The model `generate`/`chat` use: a quantized file (`--quantized 8|4`), a checkpoint, or `default()`."""
    from myllm.train.checkpoint import load_model

    if getattr(a, "quantized", None):
        from myllm.infer.quant import load_quantized, quantized_path

        path = quantized_path(out, a.quantized)
        if not path.is_file():
            raise MyLLMError(f"{path} not found; create it with `myllm quantize {out} --bits {a.quantized}`")
        return load_quantized(path)
    return load_model(Path(a.checkpoint) if a.checkpoint else default())


def cmd_plan(a: argparse.Namespace) -> int:
    import dataclasses

    from myllm.config import RunConfig, apply_model_preset
    from myllm.plan import format_plan, plan
    from myllm.run import load_run

    if a.run:
        model = load_run(Path(a.run)).model
    else:
        cfg = RunConfig()
        apply_model_preset(cfg, a.preset, "--preset")
        model = cfg.model
    if a.fit_time is not None:  # the shape is the answer: only vocabulary and context are given
        from myllm.plan import fit_time, format_fit

        result = fit_time(a.fit_time, a.vocab_size or model.vocab_size, a.context or model.context)
        print(json.dumps(result, indent=2) if a.json else format_fit(result))
        return 0
    shape = {k: getattr(a, k) for k in PLAN_SHAPE_FLAGS.values() if getattr(a, k) is not None}
    if shape:
        model = dataclasses.replace(model, preset=f"{model.preset} (modified)", **shape)
    result = plan(model, tokens=a.tokens, gpus=a.gpus, gpu=a.gpu, dist=a.dist, micro_batch=a.micro_batch,
                  checkpointing=a.checkpointing, loss_chunk=a.loss_chunk)
    print(json.dumps(result, indent=2) if a.json else format_plan(result))
    return 0


PLAN_SHAPE_FLAGS = {"--d-model": "d_model", "--layers": "n_layers", "--heads": "n_heads", "--kv-heads": "n_kv_heads",
                    "--d-ff": "d_ff", "--vocab": "vocab_size", "--context": "context"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="myllm", description="Train a language model from scratch.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="every stage in order: data, tokenizer, pretraining, evaluation")
    p.add_argument("--data", help="folder of documents (default: the built-in 100-book universe)")
    p.add_argument("--out", help="run directory (default runs/universe, runs/quick or runs/<data folder>)")
    p.add_argument("--quick", action="store_true", help="a small model and few steps (about a minute on a CPU)")
    p.add_argument("--config", help="TOML file with config overrides")
    p.add_argument("--time-budget", type=float, help="stop pretraining after this many seconds (LR schedule fitted)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    _add_config_flags(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("data", help="prepare a corpus (clean, filter, dedup, tokenize) or show its report")
    data_sub = p.add_subparsers(dest="data_command", required=True)
    q = data_sub.add_parser("prepare", help="corpus, tokenizer, shards and corpus/report.md in a run directory")
    q.add_argument("--out", "--run", dest="out", required=True, help="run directory")
    q.add_argument("--data", help="folder of documents (default: the built-in universe)")
    q.add_argument("--config", help="TOML file with config overrides")
    q.add_argument("--report", action="store_true", help="print the whole report (default: its path)")
    _add_config_flags(q)
    q.set_defaults(func=cmd_data_prepare)
    q = data_sub.add_parser("stats", help="print a run's corpus report")
    q.add_argument("--run", required=True, help="run directory")
    q.set_defaults(func=cmd_data_stats)

    p = sub.add_parser("tokenizer", help="(re)train the tokenizer on a run's corpus and re-tokenize the shards")
    p.add_argument("--run", required=True, help="run directory")
    _add_config_flags(p)
    p.set_defaults(func=cmd_tokenizer)

    p = sub.add_parser("pretrain", help="pretrain on a run directory's shards")
    p.add_argument("--run", "--run-dir", dest="run", required=True,
                   help="run directory (under torchrun write --run-dir: torchrun reads --run as its --run-path)")
    p.add_argument("--max-steps", type=int)
    p.add_argument("--time-budget", type=float, help="seconds; the LR schedule is fitted to it")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint")
    p.add_argument("--restart", action="store_true", help="discard this stage's checkpoints and start over")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--nproc", type=int, help="processes (GPUs) on this machine: re-runs this command under torchrun")
    p.add_argument("--dist", choices=["ddp", "fsdp"], help="with several processes: DDP (default) or FSDP2")
    p.add_argument("--preset", help="a training preset: myllm-1b or gpt2-124m (model, batch, schedule, phases)")
    _add_config_flags(p)
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("eval", help="bits per byte, knowledge probes and samples for a run")
    p.add_argument("--run", required=True)
    _add_config_flags(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("report", help="(re)write a run's report card: report.md and plots/*.png")
    p.add_argument("--run", required=True, help="run directory")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("generate", help="continue a prompt with a run's model")
    p.add_argument("--run", required=True)
    p.add_argument("--prompt", default="")
    p.add_argument("--checkpoint", help="a checkpoints/<stage>/step-* directory (default: the final pretrain one)")
    p.add_argument("--beams", type=int, help="beam search with this many beams (prints the best; 1 = greedy)")
    p.add_argument("--quantized", type=int, choices=[8, 4], help="use the model saved by `myllm quantize --bits N`")
    _add_sampling_flags(p)
    p.set_defaults(func=cmd_generate)

    helps = {"sft": "supervised fine-tuning on chats (loss on assistant tokens only)",
             "dpo": "direct preference optimization on (prompt, chosen, rejected) pairs",
             "grpo": "group-relative policy optimization with verifiable rewards"}
    for stage, text in helps.items():
        p = sub.add_parser(stage, help=text)
        p.add_argument("--run", required=True, help="run directory (with a pretrained model)")
        p.add_argument("--data", help="JSONL file (default: generated from the built-in universe)")
        p.add_argument("--lora-rank", type=int, help="train rank-r LoRA adapters only (0 = full fine-tuning)")
        p.add_argument("--lora-alpha", type=float)
        p.add_argument("--lora-targets", help="comma-separated, e.g. q_proj,v_proj (default: q,k,v,o)")
        p.add_argument("--max-steps", type=int)
        p.add_argument("--lr", type=float)
        p.add_argument("--restart", action="store_true", help="discard this stage's checkpoints and start over")
        p.add_argument("--no-progress", action="store_true")
        _add_config_flags(p)
        p.set_defaults(func=cmd_post)

    p = sub.add_parser("chat", help="chat with a run's model in the terminal (/reset, /system, /quit)")
    p.add_argument("--run", required=True)
    p.add_argument("--stage", choices=["pretrain", "sft", "dpo", "grpo"],
                   help="whose model (default: the last trained stage)")
    p.add_argument("--checkpoint", help="a checkpoints/<stage>/step-* directory")
    p.add_argument("--system", help="system prompt")
    p.add_argument("--quantized", type=int, choices=[8, 4], help="use the model saved by `myllm quantize --bits N`")
    _add_sampling_flags(p)
    p.set_defaults(func=cmd_chat)

    p = sub.add_parser("serve", help="OpenAI-compatible API (/v1/...) and a web chat page (/) for a run's model")
    p.add_argument("run_dir", metavar="RUN_DIR", help="run directory")
    p.add_argument("--stage", choices=["pretrain", "sft", "dpo", "grpo"],
                   help="whose model (default: the last trained stage)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", help="require 'Authorization: Bearer KEY' on /v1 routes")
    p.add_argument("--max-batch", type=int, default=32,
                   help="sequences decoded together (KV-cache slots, preallocated at the full context)")
    p.add_argument("--threads", type=int, default=0,
                   help="PyTorch CPU threads (default: PyTorch's choice; 1 is fastest for small models)")
    p.set_defaults(func=cmd_serve)
    p = sub.add_parser("export", help="export a run's model: a Hugging Face directory or a llama.cpp GGUF file")
    export_sub = p.add_subparsers(dest="export_format", required=True)
    q = export_sub.add_parser("hf", help="a directory transformers loads (LlamaForCausalLM, tokenizer, chat template)")
    q.add_argument("run_dir", metavar="RUN_DIR")
    q.add_argument("--stage", choices=["pretrain", "sft", "dpo", "grpo"], help="default: the run's final model")
    q.add_argument("--out", help="output directory (default: RUN_DIR/export/hf)")
    q.set_defaults(func=cmd_export_hf)
    q = export_sub.add_parser("gguf", help="one GGUF file for llama.cpp / Ollama (llama architecture, BPE tokenizer)")
    q.add_argument("run_dir", metavar="RUN_DIR")
    q.add_argument("--type", dest="kind", default="f16", choices=["f32", "f16", "q8_0", "q4_0"],
                   help="weight type of the 2-D tensors (default f16; norms stay f32)")
    q.add_argument("--stage", choices=["pretrain", "sft", "dpo", "grpo"], help="default: the run's final model")
    q.add_argument("--out", help="output file (default: RUN_DIR/export/model-TYPE.gguf)")
    q.set_defaults(func=cmd_export_gguf)

    p = sub.add_parser("quantize", help="weight-only int8/int4 copy of a run's model, with its size and val bpb")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--bits", type=int, choices=[8, 4], required=True)
    p.add_argument("--group-size", type=int, help="int4: weights per scale (default quant.group_size, 64)")
    p.add_argument("--stage", choices=["pretrain", "sft", "dpo", "grpo"], help="default: the run's final model")
    p.add_argument("--no-eval", action="store_true", help="skip the val bits-per-byte comparison")
    p.set_defaults(func=cmd_quantize)

    p = sub.add_parser("plan", help="parameters, training FLOPs/time/cost/memory and inference costs of a model shape")
    p.add_argument("--preset", default="small")
    p.add_argument("--run", help="use the model config of this run directory instead of a preset")
    for flag, field in PLAN_SHAPE_FLAGS.items():
        p.add_argument(flag, dest=field, type=int, help=f"override model.{field}")
    p.add_argument("--tokens", type=float, help="training tokens (default: 20 per parameter, Chinchilla)")
    p.add_argument("--gpus", type=int, default=1)
    p.add_argument("--gpu", default="h100", help="h100, a100, h200 or cpu")
    p.add_argument("--dist", default="ddp", help="ddp, zero1, zero2 or fsdp (the per-GPU memory row marked <)")
    p.add_argument("--micro-batch", type=int, default=1, help="sequences of the full context per GPU per step")
    p.add_argument("--checkpointing", action="store_true", help="activation checkpointing of every layer")
    p.add_argument("--loss-chunk", type=int, default=0, help="chunked cross-entropy: tokens per chunk (0 = whole)")
    p.add_argument("--json", action="store_true", help="print plan() as JSON")
    p.add_argument("--fit-time", type=float, metavar="SECONDS",
                   help="pick the shape and token count that minimize loss for this much training on this machine")
    p.set_defaults(func=cmd_plan)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return args.func(args)
    except MyLLMError as e:
        print(f"myllm {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\nmyllm {args.command}: interrupted; completed checkpoints are kept, re-run to resume",
              file=sys.stderr)
        return 130
