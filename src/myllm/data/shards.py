"""Token shards: each split as `{split}-NNNNN.bin` files of raw token ids plus `index.json`.

Raw little-endian numpy arrays (no header) are what nanoGPT and llm.c use: a shard is
memory-mapped in microseconds and the training loader reads any window of any split without
loading the rest, so a corpus larger than RAM trains as well as a small one. Each document
is `[bos_id] + encode(text)`; the BOS marks document boundaries for the model and lets a
reader recover documents. A document may span two shards: shards are only a file-size limit.

`index.json` records per split the shards and their token counts, the number of documents and
the UTF-8 bytes of their text (the denominator of bits-per-byte).
"""

from __future__ import annotations

import bisect
import hashlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np
from tqdm import tqdm

from myllm.data.corpus import corpus_record
from myllm.data.sources import SPLITS
from myllm.errors import MyLLMError
from myllm.io import atomic_write_json, open_no_follow, read_json, replace_dir

if TYPE_CHECKING:
    from myllm.tokenizer import Tokenizer

BATCH_DOCS, BATCH_CHARS = 1024, 8 << 20  # encode_batch granularity: parallel enough, bounded memory
PROGRESS_MIN_BYTES = 4 << 20  # show a progress bar for splits larger than this


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16 if vocab_size <= 1 << 16 else np.uint32)


class _ShardWriter:
    """Appends token arrays to `{split}-NNNNN.bin`, starting a new file every `shard_tokens` tokens.

    `shards` (from a saved progress record) resumes a writer: the last file is cut back to the
    tokens that record counts, dropping anything written after it.
    """

    def __init__(self, folder: Path, split: str, shard_tokens: int, dtype: np.dtype,
                 shards: list[dict[str, Any]] | None = None):
        self.folder, self.split, self.shard_tokens, self.dtype = folder, split, shard_tokens, dtype
        self.shards: list[dict[str, Any]] = [dict(s) for s in shards or []]
        self.file: BinaryIO | None = None
        if self.shards:
            self.file = open_no_follow(folder / self.shards[-1]["file"], "r+b")
            self.file.truncate(self.shards[-1]["tokens"] * dtype.itemsize)
            self.file.seek(0, 2)

    def write(self, tokens: np.ndarray) -> None:
        while len(tokens):
            if self.file is None or self.shards[-1]["tokens"] == self.shard_tokens:
                self._next_file()
            room = self.shard_tokens - self.shards[-1]["tokens"]
            part, tokens = tokens[:room], tokens[room:]
            self.file.write(part.tobytes())
            self.shards[-1]["tokens"] += len(part)

    def _next_file(self) -> None:
        self.close()
        name = f"{self.split}-{len(self.shards):05d}.bin"
        self.file = open_no_follow(self.folder / name, "wb")
        self.shards.append({"file": name, "tokens": 0})

    def flush(self) -> None:
        if self.file is not None:
            self.file.flush()  # survives a killed process; a power loss is caught by `_intact`

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


def _doc_batches(path: Path, offset: int, max_chars: int) -> Iterator[tuple[list[str], int]]:
    """(texts, byte offset after them) from `offset` on; batches end at fixed places, so a resumed
    run cuts the same batches as an uninterrupted one."""
    batch: list[str] = []
    chars = 0
    with open(path, "rb") as f:
        f.seek(offset)
        for line in f:
            text = corpus_record(line, f"{path} at byte {offset}")["text"]
            offset += len(line)
            batch.append(text)
            chars += len(text)
            if len(batch) >= BATCH_DOCS or chars >= max_chars:
                yield batch, offset
                batch, chars = [], 0
    if batch:
        yield batch, offset


