"""A folder of documents in, a clean corpus out: read -> clean -> redact PII -> filter -> dedup -> split.

    corpus/{train,val,test}.jsonl   the kept documents
    corpus/manifest.json            what happened to every document and byte, step by step

Two passes, so that the text in memory stays bounded whatever the corpus size (dedup keeps about
0.6 KB per document: keys, records and, during its search, one band of signatures at a time):

1. Stream the documents through a process pool (`data.workers`) that cleans, redacts, filters
   and computes each survivor's exact-text key and MinHash signature. Survivors are appended to
   a staging folder (`corpus.partial/`: texts, 8-byte keys, split info, 512-byte signatures);
   the documents in flight are capped by `data.memory_mb`.
2. Decide duplicates over the whole corpus from the keys and signatures alone (`dedup.py`),
   then copy the staged texts that survive into the split files.

Pass 1 commits its progress after every batch, so a killed prepare resumes where it stopped
(re-reading, but not re-processing, the documents it had done) and writes the same corpus as an
uninterrupted run. A config or source change restarts it. The final corpus is written
atomically; the staging folder is removed only when it is complete.

Splits are decided per document from a hash of its cleaned text and `data.split_seed` (or by
train/val/test subfolders): the same corpus gives the same split on any machine and in any
file order; see `corpus.py` for the guarantee that small corpora still get held-out documents.
"""

from __future__ import annotations

import collections
import hashlib
import itertools
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from myllm.config import CleanConfig, DataConfig, DedupConfig, QualityConfig
from myllm.data import dedup as dd
from myllm.data.clean import clean_text
from myllm.data.corpus import CorpusWriter, check_train, split_point
from myllm.data.pii import redact_pii
from myllm.data.quality import quality_reason
from myllm.data.sources import SPLITS, SkipReport, folder_splits, iter_documents, iter_files
from myllm.data.tally import LENGTH_BINS, length_bin, new_stats, nothing_left_message, step_table, tally
from myllm.errors import MyLLMError
from myllm.io import atomic_dir, atomic_write_json, read_json

PARALLEL_MIN_BYTES = 16 << 20  # smaller sources are processed in this process (no pool start-up)
MIN_BATCH_BYTES, MAX_BATCH_BYTES = 64 << 10, 4 << 20  # documents per batch sent to a worker
SPLIT_CODES = {s: i for i, s in enumerate(SPLITS)}
STAGE_DTYPE = np.dtype([("key", "<u8"), ("point", "<f8"), ("split", "i1"), ("explicit", "?"), ("bytes", "<i8")])


# ------------------------------------------------------------------ pass 1: per document (in workers)

@dataclass(frozen=True)
class SplitRule:
    """How a document's split is decided (see `split_of`)."""

    seed: int
    val_fraction: float
    test_fraction: float
    hashed: tuple[str, ...]  # the splits the hash may choose (those without their own folder)


def split_of(folder_split: str | None, key: int, rule: SplitRule) -> tuple[str, float, bool]:
    """(split, split point, explicit): a val/test folder decides, else the hash of the text."""
    point = split_point(key, rule.seed)
    if folder_split is not None and folder_split != "train":
        return folder_split, point, True  # an explicit held-out document never moves
    if "test" in rule.hashed and point < rule.test_fraction:
        return "test", point, False
    if "val" in rule.hashed and rule.test_fraction <= point < rule.test_fraction + rule.val_fraction:
        return "val", point, False
    return "train", point, False


_settings: tuple[CleanConfig, QualityConfig, DedupConfig, SplitRule, dd.MinHasher] | None = None


def _init_worker(clean: CleanConfig, quality: QualityConfig, dedup: DedupConfig, rule: SplitRule) -> None:
    global _settings
    _settings = (clean, quality, dedup, rule, dd.MinHasher(dedup.num_perm, dedup.shingle_words, dedup.seed))


