"""Documents from a folder: .txt/.md/.jsonl/.parquet, plain or gzipped, read as a stream.

A user's corpus may be larger than RAM and is rarely clean, so this module
- never holds a whole corpus, a whole big file or a whole huge line in memory: text files
  are read line by line and cut into documents of about `max_doc_bytes` at paragraph breaks,
  JSONL lines longer than `max_line_bytes` are skipped without being read whole, and parquet
  is read in record batches;
- skips hidden files and folders (.git, .DS_Store) silently and counts any other file whose
  extension it does not read as `unsupported_format`;
- never stops on a bad file: unreadable, binary, non-UTF-8, empty, truncated .gz, malformed
  lines and parquet without a `text` column are skipped and counted in a `SkipReport`, which
  ends up in the corpus manifest so the user sees what was left out and why.

Rule for a file that goes bad part way (bad bytes, a truncated .gz): the documents completed
before the fault are kept, the one in progress and the rest of the file are skipped (JSONL
lines are independent, so there only the bad line is skipped).
"""

from __future__ import annotations

import codecs
import gzip
import json
import os
import shutil
import tempfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

SPLITS = ("train", "val", "test")
SPLIT_DIRS = {"train": "train", "val": "val", "validation": "val", "test": "test"}
FORMATS = (".txt", ".md", ".jsonl", ".parquet")
MAX_DOC_BYTES = 1 << 20  # text files larger than this become several documents
MAX_LINE_BYTES = 16 << 20  # JSONL lines longer than this are skipped
SNIFF_BYTES = 1024  # a NUL byte in the first KiB means "binary"
MAX_EXAMPLES, MAX_EXAMPLES_PER_REASON = 20, 5


@dataclass(frozen=True)
class SourceDoc:
    """One document: `id` is `relative/path[:line|#part]`, `split` is set by a train/val/test folder."""

    id: str
    text: str
    path: str
    split: str | None


@dataclass
class SkipReport:
    """What was left out and why: counts per reason and the first few examples (path[:line]: reason)."""

    counts: dict[str, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)
    files_seen: int = 0

    def add(self, reason: str, where: str, detail: str = "") -> None:
        n = self.counts.get(reason, 0)
        self.counts[reason] = n + 1
        if len(self.examples) < MAX_EXAMPLES and n < MAX_EXAMPLES_PER_REASON:
            self.examples.append(f"{where}: {reason}" + (f" ({detail})" if detail else ""))

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        """One line for an error message, e.g. '3 skipped: 2 binary, 1 empty'."""
        if not self.counts:
            return "nothing skipped"
        parts = ", ".join(f"{n} {reason}" for reason, n in sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0])))
        return f"{self.total} skipped: {parts}"


class _Skip(Exception):
    """Raised inside a reader: skip the rest of this file for `reason`."""

    def __init__(self, reason: str, line: int | None = None, detail: str = ""):
        super().__init__(reason)
        self.reason, self.line, self.detail = reason, line, detail


def iter_documents(
    root: Path,
    report: SkipReport,
    *,
    max_doc_bytes: int = MAX_DOC_BYTES,
    max_line_bytes: int = MAX_LINE_BYTES,
) -> Iterator[SourceDoc]:
    """Yield every document under `root` in a deterministic (sorted) order.

    If `root` has `train/`, `val/` (or `validation/`) or `test/` subfolders, documents under them
    carry that split and everything else at the top level is skipped as `outside_split_folders`,
    so a user's explicit held-out set is never mixed with stray files.
    """
    root = Path(root)
    split_dirs = folder_splits(root)
    if not split_dirs:
        yield from _walk(root, root, None, report, max_doc_bytes, max_line_bytes, set())
        return
    # Held-out folders first: a text that is in both test/ and train/ is then kept in test and
    # dropped from train by exact dedup, so deduplication never leaks evaluation text into training.
    for name in sorted(split_dirs, key=lambda n: SPLITS.index(split_dirs[n]), reverse=True):
        yield from _walk(root / name, root, split_dirs[name], report, max_doc_bytes, max_line_bytes, set())
    for entry in _sorted_entries(root, root, report):
        if entry.name not in split_dirs and not entry.name.startswith("."):
            report.add("outside_split_folders", _rel(Path(entry.path), root))


