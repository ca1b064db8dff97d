"""Source formats: .txt/.md/.jsonl/.json/.csv/.parquet, plain, .gz and .zst; text_field; bad records."""

from __future__ import annotations

import csv
import gzip
import io
import json
import tracemalloc
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from myllm.data.sources import SkipReport, _format, iter_documents


def docs_of(root: Path, **kw) -> tuple[list[tuple[str, str]], SkipReport]:
    report = SkipReport()
    return [(d.id, d.text) for d in iter_documents(root, report, **kw)], report


def compress(data: bytes, compression: str) -> bytes:
    if compression == "gz":
        return gzip.compress(data)
    if compression == "zst":
        return zstandard.ZstdCompressor().compress(data)
    return data


def write(path: Path, data: bytes | str, compression: str = "") -> str:
    """Write `data` to `path` plus the compression suffix; returns the file name."""
    raw = data.encode() if isinstance(data, str) else data
    name = path.name + (f".{compression}" if compression else "")
    (path.parent / name).write_bytes(compress(raw, compression))
    return name


def parquet_bytes(columns: dict[str, list]) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.table(columns), buf, row_group_size=2)
    return buf.getvalue()


def jsonl(records: list) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


# ---------------------------------------------------------------- every format, every compression


@pytest.mark.parametrize("compression", ["", "gz", "zst"])
def test_every_format_round_trips(tmp_path: Path, compression: str):
    a = write(tmp_path / "a.txt", "alpha\n\nbeta\n", compression)
    b = write(tmp_path / "b.md", "# md\n", compression)
    c = write(tmp_path / "c.jsonl", jsonl([{"text": "c1"}, {"text": "c2", "id": 2}]), compression)
    d = write(tmp_path / "d.json", json.dumps([{"text": "d0"}, {"text": "d1"}]), compression)
    e = write(tmp_path / "e.csv", "id,text\n1,e1\n2,e2\n", compression)
    f = write(tmp_path / "f.parquet", parquet_bytes({"text": ["f0", "f1", "f2"]}), compression)
    docs, report = docs_of(tmp_path)
    assert docs == [
        (a, "alpha\n\nbeta\n"),
        (b, "# md\n"),
        (f"{c}:1", "c1"),
        (f"{c}:2", "c2"),
        (f"{d}:0", "d0"),
        (f"{d}:1", "d1"),
        (f"{e}:1", "e1"),
        (f"{e}:2", "e2"),
        (f"{f}:0", "f0"),
        (f"{f}:1", "f1"),
        (f"{f}:2", "f2"),
    ]
    assert report.counts == {} and report.files_seen == 6


def test_format_and_compression_from_the_name():
    assert _format("x.JSONL.ZST") == (".jsonl", "zst")
    assert _format("x.csv.gz") == (".csv", "gz")
    assert _format("x.json") == (".json", None)
    assert _format("x.xml.zst") == (None, "zst")
    assert _format("x.zst") == (None, "zst")
    assert _format("x.tar") == (None, None)


def test_unsupported_format_names_what_is_read(tmp_path: Path):
    (tmp_path / "notes.xml").write_text("<a/>")
    docs, report = docs_of(tmp_path)
    assert docs == [] and report.counts == {"unsupported_format": 1}
    assert report.examples == [
        "notes.xml: unsupported_format (read: .txt .md .jsonl .json .csv .parquet, optionally .gz or .zst)"
    ]


# ---------------------------------------------------------------- text_field


def test_custom_text_field_in_every_record_format(tmp_path: Path):
    (tmp_path / "a.jsonl").write_text(jsonl([{"body": "a1", "text": "no"}, {"text": "only text"}]))
    (tmp_path / "b.json").write_text(json.dumps([{"body": "b0"}, {"text": "only text"}]))
    (tmp_path / "c.csv").write_text("text,body\nno,c1\n")
    (tmp_path / "d.parquet").write_bytes(parquet_bytes({"text": ["no", "no"], "body": ["d0", "d1"]}))
    (tmp_path / "e.txt").write_text("text files have no fields")
    docs, report = docs_of(tmp_path, text_field="body")
    assert docs == [
        ("a.jsonl:1", "a1"),
        ("b.json:0", "b0"),
        ("c.csv:1", "c1"),
        ("d.parquet:0", "d0"),
        ("d.parquet:1", "d1"),
        ("e.txt", "text files have no fields"),
    ]
    assert report.counts == {"malformed_jsonl": 1, "malformed_json": 1}
    assert report.examples == [
        'a.jsonl:2: malformed_jsonl (no string field "body")',
        'b.json:1: malformed_json (no string field "body")',
    ]


