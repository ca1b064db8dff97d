"""Bit-exact resume under fire: 20 SIGKILLs at seeded random points, some inside checkpoint writes;
torn checkpoints are detected by their checksums and the one before is used; the last K are kept."""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import pytest
from safetensors.torch import load_file

from myllm.rundir import RunDir
from myllm.train.checkpoint import checkpoint_problem, latest_valid_checkpoint, list_checkpoints
from myllm.train.pretrain import pretrain

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
KILLS = 20


def losses(run_dir):
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"], r["grad_norm"], r.get("val_bpb")) for r in rows if r["stage"] == "pretrain"]


def final_weights(run_dir):
    return load_file(str(list_checkpoints(run_dir / "checkpoints" / "pretrain")[-1] / "model.safetensors"))


def writes(ckpts) -> set[str]:
    return {p.name for p in ckpts.iterdir() if p.name.startswith(".step-")} if ckpts.is_dir() else set()


# Starting Python and importing torch takes seconds on a busy CI machine; 20 of them would be most
# of this test. A fresh "zygote" process imports myllm once, then forks one training process per
# line it reads (each a real process, killed with a real SIGKILL) and reports its pid and exit.
ZYGOTE = """
import os, sys, json
import myllm.cli, myllm.train.pretrain
for line in sys.stdin:
    pid = os.fork()
    if pid == 0:
        sys.stdin.close()
        os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
        os._exit(myllm.cli.main(json.loads(line)))
    print(pid, flush=True)
    print(os.waitpid(pid, 0)[1], flush=True)
"""


class Zygote:
    def __init__(self):
        self.proc = subprocess.Popen([sys.executable, "-c", ZYGOTE], env=ENV, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)

    def start(self, args: list[str]) -> int:
        self.proc.stdin.write(json.dumps(args) + "\n")
        self.proc.stdin.flush()
        return int(self.proc.stdout.readline())

    def wait(self) -> int:
        return int(self.proc.stdout.readline())

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False


def lines(path) -> int:
    return path.read_text().count("\n") if path.exists() else 0


@pytest.mark.slow
def test_twenty_sigkills_then_resume_give_the_uninterrupted_curve(tiny_run, tmp_path):
    clean = tmp_path / "clean"
    shutil.copytree(tiny_run, clean)
    args = ["pretrain", "--no-progress", "--set", "train.max_steps=400", "--set", "train.ckpt_every=4",
            "--set", "train.keep_last=3", "--set", "train.eval_every=100"]
    zygote = Zygote()
    zygote.start([*args, "--run", str(clean)])
    assert zygote.wait() == 0

    rng = random.Random(1234)
    ckpts = tiny_run / "checkpoints" / "pretrain"
    metrics = tiny_run / "metrics.jsonl"
    killed_in_write = 0
    for kill in range(KILLS):
        resume = ["--resume"] if list_checkpoints(ckpts) else []
        before = lines(metrics)
        pid = zygote.start([*args, "--run", str(tiny_run), *resume])
        deadline = time.time() + 60
        while lines(metrics) <= before and alive(pid) and time.time() < deadline:
            time.sleep(0.001)  # wait until this process trains (it truncates, then appends)
        if kill % 2:  # kill inside a checkpoint write: as soon as a new temp folder appears
            old = writes(ckpts)
            while not writes(ckpts) - old and alive(pid) and time.time() < deadline:
                time.sleep(0.0005)
        else:  # a seeded random point: mid-step, mid-eval, mid-append, mid-write
            time.sleep(rng.uniform(0.0, 0.2))
        assert alive(pid), f"training finished after {kill} kills: give it more steps"
        os.kill(pid, signal.SIGKILL)
        zygote.wait()
        killed_in_write += bool(writes(ckpts))
    print(f"{killed_in_write} of {KILLS} kills landed inside a checkpoint write")
    assert killed_in_write >= KILLS // 4
    assert len(list_checkpoints(ckpts)) <= 3  # keep_last held through the kills
    zygote.start([*args, "--run", str(tiny_run), "--resume"])
    assert zygote.wait() == 0
    zygote.close()
    assert losses(tiny_run) == losses(clean)
    a, b = final_weights(tiny_run), final_weights(clean)
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    assert not writes(ckpts)  # the leftovers of killed writes were cleaned up


@pytest.mark.slow
def test_a_torn_checkpoint_is_detected_and_the_one_before_used(tiny_run, tmp_path, capsys):
    reference = tmp_path / "reference"
    shutil.copytree(tiny_run, reference)
    cfg = RunDir(tiny_run).config()
    pretrain(reference, RunDir(reference).config(), show_progress=False)
    pretrain(tiny_run, cfg, show_progress=False)
    ckpts = list_checkpoints(tiny_run / "checkpoints" / "pretrain")
    assert [p.name for p in ckpts] == [f"step-{s:06d}" for s in (5, 10, 15, 20)]
    # the last one: weights cut short (a torn write); the one before: a flipped byte in the optimizer state
    weights = ckpts[-1] / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    optim = ckpts[-2] / "optim.pt"
    blob = bytearray(optim.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    optim.write_bytes(bytes(blob))
    assert "model.safetensors does not match its checksum" in checkpoint_problem(ckpts[-1])
    assert "optim.pt does not match its checksum" in checkpoint_problem(ckpts[-2])
    assert latest_valid_checkpoint(tiny_run / "checkpoints" / "pretrain") == ckpts[-3]
    assert "step-000020 is torn" in capsys.readouterr().err
    pretrain(tiny_run, cfg, resume=True, show_progress=False)  # from step 10, to 20 again
    assert losses(tiny_run) == losses(reference)
    state = json.loads((ckpts[-1] / "state.json").read_text())
    assert set(state["checksums"]) == {"model.safetensors", "optim.pt"}


@pytest.mark.parametrize("existing, keep_last, step, left", [
    ([92, 96, 100], 3, 104, [96, 100]),  # room for the new one: a kill now leaves 2, after the rename 3
    ([96, 100], 3, 104, [96, 100]),
    ([100], 1, 104, [100]),  # the only one stays until its successor is in place (prune removes it after)
    ([96, 100, 104, 108], 3, 104, [100, 104, 108]),  # resumed from 100 past torn 104 and 108: 100 stays
])
def test_make_room_never_leaves_more_than_keep_last_nor_drops_the_newest_older(tmp_path, existing, keep_last,
                                                                               step, left):
    from myllm.train.checkpoint import make_room

    for s in existing:
        (tmp_path / f"step-{s:06d}").mkdir()
        (tmp_path / f"step-{s:06d}" / "state.json").write_text("{}")
    make_room(tmp_path, keep_last, step)
    assert [int(p.name[5:]) for p in list_checkpoints(tmp_path)] == left
