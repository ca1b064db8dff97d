"""The folder-corpus pipeline end to end: dedup and decontamination with planted copies, the process
pool, resumable tokenization, the corpus report, bounded memory and the "nothing left" message."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import Interrupt
from myllm.cli import main
from myllm.config import DataConfig, DedupConfig, QualityConfig
from myllm.data import dedup as dd
from myllm.data import prepare as prepare_mod
from myllm.data import shards as shards_mod
from myllm.data.corpus import iter_corpus
from myllm.data.prepare import prepare_corpus
from myllm.data.shards import write_shards
from myllm.errors import MyLLMError
from myllm.tokenizer import train_tokenizer


def prose(rng: random.Random, n_words: int) -> str:
    """Varied English-looking text that passes the default quality filters."""
    letters = "etaoinshrdlucmfwypvbgk"
    vocab = ["".join(rng.choice(letters) for _ in range(rng.randint(3, 8))) for _ in range(3000)]
    words = [rng.choice(vocab) for _ in range(n_words)]
    sentences = [" ".join(words[i : i + 12]).capitalize() + "." for i in range(0, n_words, 12)]
    return "\n\n".join(" ".join(sentences[i : i + 4]) for i in range(0, len(sentences), 4))


def prose_folder(folder: Path, n_docs: int, n_words: int, seed: int) -> Path:
    rng = random.Random(seed)
    folder.mkdir(parents=True)
    for i in range(n_docs):
        (folder / f"d{i:02d}.txt").write_text(prose(rng, n_words))
    return folder


def change_words(text: str, rng: random.Random, n: int) -> str:
    words = text.split(" ")
    for _ in range(n):
        words[rng.randrange(len(words))] = "zzzz"
    return " ".join(words)


def jaccard(a: str, b: str, k: int = 5) -> float:
    sa = {tuple(a.lower().split()[i : i + k]) for i in range(len(a.split()) - k + 1)}
    sb = {tuple(b.lower().split()[i : i + k]) for i in range(len(b.split()) - k + 1)}
    return len(sa & sb) / len(sa | sb)


def kept_ids(corpus: Path) -> dict[str, set[str]]:
    return {s: {r["id"] for r in iter_corpus(corpus, s)} for s in ("train", "val", "test")}


def test_planted_duplicates_and_leaks_are_all_found_and_nothing_else(tmp_path: Path):
    rng = random.Random(0)
    train, val = tmp_path / "src" / "train", tmp_path / "src" / "val"
    train.mkdir(parents=True)
    val.mkdir()
    originals = [prose(rng, rng.randint(150, 400)) for _ in range(120)]
    for i, text in enumerate(originals):
        (train / f"orig{i:03d}.txt").write_text(text)
    for i in range(10):  # exact copies
        (train / f"zexact{i}.txt").write_text(originals[i])
    for i in range(10, 30):  # near copies: a few words changed
        copy = change_words(originals[i], rng, 2)
        assert jaccard(originals[i], copy) >= 0.8
        (train / f"znear{i}.txt").write_text(copy)
    leaks = []
    for i in range(30, 40):  # val documents that a train document near-copies
        text = change_words(originals[i], rng, 1)
        (val / f"leak{i}.txt").write_text(text)
        leaks.append(f"train/orig{i:03d}.txt")
    for i in range(5):
        (val / f"clean{i}.txt").write_text(prose(rng, 200))
    m = prepare_corpus(tmp_path / "src", tmp_path / "corpus", DataConfig(test_fraction=0.0))
    ids = kept_ids(tmp_path / "corpus")
    assert (m["duplicates_dropped"], m["near_duplicates_dropped"], m["decontaminated"]) == (10, 20, 10)
    assert not any("zexact" in i or "znear" in i for i in ids["train"])  # the later copy goes
    assert {f"train/orig{i:03d}.txt" for i in range(30)} <= ids["train"]  # the first stays
    assert not set(leaks) & ids["train"] and len(ids["val"]) == 15  # held-out text leaves train
    assert len(ids["train"] | ids["test"]) == 120 - 10  # every distinct document kept: no false positives
    assert m["quality_dropped"] == 0


def test_dedup_switches(tmp_path: Path):
    rng = random.Random(1)
    src = tmp_path / "src"
    src.mkdir()
    base = prose(rng, 300)
    (src / "a.txt").write_text(base)
    (src / "b.txt").write_text(base)
    (src / "c.txt").write_text(change_words(base, rng, 2))
    for i in range(6):
        (src / f"other{i}.txt").write_text(prose(rng, 200))
    data = DataConfig(val_fraction=0.0, test_fraction=0.0)
    m = prepare_corpus(src, tmp_path / "c1", data, dedup=DedupConfig(near=False, decontaminate=False))
    assert (m["duplicates_dropped"], m["near_duplicates_dropped"]) == (1, 0)
    m = prepare_corpus(src, tmp_path / "c2", data, dedup=DedupConfig(exact=False, near=False, decontaminate=False))
    assert (m["duplicates_dropped"], m["near_duplicates_dropped"]) == (0, 0)
    assert sum(v["documents"] for v in m["splits"].values()) == 9


def test_minhash_estimates_jaccard():
    rng = random.Random(2)
    hasher = dd.MinHasher(256)
    a = prose(rng, 2000)
    for n in (0, 20, 60, 200):
        b = change_words(a, rng, n)
        est = float((hasher.signature(a) == hasher.signature(b)).mean())
        assert abs(est - jaccard(a, b)) < 0.08, (n, est, jaccard(a, b))
    assert (hasher.signature(a) == hasher.signature(prose(rng, 2000))).mean() < 0.05
    assert dd.confirm_threshold(0.8, 128) == pytest.approx(0.8 - 2 * (0.16 / 128) ** 0.5)


def test_process_pool_gives_the_same_corpus(tmp_path: Path, monkeypatch):
    rng = random.Random(3)
    src = tmp_path / "src"
    src.mkdir()
    for i in range(40):
        (src / f"d{i:02d}.txt").write_text(prose(rng, 150) + f"\n\nMail me at person{i}@example.com today.")
    (src / "copy.txt").write_text((src / "d05.txt").read_text())
    one = prepare_corpus(src, tmp_path / "one", DataConfig(workers=1))
    monkeypatch.setattr(prepare_mod, "PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(prepare_mod, "MAX_BATCH_BYTES", 2000)  # many batches in flight
    two = prepare_corpus(src, tmp_path / "two", DataConfig(workers=2))
    assert one == two
    for split in ("train", "val", "test"):
        assert (tmp_path / "one" / f"{split}.jsonl").read_bytes() == (tmp_path / "two" / f"{split}.jsonl").read_bytes()
    assert one["pii_redacted"] == {"email": 41} and one["duplicates_dropped"] == 1  # redaction runs before dedup


def test_killed_tokenization_resumes_to_identical_shards(tmp_path: Path, monkeypatch):
    src = prose_folder(tmp_path / "src", 60, 120, seed=4)
    prepare_corpus(src, tmp_path / "corpus", DataConfig(val_fraction=0.1, test_fraction=0.1))
    tok = train_tokenizer((r["text"] for r in iter_corpus(tmp_path / "corpus", "train")), 600,
                          tmp_path / "tok.json")
    whole = write_shards(tmp_path / "corpus", tok, tmp_path / "whole", shard_tokens=700)
    monkeypatch.setattr(shards_mod, "BATCH_DOCS", 4)
    interrupt = Interrupt(monkeypatch, tok, "encode_batch", at=6)
    with pytest.raises(KeyboardInterrupt):
        write_shards(tmp_path / "corpus", tok, tmp_path / "shards", shard_tokens=700)
    partial = tmp_path / "shards.partial"
    state = json.loads((partial / "progress.json").read_text())
    assert state["current"]["documents"] == 20 and not (tmp_path / "shards").exists()
    last = partial / state["current"]["shards"][-1]["file"]
    with open(last, "ab") as f:
        f.write(b"\x07\x00" * 33)  # tokens written after the last commit, as a kill would leave them
    interrupt.disarm()
    assert write_shards(tmp_path / "corpus", tok, tmp_path / "shards", shard_tokens=700) == whole
    assert not partial.exists()
    for f in sorted((tmp_path / "whole").glob("*.bin")):
        assert (tmp_path / "shards" / f.name).read_bytes() == f.read_bytes()


def dirty_folder(folder: Path, n: int = 30) -> Path:
    rng = random.Random(5)
    folder.mkdir(parents=True)
    for i in range(n):
        pages = [prose(rng, 80) for _ in range(3)]
        pages[0] = pages[0].replace(". ", ". “Quoted” words. ", 1)
        text = "\n\n".join(f"THE DAILY RECORD\n\n{p}\n\nPage {k + 1}" for k, p in enumerate(pages))
        text += f"\n\nCall +44 20 7946 {1000 + i} or mail a{i}@b.org."
        (folder / f"d{i:02d}.txt").write_text(text)
    (folder / "junk.txt").write_text("\n".join("• ### !!! ..." for _ in range(30)))
    (folder / "bad.jsonl").write_text('{"text": "fine but short"}\n{not json\n')
    return folder


def test_data_prepare_writes_a_report_and_stats_prints_it(tmp_path: Path, capsys):
    data = dirty_folder(tmp_path / "docs")
    out = tmp_path / "run"
    assert main(["data", "prepare", "--out", str(out), "--data", str(data), "--set", "model.preset=nano",
                 "--set", "model.vocab_size=400"]) == 0
    assert capsys.readouterr().out.strip() == f"report: {out / 'corpus' / 'report.md'}"
    m = json.loads((out / "corpus" / "manifest.json").read_text())
    assert m["pii_redacted"] == {"email": 30, "phone": 30}
    assert m["cleaning_rules"]["page_numbers"] == 90 and m["cleaning_rules"]["headers_footers"] == 60
    assert m["quality_removed"] == {"min_words": 1, "symbol_word_ratio": 1} or sum(m["quality_removed"].values()) == 2
    assert m["skipped"] == {"malformed_jsonl": 1}
    texts = [r["text"] for s in ("train", "val", "test") for r in iter_corpus(out / "corpus", s)]
    assert all("Page " not in t and "<EMAIL>" in t and "<PHONE>" in t and "“" not in t for t in texts)
    assert sum(t.count("THE DAILY RECORD") for t in texts) <= len(texts)  # at most the title stays
    assert main(["data", "stats", "--run", str(out)]) == 0
    report = capsys.readouterr().out
    for fragment in ("| read | 32 | 32 |", "| quality | 32 | 30 |", "## PII redacted", "| email | 30 |",
                     "bad.jsonl:2: malformed_jsonl", "| train |", "bytes/token", "plots/steps.png"):
        assert fragment in report, fragment
    for name in ("steps.png", "lengths.png"):
        assert (out / "corpus" / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["data", "stats", "--run", str(tmp_path / "nothing")]) == 2
    assert "myllm data prepare --out" in capsys.readouterr().err


def test_a_corpus_emptied_by_a_step_names_the_step(tmp_path: Path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(5):
        (src / f"{i}.txt").write_text(f"short note {'abcde'[i]}")
    with pytest.raises(MyLLMError, match=r"quality filters removed all 5 documents .*5 min_words.*quality.min_words"):
        prepare_corpus(src, tmp_path / "corpus")
    assert not (tmp_path / "corpus").exists() and not (tmp_path / "corpus.partial").exists()
    assert prepare_corpus(src, tmp_path / "corpus", quality=QualityConfig(min_words=2))["quality_dropped"] == 0


# VmHWM is this process's own peak RSS; ru_maxrss would include the parent's RSS at fork time.
MEMORY_SCRIPT = """
import sys
from pathlib import Path
from myllm.config import DataConfig
from myllm.data.prepare import prepare_corpus
prepare_corpus(Path(sys.argv[1]), Path(sys.argv[2]), DataConfig(workers=1, memory_mb=int(sys.argv[3])))
print(next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM:")))
"""


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads peak memory from /proc (Linux)")
def test_memory_stays_bounded_on_a_corpus_several_times_the_cap(tmp_path: Path):
    """Peak memory of prepare on 64 MB of documents exceeds that on 1 MB by less than the 16 MB cap on
    text in flight plus the dedup state, which grows with the number of documents, not their size."""
    rng = random.Random(6)
    paragraphs = [prose(rng, 150) for _ in range(400)]

    def make(folder: Path, mb: int) -> None:
        folder.mkdir()
        size, i = 0, 0
        while size < mb << 20:
            text = "\n\n".join(rng.choice(paragraphs) + f" {i} {j}" for j in range(rng.randint(3, 12)))
            with open(folder / f"part{i // 500:04d}.jsonl", "a") as f:
                f.write(json.dumps({"text": text}) + "\n")
            size += len(text)
            i += 1

    make(tmp_path / "small", 1)
    make(tmp_path / "big", 64)

    def peak_kb(folder: Path) -> int:
        res = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, str(folder), str(tmp_path / f"{folder.name}-c"),
                              "16"], capture_output=True, text=True, check=True)
        return int(res.stdout.split()[-1])

    small, big = peak_kb(tmp_path / "small"), peak_kb(tmp_path / "big")
    docs = json.loads((tmp_path / "big-c" / "manifest.json").read_text())["input_documents"]
    dedup_kb = docs * 1.1  # per document: a 512-byte signature, read once in place and once copied, + its record
    print(f"peak RSS: 1 MB corpus {small / 1024:.0f} MiB, 64 MB corpus {big / 1024:.0f} MiB "
          f"(cap 16 MiB + dedup state {dedup_kb / 1024:.0f} MiB for {docs:,} documents)")
    assert big - small < 16 * 1024 + dedup_kb, (small, big)


def test_a_staged_file_shorter_than_its_commit_restarts_cleanly(tmp_path: Path, monkeypatch):
    """After a power loss, committed progress may point past the data that reached the disk."""
    src = prose_folder(tmp_path / "src", 12, 80, seed=7)
    whole = prepare_corpus(src, tmp_path / "whole" / "corpus")
    monkeypatch.setattr(prepare_mod, "MIN_BATCH_BYTES", 1)
    monkeypatch.setattr(prepare_mod, "MAX_BATCH_BYTES", 1)
    interrupt = Interrupt(monkeypatch, prepare_mod, "_process_batch", at=6)
    with pytest.raises(KeyboardInterrupt):
        prepare_corpus(src, tmp_path / "run" / "corpus")
    texts = tmp_path / "run" / "corpus.partial" / "texts.jsonl"
    texts.write_bytes(texts.read_bytes()[:-10])  # lost the tail of the last committed batch
    interrupt.disarm()
    assert prepare_corpus(src, tmp_path / "run" / "corpus") == whole
    assert interrupt.calls == 12  # every document processed again


def test_decontamination_holds_with_either_dedup_pass_off():
    """Held-out text leaves train even when train keeps its own copies (the switched-off pass)."""
    keys = np.array([7, 7, 7, 5, 5], dtype=np.uint64)  # a train copy of val doc 2 comes first in its group
    held_out = np.array([False, False, True, False, False])

    def drops(**switches):
        return dd.plan_drops(keys, None, held_out, bands=32, threshold=0.8, **switches).tolist()

    C, E = dd.CONTAMINATED, dd.EXACT
    assert drops(exact=False, near=False, decontaminate=True) == [C, C, 0, 0, 0]
    assert drops(exact=True, near=False, decontaminate=True) == [C, C, 0, 0, E]
    assert drops(exact=True, near=False, decontaminate=False) == [E, E, 0, 0, E]
    rng = random.Random(8)
    base = prose(rng, 300)
    texts = [change_words(base, rng, 2), change_words(base, rng, 2), base, prose(rng, 300)]
    hasher = dd.MinHasher()
    sigs = np.stack([hasher.signature(t) for t in texts])
    near_keys = np.arange(4, dtype=np.uint64)
    reason = dd.plan_drops(near_keys, sigs, np.array([False, False, True, False]), exact=True, near=False,
                           decontaminate=True, bands=32, threshold=0.8)
    assert reason.tolist() == [C, C, 0, 0]


def test_lone_surrogates_and_undecodable_file_names_do_not_stop_prepare(tmp_path: Path):
    src = prose_folder(tmp_path / "src", 4, 80, seed=9)
    rng = random.Random(90)
    (src / "escaped.jsonl").write_text(json.dumps({"text": prose(rng, 80) + " half an emoji \ud83d here"}) + "\n")
    (src / os.fsdecode(b"caf\xe9.txt")).write_text(prose(rng, 80))  # a Latin-1 file name
    m = prepare_corpus(src, tmp_path / "corpus")
    ids = set().union(*kept_ids(tmp_path / "corpus").values())
    assert "caf\\xe9.txt" in ids and "escaped.jsonl:1" in ids and m["input_documents"] == 6
    texts = [r["text"] for s in ("train", "val", "test") for r in iter_corpus(tmp_path / "corpus", s)]
    assert any("half an emoji \ufffd here" in t for t in texts)
    from myllm.rundir import source_signature

    assert len(source_signature(str(src))) == 16