def test_missing_text_column_skips_the_file(tmp_path: Path):
    (tmp_path / "a.csv").write_text("title,body\nx,y\n")
    (tmp_path / "b.json").write_text(json.dumps({"body": "no text"}))
    (tmp_path / "c.parquet").write_bytes(parquet_bytes({"title": ["x"], "body": ["y"]}))
    (tmp_path / "d.parquet").write_bytes(parquet_bytes({"text": [1, 2]}))  # not a string column
    docs, report = docs_of(tmp_path)
    assert docs == []
    assert report.counts == {"no_text_column": 3, "malformed_json": 1}
    assert report.examples == [
        'a.csv: no_text_column (no column "text"; columns: title, body)',
        'b.json:0: malformed_json (no string field "text")',
        'c.parquet: no_text_column (no string column "text"; columns: title, body)',
        'd.parquet: no_text_column (no string column "text"; columns: text)',
    ]


# ---------------------------------------------------------------- .json


def test_json_array_object_and_malformed_records(tmp_path: Path):
    (tmp_path / "a.json").write_text(
        json.dumps([{"text": "first"}, {"text": 5}, "a string", {"body": "x"}, {"text": ""}, {"text": "last"}])
    )
    (tmp_path / "b.json").write_text('\ufeff{"text": "one object", "meta": {"k": 1}}')  # with a BOM
    (tmp_path / "c.json").write_text('[{"text": "cut off"')
    (tmp_path / "d.json").write_text("[]")
    (tmp_path / "e.json").write_bytes(b'[{"text": "caf\xe9"}]')
    docs, report = docs_of(tmp_path)
    assert docs == [("a.json:0", "first"), ("a.json:4", ""), ("a.json:5", "last"), ("b.json:0", "one object")]
    assert report.counts == {"malformed_json": 4, "empty": 1, "invalid_utf8": 1}
    assert report.examples[:3] == [f'a.json:{i}: malformed_json (no string field "text")' for i in (1, 2, 3)]
    assert report.examples[3].startswith("c.json: malformed_json (Expecting")
    assert report.examples[4:] == ["d.json: empty", "e.json: invalid_utf8 (invalid continuation byte)"]


@pytest.mark.parametrize("compression", ["", "gz", "zst"])
def test_json_larger_than_the_line_cap_is_skipped(tmp_path: Path, compression: str):
    name = write(tmp_path / "big.json", json.dumps([{"text": "x" * 3000}]), compression)
    write(tmp_path / "small.json", json.dumps([{"text": "y" * 900}]), compression)
    docs, report = docs_of(tmp_path, max_line_bytes=1000)
    assert [doc_id for doc_id, _ in docs] == [f"small.json{'.' + compression if compression else ''}:0"]
    assert report.counts == {"json_too_large": 1}
    assert report.examples == [
        f"{name}: json_too_large (over 1000 bytes; convert it to JSON Lines (.jsonl, one record per line), "
        "which is read as a stream)"
    ]


# ---------------------------------------------------------------- .csv


def test_csv_quoted_fields_with_commas_newlines_and_quotes(tmp_path: Path):
    rows = [
        ["id", "text", "note"],
        ["1", "plain", ""],
        ["2", "a, b, and c", "commas"],
        ["3", "line one\nline two\n\npara", "newlines"],
        ["4", 'she said "hi"', "quotes"],
        ["5", "", "empty text"],
        ["6", "crlf\r\ninside", "a CRLF in a field"],
    ]
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\r\n").writerows(rows)
    data = "\ufeff" + buf.getvalue().replace("5,,empty text\r\n", "5,,empty text\r\n\r\n")  # BOM, a blank line
    (tmp_path / "x.csv").write_text(data, newline="")
    docs, report = docs_of(tmp_path)
    assert docs == [(f"x.csv:{i}", row[1]) for i, row in enumerate(rows[1:], start=1)]
    assert report.counts == {}


def test_csv_invalid_utf8_skips_only_that_row(tmp_path: Path):
    (tmp_path / "x.csv").write_bytes(
        b"text,other\n"
        b"good one,x\n"
        b"caf\xe9,x\n"  # latin-1 in the text column: this row is skipped
        b"good two,caf\xe9\n"  # in another column: the text is fine, the row is kept
        b'"multi\nline \xff",x\n'
        b"good three,x\n"
    )
    (tmp_path / "y.csv").write_bytes(b"t\xe9xt\nrow\n")  # bad header
    docs, report = docs_of(tmp_path)
    assert docs == [("x.csv:1", "good one"), ("x.csv:3", "good two"), ("x.csv:5", "good three")]
    assert report.counts == {"invalid_utf8": 3}
    assert report.examples == [
        "x.csv:2: invalid_utf8",
        "x.csv:4: invalid_utf8",
        "y.csv: invalid_utf8 (in the header row)",
    ]