def process_document(doc_id: str, folder_split: str | None, text: str) -> dict[str, Any]:
    """Clean, redact and filter one document; a survivor also gets its staged JSON line, its record
    (exact key, split point, split) and its MinHash signature, so the parent process only writes."""
    assert _settings is not None, "call _init_worker first"
    clean, quality, dedup, rule, hasher = _settings
    # surrogatepass: a lone surrogate (from a JSON escape like "\ud83d") is counted, and cleaning replaces it
    out: dict[str, Any] = {"bytes_in": len(text.encode("utf-8", "surrogatepass"))}
    text, out["clean"] = clean_text(text, clean)  # newlines and surrogates are fixed whatever the rules say
    if not text.strip():
        out["drop"] = "empty"
        return out
    text, out["pii"] = redact_pii(text, clean)
    out["bytes_out"] = len(text.encode("utf-8"))  # survivors and quality-dropped alike
    need_signature = dedup.near or dedup.decontaminate
    words = hasher.word_hashes(text) if need_signature else None  # hashed once, for quality and MinHash
    reason = quality_reason(text, quality, words)
    if reason is not None:
        out["drop"] = f"quality:{reason}"
        return out
    key = dd.text_key(text)
    split, point, explicit = split_of(folder_split, key, rule)
    out["line"] = (json.dumps({"id": doc_id, "text": text}, ensure_ascii=False) + "\n").encode("utf-8")
    out["record"] = (key, point, SPLIT_CODES[split], explicit, out["bytes_out"])
    if need_signature:
        out["sig"] = hasher.signature(text, words).tobytes()
    return out


def _process_batch(docs: list[tuple[str, str | None, str]]) -> list[dict[str, Any]]:
    return [process_document(*d) for d in docs]


# ------------------------------------------------------------------ the staging folder (pass 1 output)


class _Stage:
    """Append-only staging files plus `progress.json`, which names how much of each is committed."""

    FILES = ("texts.jsonl", "docs.bin", "sigs.bin")

    def __init__(self, folder: Path, fingerprint: str):
        self.folder = folder
        progress = folder / "progress.json"
        state = read_json(progress) if progress.is_file() else None
        # A file shorter than its committed size (possible only after a power loss, since files are
        # flushed but not fsynced before each commit) means the progress cannot be trusted: start over.
        short = state is not None and any(
            not (folder / name).is_file() or (folder / name).stat().st_size < size
            for name, size in state["sizes"].items())
        if state is None or state.get("fingerprint") != fingerprint or short:
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            state = {"fingerprint": fingerprint, "complete": False, "docs_read": 0, "stats": None,
                     "sizes": dict.fromkeys(self.FILES, 0)}
        for name, size in state["sizes"].items():  # drop anything written after the last commit
            with open(folder / name, "ab") as f:
                f.truncate(size)
        self.state = state
        self.files = {name: open(folder / name, "ab") for name in self.FILES}  # noqa: SIM115

    def commit(self, docs_read: int, stats: dict[str, Any], complete: bool = False) -> None:
        for f in self.files.values():
            f.flush()  # enough to survive a killed process; fsync per batch cost seconds per 200 MB
        self.state.update(docs_read=docs_read, stats=stats, complete=complete,
                          sizes={name: f.tell() for name, f in self.files.items()})
        atomic_write_json(self.folder / "progress.json", self.state)

    def close(self) -> None:
        for f in self.files.values():
            f.close()


# ------------------------------------------------------------------ the pipeline


def _batches(docs: Iterator, max_bytes: int) -> Iterator[list]:
    batch, size = [], 0
    for doc in docs:
        batch.append(doc)
        size += len(doc.text)
        if size >= max_bytes:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def _run_pool(batches: Iterator[list], workers: int, settings: tuple, in_flight: int) -> Iterator[list]:
    """Each batch's results, in input order; at most `in_flight` batches are queued (bounded memory)."""
    if workers <= 1:
        _init_worker(*settings)
        for batch in batches:
            yield _process_batch([(d.id, d.split, d.text) for d in batch])
        return
    # spawn, not fork: the parent may hold threads (tqdm, torch) that fork would copy mid-lock.
    with get_context("spawn").Pool(workers, initializer=_init_worker, initargs=settings) as pool:
        pending = collections.deque()
        for batch in batches:
            pending.append(pool.apply_async(_process_batch, ([(d.id, d.split, d.text) for d in batch],)))
            if len(pending) >= in_flight:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


def corpus_settings(data: DataConfig) -> dict[str, Any]:
    """The [data] keys that change the corpus (not how fast it is made, nor later stages)."""
    later = ("workers", "memory_mb", "tokenizer_train_mb", "shard_tokens")
    settings = {k: v for k, v in asdict(data).items() if k not in later}
    if not data.follow_symlinks:  # added later: at its default, the fingerprints of runs made before stay valid
        del settings["follow_symlinks"]
    return settings


