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
  JSON nested too deeply to parse, malformed records and tables without the text column are
  skipped and counted in a `SkipReport`, which ends up in the corpus manifest so the user sees
  what was left out and why; so are dangling, looping and outside links, FIFOs, sockets and
  devices, paths too long to open, files gone since the walk and the output folder (`walk.py`).

Rule for a file that goes bad part way (bad bytes, a truncated .gz or .zst): the documents
completed before the fault are kept, the one in progress and the rest of the file are skipped
(JSONL lines, JSON records and CSV rows are independent, so there only the bad record is skipped).

This module tells each file's kind and reads it; the folder walk is in `walk.py`, the per-format
readers in `readers.py` and the skip report in `skips.py`.
"""

from __future__ import annotations

import gzip
import hashlib
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
from myllm.data.walk import FolderWalk, FoundFile, os_error_detail, os_error_reason

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
    follow_symlinks: bool = False,
    exclude: tuple[Path, ...] = (),
) -> Iterator[SourceDoc]:
    """Yield every document under `root` in a deterministic (sorted) order.

    `text_field` names the field of .jsonl/.json records and the column of .csv/.parquet tables
    that holds the text; other fields and columns are ignored. How links, odd files and the
    `exclude`d folders (the output folder) are handled is in `walk.py`.

    If `root` has `train/`, `val/` (or `validation/`) or `test/` subfolders, documents under them
    carry that split and everything else at the top level is skipped as `outside_split_folders`,
    so a user's explicit held-out set is never mixed with stray files.
    """
    opts = ReadOptions(max_doc_bytes, max_line_bytes, text_field)
    for found in iter_files(root, report, follow_symlinks=follow_symlinks, exclude=exclude):
        yield from _read_file(found, report, opts)


def iter_files(root: Path, report: SkipReport, *, follow_symlinks: bool = False,
               exclude: tuple[Path, ...] = ()) -> Iterator[FoundFile]:
    """The files `iter_documents` reads, in its order (held-out split folders first)."""
    root = Path(root)
    walk = FolderWalk(root, report, follow_symlinks=follow_symlinks, exclude=exclude)
    split_dirs = folder_splits(root)
    if not split_dirs:
        yield from walk.files(root, None)
        return
    # Held-out folders first: a text that is in both test/ and train/ is then kept in test and
    # dropped from train by exact dedup, so deduplication never leaks evaluation text into training.
    for name in sorted(split_dirs, key=lambda n: SPLITS.index(split_dirs[n]), reverse=True):
        if not walk.is_excluded(root / name):
            yield from walk.files(root / name, split_dirs[name])
    try:
        with os.scandir(root) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as e:
        report.add(os_error_reason(e), "./", os_error_detail(e))
        return
    for entry in entries:
        if entry.name not in split_dirs and not entry.name.startswith(".") and not walk.is_excluded(Path(entry.path)):
            report.add("outside_split_folders", walk.rel(entry.path))


def folder_splits(root: Path) -> dict[str, str]:
    """The split subfolders of `root`: {folder name: split}, e.g. {"train": "train", "validation": "val"}."""
    return {name: s for name, s in SPLIT_DIRS.items() if (Path(root) / name).is_dir()}


def source_signature(root: Path, *, follow_symlinks: bool = False, exclude: tuple[Path, ...] = ()) -> str:
    """Names, sizes and mtimes of every file `iter_documents` would read: cheap change detection.
    Nothing is opened, and the output folder inside the data folder is left out, so writing the
    run does not change the signature of its own input."""
    rows = []
    for found in iter_files(root, SkipReport(), follow_symlinks=follow_symlinks, exclude=exclude):
        try:
            mtime = os.stat(found.path).st_mtime_ns
        except OSError:  # gone since the walk saw it
            continue
        rows.append((found.rel, found.size, mtime))
    h = hashlib.sha256()
    for rel, size, mtime in sorted(rows, key=lambda row: _walk_order(row[0])):
        h.update(rel.encode("utf-8") + f"|{size}|{mtime}\n".encode())
    return h.hexdigest()[:16]


def _walk_order(rel: str) -> tuple:
    # The order of a sorted os.walk (a folder's files, then its subfolders), which signatures were hashed
    # in before this walk: a run directory made then keeps its fingerprints.
    *folders, name = rel.split("/")
    return (*((1, f) for f in folders), (0, name))


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


def _read_file(found: FoundFile, report: SkipReport, opts: ReadOptions) -> Iterator[SourceDoc]:
    path, rel, split = found.path, found.rel, found.split
    ext, compression = _format(os.path.basename(path))
    report.files_seen += 1
    if ext is None:
        report.add("unsupported_format", rel, f"read: {' '.join(FORMATS)}, optionally .gz or .zst")
        return
    try:
        if found.size == 0:
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
        report.add(s.reason, rel, s.detail, line=s.line)
    except (EOFError, zlib.error, gzip.BadGzipFile, zstandard.ZstdError) as e:  # a truncated or damaged archive
        report.add("corrupt_zst" if compression == "zst" else "corrupt_gzip", rel, str(e) or type(e).__name__)
    except OSError as e:  # permission denied, gone since the walk, a path too long to open
        report.add(os_error_reason(e), rel, os_error_detail(e))
