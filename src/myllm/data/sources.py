"""Documents from a folder: .txt/.md/.jsonl/.json/.csv/.parquet, plain, gzipped or zstd, read as a stream.

A user's corpus may be larger than RAM and is rarely clean, so this module
- never holds a whole corpus, a whole big file or a whole huge line in memory: text files
  are read line by line and cut into documents of about `max_doc_bytes` at paragraph breaks,
  JSONL lines and CSV rows longer than `max_line_bytes` are skipped without being read whole,
  parquet is read in record batches, and a .json file (one JSON value, which the stdlib cannot
  parse piece by piece) is read only if it is at most `max_line_bytes`, else skipped with the
  advice to convert it to JSON Lines;
- reads the text from the field (JSONL, JSON) or column (CSV, parquet) named `text_field`;
- skips hidden files and folders (.git, .DS_Store) silently and counts any other file whose
  extension it does not read as `unsupported_format`;
- never stops on a bad file: unreadable, binary, non-UTF-8, empty, truncated .gz or .zst,
  malformed records and tables without the text column are skipped and counted in a
  `SkipReport`, which ends up in the corpus manifest so the user sees what was left out and why.

Rule for a file that goes bad part way (bad bytes, a truncated .gz or .zst): the documents
completed before the fault are kept, the one in progress and the rest of the file are skipped
(JSONL lines, JSON records and CSV rows are independent, so there only the bad record is skipped).

This module walks the folder and tells each file's kind; the per-format readers are in
`readers.py` and the skip report in `skips.py`.
"""

from __future__ import annotations

import gzip
import os
import zlib
from collections.abc import Iterator
from pathlib import Path

import zstandard

from myllm.data.readers import (
    ReadOptions,
    SourceDoc,
    open_binary,
    read_csv,
    read_json,
    read_jsonl,
    read_parquet,
    read_text,
)
from myllm.data.skips import SkipFile, SkipReport

SPLITS = ("train", "val", "test")
SPLIT_DIRS = {"train": "train", "val": "val", "validation": "val", "test": "test"}
FORMATS = (".txt", ".md", ".jsonl", ".json", ".csv", ".parquet")
COMPRESSIONS = {".gz": "gz", ".zst": "zst"}  # suffix -> compression, for every format
MAX_DOC_BYTES = 1 << 20  # text files larger than this become several documents
MAX_LINE_BYTES = 16 << 20  # JSONL lines, CSV rows and .json files longer than this are skipped
SNIFF_BYTES = 1024  # a NUL byte in the first KiB means "binary"


def iter_documents(
    root: Path,
    report: SkipReport,
    *,
    max_doc_bytes: int = MAX_DOC_BYTES,
    max_line_bytes: int = MAX_LINE_BYTES,
    text_field: str = "text",
) -> Iterator[SourceDoc]:
    """Yield every document under `root` in a deterministic (sorted) order.

    `text_field` names the field of .jsonl/.json records and the column of .csv/.parquet tables
    that holds the text; other fields and columns are ignored.

    If `root` has `train/`, `val/` (or `validation/`) or `test/` subfolders, documents under them
    carry that split and everything else at the top level is skipped as `outside_split_folders`,
    so a user's explicit held-out set is never mixed with stray files.
    """
    root = Path(root)
    opts = ReadOptions(max_doc_bytes, max_line_bytes, text_field)
    split_dirs = folder_splits(root)
    if not split_dirs:
        yield from _walk(root, root, None, report, opts, set())
        return
    # Held-out folders first: a text that is in both test/ and train/ is then kept in test and
    # dropped from train by exact dedup, so deduplication never leaks evaluation text into training.
    for name in sorted(split_dirs, key=lambda n: SPLITS.index(split_dirs[n]), reverse=True):
        yield from _walk(root / name, root, split_dirs[name], report, opts, set())
    for entry in _sorted_entries(root, root, report):
        if entry.name not in split_dirs and not entry.name.startswith("."):
            report.add("outside_split_folders", _rel(Path(entry.path), root))


def folder_splits(root: Path) -> dict[str, str]:
    """The split subfolders of `root`: {folder name: split}, e.g. {"train": "train", "validation": "val"}."""
    return {name: s for name, s in SPLIT_DIRS.items() if (Path(root) / name).is_dir()}


def _rel(path: Path, root: Path) -> str:
    """The path as a document id: undecodable bytes in a file name (old archives) become \\xNN escapes,
    so the id can always be written as UTF-8."""
    try:
        rel = path.relative_to(root).as_posix()
    except ValueError:
        rel = str(path)
    return rel.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _sorted_entries(folder: Path, root: Path, report: SkipReport) -> list[os.DirEntry]:
    try:
        with os.scandir(folder) as it:
            return sorted(it, key=lambda e: e.name)
    except OSError as e:
        report.add("unreadable", _rel(folder, root) + "/", e.strerror or type(e).__name__)
        return []


def _walk(folder: Path, root: Path, split: str | None, report: SkipReport, opts: ReadOptions,
          seen: set[str]) -> Iterator[SourceDoc]:
    real = os.path.realpath(folder)
    if real in seen:  # a symlink loop
        return
    seen.add(real)
    for entry in _sorted_entries(folder, root, report):
        if entry.name.startswith("."):  # .git, .DS_Store, editor swap files
            continue
        path = Path(entry.path)
        try:
            is_dir = entry.is_dir()
        except OSError:
            is_dir = False
        if is_dir:
            yield from _walk(path, root, split, report, opts, seen)
        else:
            yield from _read_file(path, root, split, report, opts)


def _format(name: str) -> tuple[str | None, str | None]:
    """(format, compression): ('.jsonl', 'zst') for 'x.jsonl.zst', ('.txt', None) for 'x.txt';
    the format is None for an extension this module does not read."""
    lower = name.lower()
    stem, suffix = os.path.splitext(lower)
    compression = COMPRESSIONS.get(suffix)
    if compression:
        lower = stem
    ext = os.path.splitext(lower)[1]
    return (ext if ext in FORMATS else None), compression


def _read_file(path: Path, root: Path, split: str | None, report: SkipReport,
               opts: ReadOptions) -> Iterator[SourceDoc]:
    rel = _rel(path, root)
    ext, compression = _format(path.name)
    report.files_seen += 1
    if ext is None:
        report.add("unsupported_format", rel, f"read: {' '.join(FORMATS)}, optionally .gz or .zst")
        return
    try:
        if path.stat().st_size == 0:
            report.add("empty", rel)
            return
        if ext == ".parquet":
            yield from read_parquet(path, rel, split, compression, report, opts.text_field)
            return
        with open_binary(path, compression) as f:
            head = f.peek(SNIFF_BYTES)[:SNIFF_BYTES]
            if not head:
                raise SkipFile("empty")
            if b"\x00" in head:
                raise SkipFile("binary", detail="NUL bytes in the first KiB")
            if ext == ".jsonl":
                yield from read_jsonl(f, rel, split, report, opts)
            elif ext == ".json":
                yield from read_json(f, rel, split, report, opts)
            elif ext == ".csv":
                yield from read_csv(f, rel, split, report, opts)
            else:
                yield from read_text(f, rel, split, opts.max_doc)
    except SkipFile as s:
        report.add(s.reason, rel if s.line is None else f"{rel}:{s.line}", s.detail)
    except (EOFError, zlib.error, gzip.BadGzipFile, zstandard.ZstdError) as e:  # a truncated or damaged archive
        report.add("corrupt_zst" if compression == "zst" else "corrupt_gzip", rel, str(e) or type(e).__name__)
    except OSError as e:
        report.add("unreadable", rel, e.strerror or str(e))

