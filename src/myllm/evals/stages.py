"""Evaluation across stages: the same held-out questions for base, SFT, DPO and GRPO.

For each stage: fact-QA accuracy, arithmetic accuracy and rejected-style rate on held-out
prompts (`myllm.evals.chat_eval`; the base model is asked few-shot), and val bits per byte on
the pretraining text, which shows what post-training costs the language model. A stage's
numbers go to `evals/<stage>.json` (a row of the report card) and into `summary.json` as
`stages: {base|sft|dpo|grpo: {fact_qa_acc, arith_acc, rejected_rate, val_bpb}}`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from myllm.config import RunConfig
from myllm.device import resolve_device
from myllm.evals.bpb import run_bpb
from myllm.evals.chat_eval import evaluate_chat, few_shot_prefix
from myllm.io import atomic_write_json
from myllm.model import Transformer
from myllm.rundir import RunDir
from myllm.tokenizer import Tokenizer
from myllm.universe import tasks as universe_tasks


def eval_sets(run: RunDir):
    """(world, the held-out chat prompts) of a universe run (None for other corpora)."""
    if not run.universe_file.is_file():
        return None
    world = run.world()
    return world, universe_tasks.eval_sets(world)


def stage_metrics(run_dir: RunDir | Path, cfg: RunConfig, model: Transformer, few_shot: bool = False,
                  val_bpb: float | None = None) -> dict[str, Any]:
    """fact_qa_acc, arith_acc, rejected_rate (universe runs) and val_bpb of `model` (unless given)."""
    run = RunDir.of(run_dir)
    device = resolve_device(cfg.train.device)
    model = model.to(device).eval()
    out: dict[str, Any] = {}
    sets = eval_sets(run)
    if sets is not None:
        world, prompts = sets
        tok = Tokenizer.load(run.tokenizer_file)
        scores = evaluate_chat(model, tok, prompts, few_shot_prefix(world) if few_shot else None, cfg.sample.seed)
        out.update({k: round(v, 4) for k, v in scores.items()})
    if val_bpb is None and (result := run_bpb(run, model, cfg, "val", device)) is not None:
        val_bpb = round(result["bpb"], 5)
    out["val_bpb"] = val_bpb  # None: the val split is empty (n/a, not 0.0)
    return out


def write_stage_eval(run_dir: RunDir | Path, stage: str, metrics: dict[str, Any], checkpoint: Path) -> None:
    run = RunDir.of(run_dir)
    atomic_write_json(run.stage_eval(stage), {**metrics, "checkpoint": str(checkpoint)})
    summary_path = run.summary_file
    if summary_path.is_file():
        summary = run.summary()
        summary.setdefault("stages", {})[stage] = {k: v for k, v in metrics.items() if k != "checkpoint"}
        atomic_write_json(summary_path, summary)


def format_stages(stages: dict[str, dict[str, Any]]) -> str:
    """A small table: one line per stage."""
    keys = ("fact_qa_acc", "arith_acc", "rejected_rate", "val_bpb")
    lines = [f"{'stage':<6} " + " ".join(f"{k:>13}" for k in keys)]
    for name, m in stages.items():
        cells = [("-" if m.get(k) is None else (f"{m[k]:.1%}" if k != "val_bpb" else f"{m[k]:.4f}")) for k in keys]
        lines.append(f"{name:<6} " + " ".join(f"{c:>13}" for c in cells))
    return "\n".join(lines)