def folder_splits(root: Path) -> dict[str, str]:
    """The split subfolders of `root`: {folder name: split}, e.g. {"train": "train", "validation": "val"}."""
    return {name: s for name, s in SPLIT_DIRS.items() if (Path(root) / name).is_dir()}


def _rel(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _sorted_entries(folder: Path, root: Path, report: SkipReport) -> list[os.DirEntry]:
    try:
        with os.scandir(folder) as it:
            return sorted(it, key=lambda e: e.name)
    except OSError as e:
        report.add("unreadable", _rel(folder, root) + "/", e.strerror or type(e).__name__)
        return []


def _walk(folder: Path, root: Path, split: str | None, report: SkipReport, max_doc: int, max_line: int,
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
            yield from _walk(path, root, split, report, max_doc, max_line, seen)
        else:
            yield from _read_file(path, root, split, report, max_doc, max_line)


def _format(name: str) -> tuple[str | None, bool]:
    """('.jsonl', True) for 'x.jsonl.gz'; (None, _) for an unsupported extension."""
    lower = name.lower()
    gz = lower.endswith(".gz")
    if gz:
        lower = lower[:-3]
    ext = os.path.splitext(lower)[1]
    return (ext if ext in FORMATS else None), gz


def _read_file(path: Path, root: Path, split: str | None, report: SkipReport, max_doc: int,
               max_line: int) -> Iterator[SourceDoc]:
    rel = _rel(path, root)
    ext, gz = _format(path.name)
    report.files_seen += 1
    if ext is None:
        report.add("unsupported_format", rel, "read: .txt .md .jsonl .parquet, optionally .gz")
        return
    try:
        if path.stat().st_size == 0:
            report.add("empty", rel)
            return
        if ext == ".parquet":
            yield from _read_parquet(path, rel, split, gz, report)
            return
        with _open_binary(path, gz) as f:
            head = f.peek(SNIFF_BYTES)[:SNIFF_BYTES]
            if not head:
                raise _Skip("empty")
            if b"\x00" in head:
                raise _Skip("binary", detail="NUL bytes in the first KiB")
            if ext == ".jsonl":
                yield from _read_jsonl(f, rel, split, report, max_line)
            else:
                yield from _read_text(f, rel, split, max_doc)
    except _Skip as s:
        report.add(s.reason, rel if s.line is None else f"{rel}:{s.line}", s.detail)
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        report.add("corrupt_gzip", rel, str(e) or type(e).__name__)
    except OSError as e:
        report.add("unreadable", rel, e.strerror or str(e))


def _open_binary(path: Path, gz: bool) -> BinaryIO:
    """A buffered binary stream with `peek` (gzip.GzipFile has one, so does BufferedReader)."""
    return gzip.open(path, "rb") if gz else open(path, "rb")  # noqa: SIM115


def _read_text(f: BinaryIO, rel: str, split: str | None, max_doc: int) -> Iterator[SourceDoc]:
    """One document per file, or parts of about `max_doc` bytes cut at blank lines.

    Lines are read with a size limit, so even a file that is one giant line never sits in memory
    whole; a part with no blank line for 4x `max_doc` bytes is cut at a line end (or mid-line).
    The incremental decoder keeps multi-byte characters that straddle a cut intact.
    """
    decoder = codecs.getincrementaldecoder("utf-8-sig")("strict")  # -sig: drop a leading BOM
    buf: list[str] = []
    size, part, line_no, start_line = 0, 0, 0, 1

    def emit() -> SourceDoc:
        nonlocal buf, size, part
        doc_id = rel if part == 0 else f"{rel}#{part}"
        doc = SourceDoc(doc_id, "".join(buf), rel, split)
        buf, size, part = [], 0, part + 1
        return doc

    while True:
        line = f.readline(max_doc)
        if not line:
            break
        if line.endswith(b"\n"):
            line_no += 1
        try:
            buf.append(decoder.decode(line))
        except UnicodeDecodeError as e:
            raise _Skip("invalid_utf8", line=line_no + 1, detail=f"{e.reason}; earlier parts kept") from None
        size += len(line)
        blank = not line.strip()
        if (size >= max_doc and blank) or size >= 4 * max_doc:
            yield emit()
            start_line = line_no + 1
    try:
        tail = decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise _Skip("invalid_utf8", line=start_line, detail="file ends inside a character") from None
    buf.append(tail)
    if size or part == 0:
        yield emit()


def _read_jsonl(f: BinaryIO, rel: str, split: str | None, report: SkipReport, max_line: int) -> Iterator[SourceDoc]:
    """One document per line (field `text`); a bad line is skipped and counted, the rest still read."""
    line_no = 0
    any_line = False
    while True:
        line = f.readline(max_line + 1)
        if not line:
            break
        line_no += 1
        if len(line) > max_line and not line.endswith(b"\n"):
            while chunk := f.readline(1 << 20):  # discard the rest of the line, 1 MiB at a time
                if chunk.endswith(b"\n"):
                    break
            report.add("line_too_long", f"{rel}:{line_no}", f"over {max_line} bytes")
            any_line = True
            continue
        if not line.strip():
            continue
        any_line = True
        try:
            record = json.loads(line.decode("utf-8-sig"))
        except UnicodeDecodeError:
            report.add("invalid_utf8", f"{rel}:{line_no}")
            continue
        except ValueError as e:
            report.add("malformed_jsonl", f"{rel}:{line_no}", str(e)[:80])
            continue
        text = record.get("text") if isinstance(record, dict) else None
        if not isinstance(text, str):
            report.add("malformed_jsonl", f"{rel}:{line_no}", 'no string field "text"')
            continue
        yield SourceDoc(f"{rel}:{line_no}", text, rel, split)
    if not any_line:
        raise _Skip("empty")


def _read_parquet(path: Path, rel: str, split: str | None, gz: bool, report: SkipReport) -> Iterator[SourceDoc]:
    """Column `text`, read in record batches (parquet needs random access, so .parquet.gz is
    first decompressed to a temporary file, streamed, never into memory)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tmp = None
    try:
        if gz:
            fd, tmp = tempfile.mkstemp(suffix=".parquet", prefix="myllm-")
            with os.fdopen(fd, "wb") as out, gzip.open(path, "rb") as src:
                shutil.copyfileobj(src, out, 1 << 20)
            path = Path(tmp)
        try:
            pf = pq.ParquetFile(path)
        except (pa.ArrowException, ValueError) as e:
            raise _Skip("corrupt_parquet", detail=str(e)[:80]) from None
        schema = pf.schema_arrow
        idx = schema.get_field_index("text")
        kind = schema.field(idx).type if idx >= 0 else None
        is_view = getattr(pa.types, "is_string_view", lambda _: False)
        if kind is None or not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or is_view(kind)):
            raise _Skip("no_text_column", detail=f"columns: {', '.join(schema.names)[:80]}")
        if pf.metadata.num_rows == 0:
            raise _Skip("empty")
        row = 0
        try:
            for group in range(pf.num_row_groups):
                for batch in pf.iter_batches(batch_size=1024, row_groups=[group], columns=["text"]):
                    for text in batch.column(0).to_pylist():
                        if text is None:
                            report.add("null_text", f"{rel}:{row}")
                        else:
                            yield SourceDoc(f"{rel}:{row}", text, rel, split)
                        row += 1
        except (pa.ArrowException, UnicodeDecodeError) as e:
            raise _Skip("corrupt_parquet", line=row, detail=str(e)[:80]) from None
    finally:
        if tmp is not None:
            os.unlink(tmp)
