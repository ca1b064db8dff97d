"""Every `myllm` subcommand and its flags.

A flag that sets a config value is declared once, in a table below (flag name = config key with
dashes, the type read from the config schema); the command turns the flags given into
`section.key=value` overrides, the same as `--set`. The `--stage` choices are the stage table's
(`myllm.rundir.MODEL_STAGES`).
"""

from __future__ import annotations

import argparse
import dataclasses

from myllm.config import PostTrainConfig, SampleConfig, TrainConfig
from myllm.config.schema import DEVICE_CHOICES  # not myllm.device: the parser imports no torch
from myllm.rundir import MODEL_STAGES

# config key -> help (None: the key's name says it)
POST_FLAGS = {"lora_rank": "train rank-r LoRA adapters only (0 = full fine-tuning)", "lora_alpha": None,
              "lora_targets": "comma-separated, e.g. q_proj,v_proj (default: q,k,v,o)", "max_steps": None, "lr": None}
SAMPLE_FLAGS = {"max_new_tokens": None, "temperature": "0 = greedy", "top_k": None, "top_p": None, "seed": None}
PRETRAIN_FLAGS = {"max_steps": None}
PLAN_SHAPE_FLAGS = {"--d-model": "d_model", "--layers": "n_layers", "--heads": "n_heads", "--kv-heads": "n_kv_heads",
                    "--d-ff": "d_ff", "--vocab": "vocab_size", "--context": "context"}
POST_HELP = {"sft": "supervised fine-tuning on chats (loss on assistant tokens only)",
             "dpo": "direct preference optimization on (prompt, chosen, rejected) pairs",
             "grpo": "group-relative policy optimization with verifiable rewards"}
_TYPES = {"int": int, "float": float, "str": str}


def path_text(text: str) -> str:
    """A path flag's value: an empty one would silently mean the current folder (and write into it)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("needs a path, e.g. runs/mine")
    return text


def add_config_flags(p: argparse.ArgumentParser, schema: type, flags: dict[str, str | None]) -> None:
    """`--key-name` for each config key in `flags`, typed as the schema's field (unset = the config's value)."""
    types = {f.name: f.type for f in dataclasses.fields(schema)}
    for key, help_text in flags.items():
        p.add_argument("--" + key.replace("_", "-"), dest=key, type=_TYPES[str(types[key])], help=help_text)


def config_overrides(a: argparse.Namespace, section: str, flags: dict[str, str | None]) -> list[str]:
    """The flags of `flags` that were given, as `section.key=value` overrides."""
    return [f"{section}.{key}={getattr(a, key)}" for key in flags if getattr(a, key) is not None]


def _add_set(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config value, e.g. --set train.lr=1e-3 (repeatable)")


def _add_run_dir(p: argparse.ArgumentParser) -> None:
    """The run directory as `--run DIR`, like every other command, or as the positional RUN_DIR these
    commands took first (kept as an alias); `check_run_dir` picks the one given."""
    p.add_argument("run_dir", nargs="?", type=path_text, metavar="RUN_DIR", help="run directory (or --run DIR)")
    p.add_argument("--run", dest="run_flag", type=path_text, metavar="DIR", help="run directory")


def check_run_dir(parser: argparse.ArgumentParser, a: argparse.Namespace) -> None:
    """Fill `a.run_dir` from `--run` or the positional; exactly one way, or argparse's one-line error."""
    if not hasattr(a, "run_flag"):
        return
    given = {x for x in (a.run_dir, a.run_flag) if x is not None}
    if not given:
        parser.error(f"{a.command}: the run directory is missing: give --run DIR")
    if len(given) > 1:
        parser.error(f"{a.command}: two run directories ({a.run_dir} and --run {a.run_flag}): give one")
    a.run_dir = given.pop()


def _add_stage(p: argparse.ArgumentParser, help_text: str = "whose model (default: the last trained stage)") -> None:
    p.add_argument("--stage", choices=MODEL_STAGES, help=help_text)


