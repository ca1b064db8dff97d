"""No loader can be made to run code (issue 16): a malicious pickle planted in any file it reads does nothing.

The payload is a real one: unpickling it calls `os.system`, which creates a marker file. The first
tests show that torch's own DCP reader *does* run it (so the payload and the check work); then the
same files go through myllm's readers, and every command that loads a run directory is run on a
run whose files are replaced, one at a time, by the payload (with the checkpoint's checksums
rewritten to match, as whoever plants a file would do): the marker never appears, and each command
either ignores the file or fails in one line.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException

from fuzzing import assert_one_line_error, cli
from myllm.errors import MyLLMError
from myllm.train.checkpoint import file_sha256, state_digest
from myllm.train.sharded import read_dcp


class Payload:
    """Unpickling this runs a shell command that creates `marker`."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def plant(path: Path, marker: Path) -> None:
    """Replace `path` with the payload; if it belongs to a checkpoint, make its checksum match again."""
    path.write_bytes(pickle.dumps(Payload(marker)))
    for folder in path.parents:
        state = folder / "state.json"
        if state.is_file() and state != path:
            blob = json.loads(state.read_text())
            name = str(path.relative_to(folder))
            if name in blob.get("checksums", {}):
                blob["checksums"][name] = file_sha256(path)
                blob["state_sha256"] = state_digest(blob)
                state.write_text(json.dumps(blob))
            break


def dcp_checkpoint(folder: Path, extra=None) -> dict:
    """A DCP folder like a sharded checkpoint's: weights, AdamW moments, and non-tensor hyperparameters."""
    groups = [{"lr": 0.1, "betas": (0.9, 0.95), "params": ["w"], "extra": extra}]
    saved = {"model": {"w": torch.randn(4, 3)},
             "optim": {"state": {"w": {"step": torch.tensor(3.0), "exp_avg": torch.randn(4, 3)}},
                       "param_groups": groups}}
    dcp.save(saved, checkpoint_id=str(folder))
    return saved


def blank() -> dict:
    return {"model": {"w": torch.zeros(4, 3)},
            "optim": {"state": {"w": {"step": torch.tensor(0.0), "exp_avg": torch.zeros(4, 3)}},
                      "param_groups": [{"lr": 0.0, "betas": (0.0, 0.0), "params": ["w"], "extra": None}]}}


def test_the_safe_dcp_reader_reads_a_real_checkpoint_exactly(tmp_path):
    saved = dcp_checkpoint(tmp_path / "dcp")
    got = read_dcp(tmp_path / "dcp", blank())
    assert torch.equal(got["model"]["w"], saved["model"]["w"])
    assert torch.equal(got["optim"]["state"]["w"]["exp_avg"], saved["optim"]["state"]["w"]["exp_avg"])
    assert got["optim"]["param_groups"][0]["lr"] == 0.1 and got["optim"]["param_groups"][0]["betas"] == (0.9, 0.95)


def test_a_pickle_planted_as_dcp_metadata_runs_under_torch_but_not_under_myllm(tmp_path):
    dcp_checkpoint(tmp_path / "dcp")
    marker = tmp_path / "ran"
    plant(tmp_path / "dcp" / ".metadata", marker)
    with pytest.raises(CheckpointException):  # torch's reader: the payload runs, then DCP fails
        dcp.load(blank(), checkpoint_id=str(tmp_path / "dcp"))
    assert marker.exists()
    marker.unlink()
    with pytest.raises(MyLLMError, match="cannot be read safely.*posix.system"):
        read_dcp(tmp_path / "dcp", blank())
    assert not marker.exists()


def test_a_pickled_object_among_the_dcp_values_runs_under_torch_but_not_under_myllm(tmp_path):
    marker = tmp_path / "ran"
    dcp_checkpoint(tmp_path / "dcp", extra=Payload(marker))  # stored as a pickled non-tensor value
    dcp.load(blank(), checkpoint_id=str(tmp_path / "dcp"))
    assert marker.exists()
    marker.unlink()
    with pytest.raises(MyLLMError, match="cannot be read safely"):
        read_dcp(tmp_path / "dcp", blank())
    assert not marker.exists()


# Every command that reads a run directory (the server loads through the same `load_model`, see
# tests/test_serve.py), each on the smallest work it can do.
LOADERS = {
    "generate": ["generate", "--run", "RUN", "--prompt", "the cat", "--max-new-tokens", "2"],
    "quantize": ["quantize", "--bits", "8", "--no-eval", "RUN"],
    "export hf": ["export", "hf", "RUN"],
    "resume": ["pretrain", "--run", "RUN", "--resume", "--no-progress", "--max-steps", "2"],
}


def argv(command: str, run: Path) -> list[str]:
    return [str(run) if a == "RUN" else a for a in LOADERS[command]]


@pytest.fixture(scope="module")
def planted_files(tiny_model_run) -> list[str]:
    """Every file of a run with a finished checkpoint, outputs of the commands above included."""
    run = tiny_model_run.parent / "complete"
    shutil.copytree(tiny_model_run, run)
    from myllm.cli import main

    for command in ("quantize", "export hf"):
        assert main(argv(command, run)) == 0
    files = sorted(str(p.relative_to(run)) for p in run.rglob("*") if p.is_file())
    return [run, files]


@pytest.mark.parametrize("command", list(LOADERS))
def test_no_command_runs_a_pickle_planted_in_any_file_of_the_run(planted_files, command, tmp_path, capsys):
    source, files = planted_files
    marker = tmp_path / "ran"
    run = tmp_path / "run"
    failed, unclean = 0, []
    for name in files:
        shutil.rmtree(run, ignore_errors=True)
        shutil.copytree(source, run)
        plant(run / name, marker)
        rc, err = cli(argv(command, run), capsys)
        assert not marker.exists(), f"myllm {command} ran a pickle planted in {name}"
        if rc != 0:
            failed += 1
            try:
                assert_one_line_error(rc, err)
            except AssertionError as e:
                unclean.append(f"{name}: {e}")
    assert not unclean, "\n".join(unclean)
    assert failed > 0  # the checkpoint's own files at least are read, and refused
