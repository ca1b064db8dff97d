"""What `prepare_corpus` counts, step by step, and the manifest tables and messages made from it.

The counts are a plain dict (`new_stats`) so that the staging folder's progress.json can hold
them and a resumed prepare counts on from where it stopped: documents and bytes read, left after
cleaning (and redaction), left after the quality filters; hits per cleaning rule, PII kind and
quality reason; and the input document-length histogram.
"""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

from myllm.data.skips import SkipReport

LENGTH_BINS = [0] + [2**k for k in range(4, 31)]  # document-length histogram edges, bytes


def new_stats() -> dict[str, Any]:
    """All counts at zero."""
    return {"read": {"documents": 0, "bytes": 0}, "clean": {"documents": 0, "bytes": 0, "rules": {}},
            "empty": {"documents": 0}, "pii": {}, "quality": {"documents": 0, "bytes": 0, "removed": {}},
            "staged": {"documents": 0, "bytes": 0}, "lengths_in": [0] * (len(LENGTH_BINS) - 1)}


def tally(stats: dict[str, Any], r: dict[str, Any]) -> None:
    """Count one result of `prepare.process_document` into `stats`."""
    stats["read"]["documents"] += 1
    stats["read"]["bytes"] += r["bytes_in"]
    stats["lengths_in"][length_bin(r["bytes_in"])] += 1
    for rule, n in r["clean"].items():
        stats["clean"]["rules"][rule] = stats["clean"]["rules"].get(rule, 0) + n
    drop = r.get("drop")
    if drop == "empty":
        stats["empty"]["documents"] += 1
        return
    stats["clean"]["documents"] += 1
    stats["clean"]["bytes"] += r["bytes_out"]  # after cleaning and redaction: `quality` shows only its own effect
    for kind, n in r["pii"].items():
        stats["pii"][kind] = stats["pii"].get(kind, 0) + n
    if drop is not None:
        name = drop.split(":", 1)[1]
        stats["quality"]["removed"][name] = stats["quality"]["removed"].get(name, 0) + 1
        return
    stats["quality"]["documents"] += 1
    stats["quality"]["bytes"] += r["bytes_out"]


def length_bin(n: int) -> int:
    """Index of the LENGTH_BINS bin holding n bytes: [0, 16) is bin 0, [2^k, 2^(k+1)) is bin k - 3."""
    return min(max(n.bit_length() - 4, 0), len(LENGTH_BINS) - 2)


def step_table(stats: dict[str, Any], removed: dict[str, dict[str, int]]) -> list[dict[str, Any]]:
    """Documents and bytes into and out of each step, in order (the report's main table)."""
    steps = [("read", stats["read"]), ("clean", stats["clean"]), ("quality", stats["quality"])]
    docs, n_bytes = stats["quality"]["documents"], stats["quality"]["bytes"]
    for name in ("exact_duplicate", "near_duplicate", "decontaminated"):
        docs -= removed[name]["documents"]
        n_bytes -= removed[name]["bytes"]
        steps.append(({"exact_duplicate": "exact_dedup", "near_duplicate": "near_dedup",
                       "decontaminated": "decontaminate"}[name], {"documents": docs, "bytes": n_bytes}))
    out, prev = [], None
    for name, v in steps:
        d_in = v["documents"] if prev is None else prev["documents"]
        b_in = v["bytes"] if prev is None else prev["bytes"]
        out.append({"step": name, "documents_in": d_in, "documents_out": v["documents"], "bytes_in": b_in,
                    "bytes_out": v["bytes"]})
        prev = v
    return out


def nothing_left_message(source: Path, stats: dict[str, Any], report: SkipReport) -> str:
    """Which step removed everything, for the error message."""
    if stats["read"]["documents"] == 0:
        return (f"no readable documents in {source}: {report.files_seen} files seen, {report.summary()}; "
                "add .txt/.md/.jsonl/.json/.parquet/.csv files (optionally .gz/.zst) with UTF-8 text")
    if stats["clean"]["documents"] == 0:
        return (f"all {stats['read']['documents']} documents in {source} are empty after cleaning; "
                "check the files' text field (data.text_field) and encoding")
    top = ", ".join(f"{n} {k}" for k, n in collections.Counter(stats["quality"]["removed"]).most_common(3))
    return (f"the quality filters removed all {stats['clean']['documents']} documents of {source} ({top}); "
            "relax the thresholds in [quality] (e.g. --set quality.min_words=5) or --set quality.enabled=false")
