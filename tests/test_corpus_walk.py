"""Walking a data folder (issue 16): links, odd files, deep trees, deep JSON, the output folder inside
the data folder, and a report that names every skipped file."""

from __future__ import annotations

import json
import os
import signal
import socket
from pathlib import Path

import pytest

from myllm.config import DataConfig, QualityConfig
from myllm.data.prepare import prepare_corpus
from myllm.data.readers import open_regular
from myllm.data.skips import MAX_LINES_PER_FILE, SkipFile
from myllm.data.sources import SkipReport, iter_documents, source_signature

NO_FILTERS = QualityConfig(enabled=False)


@pytest.fixture(autouse=True)
def never_hang():
    """A walk that opens a FIFO waits forever: fail the test after 20 s instead."""
    def stuck(*_):
        raise AssertionError("the walk blocked (a FIFO opened?)")
    old = signal.signal(signal.SIGALRM, stuck)
    signal.alarm(20)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def docs_of(root: Path, **kw) -> tuple[dict[str, str], SkipReport]:
    report = SkipReport()
    return {d.id: d.text for d in iter_documents(root, report, **kw)}, report


def reasons(report: SkipReport) -> dict[str, str]:
    """{named path: reason} from the report's entries."""
    out = {}
    for e in report.examples:
        where, rest = e.split(": ", 1)
        out[where] = rest.split(" (")[0]
    return out


def test_links_of_every_kind_are_named_and_never_followed_in_loops(tmp_path: Path):
    data, outside = tmp_path / "data", tmp_path / "outside"
    (data / "sub").mkdir(parents=True)
    outside.mkdir()
    (data / "a.txt").write_text("alpha")
    (data / "sub" / "b.txt").write_text("beta")
    (outside / "o.txt").write_text("outside text")
    os.mkfifo(outside / "pipe")
    os.mkfifo(data / "pipe.txt")  # a FIFO in the folder itself
    os.symlink("self.txt", data / "self.txt")  # a -> a
    os.symlink("..", data / "sub" / "up")  # a folder link to its parent
    os.symlink(".", data / "here")
    os.symlink("nowhere.txt", data / "dangling.txt")
    os.symlink(outside / "o.txt", data / "out.txt")
    os.symlink(outside, data / "outdir")
    os.symlink(outside / "pipe", data / "outpipe.txt")
    os.symlink("/dev/zero", data / "zero.txt")
    os.symlink("a.txt", data / "link_a.txt")  # a link to a file inside: read once, as a.txt
    os.symlink("sub", data / "sublink")  # a link to a folder inside: read once, as sub/
    os.symlink("chain2", data / "chain1.txt")
    os.symlink("chain3", data / "chain2")
    os.symlink("sub/b.txt", data / "chain3")
    docs, report = docs_of(data)
    assert docs == {"a.txt": "alpha", "sub/b.txt": "beta"}
    assert reasons(report) == {
        "pipe.txt": "special_file", "chain1.txt": "same_file", "chain2": "same_file", "chain3": "same_file",
        "dangling.txt": "dangling_symlink", "here/": "symlink_loop", "link_a.txt": "same_file",
        "out.txt": "symlink_outside", "outdir": "symlink_outside", "outpipe.txt": "symlink_outside",
        "self.txt": "symlink_loop", "sublink/": "same_file", "zero.txt": "symlink_outside", "sub/up/": "symlink_loop"}
    assert "follow_symlinks" in next(e for e in report.examples if e.startswith("out.txt:"))


def test_follow_symlinks_reads_outside_links_once_and_skips_special_targets(tmp_path: Path):
    data, outside = tmp_path / "data", tmp_path / "outside"
    data.mkdir()
    (outside / "deeper").mkdir(parents=True)
    (data / "a.txt").write_text("alpha")
    (outside / "o.txt").write_text("outside text")
    os.symlink(outside, outside / "deeper" / "back")  # a loop outside the folder
    os.symlink(outside, data / "outdir")
    os.symlink(outside / "o.txt", data / "o_again.txt")
    os.symlink("/dev/null", data / "null.txt")
    os.mkfifo(outside / "pipe.jsonl")
    docs, report = docs_of(data, follow_symlinks=True)
    assert docs == {"a.txt": "alpha", "o_again.txt": "outside text"}  # links in name order: the first one reads it
    assert reasons(report) == {"null.txt": "special_file", "outdir/o.txt": "same_file",
                               "outdir/deeper/back/": "symlink_loop", "outdir/pipe.jsonl": "special_file"}


