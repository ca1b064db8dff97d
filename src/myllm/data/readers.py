"""The per-format readers of `sources.py`: each turns one open file into `SourceDoc`s, in bounded memory.

Text files are read line by line and cut into documents of about `max_doc` bytes at paragraph
breaks; JSONL lines and CSV rows longer than `max_line` are skipped without being read whole;
parquet is read in record batches; a .json file is read whole only up to `max_line` bytes.
A reader raises `SkipFile` to drop the rest of its file and counts a bad record in the
`SkipReport` to drop only that record (the rule is in `sources.py`'s docstring).
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
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import zstandard

from myllm.data.skips import SkipFile, SkipReport

ZST_READ_BYTES = 256  # compressed bytes per zstd call: at most ~8 MiB of output, see _ZstdReader
NESTED_DETAIL = "JSON nested deeper than the parser's recursion limit"
_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")  # a byte that was not UTF-8, decoded with surrogateescape


@dataclass(frozen=True)
class SourceDoc:
    """One document: `id` is `relative/path[:line|:row|:index|#part]`, `split` is set by a train/val/test folder."""

    id: str
    text: str
    path: str
    split: str | None


@dataclass(frozen=True)
class ReadOptions:
    """The reading options of `iter_documents`, passed down to every reader."""

    max_doc: int
    max_line: int
    text_field: str


def open_regular(path: str | os.PathLike) -> BinaryIO:
    """`path` opened for reading if it is a regular file, else SkipFile("special_file").

    The walk checked the file's kind already, but a FIFO put in its place since would block a plain
    open() forever (it waits for a writer): O_NONBLOCK makes the open return at once, and fstat on
    what was really opened decides."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise SkipFile("special_file", detail="not a regular file when opened")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def open_binary(path: str | os.PathLike, compression: str | None) -> BinaryIO:
    """A buffered binary stream with `peek` and `readline` (gzip.GzipFile has them, so does BufferedReader)."""
    raw = open_regular(path)
    if compression == "gz":
        gz = gzip.GzipFile(fileobj=raw, mode="rb")
        gz.myfileobj = raw  # GzipFile closes `myfileobj` (the file it opened itself) on close()
        return gz
    if compression == "zst":
        return io.BufferedReader(_ZstdReader(raw), 1 << 16)
    return raw


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


def read_text(f: BinaryIO, rel: str, split: str | None, max_doc: int) -> Iterator[SourceDoc]:
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
            raise SkipFile("invalid_utf8", line=line_no + 1, detail=f"{e.reason}; earlier parts kept") from None
        size += len(line)
        blank = not line.strip()
        if (size >= max_doc and blank) or size >= 4 * max_doc:
            yield emit()
            start_line = line_no + 1
    try:
        tail = decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise SkipFile("invalid_utf8", line=start_line, detail="file ends inside a character") from None
    buf.append(tail)
    if size or part == 0:
        yield emit()


def read_jsonl(f: BinaryIO, rel: str, split: str | None, report: SkipReport,
               opts: ReadOptions) -> Iterator[SourceDoc]:
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
            report.add("line_too_long", rel, f"over {max_line} bytes", line=line_no)
            any_line = True
            continue
        if not line.strip():
            continue
        any_line = True
        try:
            record = json.loads(line.decode("utf-8-sig"))
        except UnicodeDecodeError:
            report.add("invalid_utf8", rel, line=line_no)
            continue
        except ValueError as e:
            report.add("malformed_jsonl", rel, str(e)[:80], line=line_no)
            continue
        except RecursionError:  # the stdlib parser recurses once per nesting level
            report.add("nested_too_deep", rel, NESTED_DETAIL, line=line_no)
            continue
        text = record.get(opts.text_field) if isinstance(record, dict) else None
        if not isinstance(text, str):
            report.add("malformed_jsonl", rel, f'no string field "{opts.text_field}"', line=line_no)
            continue
        yield SourceDoc(f"{rel}:{line_no}", text, rel, split)
    if not any_line:
        raise SkipFile("empty")


