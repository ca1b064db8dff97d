"""Disk full (issue 16): one line naming the path, nothing lost, no staging left behind, and the same
command re-run after space is freed finishes as if nothing had happened.

The disk is made full where the bytes are written (`OSError(ENOSPC)` from the writer, as the kernel
raises it), and the free-space check is tried with a filesystem that reports almost nothing free.
"""

from __future__ import annotations

import errno
import shutil
from collections import namedtuple

from conftest import TINY, write_folder_corpus
from fuzzing import assert_nothing_lost, assert_one_line_error, cli, snapshot
from myllm import io as io_mod
from myllm.data import shards as shards_mod
from myllm.train import checkpoint as ckpt_mod
from myllm.train.checkpoint import checkpoint_problem, list_checkpoints


def full_disk_at(monkeypatch, owner, name: str, at: int) -> None:
    """`owner.name` raises ENOSPC from its `at`-th call on, as a writer on a full disk does."""
    real, calls = getattr(owner, name), [0]

    def writer(*args, **kwargs):
        calls[0] += 1
        if calls[0] >= at:
            raise OSError(errno.ENOSPC, "No space left on device", "/the/file/being/written")
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, writer)


def pretrain(run, capsys, *extra):
    return cli(["pretrain", "--run", run, "--no-progress", "--max-steps", "10", *extra], capsys)


def test_a_full_disk_during_a_checkpoint_write_keeps_the_earlier_ones_and_resumes(tiny_run, monkeypatch, capsys):
    full_disk_at(monkeypatch, ckpt_mod, "save_file", at=2)  # the second checkpoint (step 10) finds the disk full
    rc, err = pretrain(tiny_run, capsys)
    assert_one_line_error(rc, err, mentions="disk full while writing /the/file/being/written")
    ckpts = tiny_run / "checkpoints" / "pretrain"
    assert [p.name for p in list_checkpoints(ckpts)] == ["step-000005"]
    assert checkpoint_problem(ckpts / "step-000005") is None
    assert not [p for p in ckpts.iterdir() if p.name.startswith(".")]  # no half-written checkpoint left
    before = snapshot(ckpts)
    monkeypatch.undo()  # space freed
    rc, err = pretrain(tiny_run, capsys, "--resume")
    assert rc == 0, err
    assert [p.name for p in list_checkpoints(ckpts)] == ["step-000005", "step-000010"]
    assert_nothing_lost(before, ckpts)


def test_too_little_free_space_is_refused_before_a_checkpoint_is_written(tiny_run, monkeypatch, capsys):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(io_mod.shutil, "disk_usage", lambda _: usage(10**9, 10**9 - 1000, 1000))
    rc, err = pretrain(tiny_run, capsys)
    assert_one_line_error(rc, err, mentions="not enough disk space for checkpoint step 5")
    assert "1,000 free" in err and "needs" in err
    ckpts = tiny_run / "checkpoints" / "pretrain"
    assert not ckpts.exists() or not any(ckpts.iterdir())


def prepare(docs, out, capsys):
    return cli(["data", "prepare", "--data", docs, "--out", out, *[a for s in TINY for a in ("--set", s)]], capsys)


def test_a_full_disk_while_writing_shards_resumes_to_the_same_shards(tmp_path, monkeypatch, capsys):
    docs = write_folder_corpus(tmp_path / "docs")
    rc, err = prepare(docs, tmp_path / "clean", capsys)
    assert rc == 0, err
    full_disk_at(monkeypatch, shards_mod._ShardWriter, "write", at=3)
    rc, err = prepare(docs, tmp_path / "run", capsys)
    assert_one_line_error(rc, err, mentions="disk full")
    assert not (tmp_path / "run" / "shards").exists()  # shards appear whole or not at all
    monkeypatch.undo()
    rc, err = prepare(docs, tmp_path / "run", capsys)
    assert rc == 0, err
    assert snapshot(tmp_path / "run" / "shards") == snapshot(tmp_path / "clean" / "shards")
    assert snapshot(docs) == snapshot(write_folder_corpus(tmp_path / "docs-again"))  # the source is untouched
    shutil.rmtree(tmp_path / "docs-again")