def test_a_socket_is_skipped_without_being_opened(tmp_path: Path, monkeypatch):
    (tmp_path / "a.txt").write_text("alpha")
    monkeypatch.chdir(tmp_path)  # a socket path must be short: bind it by a relative name
    with socket.socket(socket.AF_UNIX) as s:
        s.bind("sock.txt")
        docs, report = docs_of(tmp_path)
    assert docs == {"a.txt": "alpha"} and reasons(report) == {"sock.txt": "special_file"}


def test_a_fifo_swapped_in_after_the_walk_is_refused_at_once(tmp_path: Path):
    os.mkfifo(tmp_path / "late.txt")
    with pytest.raises(SkipFile) as e:
        open_regular(tmp_path / "late.txt")
    assert e.value.reason == "special_file"


def test_a_link_from_train_into_test_keeps_the_text_in_test_only(tmp_path: Path):
    (tmp_path / "train").mkdir()
    (tmp_path / "test").mkdir()
    (tmp_path / "train" / "t.txt").write_text("training text")
    (tmp_path / "test" / "held.txt").write_text("held out text")
    os.symlink("../test/held.txt", tmp_path / "train" / "leak.txt")
    report = SkipReport()
    docs = {d.id: d.split for d in iter_documents(tmp_path, report)}
    assert docs == {"test/held.txt": "test", "train/t.txt": "train"}
    assert reasons(report) == {"train/leak.txt": "same_file"}


def test_split_folders_that_are_links_are_checked_like_links(tmp_path: Path):
    data, outside = tmp_path / "data", tmp_path / "outside"
    (data / "test").mkdir(parents=True)
    outside.mkdir()
    (data / "test" / "held.txt").write_text("held out text")
    (outside / "private.txt").write_text("private text")
    os.symlink("test", data / "train")  # would read the held-out text again, as training text
    os.symlink(outside, data / "val")
    report = SkipReport()
    docs = {d.id: d.split for d in iter_documents(data, report)}
    assert docs == {"test/held.txt": "test"}
    assert reasons(report) == {"train/": "same_file", "val": "symlink_outside"}


