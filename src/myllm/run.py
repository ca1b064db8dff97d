"""`myllm run`: every stage, in order, into one run directory.

    corpus -> tokenizer -> shards -> pretrain -> evaluate (summary.json) -> sft -> dpo -> grpo -> export

The stages, what each reads and writes and which config keys change its output are the
stage table in `myllm.rundir`. Each post-training stage (skipped with `--set sft.enabled=false`,
...) trains from the stage before it and evaluates its model on held-out prompts
(evals/<stage>.json). The export stage writes the run's final model as a Hugging Face
directory (`export/hf/`).

Each stage has a fingerprint (`rundir.fingerprints`): a hash of the config values that change
its output and of the fingerprint of the stage before it (for a folder corpus, also of the
files' names, sizes and mtimes). The fingerprints of finished stages are kept in `stages.json`;
a stage whose output exists and whose fingerprint is unchanged is skipped, and a change re-runs
that stage and everything after it. An interrupted pretraining resumes from its last checkpoint.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from myllm.config import RunConfig, apply_overrides, dump_config, load_run_config, parse_overrides, resolve_config
from myllm.errors import MyLLMError
from myllm.io import atomic_write_json, atomic_write_text
from myllm.records import StageRecords
from myllm.rundir import (
    POST_STAGES,
    STAGES,
    RunDir,
    Stage,
    fingerprints,
    resume_fingerprint,
    source_signature,
)
from myllm.train.checkpoint import read_state

BUDGET_MAX_STEPS = 10**9  # with --time-budget, the clock (not a step count) ends training


def stage_corpus(run: RunDir | Path, cfg: RunConfig) -> None:
    from myllm.data.corpus import write_corpus
    from myllm.data.prepare import prepare_corpus

    run = RunDir.of(run)
    if cfg.data.source != "universe":
        prepare_corpus(Path(cfg.data.source), run.corpus, cfg.data, cfg.clean, cfg.quality, cfg.dedup,
                       fingerprint=source_signature(cfg.data.source, cfg.data.follow_symlinks, (run.root,)))
        return
    from myllm import universe

    world = universe.build_world(cfg.data.universe_seed)
    books = universe.generate_books(world, cfg.data.universe_seed)
    floors = universe.entropy_floor(books)
    probes = [p.__dict__ for p in universe.knowledge_probes(world)]
    docs = ((b.split, f"book-{b.index:03d}", b.text) for b in books)
    write_corpus(docs, run.corpus, "universe", {"universe": {"seed": cfg.data.universe_seed, "floor": floors}})
    atomic_write_json(run.universe_file, {"floor": floors, "probes": probes, "world": world.to_dict()})


def stage_tokenizer(run: RunDir | Path, cfg: RunConfig) -> None:
    from myllm.data.corpus import iter_texts
    from myllm.tokenizer import train_tokenizer

    run = RunDir.of(run)
    train_bytes = run.manifest()["splits"].get("train", {}).get("bytes", 0)
    every = max(1, -(-train_bytes // (cfg.data.tokenizer_train_mb << 20)))  # ceil division
    train_tokenizer(iter_texts(run.corpus_split("train"), every), cfg.model.vocab_size, run.tokenizer_file)


def stage_shards(run: RunDir | Path, cfg: RunConfig) -> None:
    from myllm.chat import save_template
    from myllm.data.report import write_report
    from myllm.data.shards import write_shards
    from myllm.tokenizer import Tokenizer

    run = RunDir.of(run)
    tok = Tokenizer.load(run.tokenizer_file)
    save_template(run.tokenizer_dir)
    write_shards(run.corpus, tok, run.shards, cfg.data.shard_tokens, threads=cfg.data.workers,
                 memory_mb=cfg.data.memory_mb)
    write_report(run)


def stage_pretrain(run: RunDir | Path, cfg: RunConfig, show_progress: bool = True) -> None:
    from myllm.train.pretrain import pretrain

    run = RunDir.of(run)
    ckpt = run.stage_checkpoint("pretrain", finished=False)
    fingerprint = resume_fingerprint(run, cfg, "pretrain")
    resumable = ckpt is not None and read_state(ckpt).get("fingerprint") == fingerprint
    if ckpt is not None and not resumable:
        print(f"pretrain: config or data changed since {ckpt.name}; starting pretraining over")
    pretrain(run, cfg, resume=resumable, restart=not resumable, show_progress=show_progress)


def stage_evaluate(run: RunDir | Path, cfg: RunConfig) -> dict[str, Any]:
    from myllm.evals.summary import evaluate_run

    run = RunDir.of(run)
    return evaluate_run(run, cfg)


def stage_export(run: RunDir | Path, cfg: RunConfig) -> None:
    from myllm.export.hf import export_hf

    run = RunDir.of(run)
    export_hf(run, run.export_hf)


def post_stage_skip_reason(cfg: RunConfig, stage: str) -> str | None:
    section = getattr(cfg, stage)
    if not section.enabled:
        return f"disabled ({stage}.enabled = false)"
    if section.data == "universe" and cfg.data.source != "universe":
        return f"no data: set {stage}.data to a JSONL file (the universe tasks are about the universe's world)"
    return None


def check_post_data(cfg: RunConfig) -> None:
    """Every enabled post-training stage's own JSONL file, checked whole: a bad line stops `myllm run`
    at its start, not after pretraining."""
    from myllm.train import dpo, grpo, sft

    for stage, module in (("sft", sft), ("dpo", dpo), ("grpo", grpo)):
        section = getattr(cfg, stage)
        if post_stage_skip_reason(cfg, stage) is None and section.data != "universe":
            module.check_file(Path(section.data))


def stage_post(run: RunDir | Path, cfg: RunConfig, stage: str, show_progress: bool = True,
               log: Callable[[str], None] = print, restart: bool = False) -> dict[str, Any]:
    """Train one post-training stage, then evaluate its model (evals/<stage>.json)."""
    from myllm.device import resolve_device
    from myllm.evals.stages import stage_metrics, write_stage_eval
    from myllm.train.dpo import dpo
    from myllm.train.grpo import grpo
    from myllm.train.sft import sft

    run = RunDir.of(run)
    trainer = {"sft": sft, "dpo": dpo, "grpo": grpo}[stage]
    result = trainer(run, cfg, restart=restart, show_progress=show_progress, log=log)
    metrics = stage_metrics(run, cfg, run.load_model(result.checkpoint, resolve_device(cfg.train.device)))
    write_stage_eval(run, stage, metrics, result.checkpoint)
    return metrics


def prepare_run_dir(out: RunDir | Path, preset: str, config_file: str | None, overrides: list[str],
                    data: str | None, time_budget: float | None, *, data_only: bool = False) -> RunConfig:
    """Resolve the config: the run's existing config.toml (if any) is the base, then flags.

    A time budget becomes the stopping rule: it lifts train.max_steps, unless `--set
    train.max_steps=N` is given too (then whichever comes first stops training). `data_only`:
    only the data stages will run (`myllm data prepare`), so they may not change under trained models.
    """
    run = RunDir.of(out)
    extra = []
    if data is not None:
        # realpath, not Path.resolve(): that raises RuntimeError on a symlink loop (the folder check names it)
        extra.append(f"data.source={os.path.realpath(data)}")
    if time_budget is not None:
        extra += [f"train.time_budget={float(time_budget)}", f"train.max_steps={BUDGET_MAX_STEPS}"]
    extra += list(overrides)
    if run.config_file.is_file() and preset == "default" and config_file is None:
        cfg = load_run_config(run.config_file)
        apply_overrides(cfg, parse_overrides(extra), "--set")
        cfg.validate()
    else:
        cfg = resolve_config(preset, config_file, extra)
    check_not_inside(run, cfg.data.source)
    check_not_in_a_run(run)
    if data_only and run.has_model():
        check_data_keeps_models(run, cfg)
    run.root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run.config_file, dump_config(cfg))
    return cfg


def check_not_inside(run: RunDir, source: str) -> None:
    """A run directory may sit inside its data folder (it is skipped there), but the data folder must not be the
    run directory or inside it: the run's own files would be its input, or all of it would be skipped."""
    if source == "universe":
        return
    if not os.path.isdir(source):
        raise MyLLMError(f"data folder {source} does not exist or is not a folder; pass --data a folder of documents")
    data, root = Path(os.path.realpath(source)), Path(os.path.realpath(run.root))
    if data == root or data.is_relative_to(root):
        raise MyLLMError(f"the data folder {source} is the run directory {run.root} or inside it; "
                         "put the run elsewhere (--out runs/NAME) or the documents in their own folder")


