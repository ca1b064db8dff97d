"""The corpus directory: `corpus/{train,val,test}.jsonl` + `corpus/manifest.json`.

Every later stage (tokenizer, shards, evaluation) reads only this directory. Folder corpora are
cleaned, filtered and deduplicated into it by `prepare.py`; generated corpora (the built-in
universe) are written as given by `write_corpus`. This module holds what both share: the split
files' writer and the per-document split point.

The split of a hashed document comes from its text's key salted with `data.split_seed`, so
adding documents never moves existing ones between splits. The only exception is the
guarantee that a corpus of >= 3 documents has >= 1 validation and >= 1 test document (and
any corpus has >= 1 training document): if the hash leaves a split empty, the document whose
split point lies nearest to it is moved there, which is deterministic too.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from myllm.data.sources import SPLITS
from myllm.errors import MyLLMError
from myllm.io import atomic_dir, atomic_write_json, open_no_follow


def split_point(key: int, seed: int) -> float:
    """A uniform number in [0, 1) from the text's 64-bit key and the split seed."""
    h = hashlib.blake2b(key.to_bytes(8, "little") + b"|split|" + str(seed).encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") / 2.0**64


class CorpusWriter:
    """Appends documents to the three split files and can later move a few between them."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.files: dict[str, BinaryIO] = {s: open_no_follow(folder / f"{s}.jsonl", "wb") for s in SPLITS}
        self.docs = dict.fromkeys(SPLITS, 0)
        self.bytes = dict.fromkeys(SPLITS, 0)
        # Per split, the two movable documents with the smallest split point: (point, offset, length, bytes).
        self.candidates: dict[str, list[tuple[float, int, int, int]]] = {s: [] for s in SPLITS}

    def add(self, split: str, doc_id: str, text: str, point: float | None = None) -> None:
        line = (json.dumps({"id": doc_id, "text": text}, ensure_ascii=False) + "\n").encode("utf-8")
        self.add_line(split, line, len(text.encode("utf-8")), point)

    def add_line(self, split: str, line: bytes, n_bytes: int, point: float | None = None) -> None:
        """Append one ready JSON line; a `point` makes the document movable by `fill_empty`."""
        f = self.files[split]
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
        self.files[split] = open_no_follow(path, "ab")

    def close(self) -> None:
        for f in self.files.values():
            f.close()

    def splits(self) -> dict[str, dict[str, int]]:
        return {s: {"documents": self.docs[s], "bytes": self.bytes[s]} for s in SPLITS}


def check_train(writer: CorpusWriter, source_name: str, hint: str) -> None:
    if writer.docs["train"] == 0:
        raise MyLLMError(
            f"the train split of {source_name} is empty ({writer.docs['val']} val, {writer.docs['test']} test "
            f"documents); {hint}"
        )


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
        writer = CorpusWriter(tmp)
        try:
            for split, doc_id, text in docs:
                if split not in SPLITS:
                    raise ValueError(f"unknown split {split!r} for document {doc_id!r}; use one of {SPLITS}")
                writer.add(split, doc_id, text)
                n += 1
        finally:
            writer.close()
        check_train(writer, source_name, "the generator must produce training documents")
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
        raise MyLLMError(f"corpus file {path} is missing; run `myllm data prepare` (or `myllm run`) first")
    return _records(path)


def corpus_record(line: str | bytes, where: str) -> dict[str, Any]:
    """One line of a corpus split file as its record, or one line naming the damage (`where`: file and line)."""
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):  # also bytes that are not UTF-8
        record = None
    if not (isinstance(record, dict) and isinstance(record.get("text"), str)):
        raise MyLLMError(f"{where} is damaged (not a {{\"text\": ...}} record written by myllm); "
                         "re-run `myllm data prepare` to rebuild the corpus")
    return record


def _records(path: Path) -> Iterator[dict[str, str]]:
    with open(path, encoding="utf-8", errors="replace") as f:
        for i, line in enumerate(f):
            yield corpus_record(line, f"{path} line {i + 1}")


def iter_texts(path: Path, every: int = 1) -> Iterator[str]:
    """The texts of a corpus split file; with `every` = k only every k-th document (an even sample:
    BPE merges are learned from pair statistics, which a sample of a large corpus estimates well)."""
    with open(path, encoding="utf-8", errors="replace") as f:
        for i, line in enumerate(f):
            if i % every == 0:
                yield corpus_record(line, f"{path} line {i + 1}")["text"]
