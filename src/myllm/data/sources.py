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
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import json
import os
import re
import shutil
import tempfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import zstandard

SPLITS = ("train", "val", "test")
SPLIT_DIRS = {"train": "train", "val": "val", "validation": "val", "test": "test"}
FORMATS = (".txt", ".md", ".jsonl", ".json", ".csv", ".parquet")
COMPRESSIONS = {".gz": "gz", ".zst": "zst"}  # suffix -> compression, for every format
MAX_DOC_BYTES = 1 << 20  # text files larger than this become several documents
MAX_LINE_BYTES = 16 << 20  # JSONL lines, CSV rows and .json files longer than this are skipped
SNIFF_BYTES = 1024  # a NUL byte in the first KiB means "binary"
MAX_EXAMPLES, MAX_EXAMPLES_PER_REASON = 20, 5
ZST_READ_BYTES = 256  # compressed bytes per zstd call: at most ~8 MiB of output, see _ZstdReader
_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")  # a byte that was not UTF-8, decoded with surrogateescape


@dataclass(frozen=True)
class SourceDoc:
    """One document: `id` is `relative/path[:line|:row|:index|#part]`, `split` is set by a train/val/test folder."""

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


@dataclass(frozen=True)
class _Options:
    """The reading options of `iter_documents`, passed down to every reader."""

    max_doc: int
    max_line: int
    text_field: str


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
    opts = _Options(max_doc_bytes, max_line_bytes, text_field)
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


def _walk(folder: Path, root: Path, split: str | None, report: SkipReport, opts: _Options,
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
               opts: _Options) -> Iterator[SourceDoc]:
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
            yield from _read_parquet(path, rel, split, compression, report, opts.text_field)
            return
        with _open_binary(path, compression) as f:
            head = f.peek(SNIFF_BYTES)[:SNIFF_BYTES]
            if not head:
                raise _Skip("empty")
            if b"\x00" in head:
                raise _Skip("binary", detail="NUL bytes in the first KiB")
            if ext == ".jsonl":
                yield from _read_jsonl(f, rel, split, report, opts)
            elif ext == ".json":
                yield from _read_json(f, rel, split, report, opts)
            elif ext == ".csv":
                yield from _read_csv(f, rel, split, report, opts)
            else:
                yield from _read_text(f, rel, split, opts.max_doc)
    except _Skip as s:
        report.add(s.reason, rel if s.line is None else f"{rel}:{s.line}", s.detail)
    except (EOFError, zlib.error, gzip.BadGzipFile, zstandard.ZstdError) as e:  # a truncated or damaged archive
        report.add("corrupt_zst" if compression == "zst" else "corrupt_gzip", rel, str(e) or type(e).__name__)
    except OSError as e:
        report.add("unreadable", rel, e.strerror or str(e))


def _open_binary(path: Path, compression: str | None) -> BinaryIO:
    """A buffered binary stream with `peek` and `readline` (gzip.GzipFile has them, so does BufferedReader)."""
    if compression == "gz":
        return gzip.open(path, "rb")
    if compression == "zst":
        return io.BufferedReader(_ZstdReader(open(path, "rb")), 1 << 16)  # noqa: SIM115
    return open(path, "rb")  # noqa: SIM115


class _ZstdReader(io.RawIOBase):
    """A .zst file decompressed frame after frame; raises EOFError if it ends inside a frame.

    Not zstandard's own `stream_reader`: it ends quietly at a truncated frame, which would keep a
    cut-off document as if it were whole, while a decompressobj's `eof` tells a finished frame
    from a cut one. One decompress call returns all the output of its input, and zstd can expand
    a byte ~32,000-fold (1 KiB of a run of one letter is 32 MiB), so input is fed ZST_READ_BYTES at
    a time to bound memory; small calls still decompress text at ~400 MB/s.
    """

    def __init__(self, raw: BinaryIO):
        self._raw = raw
        self._dctx = zstandard.ZstdDecompressor()
        self._frame = None  # the decompressobj of the frame being read; None between frames
        self._input = b""  # compressed bytes read past the end of the last frame
        self._output = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        while not self._output:
            data = self._input or self._raw.read(ZST_READ_BYTES)
            self._input = b""
            if not data:
                if self._frame is not None:
                    raise EOFError("the file ends inside a zstd frame (truncated)")
                return 0
            if self._frame is None:
                self._frame = self._dctx.decompressobj()
            self._output = memoryview(self._frame.decompress(data))
            if self._frame.eof:  # the frame is complete; what follows it is the next frame
                self._input, self._frame = self._frame.unused_data, None
        n = min(len(buf), len(self._output))
        buf[:n] = self._output[:n]
        self._output = self._output[n:]
        return n

    def close(self) -> None:
        self._raw.close()
        super().close()


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