def _add_device(p: argparse.ArgumentParser, default: str | None = "auto", help_text: str = "") -> None:
    """`--device`, checked by `myllm.device.resolve_device` (so a bad value is one line naming the flag,
    not argparse's list of choices, which could not spell cuda:N anyway)."""
    p.add_argument("--device", default=default, metavar="DEVICE",
                   help=help_text or f"{DEVICE_CHOICES} (default auto: CUDA when present, in bf16; CPU in fp32)")


def _add_sampling(p: argparse.ArgumentParser) -> None:
    add_config_flags(p, SampleConfig, SAMPLE_FLAGS)
    p.add_argument("--repetition-penalty", type=float, default=1.0, help="> 1 discourages tokens already seen")
    p.add_argument("--frequency-penalty", type=float, default=0.0, help="subtracted per earlier occurrence")
    p.add_argument("--presence-penalty", type=float, default=0.0, help="subtracted once a token has occurred")
    p.add_argument("--stop", action="append", default=[], metavar="TEXT", help="stop before this text (repeatable)")
    p.add_argument("--compile", action="store_true",
                   help="compile the one-token decode step (torch.compile): tens of seconds once, then several "
                        "times faster per token (see bench/inference.py)")
    p.add_argument("--quantized", type=int, choices=[8, 4], help="use the model saved by `myllm quantize --bits N`")
    _add_device(p)


