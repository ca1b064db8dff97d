"""Disk full (issue 16): one line naming the path, nothing lost, no staging left behind, and the same
command re-run after space is freed finishes as if nothing had happened.

The disk is made full where the bytes are written, with the error each writer really raises on a
full disk (safetensors: its own `SafetensorError` "os error 28"; torch.save: a RuntimeError
"unexpected pos"; a plain write: `OSError(ENOSPC)` naming no file), on a real full filesystem
(a small tmpfs, where the machine allows mounting one), and the free-space check is tried with a
filesystem that reports almost nothing free.
"""

from __future__ import annotations

import errno
import shutil
import subprocess
from collections import namedtuple

import pytest
from safetensors import SafetensorError

from conftest import TINY, write_folder_corpus
from fuzzing import assert_nothing_lost, assert_one_line_error, cli, snapshot
from myllm import io as io_mod
from myllm.data import shards as shards_mod
from myllm.model import Transformer
from myllm.rundir import RunDir
from myllm.train import checkpoint as ckpt_mod
from myllm.train.checkpoint import checkpoint_problem, list_checkpoints

SAFETENSORS_FULL = SafetensorError('Error while serializing: I/O error: No space left on device (os error 28)')
WRITE_FULL = OSError(errno.ENOSPC, "No space left on device")  # what file.write raises: no filename


def full_disk_at(monkeypatch, owner, name: str, at: int, error: BaseException = WRITE_FULL) -> None:
    """`owner.name` raises `error` from its `at`-th call on, as a writer on a full disk does."""
    real, calls = getattr(owner, name), [0]

    def writer(*args, **kwargs):
        calls[0] += 1
        if calls[0] >= at:
            raise error
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, writer)


def pretrain(run, capsys, *extra):
    return cli(["pretrain", "--run", run, "--no-progress", "--max-steps", "10", *extra], capsys)


def test_a_full_disk_during_a_checkpoint_write_keeps_the_earlier_ones_and_resumes(tiny_run, monkeypatch, capsys):
    full_disk_at(monkeypatch, ckpt_mod, "save_file", at=2, error=SAFETENSORS_FULL)  # the step-10 checkpoint
    rc, err = pretrain(tiny_run, capsys)
    assert_one_line_error(rc, err, mentions=f"disk full while writing {tiny_run}/checkpoints/pretrain/step-000010")
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
    assert_one_line_error(rc, err, mentions=f"disk full while writing into {tmp_path / 'run'}")
    assert not (tmp_path / "run" / "shards").exists()  # shards appear whole or not at all
    monkeypatch.undo()
    rc, err = prepare(docs, tmp_path / "run", capsys)
    assert rc == 0, err
    assert snapshot(tmp_path / "run" / "shards") == snapshot(tmp_path / "clean" / "shards")
    assert snapshot(docs) == snapshot(write_folder_corpus(tmp_path / "docs-again"))  # the source is untouched
    shutil.rmtree(tmp_path / "docs-again")


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MB tmpfs, or a skip where this machine does not let the tests mount one."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def test_a_really_full_disk_is_one_line_and_keeps_the_earlier_checkpoint(tiny_run, small_disk, monkeypatch, capsys):
    run = small_disk / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("corpus"))  # what pretraining reads
    monkeypatch.setattr(ckpt_mod, "require_space", lambda *a: None)  # let the writers meet the full disk
    model = Transformer(RunDir(run).config().model)
    checkpoint = 3 * sum(p.numel() * 4 for p in model.parameters()) + (64 << 10)  # weights, 2 AdamW moments
    free = shutil.disk_usage(small_disk).free
    (small_disk / "filler").write_bytes(b"\0" * (free - checkpoint * 3 // 2))  # room for one checkpoint, not two
    rc, err = pretrain(run, capsys, "--set", "train.ckpt_every=2")
    assert_one_line_error(rc, err, mentions=f"disk full while writing {run}/checkpoints/pretrain/step-000004")
    ckpts = run / "checkpoints" / "pretrain"
    assert [p.name for p in list_checkpoints(ckpts)] == ["step-000002"]
    assert checkpoint_problem(ckpts / "step-000002") is None
    assert not [p for p in ckpts.iterdir() if p.name.startswith(".")]  # the torn write was removed