def _read_jsonl(f: BinaryIO, rel: str, split: str | None, report: SkipReport,
                opts: _Options) -> Iterator[SourceDoc]:
    """One document per line (field `text_field`); a bad line is skipped and counted, the rest still read."""
    max_line = opts.max_line
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
        text = record.get(opts.text_field) if isinstance(record, dict) else None
        if not isinstance(text, str):
            report.add("malformed_jsonl", f"{rel}:{line_no}", f'no string field "{opts.text_field}"')
            continue
        yield SourceDoc(f"{rel}:{line_no}", text, rel, split)
    if not any_line:
        raise _Skip("empty")


def _read_json(f: BinaryIO, rel: str, split: str | None, report: SkipReport,
               opts: _Options) -> Iterator[SourceDoc]:
    """A JSON array of records, or one record (an object); ids are `rel:index` (0 for a lone object).

    A .json file is a single JSON value, which the stdlib can only parse whole (streaming it would
    need a streaming parser), so it is read only up to `max_line` bytes, like one JSONL line; a bigger
    file (decompressed size, for .json.gz/.zst) is skipped as json_too_large. JSON Lines is the
    format for big collections. A record without the string field is counted, the others kept.
    """
    data = f.read(opts.max_line + 1)
    if len(data) > opts.max_line:
        raise _Skip("json_too_large", detail=f"over {opts.max_line} bytes; convert it to JSON Lines "
                                             "(.jsonl, one record per line), which is read as a stream")
    try:
        value = json.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError as e:
        raise _Skip("invalid_utf8", detail=e.reason) from None
    except ValueError as e:
        raise _Skip("malformed_json", detail=str(e)[:80]) from None
    del data
    records = value if isinstance(value, list) else [value]
    if not records:
        raise _Skip("empty")
    for index, record in enumerate(records):
        text = record.get(opts.text_field) if isinstance(record, dict) else None
        if not isinstance(text, str):
            report.add("malformed_json", f"{rel}:{index}", f'no string field "{opts.text_field}"')
            continue
        yield SourceDoc(f"{rel}:{index}", text, rel, split)


class _RecordTooLong(Exception):
    """Raised by _CsvLines when a CSV record is longer than the limit (and has been read past)."""


class _CsvLines:
    """The lines of a CSV text stream, for csv.reader, with at most `limit` characters per record.

    csv.reader asks its input for whole lines and gathers a record's fields in memory, so one huge
    cell would sit in memory whole. This iterator reads lines with a size limit instead; once a
    record grows past `limit` it reads on to the record's end, keeping nothing, and raises
    _RecordTooLong. csv.reader passes the exception up and starts afresh from the next line, which
    is then the next record, so reading goes on. A record ends at a line end outside quotes, i.e.
    with an even count of '"' since it began ("" inside a quoted field counts two); a stray quote
    in an unquoted cell of a too-long record can make it skip further records than that one.
    The limit counts characters, as the text is decoded by then (a character is 1 to 4 bytes).
    The caller calls `record_done()` after each record csv.reader returns.
    """

    def __init__(self, text: io.TextIOBase, limit: int):
        self.text, self.limit = text, limit
        self.size = self.quotes = 0  # characters and '"' of the current record so far

    def record_done(self) -> None:
        self.size = self.quotes = 0

    def __iter__(self) -> _CsvLines:
        return self

    def __next__(self) -> str:
        line = self.text.readline(self.limit + 1)
        if not line:
            raise StopIteration
        self.size += len(line)
        self.quotes += line.count('"')
        if self.size <= self.limit:
            return line
        while line and (self.quotes % 2 or not line.endswith(("\n", "\r"))):
            line = self.text.readline(1 << 20)  # 1 MiB at a time
            self.quotes += line.count('"')
        self.record_done()
        raise _RecordTooLong


