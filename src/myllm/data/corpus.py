"""Clean text in, one corpus out: `corpus/{train,val,test}.jsonl` + `corpus/manifest.json`.

Every later stage (tokenizer, shards, evaluation) reads only this directory, so it is the one
place where documents are normalized, deduplicated and split, and the manifest records what
happened (how many documents, bytes, duplicates, skipped files and why).

Splits are decided per document from a hash of its normalized text salted with
`data.split_seed`: the same corpus gives the same split on any machine, in any file order, and
adding documents never moves existing ones between splits. The only exception is the
guarantee that a corpus of >= 3 documents has >= 1 validation and >= 1 test document (and
any corpus has >= 1 training document): if the hash leaves a split empty, the document whose
hash lies nearest to it is moved there, which is deterministic too.

The corpus is written as a stream (memory independent of corpus size, except the exact-dedup
set: 16 bytes of hash plus Python overhead, ~100 bytes per kept document).
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from tqdm import tqdm

from myllm.config import DataConfig
from myllm.data.sources import SPLITS, SkipReport, folder_splits, iter_documents
from myllm.errors import MyLLMError
from myllm.io import atomic_dir, atomic_write_json

# C0/C1 control characters except \t (\x09) and \n (\x0a); lone surrogates (possible from JSON
# escapes like "\ud800") cannot be written as UTF-8 and become U+FFFD.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def normalize(text: str) -> str:
    """NFC, newlines as \\n, no control characters but \\n and \\t, no trailing whitespace on any line,
    no blank lines at the start or end. Paragraph breaks (blank lines) inside are kept.

    Why: the same text typed on Windows, macOS or Linux, or composed/decomposed by different
    editors, becomes the same bytes, so dedup sees it as one document and the tokenizer never
    spends vocabulary on invisible differences.
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL.sub("", text)
    text = _SURROGATE.sub("\ufffd", text)
    text = unicodedata.normalize("NFC", text)
    return "\n".join(line.rstrip() for line in text.split("\n")).strip("\n")