def make_deep(root: Path, depth: int) -> None:
    """`depth` nested folders `d/d/d/...`, each with a text file, made relative to an open folder (a
    path that long cannot be opened whole)."""
    fd = os.open(root, os.O_RDONLY)
    for i in range(depth):
        with open(os.open(f"f{i}.txt", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd), "w") as f:
            f.write(f"level {i}")
        os.mkdir("d", dir_fd=fd)
        new = os.open("d", os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = new
    os.close(fd)


def remove_deep(root: Path) -> None:
    """Remove what `make_deep` made, without recursion (shutil.rmtree recurses per level)."""
    fds = [os.open(root, os.O_RDONLY)]
    while True:  # down to the deepest folder
        try:
            fds.append(os.open("d", os.O_RDONLY, dir_fd=fds[-1]))
        except FileNotFoundError:
            break
    while fds:
        fd = fds.pop()
        for name in os.listdir(fd):
            if name != "d":
                os.unlink(name, dir_fd=fd)
        if fds:
            os.rmdir("d", dir_fd=fds[-1])
        os.close(fd)


def test_a_tree_thousands_of_levels_deep_is_walked_without_recursion(tmp_path: Path):
    root = tmp_path / "deep"
    root.mkdir()
    depth = 3000  # 2 bytes a level: past PATH_MAX (4096) long before the bottom
    make_deep(root, depth)
    try:
        docs, report = docs_of(root)
        signature = source_signature(root)
    finally:
        remove_deep(root)
    assert 1000 < len(docs) < depth  # every level the system can open, in order
    assert sorted(docs.values()) == sorted(f"level {i}" for i in range(len(docs)))
    # named where the path grows past the limit: the first folder it cannot open and the few files
    # above it whose names are longer than "d"
    assert set(reasons(report).values()) == {"path_too_long"} and 1 <= len(report.examples) <= 10
    assert len(signature) == 16


def test_deeply_nested_json_is_skipped_and_named(tmp_path: Path):
    deep = "[" * 100_000 + "]" * 100_000
    (tmp_path / "a.jsonl").write_text(json.dumps({"text": "kept"}) + "\n" + '{"text": "x", "m": ' + deep + "}\n")
    (tmp_path / "b.json").write_text(deep)
    docs, report = docs_of(tmp_path)
    assert docs == {"a.jsonl:1": "kept"}
    assert reasons(report) == {"a.jsonl:2": "nested_too_deep", "b.json": "nested_too_deep"}


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_permission_denied_file_and_folder(tmp_path: Path):
    (tmp_path / "ok.txt").write_text("ok")
    (tmp_path / "secret.txt").write_text("hidden")
    (tmp_path / "locked").mkdir()
    (tmp_path / "locked" / "in.txt").write_text("x")
    os.symlink("locked/in.txt", tmp_path / "via_link.txt")
    (tmp_path / "secret.txt").chmod(0)
    (tmp_path / "locked").chmod(0)
    try:
        docs, report = docs_of(tmp_path)
    finally:
        (tmp_path / "locked").chmod(0o755)
    assert docs == {"ok.txt": "ok"}
    assert reasons(report) == {"locked/": "unreadable", "secret.txt": "unreadable", "via_link.txt": "unreadable"}


def test_a_file_that_vanishes_mid_walk_is_named(tmp_path: Path):
    for name in ("a.txt", "b.txt", "c.txt"):
        (tmp_path / name).write_text(name)
    report = SkipReport()
    docs = []
    for doc in iter_documents(tmp_path, report):
        docs.append(doc.id)
        if doc.id == "a.txt":
            (tmp_path / "b.txt").unlink()  # listed already, gone before it is read
    assert docs == ["a.txt", "c.txt"] and reasons(report) == {"b.txt": "vanished"}


def test_every_skipped_file_is_named_and_records_past_the_cap_are_counted(tmp_path: Path):
    for i in range(30):
        (tmp_path / f"bin{i:02d}.txt").write_bytes(b"\x00\xff" * 8)
    (tmp_path / "good.txt").write_text("good")
    (tmp_path / "lines.jsonl").write_text("".join("not json\n" for _ in range(MAX_LINES_PER_FILE + 5)))
    docs, report = docs_of(tmp_path)
    assert docs == {"good.txt": "good"}
    named = report.examples
    assert [e.split(":")[0] for e in named[:30]] == [f"bin{i:02d}.txt" for i in range(30)]
    assert [e for e in named if e.startswith("lines.jsonl:")][:-1] == [
        f"lines.jsonl:{i}: malformed_jsonl (Expecting value: line 1 column 1 (char 0))"
        for i in range(1, MAX_LINES_PER_FILE + 1)]
    assert named[-1] == (f"lines.jsonl: 5 more records skipped as malformed_jsonl (first {MAX_LINES_PER_FILE} "
                         "named above)")
    assert report.counts == {"binary": 30, "malformed_jsonl": MAX_LINES_PER_FILE + 5}


def test_the_output_folder_inside_the_data_folder_is_not_read(tmp_path: Path, capsys):
    data = tmp_path / "docs"
    data.mkdir()
    for i in range(6):
        (data / f"doc{i}.txt").write_text(f"document number {i} with a few words in it")
    (data / "run" / "corpus").mkdir(parents=True)  # a previous run's output, inside the data folder
    (data / "run" / "report.md").write_text("# a report that must not become training text")
    os.symlink("run", data / "run_link")
    os.symlink("run/report.md", data / "report_link.md")  # a link to a file of the run
    manifest = prepare_corpus(data, data / "run" / "corpus", DataConfig(), quality=NO_FILTERS)
    assert manifest["input_documents"] == 6
    assert manifest["skipped"] == {"output_folder": 3}
    assert capsys.readouterr().out.count("inside the data folder") == 1
    assert source_signature(data, exclude=(data / "run",)) == source_signature(data, exclude=(data / "run",))
    before = source_signature(data, exclude=(data / "run",))
    (data / "run" / "more.txt").write_text("the run wrote more")
    assert source_signature(data, exclude=(data / "run",)) == before


def test_the_output_folder_is_skipped_among_split_folders_too(tmp_path: Path):
    data = tmp_path / "docs"
    for split in ("train", "test"):
        (data / split).mkdir(parents=True)
        for i in range(3):
            (data / split / f"{i}.txt").write_text(f"{split} document {i} with enough words")
    (data / "run").mkdir()
    manifest = prepare_corpus(data, data / "run" / "corpus", DataConfig(), quality=NO_FILTERS)
    assert manifest["skipped"] == {"output_folder": 1} and manifest["input_documents"] == 6


def test_a_run_inside_the_data_folder_does_not_make_its_own_corpus_stale(tmp_path: Path):
    from conftest import TINY, write_folder_corpus
    from myllm.run import prepare_run_dir, stage_corpus
    from myllm.rundir import fingerprints

    data = write_folder_corpus(tmp_path / "docs", n_docs=12)
    run = data / "run"
    cfg = prepare_run_dir(run, "default", None, TINY, str(data), None)
    before = fingerprints(run, cfg)["corpus"]
    stage_corpus(run, cfg)
    (run / "metrics.jsonl").write_text("{}\n")
    assert fingerprints(run, cfg)["corpus"] == before
    (data / "new.txt").write_text("a new document changes it")
    assert fingerprints(run, cfg)["corpus"] != before
