"""The evaluation stage: final bits per byte on every held-out split, knowledge probes and
samples, written to `summary.json` and printed as the run's closing summary."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from myllm.config import RunConfig
from myllm.data.corpus import corpus_record
from myllm.device import resolve_device
from myllm.errors import MyLLMError
from myllm.evals.bpb import run_bpb
from myllm.evals.probes import probe_accuracy
from myllm.infer.engine import SamplingParams, generate
from myllm.io import atomic_write_json
from myllm.plan import param_counts
from myllm.rundir import RunDir
from myllm.tokenizer import Tokenizer
from myllm.train.checkpoint import read_state


def sample_prompts(run: RunDir, universe: dict | None) -> list[str]:
    """Three prompts: nothing at all (what does the model write unprompted?), then two openings."""
    if universe is not None:
        probes = universe["probes"]
        return ["", probes[0]["prompt"].split(" lives")[0], probes[len(probes) // 2]["prompt"]]
    prompts = [""]
    with open(run.corpus_split("val"), encoding="utf-8", errors="replace") as f:
        for i, line in enumerate(f):
            words = corpus_record(line, f"{run.corpus_split('val')} line {i + 1}")["text"].split()
            if words:
                prompts.append(" ".join(words[:6]))
            if len(prompts) == 3:
                break
    return prompts


def evaluate_run(run_dir: RunDir | Path, cfg: RunConfig) -> dict[str, Any]:
    run = RunDir.of(run_dir)
    device = resolve_device(cfg.train.device)
    ckpt = run.model_checkpoint("pretrain", unfinished=True)
    model = run.load_model(ckpt, device)
    tok = Tokenizer.load(run.tokenizer_file)
    index = run.index()
    manifest = run.manifest()
    universe = run.universe()
    state = read_state(ckpt)
    if not all(isinstance(state.get(k), (int, float)) and not isinstance(state.get(k), bool)
               for k in ("tokens", "seconds")):
        raise MyLLMError(f"checkpoint {ckpt}: state.json lacks its token count or training time (\"tokens\", "
                         "\"seconds\"); it was not written by myllm pretrain: restore it, or re-run pretraining")

    summary: dict[str, Any] = {
        "run_dir": str(run),
        "checkpoint": str(ckpt),
        "params": param_counts(cfg.model)["total"],
        "tokens_trained": state["tokens"],
        "train_seconds": state["seconds"],
        "epochs": round(state["tokens"] / max(index["splits"]["train"]["tokens"], 1), 3),
        "corpus": {s: {**manifest["splits"][s], "tokens": index["splits"][s]["tokens"]} for s in index["splits"]},
    }
    for split in ("val", "test"):  # an empty split: None ("n/a"), never 0.0 (myllm.evals.bpb)
        result = run_bpb(run, model, cfg, split, device)
        summary[f"{split}_loss"] = None if result is None else round(result["loss"], 5)
        summary[f"{split}_bpb"] = None if result is None else round(result["bpb"], 5)
    if universe is not None:
        for split in ("train", "val", "test"):
            summary[f"floor_{split}_bpb"] = round(universe["floor"][split]["bpb"], 5)
        if summary["val_bpb"] is not None:
            summary["val_bpb_over_floor"] = round(summary["val_bpb"] / summary["floor_val_bpb"], 4)
        probes = [SimpleNamespace(**p) for p in universe["probes"]]
        result = probe_accuracy(model, tok, probes)
        summary["probe_accuracy"] = round(result["accuracy"], 4)
        summary["probe_accuracy_by_attribute"] = {k: round(v, 4) for k, v in result["by_attribute"].items()}
    from myllm.evals.stages import stage_metrics

    summary["stages"] = {"base": stage_metrics(run, cfg, model, few_shot=True, val_bpb=summary.get("val_bpb"))}
    samples = []
    for i, prompt in enumerate(sample_prompts(run, universe)):
        params = SamplingParams(max_new_tokens=cfg.sample.max_new_tokens, temperature=cfg.sample.temperature,
                                top_k=cfg.sample.top_k, top_p=cfg.sample.top_p, stop_ids=(tok.bos_id, tok.eos_id),
                                seed=cfg.sample.seed + i)
        with torch.no_grad():
            out = generate(model, [tok.bos_id] + tok.encode(prompt), params)
        samples.append({"prompt": prompt, "completion": tok.decode(out)})
    summary["samples"] = samples
    atomic_write_json(run.summary_file, summary)
    return summary


def format_summary(s: dict[str, Any]) -> str:
    lines = [f"MyLLM run {s['run_dir']}"]
    c = s["corpus"]
    lines.append("corpus     " + " | ".join(
        f"{k}: {v['documents']} docs, {v['bytes'] / 1e6:.2f} MB, {v['tokens']:,} tokens" for k, v in c.items()))
    lines.append(f"model      {s['params']:,} parameters; trained on {s['tokens_trained']:,} tokens "
                 f"({s['epochs']:.2f} epochs) in {s['train_seconds']:.0f}s")
    for split in ("val", "test"):
        if f"{split}_bpb" in s and s[f"{split}_bpb"] is None:
            lines.append(f"{split:<5}bpb  n/a (no {split} data: the {split} split has no tokens)")
        elif f"{split}_bpb" in s:
            floor = s.get(f"floor_{split}_bpb")
            extra = f"   floor {floor:.4f}  ratio {s[f'{split}_bpb'] / floor:.3f}" if floor else ""
            lines.append(f"{split:<5}bpb  {s[f'{split}_bpb']:.4f}{extra}")
    if "probe_accuracy" in s:
        per = ", ".join(f"{k} {v:.0%}" for k, v in s["probe_accuracy_by_attribute"].items())
        lines.append(f"probes     {s['probe_accuracy']:.1%} greedy ({per})")
    for sample in s["samples"]:
        text = (sample["prompt"] + sample["completion"]).replace("\n", " / ")
        lines.append(f"sample     {text[:160]}")
    if len(s.get("stages", {}).get("base", {})) > 1:
        from myllm.evals.stages import format_stages

        lines += ["", "stages (held-out prompts; rejected = sampled replies in the rejected style)",
                  format_stages(s["stages"]), ""]
    if "stage_seconds" in s:
        lines.append("seconds    " + ", ".join(f"{k} {v:.1f}" for k, v in s["stage_seconds"].items()))
    return "\n".join(lines)