def _split_point(digest: bytes, seed: int) -> float:
    """A uniform number in [0, 1) from the text's hash and the split seed."""
    h = hashlib.blake2b(digest + b"|split|" + str(seed).encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") / 2.0**64


class _CorpusWriter:
    """Appends documents to the three split files and can later move a few between them."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.files: dict[str, BinaryIO] = {s: open(folder / f"{s}.jsonl", "wb") for s in SPLITS}  # noqa: SIM115
        self.docs = dict.fromkeys(SPLITS, 0)
        self.bytes = dict.fromkeys(SPLITS, 0)
        # Per split, the two movable documents with the smallest split point: (point, offset, length, bytes).
        self.candidates: dict[str, list[tuple[float, int, int, int]]] = {s: [] for s in SPLITS}

    def add(self, split: str, doc_id: str, text: str, point: float | None = None) -> None:
        f = self.files[split]
        line = (json.dumps({"id": doc_id, "text": text}, ensure_ascii=False) + "\n").encode("utf-8")
        n_bytes = len(text.encode("utf-8"))
        if point is not None:
            cands = self.candidates[split]
            cands.append((point, f.tell(), len(line), n_bytes))
            cands.sort()
            del cands[2:]
        f.write(line)
        self.docs[split] += 1
        self.bytes[split] += n_bytes

    def fill_empty(self, targets: list[str]) -> int:
        """Give each empty split in `targets` one document from a split that can spare one."""
        total = sum(self.docs.values())
        required = {"train": total >= 1, "val": total >= 3, "test": total >= 3}
        moves: list[tuple[str, str, tuple[float, int, int, int]]] = []
        for target in targets:
            if self.docs[target] or not required[target]:
                continue
            donors = sorted((s for s in SPLITS if s != target), key=lambda s: (s != "train", -self.docs[s], s))
            for donor in donors:
                keep = 1 if required[donor] else 0
                if self.docs[donor] > keep and self.candidates[donor]:
                    cand = self.candidates[donor].pop(0)
                    moves.append((donor, target, cand))
                    self.docs[donor] -= 1
                    self.bytes[donor] -= cand[3]
                    self.docs[target] += 1
                    self.bytes[target] += cand[3]
                    break
        if not moves:
            return 0
        for f in self.files.values():
            f.flush()
        moved_from: dict[str, set[int]] = {}
        for donor, target, (_, offset, length, _) in moves:
            with open(self.folder / f"{donor}.jsonl", "rb") as src:
                src.seek(offset)
                self.files[target].write(src.read(length))
            moved_from.setdefault(donor, set()).add(offset)
        for donor, offsets in moved_from.items():
            self._drop_lines(donor, offsets)
        return len(moves)

    def _drop_lines(self, split: str, offsets: set[int]) -> None:
        self.files[split].close()
        path, tmp = self.folder / f"{split}.jsonl", self.folder / f"{split}.jsonl.part"
        with open(path, "rb") as src, open(tmp, "wb") as dst:
            pos = 0
            for line in src:
                if pos not in offsets:
                    dst.write(line)
                pos += len(line)
        tmp.replace(path)
        self.files[split] = open(path, "ab")  # noqa: SIM115

    def close(self) -> None:
        for f in self.files.values():
            f.close()

    def splits(self) -> dict[str, dict[str, int]]:
        return {s: {"documents": self.docs[s], "bytes": self.bytes[s]} for s in SPLITS}


def _check_train(writer: _CorpusWriter, source_name: str, hint: str) -> None:
    if writer.docs["train"] == 0:
        raise MyLLMError(
            f"the train split of {source_name} is empty ({writer.docs['val']} val, {writer.docs['test']} test "
            f"documents); {hint}"
        )


def prepare_corpus(source: Path, corpus_dir: Path, cfg: DataConfig) -> dict[str, Any]:
    """Read, normalize, deduplicate and split every document under `source`; return the manifest.

    Written atomically: an interrupted or failed prepare leaves `corpus_dir` as it was.
    """
    cfg.validate()
    source = Path(source)
    if not source.exists():
        raise MyLLMError(
            f"data folder {source} does not exist; set data.source to a folder of .txt/.md/.jsonl/.parquet "
            'files (optionally .gz) or to "universe"'
        )
    if not source.is_dir():
        raise MyLLMError(
            f"data.source {source} is a file, not a folder; move it into a folder and point data.source there"
        )
    folders = set(folder_splits(source).values())
    # Splits the hash decides: all three, or those without their own folder (carved out of train/).
    hashed = [s for s in SPLITS if s != "train" and s not in folders] if folders else list(SPLITS)
    report = SkipReport()
    seen: set[bytes] = set()
    counts = {"input_documents": 0, "duplicates_dropped": 0, "empty_dropped": 0}
    with atomic_dir(corpus_dir) as tmp:
        writer = _CorpusWriter(tmp)
        bar = tqdm(desc="corpus", unit="char", unit_scale=True, disable=None, leave=False)
        try:
            for doc in iter_documents(source, report):
                counts["input_documents"] += 1
                bar.update(len(doc.text))
                text = normalize(doc.text)
                if not text:
                    counts["empty_dropped"] += 1
                    continue
                digest = hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()
                if digest in seen:
                    counts["duplicates_dropped"] += 1
                    continue
                seen.add(digest)
                if doc.split is not None and doc.split != "train":
                    writer.add(doc.split, doc.id, text)  # an explicit held-out document never moves
                    continue
                point = _split_point(digest, cfg.split_seed)
                split = "train"
                if "test" in hashed and point < cfg.test_fraction:
                    split = "test"
                elif "val" in hashed and cfg.test_fraction <= point < cfg.test_fraction + cfg.val_fraction:
                    split = "val"
                writer.add(split, doc.id, text, point if hashed else None)
            bar.close()  # before any message below, so it does not land on the bar's line
            kept = sum(writer.docs.values())
            if kept == 0:
                empty = f", {counts['empty_dropped']} documents empty after cleaning" if counts["empty_dropped"] else ""
                raise MyLLMError(
                    f"no readable documents in {source}: {report.files_seen} files seen, {report.summary()}{empty}; "
                    "add .txt/.md/.jsonl/.parquet files (optionally .gz) with UTF-8 text"
                )
            moved = writer.fill_empty((["train"] if not folders else []) + hashed)
        finally:
            bar.close()
            writer.close()
        _check_train(writer, str(source), f"put training documents in {source / 'train'}" if folders
                     else "add more documents")
        manifest = {
            "source": str(source),
            "splits": writer.splits(),
            **counts,
            "skipped": dict(sorted(report.counts.items())),
            "skipped_examples": report.examples,
            "files_seen": report.files_seen,
            "split_by": "folders" if folders and not hashed else "folders+hash" if folders else "hash",
            "moved_to_fill_splits": moved,
            "val_fraction": cfg.val_fraction,
            "test_fraction": cfg.test_fraction,
            "split_seed": cfg.split_seed,
        }
        atomic_write_json(tmp / "manifest.json", manifest)
    return manifest


def write_corpus(
    docs: Iterable[tuple[str, str, str]], corpus_dir: Path, source_name: str, extra: dict[str, Any]
) -> dict[str, Any]:
    """Write (split, id, text) documents as given: no normalization, dedup or re-splitting.

    For generated corpora (the built-in universe), whose exact source entropy per split is known
    and must describe exactly the bytes written. Same files and manifest keys as `prepare_corpus`,
    with `extra` merged into the manifest.
    """
    n = 0
    with atomic_dir(corpus_dir) as tmp:
        writer = _CorpusWriter(tmp)
        try:
            for split, doc_id, text in docs:
                if split not in SPLITS:
                    raise ValueError(f"unknown split {split!r} for document {doc_id!r}; use one of {SPLITS}")
                writer.add(split, doc_id, text)
                n += 1
        finally:
            writer.close()
        _check_train(writer, source_name, "the generator must produce training documents")
        manifest = {
            "source": source_name,
            "splits": writer.splits(),
            "input_documents": n,
            "duplicates_dropped": 0,
            "empty_dropped": 0,
            "skipped": {},
            "skipped_examples": [],
            **extra,
        }
        atomic_write_json(tmp / "manifest.json", manifest)
    return manifest


def iter_corpus(corpus_dir: Path, split: str) -> Iterator[dict[str, str]]:
    """The `{"id", "text"}` records of one split, streamed (for the tokenizer and the shard writer).

    Checks eagerly, so a missing corpus fails at the call, not at the first `next()`.
    """
    path = Path(corpus_dir) / f"{split}.jsonl"
    if not path.is_file():
        raise MyLLMError(f"corpus file {path} is missing; run `myllm data` (or `myllm run`) first")
    return _records(path)


def _records(path: Path) -> Iterator[dict[str, str]]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            yield json.loads(line)
