"""One function per `myllm` subcommand: read the flags, call the library, print the result.

Every path in a run directory comes from `RunDir`; the flags that set config values become
`--set` overrides (`parser.config_overrides`), so a command's config is the run's config.toml
plus exactly what was typed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

from myllm.cli.parser import PLAN_SHAPE_FLAGS, POST_FLAGS, PRETRAIN_FLAGS, SAMPLE_FLAGS, config_overrides
from myllm.errors import MyLLMError, brief
from myllm.records import StageRecords
from myllm.rundir import RunDir

COMPILING_NOTE = "--compile: the decode step compiles before the first token (tens of seconds on a CPU), then runs fast"


# Upper bounds where a larger value only allocates memory until the machine gives out (one KV cache per
# beam or per served sequence): far above any useful setting.
MAX_BEAMS = 64
MAX_SERVE_BATCH = 4096

def cmd_run(a: argparse.Namespace) -> int:
    from myllm.evals.summary import format_summary
    from myllm.run import run

    default_name = Path(a.data).name if a.data else ("quick" if a.quick else "universe")
    out = RunDir(a.out or Path("runs") / default_name)
    summary = run(out, preset="quick" if a.quick else "default", config_file=a.config, overrides=a.overrides,
                  data=a.data, time_budget=a.time_budget, show_progress=not a.no_progress)
    print()
    print(format_summary(summary))
    print(f"\nsummary: {out.summary_file}")
    return 0


def cmd_data_prepare(a: argparse.Namespace) -> int:
    from myllm.data.report import build_report
    from myllm.run import prepare_run_dir, run_stage, stage_corpus, stage_shards, stage_tokenizer

    out = RunDir(a.out)
    StageRecords(out).require_current()  # before config.toml is rewritten
    cfg = prepare_run_dir(out, "default", a.config, a.overrides, a.data, None, data_only=True)
    for stage, action in (("corpus", stage_corpus), ("tokenizer", stage_tokenizer), ("shards", stage_shards)):
        run_stage(out, stage, cfg, lambda action=action: action(out, cfg))
    print(build_report(out) if a.report else f"report: {out.corpus_report}")
    return 0


def cmd_data_stats(a: argparse.Namespace) -> int:
    path = RunDir(a.run).corpus_report
    if not path.is_file():
        raise MyLLMError(f"{path} does not exist; prepare the data first: `myllm data prepare --out {a.run}`")
    print(path.read_text())
    return 0


def cmd_tokenizer(a: argparse.Namespace) -> int:
    from myllm.run import run_stage, stage_shards, stage_tokenizer

    out = RunDir(a.run)
    cfg = out.config(a.overrides)
    if not out.manifest_file.is_file():
        raise MyLLMError(f"{out} has no corpus yet; run `myllm data prepare --out {out}` first")
    trained = out.config().model.vocab_size
    if cfg.model.vocab_size != trained and out.has_model():  # the new tokenizer would no longer fit the model
        raise MyLLMError(f"{out} has models trained on its {trained:,}-token vocabulary; a tokenizer of "
                         f"{cfg.model.vocab_size:,} would no longer fit them. Prepare a new run directory instead: "
                         f"`myllm data prepare --out NEW --set model.vocab_size={cfg.model.vocab_size}`")
    run_stage(out, "tokenizer", cfg, lambda: stage_tokenizer(out, cfg))
    run_stage(out, "shards", cfg, lambda: stage_shards(out, cfg))
    index = out.index()
    print(f"tokenizer: {index['vocab_size']:,} tokens; shards: " +
          ", ".join(f"{s} {v['tokens']:,} tokens ({v['bytes'] / max(v['tokens'], 1):.2f} bytes/token)"
                    for s, v in index["splits"].items()))
    return 0


def cmd_pretrain(a: argparse.Namespace) -> int:
    from myllm.config import apply_overrides, parse_overrides, train_preset
    from myllm.run import BUDGET_MAX_STEPS, run_stage
    from myllm.train.distributed import launch, launched_by_torchrun
    from myllm.train.pretrain import check_restart_flags, pretrain

    out = RunDir(a.run)
    check_restart_flags(a.resume, a.restart)  # before anything is read, written or launched
    preset = train_preset(a.preset) if a.preset else None  # an unknown name stops before the run is read
    extra = []
    if a.time_budget is not None:  # the budget is the stopping rule unless --max-steps is given too
        extra += [f"train.time_budget={float(a.time_budget)}", f"train.max_steps={BUDGET_MAX_STEPS}"]
    extra += config_overrides(a, "train", PRETRAIN_FLAGS)
    if a.dist is not None:
        extra.append(f"train.dist={a.dist}")
    cfg = out.config()
    if preset:  # the preset's fields, then the flags and --set over them
        preset(cfg)
    apply_overrides(cfg, parse_overrides(extra + a.overrides), "--set")
    cfg.validate()
    StageRecords(out).require_current()  # before any process starts
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
    from myllm.evals.stages import format_stages
    from myllm.run import run_stage, stage_post

    out, stage = RunDir(a.run), a.command
    extra = [f"{stage}.enabled=true"]
    if a.data:
        try:
            extra.append(f"{stage}.data={Path(a.data).resolve()}")
        except (RuntimeError, OSError) as e:  # a symlink loop: RuntimeError before Python 3.13, OSError after
            raise MyLLMError(f"--data {a.data} cannot be resolved ({brief(e)}); pass a JSONL file") from None
    cfg = out.config(extra + config_overrides(a, stage, POST_FLAGS) + a.overrides)
    metrics = run_stage(out, stage, cfg, lambda: stage_post(out, cfg, stage, show_progress=not a.no_progress,
                                                            restart=a.restart))
    print(format_stages({stage: metrics}))
    print(f"evaluation: {out.stage_eval(stage)}")
    return 0


def _model_path(a: argparse.Namespace, run: RunDir, stage: str | None, default_stage: str | None) -> Path:
    """The model `generate`/`chat` use: `--quantized N`, `--checkpoint`, `--stage`, else the default."""
    if getattr(a, "quantized", None):
        path = run.quantized(a.quantized)
        if not path.is_file():
            raise MyLLMError(f"{path} not found; create it with `myllm quantize {run} --bits {a.quantized}`")
        return path
    if a.checkpoint:
        return Path(a.checkpoint)
    if stage or default_stage:
        return run.model_checkpoint(stage or default_stage, unfinished=True)
    return run.model_checkpoint()


def _load(a: argparse.Namespace, run: RunDir, path: Path, device, file=None):
    """The model at `path` (a checkpoint, or the file `myllm quantize` wrote), checked to fit the run,
    loaded on the CPU (as the files are stored), then placed on `device` in its inference dtype; says
    so once on `file` (stderr for `generate`, whose stdout is the text).

    A quantized model is placed the same way: its int8/int4 weights stay integers on the device and
    only its compute dtype changes (`_Quantized._apply`), and `dequantize` is plain tensor arithmetic
    that runs on CUDA in bf16 as well as on the CPU in fp32, so it needs no fp32 exception."""
    from myllm.device import describe, inference_dtype, place_model

    if not getattr(a, "quantized", None):
        model = run.load_model(path)
    else:
        from myllm.infer.quant import load_quantized

        model = load_quantized(path)
        run.check_model_fits(model.cfg.vocab_size, path)
    dtype = inference_dtype(device)
    model = place_model(model, device, dtype)
    weights = f" (int{a.quantized} weights, dequantized per layer)" if getattr(a, "quantized", None) else ""
    print(f"device: {describe(device, dtype)}{weights}", file=file or sys.stdout, flush=True)
    return model


def _device(a: argparse.Namespace):
    """`--device`, resolved against this machine before anything is read or loaded: a bad name, or
    cuda on a machine without one, is one line naming the flag."""
    from myllm.device import resolve_device

    return resolve_device(a.device, "--device")


def _check_sampling_flags(a: argparse.Namespace) -> None:
    """The generate/chat flags that are not config keys, checked before a model is loaded or a word printed
    (the config keys, --temperature and the rest, are checked with the run's [sample] section)."""
    for key in SAMPLE_FLAGS:  # NaN/inf here would otherwise be reported as a `--set` value
        value = getattr(a, key)
        if isinstance(value, float) and not math.isfinite(value):
            raise MyLLMError(f"--{key.replace('_', '-')} must be a finite number, got {value}")
    beams = getattr(a, "beams", None)
    if beams is not None and not 1 <= beams <= MAX_BEAMS:
        raise MyLLMError(f"--beams must be from 1 (greedy) to {MAX_BEAMS}, got {beams}")
    if not 0 < a.repetition_penalty < math.inf:
        raise MyLLMError(f"--repetition-penalty must be a finite number > 0 (1 = off), got {a.repetition_penalty}")
    for flag, value in (("--frequency-penalty", a.frequency_penalty), ("--presence-penalty", a.presence_penalty)):
        if not -2 <= value <= 2:  # OpenAI's range, as the server's; far beyond it the logits overflow to inf
            raise MyLLMError(f"{flag} must be from -2 to 2 (0 = off), got {value}")
    if any(not text for text in a.stop):
        raise MyLLMError("--stop needs some text, e.g. --stop 'User:'")


def _sampling(a: argparse.Namespace, run: RunDir, tok):
    """The sampling flags over the run's [sample] section (its defaults), plus the penalties and stops."""
    from myllm.infer.engine import SamplingParams

    s = run.config(config_overrides(a, "sample", SAMPLE_FLAGS)).sample
    return SamplingParams(
        max_new_tokens=s.max_new_tokens, temperature=s.temperature, top_k=s.top_k, top_p=s.top_p,
        stop_ids=(tok.bos_id, tok.eos_id), seed=s.seed, repetition_penalty=a.repetition_penalty,
        frequency_penalty=a.frequency_penalty, presence_penalty=a.presence_penalty, stop=tuple(a.stop),
    )


def cmd_chat(a: argparse.Namespace) -> int:
    from myllm.infer.chat_repl import ChatSession, repl

    _check_sampling_flags(a)
    device = _device(a)
    out = RunDir(a.run).require()
    tok = out.tokenizer()
    params = _sampling(a, out, tok)  # a bad flag or [sample] value stops before the model loads
    path = _model_path(a, out, a.stage, None)
    model = _load(a, out, path, device)
    print(f"model: {path}")
    if a.compile:
        print(COMPILING_NOTE)
    repl(ChatSession(model, tok, params, a.system or "", compile=a.compile))
    return 0


def cmd_generate(a: argparse.Namespace) -> int:
    from myllm.infer.engine import Decoder, beam_search
    from myllm.infer.text import TextStream, stream_text

    _check_sampling_flags(a)  # --beams 0 was silently plain sampling
    device = _device(a)
    out = RunDir(a.run).require()
    tok = out.tokenizer()
    params = _sampling(a, out, tok)
    model = _load(a, out, _model_path(a, out, None, "pretrain"), device, sys.stderr)  # stdout is the text
    prompt = [tok.bos_id] + tok.encode(a.prompt)
    sys.stdout.write(a.prompt)
    if a.beams is not None:  # the best beam, printed whole (beams are only ranked at the end)
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


def cmd_eval(a: argparse.Namespace) -> int:
    from myllm.device import autocast_dtype, describe, resolve_device
    from myllm.evals.summary import evaluate_run, format_summary
    from myllm.run import run_stage

    out = RunDir(a.run)
    extra = []
    if a.device is not None:
        resolve_device(a.device, "--device")  # a bad value is named as the flag, before the run is read
        extra.append(f"train.device={a.device}")
    cfg = out.config(extra + a.overrides)  # --set train.device=... after it wins, as --set does everywhere
    # Evaluation reads cfg.train.device: fp32 weights under the training-side autocast (bf16 on CUDA).
    device = resolve_device(cfg.train.device)
    print(f"device: {describe(device, autocast_dtype(device, cfg.train.precision))}", flush=True)
    summary = run_stage(out, "evaluate", cfg, lambda: evaluate_run(out, cfg))
    print(format_summary(summary))
    return 0


def cmd_report(a: argparse.Namespace) -> int:
    from myllm.evals.report import write_run_report

    print(write_run_report(RunDir(a.run)))
    return 0


def cmd_serve(a: argparse.Namespace) -> int:
    from myllm.serve.server import serve

    if not 1 <= a.max_batch <= MAX_SERVE_BATCH:
        raise MyLLMError(f"--max-batch must be from 1 to {MAX_SERVE_BATCH}, got {a.max_batch}")
    if a.threads is not None and not 0 <= a.threads <= 4 * (os.cpu_count() or 1):
        raise MyLLMError(f"--threads must be from 0 (torch's default) to {4 * (os.cpu_count() or 1)} "
                         f"(4 per core here), got {a.threads}")
    device = _device(a)
    serve(Path(a.run_dir), stage=a.stage, host=a.host, port=a.port, api_key=a.api_key, max_batch=a.max_batch,
          threads=a.threads, max_body_mb=a.max_body_mb, request_timeout=a.request_timeout, device=device)
    return 0


def cmd_export_hf(a: argparse.Namespace) -> int:
    from myllm.export.hf import export_hf

    run = RunDir(a.run_dir)
    if a.private and not a.push:
        raise MyLLMError("--private applies to --push REPO: add it, or leave --private out")
    out = export_hf(run, Path(a.out) if a.out else run.export_hf, a.stage, a.license_id)
    print(f"exported {out}")
    if a.push:
        from myllm.export.hf import push_to_hub

        print(f"pushed to {push_to_hub(out, a.push, a.private)}")
    return 0


def cmd_export_gguf(a: argparse.Namespace) -> int:
    from myllm.export.gguf import export_gguf

    run = RunDir(a.run_dir)
    out = export_gguf(run, Path(a.out) if a.out else run.export_gguf(a.kind), a.kind, a.stage)
    print(f"exported {out} ({out.stat().st_size / 2**20:.2f} MiB)")
    return 0


def cmd_quantize(a: argparse.Namespace) -> int:
    from myllm.device import describe, inference_dtype
    from myllm.export.quantize import quantize_run

    device = _device(a)
    if not a.no_eval:  # only the val bpb comparison runs a model; the quantizing itself is CPU fp32
        print(f"device: {describe(device, inference_dtype(device))}", flush=True)
    r = quantize_run(RunDir(a.run_dir), a.bits, a.group_size, a.stage, evaluate=not a.no_eval, device=device)
    group = f", group size {r['group_size']}" if r["group_size"] else ""
    print(f"int{r['bits']}{group}: {r['path']}: {r['bytes']:,} bytes vs fp32 {r['fp32_bytes']:,} "
          f"({r['size_ratio']:.3f}x)")
    if "bpb_ratio" in r:  # the unquantized model ran in the same dtype as the quantized one (fp32, bf16 on CUDA)
        print(f"val bpb: {r['quantized_val_bpb']:.5f} vs unquantized {r['eval_dtype']} {r['fp32_val_bpb']:.5f} "
              f"({r['bpb_ratio'] - 1:+.2%})")
    return 0


def cmd_plan(a: argparse.Namespace) -> int:
    import dataclasses

    from myllm.config import RunConfig, apply_model_preset
    from myllm.plan import PLAN_DEFAULTS, check_plan_flags, format_plan, plan, training_recipe

    if a.run:
        model = RunDir(a.run).config().model
    else:
        cfg = RunConfig()
        apply_model_preset(cfg, a.preset, "--preset")
        model = cfg.model
    recipe = {} if a.run else {k: v for k, v in training_recipe(a.preset).items() if getattr(a, k) is None}
    for key, value in {**PLAN_DEFAULTS, **recipe}.items():  # the flags left unset
        if getattr(a, key) is None:
            setattr(a, key, value)
    check_plan_flags(a.tokens, a.gpus, a.gpu, a.dist, a.micro_batch, a.loss_chunk)
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
    if recipe and not a.json:
        said = ", ".join(f"{k.replace('_', ' ')} {v:,.0f}" if isinstance(v, float) else f"{k.replace('_', ' ')} {v}"
                         for k, v in recipe.items())
        print(f"recipe of the {a.preset} training preset (flags override): {said}\n")
    print(json.dumps(result, indent=2) if a.json else format_plan(result))
    return 0