def write_shards(corpus_dir: Path, tokenizer: Tokenizer, shards_dir: Path, shard_tokens: int, threads: int = 0,
                 memory_mb: int = 256) -> dict[str, Any]:
    """Tokenize every split of the corpus into shards; return the index.

    Encoding runs in `threads` threads (0 = one per core): tiktoken releases the GIL, so threads
    use every core without pickling text to worker processes. Progress is committed after each
    batch in `shards.partial/`, so a killed run resumes there and writes the same shards as an
    uninterrupted one; the finished folder replaces `shards_dir` in one rename.
    """
    corpus_dir, shards_dir = Path(corpus_dir), Path(shards_dir)
    manifest = corpus_dir / "manifest.json"
    if not manifest.is_file():
        raise MyLLMError(f"no corpus in {corpus_dir} (manifest.json missing); "
                         "run `myllm data prepare` (or `myllm run`) first")
    if shard_tokens <= 0:
        raise MyLLMError(f"data.shard_tokens = {shard_tokens} must be positive")
    dtype = token_dtype(tokenizer.vocab_size)
    bos = np.array([tokenizer.bos_id], dtype=dtype)
    tok_text = tokenizer.hf.to_str()
    # The split files' sizes and mtimes too: an edit that keeps every count in the manifest must not
    # resume a partial run made from the old text.
    files = [(s, p.stat().st_size, p.stat().st_mtime_ns) for s in SPLITS if (p := corpus_dir / f"{s}.jsonl").is_file()]
    fingerprint = hashlib.sha256(f"{manifest.read_text()}|{files}|{tok_text}|{shard_tokens}".encode()).hexdigest()[:16]
    partial = shards_dir.with_name(shards_dir.name + ".partial")
    progress = partial / "progress.json"
    state = read_json(progress) if progress.is_file() else None
    if state is None or state.get("fingerprint") != fingerprint or not _intact(partial, state, dtype.itemsize):
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        state = {"fingerprint": fingerprint, "splits": {}, "current": None}
    max_chars = max(1 << 20, min(BATCH_CHARS, (memory_mb << 20) // 8))
    for split in SPLITS:
        if split in state["splits"]:
            continue
        path = corpus_dir / f"{split}.jsonl"
        cur = state["current"] if state["current"] and state["current"]["split"] == split else \
            {"split": split, "offset": 0, "documents": 0, "bytes": 0, "shards": []}
        writer = _ShardWriter(partial, split, shard_tokens, dtype, cur["shards"])
        size = path.stat().st_size if path.is_file() else 0
        bar = tqdm(desc=f"shards {split}", unit="B", unit_scale=True, leave=False, initial=cur["offset"], total=size,
                   disable=None if size > PROGRESS_MIN_BYTES else True)
        try:
            for texts, offset in _doc_batches(path, cur["offset"], max_chars) if path.is_file() else ():
                encoded = tokenizer.encode_batch(texts, threads=threads)
                writer.write(np.concatenate([p for ids in encoded for p in (bos, np.asarray(ids, dtype=dtype))]))
                writer.flush()
                bar.update(offset - cur["offset"])
                cur.update(offset=offset, documents=cur["documents"] + len(texts), shards=writer.shards,
                           bytes=cur["bytes"] + sum(len(t.encode("utf-8")) for t in texts))
                state["current"] = cur
                atomic_write_json(progress, state)
        finally:
            writer.close()
            bar.close()
        state["splits"][split] = {"shards": writer.shards, "tokens": sum(s["tokens"] for s in writer.shards),
                                  "documents": cur["documents"], "bytes": cur["bytes"]}
        state["current"] = None
        atomic_write_json(progress, state)
    index: dict[str, Any] = {"dtype": dtype.name, "vocab_size": tokenizer.vocab_size, "bos_id": tokenizer.bos_id,
                             "tokenizer_sha256": tokenizer.digest(), "shard_tokens": shard_tokens,
                             "splits": state["splits"]}
    atomic_write_json(partial / "index.json", index)
    progress.unlink()
    replace_dir(partial, shards_dir)
    return index


def _intact(folder: Path, state: dict[str, Any], itemsize: int) -> bool:
    """Every committed shard holds at least its committed tokens (files are flushed, not fsynced)."""
    shards = [sh for v in state["splits"].values() for sh in v["shards"]]
    shards += state["current"]["shards"] if state["current"] else []
    return all((folder / sh["file"]).is_file() and (folder / sh["file"]).stat().st_size >= sh["tokens"] * itemsize
               for sh in shards)


def read_index(shards_dir: Path) -> dict[str, Any]:
    """The shard index, or one clear error if the shards were never written."""
    path = Path(shards_dir) / "index.json"
    if not path.is_file():
        raise MyLLMError(
            f"no token shards in {Path(shards_dir).parent} ({path} missing); "
            "run `myllm data prepare` (or `myllm run`) first"
        )
    try:
        return read_json(path)
    except (OSError, json.JSONDecodeError) as e:
        raise MyLLMError(f"cannot read {path} ({e}); delete {shards_dir} and run `myllm data prepare` again") from None


class ShardReader:
    """Random access to one split's token stream across its shards, via memory maps.

    Only the pages a slice touches are read, so a multi-GB split costs no RAM up front; the
    training loader calls `slice` for every sequence it draws.
    """

    def __init__(self, shards_dir: Path, split: str):
        self.shards_dir, self.split = Path(shards_dir), split
        index = read_index(self.shards_dir)
        if split not in index["splits"]:
            raise MyLLMError(f"split {split!r} is not in {self.shards_dir / 'index.json'}; "
                             f"splits: {', '.join(index['splits'])}")
        self.dtype = np.dtype(index["dtype"])
        self.vocab_size: int = index["vocab_size"]
        self.bos_id: int = index["bos_id"]
        self.info: dict[str, Any] = index["splits"][split]
        self._maps: list[np.memmap] = []
        self._starts: list[int] = []  # global offset of each shard's first token
        total = 0
        for shard in self.info["shards"]:
            path = self.shards_dir / shard["file"]
            expected = shard["tokens"] * self.dtype.itemsize
            actual = path.stat().st_size if path.is_file() else -1
            if actual != expected:
                raise MyLLMError(
                    f"shard {path} is missing or has {actual} bytes, expected {expected}; "
                    f"delete {self.shards_dir} and run `myllm data prepare` again"
                )
            self._maps.append(np.memmap(path, dtype=self.dtype, mode="r"))
            self._starts.append(total)
            total += shard["tokens"]
        self._len = total

    def __len__(self) -> int:
        return self._len

    def slice(self, start: int, stop: int) -> np.ndarray:
        """Tokens [start, stop) of the split as a new array (may cross shard boundaries)."""
        start, stop = max(0, start), min(stop, self._len)
        if stop <= start:
            return np.empty(0, dtype=self.dtype)
        i = bisect.bisect_right(self._starts, start) - 1
        parts = []
        while start < stop:
            base = self._starts[i]
            end = min(stop, base + len(self._maps[i]))
            parts.append(self._maps[i][start - base : end - base])
            start, i = end, i + 1
        return np.array(parts[0]) if len(parts) == 1 else np.concatenate(parts)


def load_tokens(shards_dir: Path, split: str) -> np.ndarray:
    """A split's whole token stream: the memmap itself for one shard (read-only, no copy), else
    the shards concatenated in memory. For large splits use `ShardReader`."""
    reader = ShardReader(shards_dir, split)
    if len(reader._maps) == 1:
        return reader._maps[0]
    return reader.slice(0, len(reader))