def source_size(source: Path, data: DataConfig, exclude: tuple[Path, ...] = ()) -> int:
    """Bytes of the files that will be read (the walk only: nothing is opened)."""
    return sum(f.size for f in iter_files(source, SkipReport(), follow_symlinks=data.follow_symlinks, exclude=exclude))


def output_folders(source: Path, corpus_dir: Path) -> tuple[Path, ...]:
    """What prepare writes, to be skipped if it lies inside the data folder: the corpus folder, its
    staging folder, and the folder holding them (a run directory, with its tokenizer, shards,
    checkpoints and reports) unless that is the data folder itself."""
    folders = (corpus_dir, corpus_dir.with_name(corpus_dir.name + ".partial"))
    if os.path.realpath(corpus_dir.parent) != os.path.realpath(source):
        folders += (corpus_dir.parent,)
    return folders


def prepare_corpus(
    source: Path,
    corpus_dir: Path,
    data: DataConfig | None = None,
    clean: CleanConfig | None = None,
    quality: QualityConfig | None = None,
    dedup: DedupConfig | None = None,
    fingerprint: str = "",
) -> dict[str, Any]:
    """Read, clean, filter, deduplicate and split every document under `source`; return the manifest.

    `fingerprint` names the source version (e.g. file sizes and mtimes): a staged partial run
    with another fingerprint or config is discarded instead of resumed. What prepare writes is
    never read back as input when it lies inside `source` (see `output_folders`).
    """
    data, clean, quality, dedup = data or DataConfig(), clean or CleanConfig(), quality or QualityConfig(), \
        dedup or DedupConfig()
    for section in (data, clean, quality, dedup):
        section.validate()
    source, corpus_dir = Path(source), Path(corpus_dir)
    if not source.exists():
        raise MyLLMError(
            f"data folder {source} does not exist; set data.source to a folder of .txt/.md/.jsonl/.json/.parquet/"
            '.csv files (optionally .gz/.zst) or to "universe"'
        )
    if not source.is_dir():
        raise MyLLMError(
            f"data.source {source} is a file, not a folder; move it into a folder and point data.source there"
        )
    folders = set(folder_splits(source).values())
    hashed = [s for s in SPLITS if s != "train" and s not in folders] if folders else list(SPLITS)
    workers = data.workers or os.cpu_count() or 1
    exclude = output_folders(source, corpus_dir)
    if source_size(source, data, exclude) < PARALLEL_MIN_BYTES:
        workers = 1
    # Up to 2 batches per worker are queued and one is being written; each byte of text is held about
    # 4 times (source, cleaned, JSON line, pickled), so this keeps text in flight within data.memory_mb.
    batch_bytes = max(MIN_BATCH_BYTES, min(MAX_BATCH_BYTES, (data.memory_mb << 20) // (4 * (2 * workers + 1))))
    config_blob = json.dumps([str(source.resolve()), fingerprint, corpus_settings(data), asdict(clean),
                              asdict(quality), asdict(dedup)], sort_keys=True)
    stage = _Stage(corpus_dir.with_name(corpus_dir.name + ".partial"),
                   hashlib.sha256(config_blob.encode()).hexdigest()[:16])
    report = SkipReport()
    stats = stage.state["stats"] or new_stats()
    bar = tqdm(desc="clean+filter", unit="B", unit_scale=True, disable=None, leave=False)
    try:
        docs = iter_documents(source, report, text_field=data.text_field, follow_symlinks=data.follow_symlinks,
                              exclude=exclude)
        if not stage.state["complete"]:
            # Documents done before a restart are read again (cheap, and it rebuilds the skip report)
            # but not processed again.
            todo = itertools.islice(docs, stage.state["docs_read"], None)
            settings = (clean, quality, dedup, SplitRule(data.split_seed, data.val_fraction, data.test_fraction,
                                                          tuple(hashed)))
            for results in _run_pool(_batches(todo, batch_bytes), workers, settings, 2 * workers):
                kept = [r for r in results if "line" in r]
                for r in results:
                    tally(stats, r)
                stage.files["texts.jsonl"].write(b"".join(r["line"] for r in kept))
                stage.files["docs.bin"].write(np.array([r["record"] for r in kept], dtype=STAGE_DTYPE).tobytes())
                stage.files["sigs.bin"].write(b"".join(r.get("sig", b"") for r in kept))
                bar.update(sum(r["bytes_in"] for r in results))
                stage.commit(stats["read"]["documents"], stats)
            stage.commit(stats["read"]["documents"], stats, complete=True)
        else:
            for _ in docs:
                pass
    finally:
        bar.close()
        stage.close()
    if report.counts.get("output_folder"):  # said once here; the report names it too
        inside = next(e.split(": output_folder")[0] for e in report.named if ": output_folder" in e)
        print(f"data: the output folder {inside} is inside the data folder {source}; not read as input")
    try:
        manifest = _finish(stage.folder, corpus_dir, source, stats, report, data, dedup, folders, hashed)
    except MyLLMError:  # nothing worth resuming: the corpus itself must change
        shutil.rmtree(stage.folder, ignore_errors=True)
        raise
    shutil.rmtree(stage.folder, ignore_errors=True)
    return manifest


# ------------------------------------------------------------------ pass 2: dedup over the corpus, then write


def _finish(folder: Path, corpus_dir: Path, source: Path, stats: dict[str, Any], report: SkipReport,
            data: DataConfig, dedup: DedupConfig, folders: set[str], hashed: list[str]) -> dict[str, Any]:
    records = np.fromfile(folder / "docs.bin", dtype=STAGE_DTYPE)
    n = len(records)
    if n == 0:
        raise MyLLMError(nothing_left_message(source, stats, report))
    sig_path = folder / "sigs.bin"
    signatures = None
    if sig_path.stat().st_size:
        signatures = np.memmap(sig_path, dtype=np.uint32, mode="r").reshape(n, dedup.num_perm)
    held_out = records["split"] != SPLIT_CODES["train"]
    reasons = dd.plan_drops(records["key"], signatures, held_out, exact=dedup.exact, near=dedup.near,
                            decontaminate=dedup.decontaminate, bands=dedup.bands, threshold=dedup.threshold)
    removed = {name: {"documents": int((reasons == code).sum()), "bytes": int(records["bytes"][reasons == code].sum())}
               for code, name in dd.REASONS.items()}
    lengths_out = [0] * (len(LENGTH_BINS) - 1)
    with atomic_dir(corpus_dir) as tmp:
        writer = CorpusWriter(tmp)
        try:
            with open(folder / "texts.jsonl", "rb") as f:
                for i, line in enumerate(f):
                    if reasons[i] != dd.KEEP:
                        continue
                    rec = records[i]
                    split = SPLITS[rec["split"]]
                    movable = not rec["explicit"] and bool(hashed)
                    writer.add_line(split, line, int(rec["bytes"]), float(rec["point"]) if movable else None)
                    lengths_out[length_bin(int(rec["bytes"]))] += 1
            moved = writer.fill_empty((["train"] if not folders else []) + hashed)
        finally:
            writer.close()
        check_train(writer, str(source), f"put training documents in {source / 'train'}" if folders
                    else "add more documents")
        manifest = {
            "source": str(source),
            "splits": writer.splits(),
            "input_documents": stats["read"]["documents"],
            "empty_dropped": stats["empty"]["documents"],
            "duplicates_dropped": removed["exact_duplicate"]["documents"],
            "near_duplicates_dropped": removed["near_duplicate"]["documents"],
            "decontaminated": removed["decontaminated"]["documents"],
            "quality_dropped": sum(stats["quality"]["removed"].values()),
            "skipped": dict(sorted(report.counts.items())),
            "skipped_examples": report.examples,
            "files_seen": report.files_seen,
            "split_by": "folders" if folders and not hashed else "folders+hash" if folders else "hash",
            "moved_to_fill_splits": moved,
            "val_fraction": data.val_fraction,
            "test_fraction": data.test_fraction,
            "split_seed": data.split_seed,
            "steps": step_table(stats, removed),
            "cleaning_rules": dict(sorted(stats["clean"]["rules"].items())),
            "pii_redacted": dict(sorted(stats["pii"].items())),
            "quality_removed": dict(sorted(stats["quality"]["removed"].items())),
            "length_histogram": {"edges": LENGTH_BINS, "input": stats["lengths_in"], "output": lengths_out},
        }
        atomic_write_json(tmp / "manifest.json", manifest)
    return manifest