def test_csv_rows_over_the_cap_are_skipped_and_reading_goes_on(tmp_path: Path):
    long_line = "y" * 1500
    (tmp_path / "x.csv").write_text(
        "text,n\n"
        "before,1\n"
        f"{long_line},2\n"  # one long physical line
        '"' + "z\n" * 600 + '",3\n'  # a quoted field of short lines, 1200 characters in all
        '"ends, here",4\n'
        f'"{long_line}\nstill ""quoted"", inside",5\n'  # the line cap is hit inside quotes
        "after,6\n"
    )
    (tmp_path / "y.csv").write_text(f"{long_line}\nx\n")  # the header itself is too long
    docs, report = docs_of(tmp_path, max_line_bytes=1000)
    assert docs == [("x.csv:1", "before"), ("x.csv:4", "ends, here"), ("x.csv:6", "after")]
    assert report.counts == {"line_too_long": 4}
    assert report.examples == [
        "x.csv:2: line_too_long (over 1000 characters)",
        "x.csv:3: line_too_long (over 1000 characters)",
        "x.csv:5: line_too_long (over 1000 characters)",
        "y.csv: line_too_long (header row over 1000 characters)",
    ]


def test_csv_fields_beyond_the_csv_module_default_limit_are_read(tmp_path: Path):
    limit = csv.field_size_limit()
    text = "w" * (limit + 10_000)  # over csv's 128 KiB default, under max_line_bytes
    (tmp_path / "x.csv").write_text(f'text\n"{text}"\nshort\n')
    docs, report = docs_of(tmp_path)
    assert docs == [("x.csv:1", text), ("x.csv:2", "short")]
    assert report.counts == {}
    assert csv.field_size_limit() == limit  # the process-wide limit is put back


def test_csv_without_data_rows_is_empty(tmp_path: Path):
    (tmp_path / "a.csv").write_text("text,other\n")
    (tmp_path / "b.csv").write_text("\n\n")
    (tmp_path / "c.csv").write_text("text\n")
    docs, report = docs_of(tmp_path)
    assert docs == [] and report.counts == {"empty": 3}


def test_csv_row_without_the_text_column_is_counted(tmp_path: Path):
    (tmp_path / "x.csv").write_text("id,text\n1,one\n2\n3,three\n")
    docs, report = docs_of(tmp_path)
    assert docs == [("x.csv:1", "one"), ("x.csv:3", "three")]
    assert report.examples == ['x.csv:2: malformed_csv (1 fields, no "text" column)']


# ---------------------------------------------------------------- .zst


def test_truncated_or_corrupt_zst_keeps_earlier_documents(tmp_path: Path):
    zc = zstandard.ZstdCompressor()
    first = zc.compress(jsonl([{"text": f"doc {i}"} for i in range(1, 4)]).encode())
    second = zc.compress(jsonl([{"text": f"doc {i}"} for i in range(4, 7)]).encode())
    (tmp_path / "a.jsonl.zst").write_bytes(first + second)  # two frames: both are read
    (tmp_path / "b.jsonl.zst").write_bytes(first + second[: len(second) // 2])  # cut inside frame 2
    (tmp_path / "c.jsonl.zst").write_bytes(first + second[:3])  # cut inside frame 2's magic number
    whole = zc.compress(("x" * 5000).encode())
    (tmp_path / "d.txt.zst").write_bytes(whole[: len(whole) - 4])  # the one document is cut
    (tmp_path / "e.csv.zst").write_bytes(b"plain, not zstd")
    parquet = zc.compress(parquet_bytes({"text": ["p0"]}))
    (tmp_path / "f.parquet.zst").write_bytes(parquet[:-5])
    docs, report = docs_of(tmp_path)
    kept = [(f"{{}}.jsonl.zst:{i}", f"doc {i}") for i in range(1, 7)]
    assert docs == [(n.format("a"), t) for n, t in kept] + [(n.format(f), t) for f in "bc" for n, t in kept[:3]]
    assert report.counts == {"corrupt_zst": 5}
    assert [e.split(" (")[0] for e in report.examples] == [
        f"{name}: corrupt_zst" for name in ("b.jsonl.zst", "c.jsonl.zst", "d.txt.zst", "e.csv.zst", "f.parquet.zst")
    ]
    assert report.examples[0] == "b.jsonl.zst: corrupt_zst (the file ends inside a zstd frame (truncated))"


def test_zst_memory_is_bounded_for_highly_compressible_input(tmp_path: Path):
    """30 MiB that compress to a few KiB: decompression is fed in small steps, never all at once."""
    para = "z" * 1000 + "\n\n"
    (tmp_path / "x.txt.zst").write_bytes(zstandard.ZstdCompressor().compress((para * 30_000).encode()))
    report = SkipReport()
    tracemalloc.start()
    try:
        n_chars = sum(len(d.text) for d in iter_documents(tmp_path, report, max_doc_bytes=1 << 20))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert n_chars == len(para) * 30_000 and report.counts == {}
    assert peak < 12 << 20, f"peak {peak / 2**20:.1f} MiB"
