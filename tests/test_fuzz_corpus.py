"""Fuzz: `myllm data prepare` on data folders full of generated bad inputs (issue 16).

Each bad-input class below writes one instance chosen by a seeded generator (which link kind,
how long a chain, how deep a tree or a nesting, which bytes, where a compressed file is cut) and
says which report entry must name it. The contract, per seed: the real command (corpus,
tokenizer, shards) succeeds without a traceback, every good document is in the corpus, every bad
one is named in the manifest and in corpus/report.md, nothing is written outside the run
directory and the data folder is unchanged. A folder with no readable document at all fails with
exit status 2 and one line.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import random
import signal
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from conftest import TINY, write_folder_corpus
from fuzzing import SEEDS, assert_nothing_lost, assert_one_line_error, cli, rng_for, snapshot
from myllm.data.corpus import iter_corpus

# A bad-input class: (rng, data folder, a folder outside it, unique name) -> {report entry: reasons}.
Expected = dict[str, set[str]]
BadClass = Callable[[random.Random, Path, Path, str], Expected]


def link_loop(rng: random.Random, data: Path, outside: Path, name: str) -> Expected:
    kind = rng.choice(["self", "parent", "ancestor", "pair"])
    if kind == "self":
        os.symlink(f"{name}.txt", data / f"{name}.txt")
        return {f"{name}.txt": {"symlink_loop"}}
    if kind == "pair":
        os.symlink(f"{name}b", data / f"{name}a")
        os.symlink(f"{name}a", data / f"{name}b")
        return {f"{name}a": {"symlink_loop"}, f"{name}b": {"symlink_loop"}}
    levels = [f"{name}{i}" for i in range(rng.randint(1, 5))]
    folder = data.joinpath(*levels)
    folder.mkdir(parents=True)
    up = 1 if kind == "parent" else rng.randint(1, len(levels))
    os.symlink("/".join([".."] * up), folder / "up")
    return {"/".join(levels) + "/up/": {"symlink_loop"}}


def link_dangling(rng: random.Random, data: Path, outside: Path, name: str) -> Expected:
    target = rng.choice([f"missing{rng.randrange(1000)}.txt", str(outside / "gone" / "x.jsonl"), "a/b/c"])
    os.symlink(target, data / f"{name}.txt")
    return {f"{name}.txt": {"dangling_symlink"}}


def link_outside(rng: random.Random, data: Path, outside: Path, name: str) -> Expected:
    if rng.random() < 0.5:
        (outside / f"{name}.txt").write_text(f"private text {name} that must stay out")
        os.symlink(outside / f"{name}.txt", data / f"{name}.txt")
        return {f"{name}.txt": {"symlink_outside"}}
    (outside / name).mkdir()
    (outside / name / "in.txt").write_text(f"private folder text {name}")
    os.symlink(outside / name, data / name)
    return {name: {"symlink_outside"}}


def link_chain(rng: random.Random, data: Path, outside: Path, name: str) -> Expected:
    """c0 -> c1 -> ... -> an end: a loop, nothing, outside, or a folder of the data folder."""
    n = rng.randint(2, 6)
    end, reason = rng.choice([(f"{name}c0", "symlink_loop"), ("nowhere", "dangling_symlink"),
                              (str(outside), "symlink_outside"), (".", "symlink_loop")])
    for i in range(n):
        os.symlink(f"{name}c{i + 1}" if i < n - 1 else end, data / f"{name}c{i}")
    return {f"{name}c{i}" + ("/" if end == "." else ""): {reason} for i in range(n)}


def special(rng: random.Random, data: Path, outside: Path, name: str) -> Expected:
    if rng.random() < 0.5:
        os.mkfifo(data / f"{name}.jsonl")
        return {f"{name}.jsonl": {"special_file"}}
    os.mkfifo(outside / f"{name}.fifo")
    os.symlink(outside / f"{name}.fifo", data / f"{name}.txt")
    return {f"{name}.txt": {"symlink_outside"}}


def nested_json(rng: random.Random, data: Path, outside: Path, name: str) -> Expected:
    depth = rng.randint(5_000, 200_000)
    opener, closer = rng.choice([("[", "]"), ('{"a":', "}")])
    value = opener * depth + "1" + closer * depth
    if rng.random() < 0.5:
        (data / f"{name}.json").write_text(value)
        return {f"{name}.json": {"nested_too_deep"}}
    (data / f"{name}.jsonl").write_text('{"text": "deep", "meta": ' + value + "}\n")
    return {f"{name}.jsonl:1": {"nested_too_deep"}}


def binary_text(rng: random.Random, data: Path, outside: Path, name: str) -> Expected:
    raw = bytearray(rng.randbytes(rng.randint(1, 4096)))
    raw[rng.randrange(len(raw))] = 0xFF  # never valid UTF-8, so no instance is accidentally text
    ext = rng.choice([".txt", ".md", ".csv"])
    (data / f"{name}{ext}").write_bytes(bytes(raw))
    return {f"{name}{ext}": {"binary", "invalid_utf8", "malformed_csv", "no_text_column"}}


def not_utf8(rng: random.Random, data: Path, outside: Path, name: str) -> Expected:
    text = "caf\xe9 cr\xe8me br\xfbl\xe9e " * rng.randint(1, 50)
    (data / f"{name}.txt").write_bytes(text.encode(rng.choice(["latin-1", "cp1252", "utf-16"])))
    return {f"{name}.txt": {"invalid_utf8", "binary"}}


def truncated(rng: random.Random, data: Path, outside: Path, name: str) -> Expected:
    text = " ".join(f"word{rng.randrange(100)}" for _ in range(rng.randint(50, 2000))).encode()
    kind = rng.choice(["gz", "zst", "parquet"])
    if kind == "parquet":
        buf = io.BytesIO()
        pq.write_table(pa.table({"text": [text.decode()]}), buf)
        packed, file = buf.getvalue(), f"{name}.parquet"
    else:
        packed = gzip.compress(text) if kind == "gz" else zstandard.ZstdCompressor().compress(text)
        file = f"{name}.txt.{kind}"
    (data / file).write_bytes(packed[: rng.randint(1, len(packed) - 1)])
    return {file: {"corrupt_gzip", "corrupt_zst", "corrupt_parquet"}}


def empty(rng: random.Random, data: Path, outside: Path, name: str) -> Expected:
    ext = rng.choice([".txt", ".jsonl", ".json", ".csv", ".md.gz", ".parquet"])
    (data / f"{name}{ext}").write_bytes(b"")
    return {f"{name}{ext}": {"empty"}}


BAD: dict[str, BadClass] = {f.__name__: f for f in (link_loop, link_dangling, link_outside, link_chain, special,
                                                     nested_json, binary_text, not_utf8, truncated, empty)}


def deep_good_docs(rng: random.Random, data: Path) -> list[str]:
    """Good documents at the bottom of a deep folder tree (depth from the generator)."""
    levels = [f"n{i}" for i in range(rng.randint(50, 150))]
    folder = data.joinpath("deep", *levels)
    folder.mkdir(parents=True)
    words = "the river town baker smith walked under a red and blue sky".split()
    (folder / "bottom.txt").write_text(" ".join(rng.choice(words) for _ in range(60)) + " deep bottom.")
    return ["/".join(["deep", *levels, "bottom.txt"])]


def files_outside(root: Path, skip: Path) -> dict[str, str]:
    """Every entry under `root` except `skip`, without following links: kind, and content for files."""
    out = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if Path(folder, d) != skip]
        for name in files + dirs:
            p = Path(folder, name)
            if p.is_symlink():
                out[str(p)] = "-> " + os.readlink(p)
            elif p.is_file():
                out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
            else:
                out[str(p)] = "dir" if p.is_dir() else "special"
    return out


@pytest.fixture(autouse=True)
def never_hang():
    """A prepare that opens a FIFO waits forever: fail the test after 120 s instead."""
    def stuck(*_):
        raise AssertionError("data prepare blocked (a FIFO opened?)")
    old = signal.signal(signal.SIGALRM, stuck)
    signal.alarm(120)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def tiny_flags() -> list[str]:
    return sum((["--set", x] for x in TINY), [])


@pytest.mark.parametrize("out_inside", [False, True], ids=["run_beside", "run_inside"])
@pytest.mark.parametrize("seed", SEEDS)
def test_prepare_skips_and_names_every_bad_input(tmp_path: Path, capsys, seed: int, out_inside: bool):
    rng = rng_for(seed, f"bad_corpus:{out_inside}")
    data, outside = tmp_path / "docs", tmp_path / "outside"
    outside.mkdir()
    write_folder_corpus(data, n_docs=30, seed=seed)
    good = sorted(p.name for p in data.iterdir()) + deep_good_docs(rng, data)
    expected: Expected = {}
    classes = sorted(BAD) + rng.choices(sorted(BAD), k=rng.randint(2, 10))  # each class, some twice
    for k, cls in enumerate(classes):
        expected.update(BAD[cls](rng, data, outside, f"bad{k}_{cls}"))
    out = data / "run" if out_inside else tmp_path / "run"
    before, around = snapshot(data), files_outside(tmp_path, out)
    rc, err = cli(["data", "prepare", "--data", data, "--out", out, *tiny_flags()], capsys)
    assert rc == 0 and "Traceback" not in err, err
    ids = {r["id"] for s in ("train", "val", "test") for r in iter_corpus(out / "corpus", s)}
    assert set(good) <= ids, sorted(set(good) - ids)
    assert not {i for i in ids if i.startswith("bad")}, "a bad input became a document"
    manifest = json.loads((out / "corpus" / "manifest.json").read_text())
    named = {e.split(": ", 1)[0]: e.split(": ", 1)[1].split(" (")[0] for e in manifest["skipped_examples"]}
    for where, reasons in expected.items():  # a file or one of its lines ("x.txt:3": bad bytes on line 3)
        got = named.get(where) or next((r for w, r in named.items() if w.startswith(where + ":")), None)
        assert got in reasons, (where, reasons, got)
    assert (out_inside and named.get("run/") == "output_folder") or not out_inside
    report = (out / "corpus" / "report.md").read_text()
    assert all(f"`{e}`" in report for e in manifest["skipped_examples"])
    assert files_outside(tmp_path, out) == around  # nothing written (or removed) outside the run
    assert_nothing_lost(before, data)
    if out_inside:  # a second prepare finds its input unchanged: the run it wrote is not part of it
        rc, err = cli(["data", "prepare", "--data", data, "--out", out, *tiny_flags()], capsys)
        assert rc == 0 and json.loads((out / "corpus" / "manifest.json").read_text()) == manifest


@pytest.mark.parametrize("seed", SEEDS)
def test_a_folder_with_nothing_readable_fails_in_one_line(tmp_path: Path, capsys, seed: int):
    rng = rng_for(seed, "nothing_readable")
    data, outside = tmp_path / "docs", tmp_path / "outside"
    data.mkdir()
    outside.mkdir()
    for k in range(rng.randint(1, 8)):
        cls = rng.choice(sorted(BAD))
        BAD[cls](rng, data, outside, f"bad{k}_{cls}")
    out = data / "run" if rng.random() < 0.5 else tmp_path / "run"
    before = snapshot(data)
    rc, err = cli(["data", "prepare", "--data", data, "--out", out, *tiny_flags()], capsys)
    assert_one_line_error(rc, err, mentions="no readable documents")
    assert_nothing_lost(before, data)
    assert not (out / "corpus").exists()


@pytest.mark.parametrize("kind", ["loop", "dangling", "fifo", "file", "link_to_fifo"])
@pytest.mark.parametrize("seed", SEEDS)
def test_a_data_path_that_is_no_folder_fails_in_one_line(tmp_path: Path, capsys, seed: int, kind: str):
    rng = rng_for(seed, f"bad_data_path:{kind}")
    path = tmp_path / f"data{rng.randrange(1000)}"
    if kind == "loop":  # a -> a, or a chain that comes back round
        chain = [path] + [tmp_path / f"hop{i}" for i in range(rng.randint(0, 4))]
        for here, there in zip(chain, chain[1:] + chain[:1]):
            os.symlink(there.name, here)
    elif kind == "dangling":
        os.symlink(rng.choice(["nothing_here", str(tmp_path / "gone" / "docs")]), path)
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "file":
        path.write_bytes(rng.randbytes(rng.randint(0, 64)))
    else:
        os.mkfifo(tmp_path / "pipe")
        os.symlink(tmp_path / "pipe", path)
    before = snapshot(tmp_path)
    rc, err = cli(["data", "prepare", "--data", path, "--out", tmp_path / "run", *tiny_flags()], capsys)
    assert_one_line_error(rc, err, mentions="data folder")
    assert_nothing_lost(before, tmp_path)