def check_data_keeps_models(run: RunDir, cfg: RunConfig) -> None:
    """Data stages that would re-run under trained models would leave those models behind their tokenizer and
    shards (`myllm run` re-runs the models too; `myllm data prepare` would not)."""
    records, prints = StageRecords(run), fingerprints(run, cfg)
    stale = [s for s in ("corpus", "tokenizer", "shards") if not records.done(s, prints[s])]
    if stale:
        raise MyLLMError(f"{run} has trained models, and this would rebuild its {', '.join(stale)} under them; "
                         f"re-run the whole chain with `myllm run --out {run}` (same flags), or prepare a new run "
                         "directory with another --out")


def check_not_in_a_run(run: RunDir) -> None:
    """A new run directory inside another one (`--out runs/a/tokenizer`) would mix its files into that run's
    folders, where the other run's commands read them (or a re-run replaces them)."""
    for parent in Path(os.path.realpath(run.root)).parents:
        if RunDir(parent).is_run():
            raise MyLLMError(f"--out {run} is inside the run directory {parent}; put the new run beside it, "
                             "e.g. --out runs/NAME")


ACTIONS: dict[str, Callable[..., Any]] = {
    "corpus": stage_corpus, "tokenizer": stage_tokenizer, "shards": stage_shards, "evaluate": stage_evaluate,
    "export": stage_export,
}


