"""The run report card: `runs/NAME/report.md` and `runs/NAME/plots/*.png`.

One page that answers "what did this run do, on what, and how well?": the model and recipe,
the machine, the time per stage, the corpus, an evaluation table across stages, samples and
training curves. It is built only from files already in the run directory (config.toml,
stages.json, summary.json, metrics.jsonl, evals/*.json), so `myllm report` can rebuild it at
any time and `myllm run` rebuilds it at the end.

The Evaluation table is a list of rows. The first, `base (pretrain)`, comes from summary.json.
Every later stage adds its row by writing `evals/<stage>.json` with the same keys as
summary.json (`val_bpb`, `test_bpb`, `floor_val_bpb`, `probe_accuracy`; any may be missing):
rows named sft, dpo, grpo, quantized, exported come in that order, any other name after them
alphabetically. A row without its own floor uses the base row's (same corpus, same floor).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import platform
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from myllm.errors import MyLLMError
from myllm.io import atomic_open, atomic_write_text
from myllm.records import StageRecords
from myllm.rundir import POST_STAGES, RunDir

STAGE_ORDER = (*POST_STAGES, "quantized", "exported")
POST_KEYS = ("reward", "kl", "accuracy")  # post-training curves, matched as a key or a _-separated part of one
SECTIONS = ("Config", "System", "Stages", "Corpus", "Evaluation", "Samples", "Plots")


def _fmt(value: Any, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _cell(text: str) -> str:
    """Table-safe text: one line, no column breaks."""
    return text.replace("\n", " / ").replace("|", "\\|")


def read_metrics(run_dir: RunDir | Path) -> list[dict[str, Any]]:
    path = RunDir.of(run_dir).metrics_file
    if not path.is_file():
        return []
    records = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:  # a log: a line cut short by a kill, or damaged, is left out of the plots, not fatal
            with contextlib.suppress(ValueError, RecursionError):
                record = json.loads(line)
                if isinstance(record, dict):
                    records.append(record)
    return records


def evaluation_rows(run: RunDir, summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The Evaluation table: the base model from summary.json, then one row per evals/*.json."""
    rows = [{"name": "base (pretrain)", **summary}]
    files = sorted(run.evals.glob("*.json"))
    rank = {name: i for i, name in enumerate(STAGE_ORDER)}
    for path in sorted(files, key=lambda p: (rank.get(p.stem, len(rank)), p.stem)):
        rows.append({**run.eval_record(path), "name": path.stem})
    for row in rows:
        row.setdefault("floor_val_bpb", summary.get("floor_val_bpb"))
        if row.get("val_bpb") is not None and row["floor_val_bpb"]:
            row["ratio"] = row["val_bpb"] / row["floor_val_bpb"]
    return rows


def system_info() -> list[str]:
    """The machine that wrote the report (normally the one that trained, since `myllm run` writes it)."""
    import torch

    cpu = platform.processor() or platform.machine()
    if Path("/proc/cpuinfo").is_file():
        names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")]
        cpu = names[0] if names else cpu
    lines = [f"- python {platform.python_version()}, torch {torch.__version__}",
             f"- OS: {platform.platform()}", f"- CPU: {cpu}, {os.cpu_count()} logical cores"]
    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        lines.append(f"- CUDA: {', '.join(names)} (CUDA {torch.version.cuda})")
    else:
        lines.append("- CUDA: none visible")
    return lines


def config_section(run: RunDir) -> list[str]:
    from myllm.config import load_run_config
    from myllm.plan import param_counts

    cfg = load_run_config(run.config_file)
    m, t = cfg.model, cfg.train
    counts = param_counts(m)
    budget = f"{t.time_budget:g} s" if t.time_budget > 0 else "none"
    return [
        f"- model `{m.preset}`: d_model {m.d_model}, layers {m.n_layers}, heads {m.n_heads} x {m.head_dim} "
        f"(kv heads {m.n_kv_heads}), ff {m.d_ff}, vocab {m.vocab_size:,}, context {m.context:,}",
        f"- parameters: {counts['total']:,} ({counts['non-embedding']:,} non-embedding)",
        f"- initial loss ln(V) = {math.log(m.vocab_size):.3f} nats/token (a uniform guess over the vocabulary)",
        f"- data: {cfg.data.source}",
        f"- train: batch {t.batch_size} x {t.grad_accum} accum x {cfg.seq_len} tokens "
        f"= {t.batch_size * t.grad_accum * cfg.seq_len:,} tokens/step; max steps {t.max_steps:,}; "
        f"time budget {budget}",
        f"- optimizer: AdamW lr {t.lr:g} (warmup {t.warmup_steps}, cosine to x{t.min_lr_ratio:g}), "
        f"betas ({t.beta1:g}, {t.beta2:g}), weight decay {t.weight_decay:g}, grad clip {t.grad_clip:g}; "
        f"seed {t.seed}, device {t.device}",
    ]