def _next_csv_record(reader: Iterator[list[str]], limit: int) -> list[str] | None:
    # csv's field size limit (128 KiB by default) is process-wide: raise it to `limit` (records
    # are never longer, see _CsvLines) only while this reader parses, then put it back.
    old = csv.field_size_limit(limit)
    try:
        return next(reader, None)
    finally:
        csv.field_size_limit(old)


def _read_csv(f: BinaryIO, rel: str, split: str | None, report: SkipReport,
              opts: _Options) -> Iterator[SourceDoc]:
    """One document per data row, from the column named `text_field` in the header row.

    Ids are `rel:row`, data rows numbered from 1 (blank lines are not rows). A bad row is skipped
    and counted, the rest still read, as for JSONL: a row longer than `max_line` characters is
    line_too_long (see _CsvLines), one whose text is not UTF-8 is invalid_utf8. Bytes are decoded
    with surrogateescape, so a bad byte marks its own row instead of failing a whole decoded chunk,
    and never desynchronizes parsing (a non-UTF-8 byte is never a quote, comma or newline).
    """
    field_name = opts.text_field
    lines = _CsvLines(io.TextIOWrapper(f, encoding="utf-8-sig", errors="surrogateescape", newline=""),
                      opts.max_line)
    reader = csv.reader(lines)
    column = None  # index of the text column, once the header is read
    row = 0
    while True:
        try:
            record = _next_csv_record(reader, opts.max_line)
        except _RecordTooLong:
            if column is None:
                raise _Skip("line_too_long", detail=f"header row over {opts.max_line} characters") from None
            row += 1
            report.add("line_too_long", f"{rel}:{row}", f"over {opts.max_line} characters")
            continue
        except csv.Error as e:  # the parser's state is unknown after this: skip the rest
            raise _Skip("malformed_csv", line=row + 1, detail=str(e)[:80]) from None
        if record is None:
            break
        lines.record_done()
        if not record:  # a blank line
            continue
        if column is None:
            if any(_ESCAPED_BYTE.search(name) for name in record):
                raise _Skip("invalid_utf8", detail="in the header row")
            if field_name not in record:
                raise _Skip("no_text_column", detail=f'no column "{field_name}"; columns: {", ".join(record)[:80]}')
            column = record.index(field_name)
            continue
        row += 1
        if column >= len(record):
            report.add("malformed_csv", f"{rel}:{row}", f'{len(record)} fields, no "{field_name}" column')
        elif _ESCAPED_BYTE.search(record[column]):
            report.add("invalid_utf8", f"{rel}:{row}")
        else:
            yield SourceDoc(f"{rel}:{row}", record[column], rel, split)
    if row == 0:  # blank, or a header and no data rows
        raise _Skip("empty")


def _read_parquet(path: Path, rel: str, split: str | None, compression: str | None, report: SkipReport,
                  text_field: str) -> Iterator[SourceDoc]:
    """Column `text_field`, read in record batches (parquet needs random access, so .parquet.gz and
    .parquet.zst are first decompressed to a temporary file, streamed, never into memory)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tmp = None
    try:
        if compression:
            fd, tmp = tempfile.mkstemp(suffix=".parquet", prefix="myllm-")
            with os.fdopen(fd, "wb") as out, _open_binary(path, compression) as src:
                shutil.copyfileobj(src, out, 1 << 20)
            path = Path(tmp)
        try:
            pf = pq.ParquetFile(path)
        except (pa.ArrowException, ValueError) as e:
            raise _Skip("corrupt_parquet", detail=str(e)[:80]) from None
        schema = pf.schema_arrow
        idx = schema.get_field_index(text_field)
        kind = schema.field(idx).type if idx >= 0 else None
        is_view = getattr(pa.types, "is_string_view", lambda _: False)
        if kind is None or not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or is_view(kind)):
            columns = ", ".join(schema.names)[:80]
            raise _Skip("no_text_column", detail=f'no string column "{text_field}"; columns: {columns}')
        if pf.metadata.num_rows == 0:
            raise _Skip("empty")
        row = 0
        try:
            for group in range(pf.num_row_groups):
                for batch in pf.iter_batches(batch_size=1024, row_groups=[group], columns=[text_field]):
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