def _action(run: RunDir, cfg: RunConfig, stage: str, show_progress: bool, log: Callable[[str], None]):
    if stage == "pretrain":
        return lambda: stage_pretrain(run, cfg, show_progress)
    if stage in POST_STAGES:
        return lambda: stage_post(run, cfg, stage, show_progress, log)
    return lambda: ACTIONS[stage](run, cfg)


def _up_to_date(run: RunDir, records: StageRecords, stage: Stage, fingerprint: str) -> bool:
    if not records.done(stage.name, fingerprint) or not stage.output(run).exists():
        return False
    return stage.name != "pretrain" or run.stage_checkpoint("pretrain") is not None  # finished, not interrupted


def run(
    out: RunDir | Path,
    preset: str = "default",
    config_file: str | None = None,
    overrides: list[str] | None = None,
    data: str | None = None,
    time_budget: float | None = None,
    show_progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run every stage that is not up to date; return the summary (also in summary.json)."""
    run_dir = RunDir.of(out)
    records = StageRecords(run_dir).require_current()
    cfg = prepare_run_dir(run_dir, preset, config_file, overrides or [], data, time_budget)
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    source_signature(cfg.data.source)  # a missing source folder stops here, before any stage
    check_post_data(cfg)  # so does a bad post-training data file
    fps = fingerprints(run_dir, cfg)
    seconds: dict[str, float] = {}
    stale = False
    for stage in STAGES:
        if stage.name in POST_STAGES and (reason := post_stage_skip_reason(cfg, stage.name)):
            log(f"[{stage.name}] skipped: {reason}")
            continue
        fingerprint = fps[stage.name]
        if not stale and _up_to_date(run_dir, records, stage, fingerprint):
            log(f"[{stage.name}] up to date, skipped")
            seconds[stage.name] = 0.0
            continue
        stale = stale or stage.name != "evaluate"  # evaluation changes no later stage's input
        log(f"[{stage.name}] running")
        t0 = time.perf_counter()
        _action(run_dir, cfg, stage.name, show_progress, log)()
        seconds[stage.name] = time.perf_counter() - t0
        records.mark(stage.name, fingerprint, seconds[stage.name])
        log(f"[{stage.name}] done in {seconds[stage.name]:.1f}s")
    summary = write_summary(run_dir, cfg, records, seconds)
    from myllm.evals.report import write_run_report

    write_run_report(run_dir)  # report.md + plots/, rebuilt from the files above
    return summary


def write_summary(run: RunDir, cfg: RunConfig, records: StageRecords, seconds: dict[str, float]) -> dict[str, Any]:
    """summary.json gets the stages' durations and every trained stage's evaluation."""
    summary = run.summary()
    ran = [s.name for s in STAGES
           if s.name in records.stages and not (s.name in POST_STAGES and post_stage_skip_reason(cfg, s.name))]
    summary["stage_seconds"] = {s: round(records.stages[s]["seconds"], 2) for s in ran}
    stages = {"base": summary.get("stages", {}).get("base", {})}
    for s in POST_STAGES:
        if s in ran and run.stage_eval(s).is_file():
            stages[s] = {k: v for k, v in run.eval_record(run.stage_eval(s)).items() if k != "checkpoint"}
    summary["stages"] = stages
    summary["this_invocation_seconds"] = {s: round(v, 2) for s, v in seconds.items()}
    atomic_write_json(run.summary_file, summary)
    return summary


def run_stage(out: RunDir | Path, stage: str, cfg: RunConfig, action: Callable[[], Any]) -> Any:
    """Run one stage by hand (`myllm pretrain --run DIR`, ...) and record it like `myllm run` does."""
    run = RunDir.of(out)
    records = StageRecords(run).require_current()
    t0 = time.perf_counter()
    result = action()
    # config.toml changes only once the command it belongs to succeeded: a rejected `--set` leaves the run as it was
    atomic_write_text(run.config_file, dump_config(cfg))
    records.mark(stage, fingerprints(run, cfg)[stage], time.perf_counter() - t0)
    return result