def corpus_section(run: RunDir, summary: dict[str, Any]) -> list[str]:
    splits = summary.get("corpus")
    if not splits:  # an older summary: rebuild the figures from the manifest and shard index
        manifest = run.manifest()["splits"]
        index = run.index()["splits"]
        splits = {s: {**v, "tokens": index.get(s, {}).get("tokens")} for s, v in manifest.items()}
    lines = ["| split | documents | bytes | tokens |", "|---|---:|---:|---:|"]
    for split, v in splits.items():
        tokens = "-" if v.get("tokens") is None else f"{v['tokens']:,}"
        lines.append(f"| {split} | {v['documents']:,} | {v['bytes']:,} | {tokens} |")
    if run.corpus_report.is_file():
        link = run.corpus_report.relative_to(run.root).as_posix()
        lines += ["", f"What cleaning, filtering and dedup did: [corpus report]({link})."]
    return lines


def build_run_report(run_dir: RunDir | Path) -> str:
    """The report's Markdown text (writes the plots as a side effect)."""
    run = RunDir.of(run_dir)
    if not run.summary_file.is_file():
        raise MyLLMError(f"{run} has no summary.json; run `myllm run --out {run}` "
                         f"or `myllm eval --run {run}` first")
    summary = run.summary()
    lines = [f"# Run report: {run.root.name}", "", "## Config", "", *config_section(run), ""]
    lines += ["## System", "", "The machine that wrote this report:", "", *system_info(), ""]
    stages = StageRecords(run).stages  # empty for a stages.json of an older format
    lines += ["## Stages", "", "| stage | wall seconds |", "|---|---:|"]
    lines += [f"| {name} | {v['seconds']:.1f} |" for name, v in stages.items()]
    lines += [f"| total | {sum(v['seconds'] for v in stages.values()):.1f} |", ""]
    lines += ["## Corpus", "", *corpus_section(run, summary), ""]
    lines += ["## Evaluation", "", "Bits per byte on held-out text (lower is better); floor = the source entropy "
              "of val where known, ratio = val bpb / floor. Later stages add rows via `evals/<stage>.json`.", "",
              "Chat columns are on held-out prompts (the base model asked few-shot): fact-QA and arithmetic "
              "accuracy, and the share of sampled replies in the rejected (rambling) style.", "",
              "| stage | val bpb | test bpb | floor | ratio | probe accuracy | fact QA | arithmetic | rejected style |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    base_chat = summary.get("stages", {}).get("base", {})
    for r in evaluation_rows(run, summary):
        chat = base_chat if r["name"].startswith("base") else r
        pct = ["-" if chat.get(k) is None else f"{chat[k]:.1%}" for k in ("fact_qa_acc", "arith_acc", "rejected_rate")]
        acc = "-" if r.get("probe_accuracy") is None else f"{r['probe_accuracy']:.1%}"
        lines.append(f"| {r['name']} | {_fmt(r.get('val_bpb'))} | {_fmt(r.get('test_bpb'))} | "
                     f"{_fmt(r.get('floor_val_bpb'))} | {_fmt(r.get('ratio'), 3)} | {acc} | {' | '.join(pct)} |")
    empty = [split for split in ("val", "test") if f"{split}_bpb" in summary and summary[f"{split}_bpb"] is None]
    if empty:  # say why the cells are empty: "-" there means no data, not a score of 0
        splits = f"{' and '.join(empty)} split" + ("s have" if len(empty) > 1 else " has")
        lines += ["", f"No {' or '.join(empty)} data: the {splits} no tokens, so there is no bpb (n/a, not 0); "
                  "give the corpus more documents."]
    lines += ["", "## Samples", "", "| prompt | completion |", "|---|---|"]
    lines += [f"| {_cell(s['prompt']) or '(empty)'} | {_cell(s['completion'])} |" for s in summary.get("samples", [])]
    plots = write_run_plots(run, read_metrics(run), summary)
    lines += ["", "## Plots", ""]
    lines += [f"![{p.stem}]({p.relative_to(run.root).as_posix()})" for p in plots] or [
        "no metrics.jsonl records to plot"]
    return "\n".join(lines) + "\n"


def write_run_report(run_dir: RunDir | Path) -> Path:
    """Write `report.md` and `plots/*.png` in the run directory; return the report's path."""
    path = RunDir.of(run_dir).report_file
    atomic_write_text(path, build_run_report(run_dir))
    return path


def _train_bytes_per_token(run: RunDir) -> float | None:
    if not run.index_file().is_file():
        return None
    train = run.index()["splits"].get("train", {})
    return train["bytes"] / train["tokens"] if train.get("tokens") else None


def write_run_plots(run_dir: RunDir | Path, records: list[dict[str, Any]], summary: dict[str, Any]) -> list[Path]:
    """One PNG per figure; a figure whose data is absent is skipped, not drawn empty."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run = RunDir.of(run_dir)
    folder = run.plots
    folder.mkdir(parents=True, exist_ok=True)
    by_stage: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        by_stage[str(r.get("stage", "pretrain"))].append(r)
    figures = itertools.chain(
        _loss_plot(plt, by_stage.get("pretrain", []), summary, _train_bytes_per_token(run)),
        _per_stage_plot(plt, by_stage, "lr", "learning rate"),
        _per_stage_plot(plt, by_stage, "grad_norm", "gradient norm (before clipping)"),
        _throughput_plot(plt, by_stage, records),
        _post_training_plots(plt, by_stage),
    )
    written: list[Path] = []
    for name, fig in figures:  # each figure is drawn, saved and closed before the next is drawn
        path = folder / f"{name}.png"
        fig.tight_layout()
        with atomic_open(path, "wb") as f:
            fig.savefig(f, format="png", dpi=110)
        plt.close(fig)
        written.append(path)
    return written


# The figures of write_run_plots: each yields (file name, figure) for each figure it has data for.
# `plt` is matplotlib.pyplot, with the Agg backend that write_run_plots chose.
Figures = Iterator[tuple[str, Any]]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _series(rows: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    pairs = [(r["step"], r[key]) for r in rows if _is_number(r.get("step")) and _is_number(r.get(key))]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def _loss_plot(plt, pre: list[dict[str, Any]], summary: dict[str, Any], bpt: float | None) -> Figures:
    """Pretraining train and val loss; in bits per byte, with the val floor, when bytes/token `bpt` is known."""
    steps, loss = _series(pre, "loss")
    if not steps:
        return
    val_steps, val_bpb = _series(pre, "val_bpb")
    fig, ax = plt.subplots(figsize=(7, 4))
    if val_bpb and bpt:  # bits per byte throughout, so the floor is on the same axis
        ax.plot(steps, [x / math.log(2) / bpt for x in loss], label="train loss (at train bytes/token)")
        ax.plot(val_steps, val_bpb, "o-", label="val")
        floor = summary.get("floor_val_bpb")
        if floor:
            ax.axhline(floor, color="k", linestyle="--", label=f"val entropy floor {floor:.4f}")
        ax.set_ylabel("bits per byte")
    else:  # no bpb to convert with: nats per token, and no floor (it is in bits per byte)
        ax.plot(steps, loss, label="train loss")
        ax.plot(*_series(pre, "val_loss"), "o-", label="val loss")
        ax.set_ylabel("loss (nats/token)")
    ax.set_xlabel("step")
    ax.set_title("pretraining loss")
    ax.legend()
    yield "loss", fig


def _per_stage_plot(plt, by_stage: dict[str, list[dict[str, Any]]], key: str, label: str) -> Figures:
    """`key` against the step, one curve per stage that logs it; the file is named `key`."""
    curves = {stage: _series(rows, key) for stage, rows in by_stage.items()}
    if not any(xs for xs, _ in curves.values()):
        return
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for stage, (xs, ys) in curves.items():
        if xs:
            ax.plot(xs, ys, label=stage)
    ax.set(xlabel="step (of each stage)", ylabel=label)
    ax.legend()
    yield key, fig


def _throughput_plot(plt, by_stage: dict[str, list[dict[str, Any]]], records: list[dict[str, Any]]) -> Figures:
    """Tokens/s per stage, and MFU on a second axis where it is logged."""
    if not any(r.get("tok_s") is not None for r in records):
        return
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for stage, rows in by_stage.items():
        ax.plot(*_series(rows, "tok_s"), label=f"{stage} tokens/s")
    ax.set(xlabel="step (of each stage)", ylabel="tokens/s")
    if any(r.get("mfu") is not None for r in records):
        twin = ax.twinx()
        for stage, rows in by_stage.items():
            twin.plot(*_series(rows, "mfu"), linestyle=":", label=f"{stage} MFU")
        twin.set_ylabel("MFU")
        twin.legend(loc="lower right")
    ax.legend(loc="upper left")
    yield "throughput", fig


def _post_training_plots(plt, by_stage: dict[str, list[dict[str, Any]]]) -> Figures:
    """One figure per post-training stage, one panel per POST_KEYS metric it logs."""
    for stage, rows in by_stage.items():
        if stage == "pretrain":
            continue
        keys = sorted({k for r in rows for k in r if any(p in POST_KEYS for p in k.split("_"))})
        keys = [k for k in keys if _series(rows, k)[0]]
        if keys:
            fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.5), squeeze=False)
            for ax, key in zip(axes[0], keys, strict=True):
                ax.plot(*_series(rows, key))
                ax.set(xlabel="step", ylabel=key, title=f"{stage}: {key}")
            yield f"post_{stage}", fig
