"""Sources, corpus preparation and token shards: formats, bad inputs, memory, splits, atomicity."""

from __future__ import annotations

import gzip
import json
import os
import tracemalloc
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import Interrupt
from myllm.config import DataConfig, QualityConfig
from myllm.data import (
    ShardReader,
    SkipReport,
    iter_corpus,
    iter_documents,
    load_tokens,
    prepare_corpus,
    write_corpus,
    write_shards,
)
from myllm.data import prepare as prepare_mod
from myllm.errors import MyLLMError
from myllm.tokenizer import train_tokenizer

NO_FILTERS = QualityConfig(enabled=False)  # these corpora are a few words per document


def docs_of(root: Path, **kw) -> tuple[list, SkipReport]:
    report = SkipReport()
    return list(iter_documents(root, report, **kw)), report


def write_parquet(path: Path, texts: list, row_group_size: int, column: str = "text") -> None:
    pq.write_table(pa.table({column: texts}), path, row_group_size=row_group_size)


def jsonl(records: list) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


# ---------------------------------------------------------------- sources


def test_every_format_plain_and_gzipped(tmp_path: Path):
    (tmp_path / "a.txt").write_text("alpha text\n")
    (tmp_path / "b.md").write_text("# beta\n\nmarkdown\n")
    (tmp_path / "c.jsonl").write_text(jsonl([{"text": "c1"}, {"text": "c2", "id": 7}]))
    write_parquet(tmp_path / "d.parquet", [f"d{i}" for i in range(10)], row_group_size=3)  # 4 row groups
    sub = tmp_path / "sub"
    sub.mkdir()
    with gzip.open(sub / "e.txt.gz", "wt") as f:
        f.write("gz text")
    with gzip.open(sub / "f.jsonl.gz", "wt") as f:
        f.write(jsonl([{"text": "f1"}]))
    with gzip.open(sub / "g.md.gz", "wt") as f:
        f.write("gz md")
    write_parquet(tmp_path / "h.parquet", ["h0", "h1"], row_group_size=1)
    with open(tmp_path / "h.parquet", "rb") as src, gzip.open(sub / "h.parquet.gz", "wb") as dst:
        dst.write(src.read())
    (tmp_path / "h.parquet").unlink()
    (tmp_path / "notes.xml").write_text("a,b\n")
    (tmp_path / ".hidden.txt").write_text("never read")

    docs, report = docs_of(tmp_path)
    assert [(d.id, d.text) for d in docs] == [
        ("a.txt", "alpha text\n"),
        ("b.md", "# beta\n\nmarkdown\n"),
        ("c.jsonl:1", "c1"),
        ("c.jsonl:2", "c2"),
        *[(f"d.parquet:{i}", f"d{i}") for i in range(10)],
        ("sub/e.txt.gz", "gz text"),
        ("sub/f.jsonl.gz:1", "f1"),
        ("sub/g.md.gz", "gz md"),
        ("sub/h.parquet.gz:0", "h0"),
        ("sub/h.parquet.gz:1", "h1"),
    ]
    assert all(d.split is None for d in docs)
    assert report.counts == {"unsupported_format": 1}
    assert report.examples[0].startswith("notes.xml: unsupported_format")
    assert pq.ParquetFile(tmp_path / "d.parquet").num_row_groups == 4


def test_split_subfolders_label_documents(tmp_path: Path):
    for split in ("train", "val", "test"):
        (tmp_path / split / "deep").mkdir(parents=True)
        (tmp_path / split / "deep" / "x.txt").write_text(f"{split} doc")
    (tmp_path / "README.md").write_text("about the data")
    docs, report = docs_of(tmp_path)
    # held-out folders first, so exact dedup keeps a shared text out of train
    assert [(d.split, d.text, d.path) for d in docs] == [
        ("test", "test doc", "test/deep/x.txt"),
        ("val", "val doc", "val/deep/x.txt"),
        ("train", "train doc", "train/deep/x.txt"),
    ]
    assert report.counts == {"outside_split_folders": 1}


