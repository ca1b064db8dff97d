"""The corpus report: `corpus/report.md` and `corpus/plots/*.png`, from the manifest and shard index.

It answers "what happened to my bytes?": documents and bytes into and out of every step, what
each cleaning rule, quality filter and dedup pass removed, PII redactions by type, files skipped
and why, tokens per split, bytes per token, and document-length histograms. `myllm data stats`
prints it; `myllm data prepare` and `myllm run` write it once the shards exist.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from myllm.data.shards import ShardReader
from myllm.data.skips import MAX_LINES_PER_FILE
from myllm.io import atomic_write_text, read_json
from myllm.rundir import RunDir


def _mb(n: int) -> str:
    return f"{n / 1e6:,.2f} MB"


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


def token_lengths(shards_dir: Path, split: str) -> np.ndarray:
    """Tokens per document of a split (each document starts with BOS), read from the shards."""
    reader = ShardReader(shards_dir, split)
    if len(reader) == 0:
        return np.zeros(0, dtype=np.int64)
    starts = []
    for begin in range(0, len(reader), 1 << 24):  # 16M tokens at a time: bounded memory
        chunk = reader.slice(begin, min(begin + (1 << 24), len(reader)))
        starts.append(np.flatnonzero(chunk == reader.bos_id) + begin)
    bounds = np.concatenate(starts + [np.array([len(reader)])])
    return np.diff(bounds)


def build_report(run_dir: RunDir | Path) -> str:
    """The report's Markdown text."""
    run = RunDir.of(run_dir)
    m = run.manifest()
    index = read_json(run.index_file()) if run.index_file().is_file() else None
    lines = [f"# Corpus report: {m['source']}", ""]
    if "steps" in m:
        lines += ["## Steps", "", "| step | documents in | documents out | removed | bytes in | bytes out |",
                  "|---|---:|---:|---:|---:|---:|"]
        for s in m["steps"]:
            lines.append(f"| {s['step']} | {s['documents_in']:,} | {s['documents_out']:,} | "
                         f"{_pct(s['documents_in'] - s['documents_out'], s['documents_in'])} | "
                         f"{_mb(s['bytes_in'])} | {_mb(s['bytes_out'])} |")
        lines += ["", "`read` counts documents as read from the files (a large text file is cut into several "
                  "documents at paragraph breaks); `clean` (with PII redaction) drops documents that are empty "
                  "after cleaning.", ""]
        lines += _table("Cleaning rules (documents changed; for line rules, lines removed)", m["cleaning_rules"])
        lines += _table("PII redacted (occurrences)", m["pii_redacted"])
        lines += _table("Quality filters (documents removed)", m["quality_removed"])
        lines += _table("Deduplication (documents removed)", {
            "exact duplicates": m["duplicates_dropped"], "near duplicates": m["near_duplicates_dropped"],
            "train documents that near-duplicate val/test (decontamination)": m["decontaminated"]})
    lines += _table("Files and lines skipped", m.get("skipped", {}))
    if m.get("skipped_examples"):
        lines += ["Every skipped file, folder and link, with its reason (records: the first "
                  f"{MAX_LINES_PER_FILE} per file and reason, then a count):", ""]
        lines += [f"- `{_code(e)}`" for e in m["skipped_examples"]] + [""]
    # Tokens per document, read from the shards once, for the table and the plot.
    lengths = {s: token_lengths(run.shards, s) for s in index["splits"]} if index is not None else {}
    lines += ["## Splits", "", "| split | documents | bytes | tokens | bytes/token | median tokens/doc |",
              "|---|---:|---:|---:|---:|---:|"]
    for split, v in m["splits"].items():
        tokens = bpt = median = "-"
        if split in lengths:
            t = index["splits"][split]["tokens"]
            tokens = f"{t:,}"
            bpt = f"{v['bytes'] / max(t - v['documents'], 1):.2f}"  # BOS tokens carry no text
            median = f"{int(np.median(lengths[split])):,}" if len(lengths[split]) else "-"
        lines.append(f"| {split} | {v['documents']:,} | {_mb(v['bytes'])} | {tokens} | {bpt} | {median} |")
    lines += ["", f"Split by {m.get('split_by', 'generator')}; seed {m.get('split_seed', '-')}.", ""]
    plots = write_plots(run.corpus_plots, m, lengths)
    if plots:
        lines += ["## Plots", ""] + [f"![{p.stem}]({p.relative_to(run.corpus).as_posix()})" for p in plots] + [""]
    return "\n".join(lines)


def _code(text: str) -> str:
    """Text for a Markdown code span: a file name may hold a backtick or a newline."""
    return text.replace("`", "'").replace("\n", "\\n").replace("\r", "\\r")


def _table(title: str, counts: dict[str, int]) -> list[str]:
    if not counts:
        return [f"## {title}", "", "none", ""]
    rows = [f"| {k} | {v:,} |" for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
    return [f"## {title}", "", "| | count |", "|---|---:|", *rows, ""]


def write_plots(folder: Path, m: dict[str, Any], lengths: dict[str, np.ndarray]) -> list[Path]:
    """steps.png (documents and bytes after each step) and lengths.png (document-length histograms), in `folder`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    if "steps" in m:
        fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
        names = [s["step"] for s in m["steps"]]
        for ax, key, label in ((axes[0], "documents_out", "documents"), (axes[1], "bytes_out", "MB")):
            values = [s[key] / (1e6 if label == "MB" else 1) for s in m["steps"]]
            ax.bar(names, values, color="#4c72b0")
            ax.set_ylabel(label + " after step")
            ax.tick_params(axis="x", rotation=30)
        fig.suptitle("What each step kept")
        fig.tight_layout()
        fig.savefig(folder / "steps.png", dpi=110)
        plt.close(fig)
        written.append(folder / "steps.png")
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    hist = m.get("length_histogram")
    if hist and any(hist["input"]):
        edges = np.maximum(np.array(hist["edges"], dtype=float), 1.0)
        used = np.flatnonzero(np.array(hist["input"]) + np.array(hist["output"]))
        lo, hi = used[0], used[-1] + 1  # only the populated bins
        axes[0].stairs(hist["input"][lo:hi], edges[lo : hi + 1], label="read")
        axes[0].stairs(hist["output"][lo:hi], edges[lo : hi + 1], label="kept")
        axes[0].set_xscale("log")
        axes[0].legend()
    axes[0].set_xlabel("document length (bytes)")
    axes[0].set_ylabel("documents")
    if lengths:
        for split, split_lengths in lengths.items():
            if len(split_lengths):
                bins = np.unique(np.geomspace(1, max(split_lengths.max(), 2), 40).astype(int))
                axes[1].hist(split_lengths, bins=bins, histtype="step", label=split)
        axes[1].set_xscale("log")
        axes[1].legend()
    axes[1].set_xlabel("document length (tokens, with BOS)")
    fig.tight_layout()
    fig.savefig(folder / "lengths.png", dpi=110)
    plt.close(fig)
    written.append(folder / "lengths.png")
    return written


def write_report(run_dir: RunDir | Path) -> Path:
    """Write `corpus/report.md` (and its plots); return its path."""
    path = RunDir.of(run_dir).corpus_report
    atomic_write_text(path, build_report(run_dir))
    return path
