"""`myllm run`: every stage, in order, into one run directory.

    corpus -> tokenizer -> shards -> pretrain -> evaluate (summary.json) -> sft -> dpo -> grpo -> export

Each post-training stage (skipped with `--set sft.enabled=false`, ...) trains from the stage
before it and evaluates its model on held-out prompts (evals/<stage>.json). The export stage
writes the run's final model as a Hugging Face directory (`export/hf/`).

Each stage has a fingerprint: a hash of its own config section(s) and of the fingerprint of
the stage before it (for a folder corpus, also of the files' names, sizes and mtimes). The
fingerprints of finished stages are kept in `stages.json`; a stage whose output exists and
whose fingerprint is unchanged is skipped, and a change re-runs that stage and everything
after it. An interrupted pretraining resumes from its last checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from myllm.config import (
    RunConfig,
    apply_overrides,
    dump_config,
    load_run_config,
    parse_overrides,
    resolve_config,
)
from myllm.data.prepare import corpus_settings
from myllm.errors import MyLLMError
from myllm.io import atomic_write_json, atomic_write_text, read_json
from myllm.train.checkpoint import latest_checkpoint, read_state

STAGES = ("corpus", "tokenizer", "shards", "pretrain", "evaluate", "sft", "dpo", "grpo", "export")
POST_STAGES = ("sft", "dpo", "grpo")
BUDGET_MAX_STEPS = 10**9  # with --time-budget, the clock (not a step count) ends training


def _hash(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def source_signature(source: str) -> str:
    """Names, sizes and mtimes of every file under a data folder: cheap change detection."""
    if source == "universe":
        return "universe"
    root = Path(source)
    if not root.is_dir():
        raise MyLLMError(f"data folder {root} does not exist or is not a folder; pass --data a folder of documents")
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            st = os.stat(path)
            h.update(os.fsencode(os.path.relpath(path, root)) + f"|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def fingerprints(cfg: RunConfig) -> dict[str, str]:
    d = cfg.to_dict()
    fp: dict[str, str] = {}
    fp["corpus"] = _hash(corpus_settings(cfg.data), d["clean"], d["quality"], d["dedup"],
                         source_signature(cfg.data.source))
    fp["tokenizer"] = _hash(fp["corpus"], cfg.model.vocab_size, cfg.data.tokenizer_train_mb)
    fp["shards"] = _hash(fp["tokenizer"], cfg.data.shard_tokens)  # workers/memory_mb change speed, not output
    fp["pretrain"] = _hash(fp["shards"], d["model"], d["train"])
    fp["evaluate"] = _hash(fp["pretrain"], d["sample"])
    previous = fp["pretrain"]
    for stage in POST_STAGES:  # each stage trains from the one before it
        fp[stage] = previous = _hash(previous, d[stage], d["sample"]["seed"])
    # The final model is the last enabled stage's, and fp["grpo"] chains every stage before it.
    fp["export"] = _hash(previous, d["sample"], "hf-export-1")
    return fp


@dataclass
class RunState:
    """`stages.json`: which stages finished with which fingerprint, and how long they took."""

    path: Path
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def load(cls, run_dir: Path) -> RunState:
        path = run_dir / "stages.json"
        return cls(path, read_json(path) if path.is_file() else {})

    def done(self, stage: str, fingerprint: str) -> bool:
        return self.stages.get(stage, {}).get("fingerprint") == fingerprint

    def mark(self, stage: str, fingerprint: str, seconds: float) -> None:
        self.stages[stage] = {"fingerprint": fingerprint, "seconds": round(seconds, 2)}
        atomic_write_json(self.path, self.stages)


def stage_corpus(run_dir: Path, cfg: RunConfig) -> None:
    from myllm.data.corpus import write_corpus
    from myllm.data.prepare import prepare_corpus

    corpus_dir = run_dir / "corpus"
    if cfg.data.source != "universe":
        prepare_corpus(Path(cfg.data.source), corpus_dir, cfg.data, cfg.clean, cfg.quality, cfg.dedup,
                       fingerprint=source_signature(cfg.data.source))
        return
    from myllm import universe

    world = universe.build_world(cfg.data.universe_seed)
    books = universe.generate_books(world, cfg.data.universe_seed)
    floors = universe.entropy_floor(books)
    probes = [p.__dict__ for p in universe.knowledge_probes(world)]
    docs = ((b.split, f"book-{b.index:03d}", b.text) for b in books)
    write_corpus(docs, corpus_dir, "universe", {"universe": {"seed": cfg.data.universe_seed, "floor": floors}})
    atomic_write_json(corpus_dir / "universe.json", {"floor": floors, "probes": probes, "world": world.to_dict()})


def stage_tokenizer(run_dir: Path, cfg: RunConfig) -> None:
    from myllm.tokenizer import train_tokenizer

    train_bytes = read_json(run_dir / "corpus" / "manifest.json")["splits"]["train"]["bytes"]
    every = max(1, -(-train_bytes // (cfg.data.tokenizer_train_mb << 20)))  # ceil division
    train_tokenizer(iter_texts(run_dir / "corpus" / "train.jsonl", every), cfg.model.vocab_size,
                    run_dir / "tokenizer" / "tokenizer.json")


def iter_texts(path: Path, every: int = 1):
    """The texts of a corpus split file; with `every` = k only every k-th document (an even sample:
    BPE merges are learned from pair statistics, which a sample of a large corpus estimates well)."""
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f):
            if i % every == 0:
                yield json.loads(line)["text"]


def stage_shards(run_dir: Path, cfg: RunConfig) -> None:
    from myllm.chat import save_template
    from myllm.data.report import write_report
    from myllm.data.shards import write_shards
    from myllm.tokenizer import Tokenizer

    tok = Tokenizer.load(run_dir / "tokenizer" / "tokenizer.json")
    save_template(run_dir / "tokenizer")
    write_shards(run_dir / "corpus", tok, run_dir / "shards", cfg.data.shard_tokens, threads=cfg.data.workers,
                 memory_mb=cfg.data.memory_mb)
    write_report(run_dir)


def stage_pretrain(run_dir: Path, cfg: RunConfig, show_progress: bool = True) -> None:
    from myllm.train.pretrain import pretrain, read_index, resume_key

    ckpt = latest_checkpoint(run_dir / "checkpoints" / "pretrain")
    resumable = ckpt is not None and read_state(ckpt).get("fingerprint") == resume_key(cfg, read_index(run_dir))
    if ckpt is not None and not resumable:
        print(f"pretrain: config or data changed since {ckpt.name}; starting pretraining over")
    pretrain(run_dir, cfg, resume=resumable, restart=not resumable, show_progress=show_progress)


def stage_evaluate(run_dir: Path, cfg: RunConfig) -> dict[str, Any]:
    from myllm.evals.summary import evaluate_run

    return evaluate_run(run_dir, cfg)


def stage_export(run_dir: Path) -> None:
    from myllm.export.hf import export_hf

    export_hf(run_dir, run_dir / "export" / "hf")


def post_stage_skip_reason(cfg: RunConfig, stage: str) -> str | None:
    section = getattr(cfg, stage)
    if not section.enabled:
        return f"disabled ({stage}.enabled = false)"
    if section.data == "universe" and cfg.data.source != "universe":
        return f"no data: set {stage}.data to a JSONL file (the universe tasks are about the universe's world)"
    return None


def stage_post(run_dir: Path, cfg: RunConfig, stage: str, show_progress: bool = True,
               log: Callable[[str], None] = print, restart: bool = False) -> dict[str, Any]:
    """Train one post-training stage, then evaluate its model (evals/<stage>.json)."""
    from myllm.evals.stages import stage_metrics, write_stage_eval
    from myllm.train.checkpoint import load_model
    from myllm.train.dpo import dpo
    from myllm.train.grpo import grpo
    from myllm.device import resolve_device
    from myllm.train.sft import sft

    trainer = {"sft": sft, "dpo": dpo, "grpo": grpo}[stage]
    result = trainer(run_dir, cfg, restart=restart, show_progress=show_progress, log=log)
    metrics = stage_metrics(run_dir, cfg, load_model(result.checkpoint, resolve_device(cfg.train.device)))
    write_stage_eval(run_dir, stage, metrics, result.checkpoint)
    return metrics


def prepare_run_dir(out: Path, preset: str, config_file: str | None, overrides: list[str], data: str | None,
                    time_budget: float | None) -> RunConfig:
    """Resolve the config: the run's existing config.toml (if any) is the base, then flags.

    A time budget becomes the stopping rule: it lifts train.max_steps, unless `--set
    train.max_steps=N` is given too (then whichever comes first stops training).
    """
    extra = []
    if data is not None:
        extra.append(f"data.source={Path(data).resolve()}")
    if time_budget is not None:
        extra += [f"train.time_budget={float(time_budget)}", f"train.max_steps={BUDGET_MAX_STEPS}"]
    extra += list(overrides)
    existing = out / "config.toml"
    if existing.is_file() and preset == "default" and config_file is None:
        cfg = load_run_config(existing)
        apply_overrides(cfg, parse_overrides(extra), "--set")
        cfg.validate()
    else:
        cfg = resolve_config(preset, config_file, extra)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "config.toml", dump_config(cfg))
    return cfg


def run(
    out: Path,
    preset: str = "default",
    config_file: str | None = None,
    overrides: list[str] | None = None,
    data: str | None = None,
    time_budget: float | None = None,
    show_progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run every stage that is not up to date; return the summary (also in summary.json)."""
    out = Path(out)
    cfg = prepare_run_dir(out, preset, config_file, overrides or [], data, time_budget)
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    fps = fingerprints(cfg)
    state = RunState.load(out)
    outputs = {"corpus": out / "corpus" / "manifest.json", "tokenizer": out / "tokenizer" / "tokenizer.json",
               "shards": out / "shards" / "index.json", "evaluate": out / "summary.json"}
    actions: dict[str, Callable[[], Any]] = {
        "corpus": lambda: stage_corpus(out, cfg),
        "tokenizer": lambda: stage_tokenizer(out, cfg),
        "shards": lambda: stage_shards(out, cfg),
        "pretrain": lambda: stage_pretrain(out, cfg, show_progress),
        "evaluate": lambda: stage_evaluate(out, cfg),
        **{s: (lambda s=s: stage_post(out, cfg, s, show_progress, log)) for s in POST_STAGES},
        "export": lambda: stage_export(out),
    }
    outputs.update({s: out / "evals" / f"{s}.json" for s in POST_STAGES})
    outputs["export"] = out / "export" / "hf" / "config.json"
    seconds: dict[str, float] = {}
    stale = False
    for stage in STAGES:
        if stage in POST_STAGES and (reason := post_stage_skip_reason(cfg, stage)):
            log(f"[{stage}] skipped: {reason}")
            continue
        output = outputs.get(stage)
        up_to_date = not stale and state.done(stage, fps[stage]) and (output is None or output.exists())
        if stage == "pretrain" and up_to_date:
            ckpt = latest_checkpoint(out / "checkpoints" / "pretrain")
            up_to_date = ckpt is not None and read_state(ckpt).get("done", False)
        if up_to_date:
            log(f"[{stage}] up to date, skipped")
            seconds[stage] = 0.0
            continue
        stale = stale or stage != "evaluate"  # evaluation changes no later stage's input
        log(f"[{stage}] running")
        t0 = time.perf_counter()
        actions[stage]()
        seconds[stage] = time.perf_counter() - t0
        state.mark(stage, fps[stage], seconds[stage])
        log(f"[{stage}] done in {seconds[stage]:.1f}s")
    summary = read_json(out / "summary.json")
    ran = [s for s in STAGES if s in state.stages and not (s in POST_STAGES and post_stage_skip_reason(cfg, s))]
    summary["stage_seconds"] = {s: round(state.stages[s]["seconds"], 2) for s in ran}
    stages = {"base": summary.get("stages", {}).get("base", {})}
    for s in POST_STAGES:
        if s in ran and (out / "evals" / f"{s}.json").is_file():
            stages[s] = {k: v for k, v in read_json(out / "evals" / f"{s}.json").items() if k != "checkpoint"}
    summary["stages"] = stages
    summary["this_invocation_seconds"] = {s: round(v, 2) for s, v in seconds.items()}
    atomic_write_json(out / "summary.json", summary)
    from myllm.evals.report import write_run_report

    write_run_report(out)  # report.md + plots/, rebuilt from the files above
    return summary


def run_stage(out: Path, stage: str, cfg: RunConfig, action: Callable[[], Any]) -> Any:
    """Run one stage by hand (`myllm pretrain --run DIR`, ...) and record it like `myllm run` does."""
    atomic_write_text(out / "config.toml", dump_config(cfg))
    t0 = time.perf_counter()
    result = action()
    RunState.load(out).mark(stage, fingerprints(cfg)[stage], time.perf_counter() - t0)
    return result


def load_run(out: Path, overrides: list[str] | None = None) -> RunConfig:
    """The config of an existing run directory, with `--set` overrides applied."""
    path = Path(out) / "config.toml"
    if not path.is_file():
        raise MyLLMError(f"{out} is not a run directory (no config.toml); create it with `myllm run --out {out}`")
    cfg = load_run_config(path)
    apply_overrides(cfg, parse_overrides(overrides or []), "--set")
    return cfg.validate()