def _add_run(sub, c) -> None:
    p = sub.add_parser("run", help="every stage in order: data, tokenizer, pretraining, evaluation")
    p.add_argument("--data", type=path_text, help="folder of documents (default: the built-in 100-book universe)")
    p.add_argument("--out", type=path_text,
                   help="run directory (default runs/universe, runs/quick or runs/<data folder>)")
    p.add_argument("--quick", action="store_true", help="a small model and few steps (about a minute on a CPU)")
    p.add_argument("--config", type=path_text, help="TOML file with config overrides")
    p.add_argument("--time-budget", type=float, help="stop pretraining after this many seconds (LR schedule fitted)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    _add_set(p)
    p.set_defaults(func=c.cmd_run)


def _add_data(sub, c) -> None:
    p = sub.add_parser("data", help="prepare a corpus (clean, filter, dedup, tokenize) or show its report")
    data_sub = p.add_subparsers(dest="data_command", required=True)
    q = data_sub.add_parser("prepare", help="corpus, tokenizer, shards and corpus/report.md in a run directory")
    q.add_argument("--out", "--run", type=path_text, dest="out", required=True, help="run directory")
    q.add_argument("--data", type=path_text, help="folder of documents (default: the built-in universe)")
    q.add_argument("--config", type=path_text, help="TOML file with config overrides")
    q.add_argument("--report", action="store_true", help="print the whole report (default: its path)")
    _add_set(q)
    q.set_defaults(func=c.cmd_data_prepare)
    q = data_sub.add_parser("stats", help="print a run's corpus report")
    q.add_argument("--run", type=path_text, required=True, help="run directory")
    q.set_defaults(func=c.cmd_data_stats)
    p = sub.add_parser("tokenizer", help="(re)train the tokenizer on a run's corpus and re-tokenize the shards")
    p.add_argument("--run", type=path_text, required=True, help="run directory")
    _add_set(p)
    p.set_defaults(func=c.cmd_tokenizer)


def _add_training(sub, c) -> None:
    p = sub.add_parser("pretrain", help="pretrain on a run directory's shards")
    p.add_argument("--run", "--run-dir", type=path_text, dest="run", required=True,
                   help="run directory (under torchrun write --run-dir: torchrun reads --run as its --run-path)")
    add_config_flags(p, TrainConfig, PRETRAIN_FLAGS)
    p.add_argument("--time-budget", type=float, help="seconds; the LR schedule is fitted to it")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint")
    p.add_argument("--restart", action="store_true", help="discard this stage's checkpoints and start over")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--nproc", type=int, help="processes (GPUs) on this machine: re-runs this command under torchrun")
    p.add_argument("--dist", choices=["ddp", "fsdp"], help="with several processes: DDP (default) or FSDP2")
    p.add_argument("--preset", help="a training preset: myllm-1b or gpt2-124m (model, batch, schedule, phases)")
    _add_set(p)
    p.set_defaults(func=c.cmd_pretrain)
    for stage, text in POST_HELP.items():
        p = sub.add_parser(stage, help=text)
        p.add_argument("--run", type=path_text, required=True, help="run directory (with a pretrained model)")
        p.add_argument("--data", type=path_text, help="JSONL file (default: generated from the built-in universe)")
        add_config_flags(p, PostTrainConfig, POST_FLAGS)
        p.add_argument("--restart", action="store_true", help="discard this stage's checkpoints and start over")
        p.add_argument("--no-progress", action="store_true")
        _add_set(p)
        p.set_defaults(func=c.cmd_post)


def _add_results(sub, c) -> None:
    p = sub.add_parser("eval", help="bits per byte, knowledge probes and samples for a run")
    p.add_argument("--run", type=path_text, required=True)
    # No default of its own: unset, the run's train.device decides (auto unless the run set it).
    _add_device(p, None, f"{DEVICE_CHOICES}: the same as --set train.device=DEVICE (default: the run's "
                         "train.device, auto unless set)")
    _add_set(p)
    p.set_defaults(func=c.cmd_eval)
    p = sub.add_parser("report", help="(re)write a run's report card: report.md and plots/*.png")
    p.add_argument("--run", type=path_text, required=True, help="run directory")
    p.set_defaults(func=c.cmd_report)


def _add_inference(sub, c) -> None:
    p = sub.add_parser("generate", help="continue a prompt with a run's model")
    p.add_argument("--run", type=path_text, required=True)
    p.add_argument("--prompt", default="")
    p.add_argument("--checkpoint", type=path_text,
                   help="a checkpoints/<stage>/step-* directory (default: the final pretrain one)")
    p.add_argument("--beams", type=int, help="beam search with this many beams (prints the best; 1 = greedy)")
    _add_sampling(p)
    p.set_defaults(func=c.cmd_generate)
    p = sub.add_parser("chat", help="chat with a run's model in the terminal (/reset, /system, /quit)")
    p.add_argument("--run", type=path_text, required=True)
    _add_stage(p)
    p.add_argument("--checkpoint", type=path_text, help="a checkpoints/<stage>/step-* directory")
    p.add_argument("--system", help="system prompt")
    _add_sampling(p)
    p.set_defaults(func=c.cmd_chat)
    p = sub.add_parser("serve", help="OpenAI-compatible API (/v1/...) and a web chat page (/) for a run's model")
    _add_run_dir(p)
    _add_stage(p)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", help="require 'Authorization: Bearer KEY' on /v1 routes")
    p.add_argument("--max-batch", type=int, default=32,
                   help="sequences decoded together (KV-cache slots, preallocated at the full context)")
    p.add_argument("--threads", type=int, default=0,
                   help="PyTorch CPU threads (default: PyTorch's choice; 1 is fastest for small models)")
    p.add_argument("--max-body-mb", type=float, default=2.0,
                   help="largest request body in MB (default 2); a larger one gets HTTP 413 before it is parsed")
    p.add_argument("--request-timeout", type=float, default=30.0,
                   help="seconds a client has to send its request headers, then its body (default 30); HTTP 408")
    _add_device(p)
    p.set_defaults(func=c.cmd_serve)


def _add_exports(sub, c) -> None:
    p = sub.add_parser("export", help="export a run's model: a Hugging Face directory or a llama.cpp GGUF file")
    export_sub = p.add_subparsers(dest="export_format", required=True)
    q = export_sub.add_parser("hf", help="a directory transformers loads (LlamaForCausalLM, tokenizer, chat template)")
    _add_run_dir(q)
    _add_stage(q, "default: the run's final model")
    q.add_argument("--out", type=path_text, help="output directory (default: RUN_DIR/export/hf)")
    q.add_argument("--license", dest="license_id", metavar="ID",
                   help="the model card's license (default: apache-2.0 for the built-in universe, else other)")
    q.add_argument("--push", metavar="REPO", help="then upload it to the Hugging Face Hub repo user/name")
    q.add_argument("--private", action="store_true", help="with --push: create the repo private")
    q.set_defaults(func=c.cmd_export_hf)
    q = export_sub.add_parser("gguf", help="one GGUF file for llama.cpp / Ollama (llama architecture, BPE tokenizer)")
    _add_run_dir(q)
    q.add_argument("--type", dest="kind", default="f16", choices=["f32", "f16", "q8_0", "q4_0"],
                   help="weight type of the 2-D tensors (default f16; norms stay f32)")
    _add_stage(q, "default: the run's final model")
    q.add_argument("--out", type=path_text, help="output file (default: RUN_DIR/export/model-TYPE.gguf)")
    q.set_defaults(func=c.cmd_export_gguf)
    p = sub.add_parser("quantize", help="weight-only int8/int4 copy of a run's model, with its size and val bpb")
    _add_run_dir(p)
    p.add_argument("--bits", type=int, choices=[8, 4], required=True)
    p.add_argument("--group-size", type=int, help="int4: weights per scale (default quant.group_size, 64)")
    _add_stage(p, "default: the run's final model")
    p.add_argument("--no-eval", action="store_true", help="skip the val bits-per-byte comparison")
    _add_device(p, help_text=f"where the val bpb comparison runs: {DEVICE_CHOICES} (default auto); the file "
                             "written is the same on any device (quantized from the fp32 weights on the CPU)")
    p.set_defaults(func=c.cmd_quantize)


def _add_plan(sub, c) -> None:
    p = sub.add_parser("plan", help="parameters, training FLOPs/time/cost/memory and inference costs of a model shape")
    p.add_argument("--preset", default="small")
    p.add_argument("--run", type=path_text, help="use the model config of this run directory instead of a preset")
    for flag, field in PLAN_SHAPE_FLAGS.items():
        p.add_argument(flag, dest=field, type=int, help=f"override model.{field}")
    p.add_argument("--tokens", type=float,
                   help="training tokens (default: the training preset's, e.g. myllm-1b 27.54e9; else 20 per "
                        "parameter, Chinchilla)")
    p.add_argument("--gpus", type=int, help="default 1, or the training preset's GPUs (myllm-1b: 8)")
    p.add_argument("--gpu", default="h100", help="h100, a100, h200 or cpu")
    p.add_argument("--dist", default="ddp", help="ddp, zero1, zero2 or fsdp (the per-GPU memory row marked <)")
    p.add_argument("--micro-batch", type=int,
                   help="sequences of the full context per GPU per step (default 1, or the training preset's)")
    p.add_argument("--checkpointing", action=argparse.BooleanOptionalAction,
                   help="activation checkpointing of every layer (default off, or as the training preset)")
    p.add_argument("--loss-chunk", type=int,
                   help="chunked cross-entropy: tokens per chunk (0 = whole; default 0, or the preset's auto)")
    p.add_argument("--json", action="store_true", help="print plan() as JSON")
    p.add_argument("--fit-time", type=float, metavar="SECONDS",
                   help="pick the shape and token count that minimize loss for this much training on this machine")
    p.set_defaults(func=c.cmd_plan)


ADD_COMMANDS = (_add_run, _add_data, _add_training, _add_results, _add_inference, _add_exports, _add_plan)