def read_json(f: BinaryIO, rel: str, split: str | None, report: SkipReport,
              opts: ReadOptions) -> Iterator[SourceDoc]:
    """A JSON array of records, or one record (an object); ids are `rel:index` (0 for a lone object).

    A .json file is a single JSON value, which the stdlib can only parse whole (streaming it would
    need a streaming parser), so it is read only up to `max_line` bytes, like one JSONL line; a bigger
    file (decompressed size, for .json.gz/.zst) is skipped as json_too_large. JSON Lines is the
    format for big collections. A record without the string field is counted, the others kept.
    """
    data = f.read(opts.max_line + 1)
    if len(data) > opts.max_line:
        raise SkipFile("json_too_large", detail=f"over {opts.max_line} bytes; convert it to JSON Lines "
                                             "(.jsonl, one record per line), which is read as a stream")
    try:
        value = json.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError as e:
        raise SkipFile("invalid_utf8", detail=e.reason) from None
    except ValueError as e:
        raise SkipFile("malformed_json", detail=str(e)[:80]) from None
    except RecursionError:  # the stdlib parser recurses once per nesting level
        raise SkipFile("nested_too_deep", detail=NESTED_DETAIL) from None
    del data
    records = value if isinstance(value, list) else [value]
    if not records:
        raise SkipFile("empty")
    for index, record in enumerate(records):
        text = record.get(opts.text_field) if isinstance(record, dict) else None
        if not isinstance(text, str):
            report.add("malformed_json", rel, f'no string field "{opts.text_field}"', line=index)
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


def read_csv(f: BinaryIO, rel: str, split: str | None, report: SkipReport,
             opts: ReadOptions) -> Iterator[SourceDoc]:
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
                raise SkipFile("line_too_long", detail=f"header row over {opts.max_line} characters") from None
            row += 1
            report.add("line_too_long", rel, f"over {opts.max_line} characters", line=row)
            continue
        except csv.Error as e:  # the parser's state is unknown after this: skip the rest
            raise SkipFile("malformed_csv", line=row + 1, detail=str(e)[:80]) from None
        if record is None:
            break
        lines.record_done()
        if not record:  # a blank line
            continue
        if column is None:
            if any(_ESCAPED_BYTE.search(name) for name in record):
                raise SkipFile("invalid_utf8", detail="in the header row")
            if field_name not in record:
                raise SkipFile("no_text_column", detail=f'no column "{field_name}"; columns: {", ".join(record)[:80]}')
            column = record.index(field_name)
            continue
        row += 1
        if column >= len(record):
            report.add("malformed_csv", rel, f'{len(record)} fields, no "{field_name}" column', line=row)
        elif _ESCAPED_BYTE.search(record[column]):
            report.add("invalid_utf8", rel, line=row)
        else:
            yield SourceDoc(f"{rel}:{row}", record[column], rel, split)
    if row == 0:  # blank, or a header and no data rows
        raise SkipFile("empty")


def read_parquet(path: str | os.PathLike, rel: str, split: str | None, compression: str | None, report: SkipReport,
                 text_field: str) -> Iterator[SourceDoc]:
    """Column `text_field`, read in record batches (parquet needs random access, so .parquet.gz and
    .parquet.zst are first decompressed to a temporary file, streamed, never into memory)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tmp = f = None
    try:
        if compression:
            fd, tmp = tempfile.mkstemp(suffix=".parquet", prefix="myllm-")
            with os.fdopen(fd, "wb") as out, open_binary(path, compression) as src:
                shutil.copyfileobj(src, out, 1 << 20)
            path = Path(tmp)
        f = open_regular(path)
        try:
            pf = pq.ParquetFile(f)
        except (pa.ArrowException, ValueError) as e:
            raise SkipFile("corrupt_parquet", detail=str(e)[:80]) from None
        schema = pf.schema_arrow
        idx = schema.get_field_index(text_field)
        kind = schema.field(idx).type if idx >= 0 else None
        is_view = getattr(pa.types, "is_string_view", lambda _: False)
        if kind is None or not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or is_view(kind)):
            columns = ", ".join(schema.names)[:80]
            raise SkipFile("no_text_column", detail=f'no string column "{text_field}"; columns: {columns}')
        if pf.metadata.num_rows == 0:
            raise SkipFile("empty")
        row = 0
        try:
            for group in range(pf.num_row_groups):
                for batch in pf.iter_batches(batch_size=1024, row_groups=[group], columns=[text_field]):
                    for text in batch.column(0).to_pylist():
                        if text is None:
                            report.add("null_text", rel, line=row)
                        else:
                            yield SourceDoc(f"{rel}:{row}", text, rel, split)
                        row += 1
        except (pa.ArrowException, UnicodeDecodeError) as e:
            raise SkipFile("corrupt_parquet", line=row, detail=str(e)[:80]) from None
    finally:
        if f is not None:
            f.close()
        if tmp is not None:
            os.unlink(tmp)