def test_bad_files_are_skipped_and_counted_never_fatal(tmp_path: Path):
    (tmp_path / "good.txt").write_text("fine")
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "binary.txt").write_bytes(b"abc\x00\x01\x02" * 10)
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    (tmp_path / "blank.jsonl").write_text("\n\n")
    good_gz = gzip.compress(("x" * 5000).encode())
    (tmp_path / "trunc.txt.gz").write_bytes(good_gz[: len(good_gz) // 2])
    (tmp_path / "notgz.jsonl.gz").write_bytes(b"plain, not gzip")
    (tmp_path / "lines.jsonl").write_bytes(
        b'{"text": "one"}\n'
        b"not json\n"
        b'{"body": "no text field"}\n'
        b'["a list"]\n'
        b'{"text": 5}\n'
        b'{"text": "caf\xe9"}\n'
        b'{"text": "last"}'  # no trailing newline
    )
    write_parquet(tmp_path / "nocol.parquet", ["x"], row_group_size=1, column="body")
    write_parquet(tmp_path / "nulls.parquet", ["p0", None, "p2"], row_group_size=2)
    (tmp_path / "corrupt.parquet").write_bytes(b"PAR1 garbage garbage")
    docs, report = docs_of(tmp_path)
    assert [d.text for d in docs] == ["fine", "one", "last", "p0", "p2"]
    assert report.counts == {
        "empty": 2,
        "binary": 1,
        "invalid_utf8": 2,
        "corrupt_gzip": 2,
        "malformed_jsonl": 4,
        "no_text_column": 1,
        "null_text": 1,
        "corrupt_parquet": 1,
    }
    assert "lines.jsonl:2: malformed_jsonl" in "\n".join(report.examples)
    assert any(e.startswith("lines.jsonl:6: invalid_utf8") for e in report.examples)
    assert report.files_seen == 11
    assert report.summary().startswith("14 skipped: 4 malformed_jsonl, ")


def test_unreadable_file_and_folder(tmp_path: Path, monkeypatch):
    (tmp_path / "ok.txt").write_text("ok")
    secret = tmp_path / "secret.txt"
    secret.write_text("hidden")
    secret.chmod(0)
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "in.txt").write_text("x")
    locked.chmod(0)
    if os.geteuid() == 0:  # root ignores permissions: make the denial explicit
        real_open, real_scandir = os.open, os.scandir

        def deny_open(path, *a, **kw):  # readers open with os.open (O_NONBLOCK, see readers.open_regular)
            if str(path) == str(secret):
                raise PermissionError(13, "Permission denied", str(path))
            return real_open(path, *a, **kw)

        def deny_scandir(path):
            if str(path) == str(locked):
                raise PermissionError(13, "Permission denied", str(path))
            return real_scandir(path)

        monkeypatch.setattr(os, "open", deny_open)
        monkeypatch.setattr(os, "scandir", deny_scandir)
    try:
        docs, report = docs_of(tmp_path)
    finally:
        secret.chmod(0o644)
        locked.chmod(0o755)
    assert [d.text for d in docs] == ["ok"]
    assert report.counts == {"unreadable": 2}


def test_large_text_file_splits_at_paragraphs(tmp_path: Path):
    paragraphs = [f"Paragraph {i}. " + "word é " * (i % 50 + 10) for i in range(3000)]
    text = "\n\n".join(paragraphs) + "\n"
    (tmp_path / "big.txt").write_text(text)
    cap = 64 << 10
    docs, report = docs_of(tmp_path, max_doc_bytes=cap)
    assert report.counts == {}
    assert len(docs) > 5
    assert "".join(d.text for d in docs) == text  # nothing lost or duplicated
    assert [d.id for d in docs[:2]] == ["big.txt", "big.txt#1"]
    for d in docs[:-1]:
        assert d.text.endswith("\n\n")  # cut at a paragraph break
        assert cap <= len(d.text.encode()) < cap + 2000


def test_text_without_blank_lines_is_still_cut(tmp_path: Path):
    text = "é" * 300_000  # one 600 KB line, a 2-byte character straddling every read boundary
    (tmp_path / "line.txt").write_text(text)
    docs, _ = docs_of(tmp_path, max_doc_bytes=16 << 10)
    assert len(docs) > 1 and "".join(d.text for d in docs) == text


def test_long_jsonl_line_is_skipped_and_the_rest_read(tmp_path: Path):
    with open(tmp_path / "x.jsonl", "w") as f:
        f.write(jsonl([{"text": "before"}]))
        f.write(json.dumps({"text": "y" * 3_000_000}) + "\n")
        f.write(jsonl([{"text": "after"}]))
    docs, report = docs_of(tmp_path, max_line_bytes=1 << 20)
    assert [d.text for d in docs] == ["before", "after"]
    assert report.counts == {"line_too_long": 1}
    assert report.examples[0].startswith("x.jsonl:2: line_too_long")


def test_streaming_memory_is_bounded(tmp_path: Path):
    """~50 MB of text and a 20 MB JSONL line: peak Python memory stays a few MiB.

    The peak is ~3x the document cap (the line buffer, the joined part, its decoded text) or
    ~2x the line cap, here 1 MiB each; with the default 16 MiB line cap it is ~35 MiB.
    """
    para = ("All work and no play makes a dull model. " * 40 + "\n") * 3 + "\n"
    block = (para * 200).encode()
    with open(tmp_path / "big.txt", "wb") as f:
        while f.tell() < 50 << 20:
            f.write(block)
    with open(tmp_path / "huge.jsonl", "w") as f:
        f.write('{"text": "' + "z" * (20 << 20) + '"}\n')
        f.write(jsonl([{"text": "small"}]))
    report = SkipReport()
    tracemalloc.start()
    try:
        n_docs = n_chars = 0
        for doc in iter_documents(tmp_path, report, max_doc_bytes=1 << 20, max_line_bytes=1 << 20):
            n_docs += 1
            n_chars += len(doc.text)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert n_chars >= 50 << 20 and n_docs > 45
    assert report.counts == {"line_too_long": 1}
    assert peak < 8 << 20, f"peak {peak / 2**20:.1f} MiB"


# ---------------------------------------------------------------- corpus


def make_folder(root: Path, texts: list[str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i, t in enumerate(texts):
        (root / f"doc{i:04d}.txt").write_text(t)
    return root


def corpus_texts(corpus: Path) -> dict[str, list[str]]:
    return {s: [r["text"] for r in iter_corpus(corpus, s)] for s in ("train", "val", "test")}


def test_prepare_dedups_drops_empty_and_writes_manifest(tmp_path: Path):
    src = make_folder(tmp_path / "src", [f"document number {i}\n" for i in range(40)])
    (src / "dup_crlf.txt").write_text("document number 3\r\n")  # same after normalization
    (src / "dup_exact.txt").write_text("document number 5\n")
    (src / "blank.txt").write_text("  \n\t\n")
    (src / "bin.txt").write_bytes(b"\x00\x00")
    manifest = prepare_corpus(src, tmp_path / "corpus", DataConfig(), quality=NO_FILTERS)
    texts = corpus_texts(tmp_path / "corpus")
    everything = sum(texts.values(), [])
    assert sorted(everything) == sorted(f"document number {i}" for i in range(40))
    assert manifest["input_documents"] == 43
    assert manifest["duplicates_dropped"] == 2 and manifest["empty_dropped"] == 1
    assert manifest["skipped"] == {"binary": 1}
    assert manifest["skipped_examples"] == ["bin.txt: binary (NUL bytes in the first KiB)"]
    for split, ts in texts.items():
        assert manifest["splits"][split] == {"documents": len(ts), "bytes": sum(len(t.encode()) for t in ts)}
    assert json.loads((tmp_path / "corpus" / "manifest.json").read_text()) == manifest
    assert sorted(p.name for p in (tmp_path / "corpus").iterdir()) == [
        "manifest.json", "test.jsonl", "train.jsonl", "val.jsonl"]


def test_split_is_deterministic_order_independent_and_seeded(tmp_path: Path):
    texts = [f"text {i} " * 3 for i in range(400)]
    cfg = DataConfig(val_fraction=0.1, test_fraction=0.1)
    prepare_corpus(make_folder(tmp_path / "a", texts), tmp_path / "ca", cfg, quality=NO_FILTERS)
    prepare_corpus(make_folder(tmp_path / "b", texts[::-1]), tmp_path / "cb", cfg, quality=NO_FILTERS)  # file order
    a, b = corpus_texts(tmp_path / "ca"), corpus_texts(tmp_path / "cb")
    assert {s: set(v) for s, v in a.items()} == {s: set(v) for s, v in b.items()}
    assert 20 <= len(a["val"]) <= 60 and 20 <= len(a["test"]) <= 60
    prepare_corpus(tmp_path / "a", tmp_path / "cc", DataConfig(val_fraction=0.1, test_fraction=0.1, split_seed=1),
                   quality=NO_FILTERS)
    assert set(corpus_texts(tmp_path / "cc")["val"]) != set(a["val"])


@pytest.mark.parametrize("n", [1, 2, 3, 4, 7])
def test_small_corpora_get_train_and_held_out_docs(tmp_path: Path, n: int):
    src = make_folder(tmp_path / "src", [f"only doc {i}" for i in range(n)])
    cfg = DataConfig(val_fraction=0.0, test_fraction=0.0)  # the hash alone would put all in train
    m1 = prepare_corpus(src, tmp_path / "c1", cfg, quality=NO_FILTERS)
    assert prepare_corpus(src, tmp_path / "c2", cfg, quality=NO_FILTERS)["splits"] == m1["splits"]
    counts = {s: v["documents"] for s, v in m1["splits"].items()}
    assert sum(counts.values()) == n and counts["train"] >= 1
    if n >= 3:
        assert counts["val"] >= 1 and counts["test"] >= 1
    assert corpus_texts(tmp_path / "c1") == corpus_texts(tmp_path / "c2")


def test_small_corpus_where_hash_puts_all_in_val(tmp_path: Path):
    src = make_folder(tmp_path / "src", ["a", "b", "c", "d"])
    m = prepare_corpus(src, tmp_path / "c", DataConfig(val_fraction=0.99, test_fraction=0.0), quality=NO_FILTERS)
    counts = {s: v["documents"] for s, v in m["splits"].items()}
    assert counts["train"] >= 1 and counts["test"] >= 1 and sum(counts.values()) == 4


def test_folder_splits_are_kept_and_missing_test_is_carved_from_train(tmp_path: Path):
    src = tmp_path / "src"
    make_folder(src / "train", [f"train text {i}" for i in range(50)] + ["shared text"])
    make_folder(src / "val", ["val text", "shared text"])
    m = prepare_corpus(src, tmp_path / "c", DataConfig(test_fraction=0.1), quality=NO_FILTERS)
    texts = corpus_texts(tmp_path / "c")
    assert texts["val"] == ["val text", "shared text"]  # held-out folder kept as is, and wins the duplicate
    assert "shared text" not in texts["train"] and m["decontaminated"] == 1 and m["duplicates_dropped"] == 0
    assert 1 <= len(texts["test"]) <= 15 and all(t.startswith("train text") for t in texts["test"])
    assert m["split_by"] == "folders+hash"


def test_user_errors_are_one_clear_message(tmp_path: Path):
    with pytest.raises(MyLLMError, match="does not exist"):
        prepare_corpus(tmp_path / "nope", tmp_path / "c", DataConfig(), quality=NO_FILTERS)
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(MyLLMError, match="is a file, not a folder"):
        prepare_corpus(tmp_path / "file.txt", tmp_path / "c", DataConfig(), quality=NO_FILTERS)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.bin").write_bytes(b"\x00")
    (bad / "b.txt").write_text("")
    with pytest.raises(MyLLMError, match=r"no readable documents .*2 files seen, 2 skipped: 1 empty, 1 unsupported"):
        prepare_corpus(bad, tmp_path / "c", DataConfig(), quality=NO_FILTERS)
    only_val = tmp_path / "only_val"
    make_folder(only_val / "val", ["v1", "v2"])
    with pytest.raises(MyLLMError, match=r"train split .* is empty .*put training documents in"):
        prepare_corpus(only_val, tmp_path / "c", DataConfig(), quality=NO_FILTERS)
    assert not (tmp_path / "c").exists()


def test_interrupted_prepare_resumes_to_the_same_corpus_and_keeps_the_old_one(tmp_path: Path, monkeypatch):
    src = make_folder(tmp_path / "src", [f"doc {i}" for i in range(20)])
    clean_run = prepare_corpus(src, tmp_path / "uninterrupted" / "corpus", quality=NO_FILTERS)
    out = tmp_path / "run" / "corpus"
    monkeypatch.setattr(prepare_mod, "MIN_BATCH_BYTES", 1)  # one document per batch, one commit per document
    monkeypatch.setattr(prepare_mod, "MAX_BATCH_BYTES", 1)
    interrupt = Interrupt(monkeypatch, prepare_mod, "_process_batch", at=10)
    with pytest.raises(KeyboardInterrupt):
        prepare_corpus(src, out, quality=NO_FILTERS)
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["corpus.partial"]  # no corpus yet, progress kept
    progress = json.loads((tmp_path / "run" / "corpus.partial" / "progress.json").read_text())
    assert progress["docs_read"] == 9 and not progress["complete"]
    with open(tmp_path / "run" / "corpus.partial" / "texts.jsonl", "ab") as f:
        f.write(b'{"id": "written after the last commit, as by a kill"}\n')  # must be cut on resume
    interrupt.disarm()
    assert prepare_corpus(src, out, quality=NO_FILTERS) == {**clean_run, "source": str(src)}
    assert interrupt.calls == 11  # only the 11 documents not committed were processed again
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["corpus"]
    for split in ("train", "val", "test"):
        assert (out / f"{split}.jsonl").read_bytes() == \
            (tmp_path / "uninterrupted" / "corpus" / f"{split}.jsonl").read_bytes()
    # a failed re-prepare after a change keeps the previous corpus
    first = json.loads((out / "manifest.json").read_text())
    interrupt.calls, interrupt.at = 0, 10
    (src / "doc0000.txt").write_text("changed")
    with pytest.raises(KeyboardInterrupt):
        prepare_corpus(src, out, quality=NO_FILTERS, fingerprint="v2")
    assert json.loads((out / "manifest.json").read_text()) == first


def test_write_corpus_keeps_text_exact_and_merges_extra(tmp_path: Path):
    docs = [("train", "b1", "Once  \r\nupon"), ("val", "b2", "val book"), ("test", "b3", "test book"),
            ("train", "b4", "Once  \r\nupon")]
    m = write_corpus(docs, tmp_path / "c", "universe", {"entropy_bpb": {"val": 1.25}})
    assert [r["text"] for r in iter_corpus(tmp_path / "c", "train")] == ["Once  \r\nupon"] * 2
    assert m["source"] == "universe" and m["entropy_bpb"] == {"val": 1.25}
    assert m["splits"]["train"] == {"documents": 2, "bytes": 24} and m["input_documents"] == 4
    with pytest.raises(MyLLMError, match="train split"):
        write_corpus([("val", "x", "y")], tmp_path / "c2", "universe", {})


# ---------------------------------------------------------------- shards


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    texts = [f"Story {i}: Mira fed {i % 7} cats in Oakvale. <|bos|> é 😀\n\nThe end {i * 13}." for i in range(300)]
    corpus = root / "corpus"
    write_corpus([("val" if i % 10 == 1 else "test" if i % 10 == 2 else "train", f"d{i}", t)
                  for i, t in enumerate(texts)], corpus, "test", {})
    tok = train_tokenizer((r["text"] for r in iter_corpus(corpus, "train")), 400, root / "tok" / "tokenizer.json")
    index = write_shards(corpus, tok, root / "shards", shard_tokens=500)
    return root, corpus, tok, index


def test_shards_round_trip_to_the_corpus(sharded):
    root, corpus, tok, index = sharded
    assert index["dtype"] == "uint16" and index["bos_id"] == tok.bos_id == 1
    for split in ("train", "val", "test"):
        info = index["splits"][split]
        tokens = load_tokens(root / "shards", split)
        assert tokens.dtype == np.uint16 and len(tokens) == info["tokens"]
        assert info["tokens"] == sum(s["tokens"] for s in info["shards"])
        assert all(s["tokens"] == 500 for s in info["shards"][:-1])
        assert sorted(p.name for p in (root / "shards").glob(f"{split}-*.bin")) == [s["file"] for s in info["shards"]]
        bounds = np.flatnonzero(tokens == tok.bos_id).tolist() + [len(tokens)]
        assert bounds[0] == 0
        decoded = [tok.decode(tokens[a + 1 : b]) for a, b in zip(bounds, bounds[1:])]
        expected = [r["text"] for r in iter_corpus(corpus, split)]
        assert decoded == expected
        assert info["documents"] == len(expected)
        assert info["bytes"] == sum(len(t.encode()) for t in expected)
    assert len(index["splits"]["train"]["shards"]) > 3


def test_shard_reader_slices_across_boundaries(sharded):
    root, *_ = sharded
    reader = ShardReader(root / "shards", "train")
    full = np.concatenate([np.fromfile(root / "shards" / s["file"], dtype=np.uint16)
                           for s in reader.info["shards"]])
    assert len(reader) == len(full)
    rng = np.random.default_rng(0)
    cases = [(0, len(full)), (499, 501), (500, 1000), (0, 0), (len(full) - 3, len(full) + 10), (1490, 2010)]
    cases += [tuple(sorted(rng.integers(0, len(full), 2))) for _ in range(50)]
    for a, b in cases:
        np.testing.assert_array_equal(reader.slice(a, b), full[a:b])


def test_shards_errors(tmp_path: Path, sharded):
    root, corpus, tok, _ = sharded
    with pytest.raises(MyLLMError, match=r"run `myllm data prepare`"):
        ShardReader(tmp_path / "run" / "shards", "train")
    with pytest.raises(MyLLMError, match="manifest.json missing"):
        write_shards(tmp_path / "nocorpus", tok, tmp_path / "shards", 100)
    with pytest.raises(MyLLMError, match="split 'dev'"):
        ShardReader(root / "shards", "dev")
