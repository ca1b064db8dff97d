"""Data parallelism on CPU (gloo, 2 processes under torchrun): DDP and FSDP2 equal one process on the
same global batch; sharded checkpoints resume exactly and refuse another world size; a full
checkpoint resumes on another world size; a dying rank stops the others; --nproc is checked."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from myllm.data.loader import TrainBatches
from myllm.data.shards import ShardReader
from myllm.errors import MyLLMError
from myllm.train.checkpoint import list_checkpoints
from myllm.train.distributed import launch

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
STEPS = ["--set", "train.max_steps=20", "--set", "train.ckpt_every=1", "--set", "train.keep_last=20",
         "--set", "train.global_batch=4", "--set", "train.eval_every=100"]


def myllm(run_dir, *args, nproc=0, check=True, timeout=240, flag=False):
    """`torchrun ... -m myllm pretrain`, or with `flag` the `myllm pretrain --nproc N` shortcut."""
    torchrun = nproc and not flag
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"] if torchrun else []
    extra = ["--nproc", str(nproc)] if flag else []
    cmd = [sys.executable, *launcher, "-m", "myllm", "pretrain", "--run-dir", str(run_dir), "--no-progress", *extra,
           *args]
    proc = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


def losses(run_dir):
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if r["stage"] == "pretrain"]


def weights(run_dir, step):
    return load_file(str(run_dir / "checkpoints" / "pretrain" / f"step-{step:06d}" / "model.safetensors"))


def max_diff(a, b):
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


@pytest.fixture(scope="module")
def single(tiny_data, tmp_path_factory):
    """The reference: one process, micro-batch 4, 20 steps."""
    run = tmp_path_factory.mktemp("single") / "run"
    shutil.copytree(tiny_data, run)
    myllm(run, *STEPS, "--set", "train.batch_size=4")
    return run


@pytest.mark.slow
@pytest.mark.parametrize("mode,micro", [("ddp", 2), ("fsdp", 2), ("ddp", 1), ("fsdp", 1)])
def test_two_ranks_equal_one_process_on_the_same_global_batch(mode, micro, single, tiny_run):
    """Micro-batch 1 makes 2 accumulation steps: the gradient sync is skipped on the first (no_sync)."""
    proc = myllm(tiny_run, *STEPS, "--set", f"train.batch_size={micro}", "--dist", mode, nproc=2,
                 flag=mode == "ddp")
    assert f"global batch 4 sequences = micro-batch {micro} x accumulation {2 // micro} x 2 ranks" in proc.stdout
    # one optimizer step: the same parameters
    step1 = max_diff(weights(tiny_run, 1), weights(single, 1))
    step20 = max_diff(weights(tiny_run, 20), weights(single, 20))
    curve = max(abs(a - b) for a, b in zip(losses(tiny_run), losses(single)))
    print(f"{mode}: max |param diff| step 1 {step1:.2e}, step 20 {step20:.2e}; max |loss diff| 20 steps {curve:.2e}")
    assert step1 <= 1e-5
    # 20 steps: the same loss curve (all-reduce order changes the last bits only)
    assert losses(tiny_run) == pytest.approx(losses(single), abs=2e-4)
    assert step20 <= 1e-4
    # only rank 0 logged: one line per step
    assert len(losses(tiny_run)) == 20
    state = json.loads((list_checkpoints(tiny_run / "checkpoints" / "pretrain")[-1] / "state.json").read_text())
    assert state.get("sharded", False) == (mode == "fsdp")
    if mode == "fsdp":
        assert state["world_size"] == 2 and any(k.startswith("dcp/") for k in state["checksums"])


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_compiled_ranks_equal_one_eager_process(mode, single, tiny_run):
    """torch.compile per block under DDP / FSDP2 (gloo), as CUDA's compile=auto runs it."""
    myllm(tiny_run, *STEPS, "--set", "train.batch_size=2", "--set", "train.compile=true", "--dist", mode, nproc=2)
    assert losses(tiny_run) == pytest.approx(losses(single), abs=2e-4)
    assert max_diff(weights(tiny_run, 20), weights(single, 20)) <= 1e-4


@pytest.mark.slow
def test_ddp_and_fsdp_agree_under_bf16(tiny_data, tmp_path):
    """bf16 as on CUDA (train.precision=bf16; FSDP2 gathers bf16 weights, reduces fp32, keeps RoPE fp32):
    DDP (fp32 weights under autocast) and FSDP2 (bf16 weights) round differently, within 1% of the loss
    over 10 steps; both stay far from the fp32 run's last bits, so bf16 really ran."""
    curves = {}
    for mode in ("ddp", "fsdp", "fp32"):
        run = tmp_path / mode
        shutil.copytree(tiny_data, run)
        precision = "fp32" if mode == "fp32" else "bf16"
        proc = myllm(run, *STEPS, "--set", "train.max_steps=10", "--set", "train.batch_size=2", "--set",
                     f"train.precision={precision}", "--dist", "ddp" if mode == "fp32" else mode, nproc=2,
                     check=False)
        if proc.returncode != 0:
            # Seen once in 16 runs (a CI machine, FSDP2 bf16 on gloo): a rank aborted in torch's C++ teardown
            # ("terminate called without an active exception") after the run had finished and saved. That
            # abort is tolerated here only with the whole run on disk; anything else fails.
            finished = (run / "checkpoints" / "pretrain" / "step-000010" / "state.json").is_file()
            assert finished and "terminate called without an active exception" in proc.stderr, proc.stderr[-3000:]
        curves[mode] = losses(run)
    print({k: v[-1] for k, v in curves.items()})
    assert curves["fsdp"] == pytest.approx(curves["ddp"], rel=1e-2)
    assert curves["ddp"] != curves["fp32"] and curves["fsdp"] != curves["fp32"]


@pytest.mark.slow
def test_sharded_resume_is_exact_and_refuses_another_world_size(tiny_run):
    args = [*STEPS, "--set", "train.batch_size=2", "--dist", "fsdp"]
    myllm(tiny_run, *args, nproc=2)
    uninterrupted = losses(tiny_run)
    final = weights(tiny_run, 20)
    ckpts = tiny_run / "checkpoints" / "pretrain"
    for ckpt in list_checkpoints(ckpts)[7:]:  # keep steps 1..7: as if killed after step 7's checkpoint
        shutil.rmtree(ckpt)
    proc = myllm(tiny_run, *[a.replace("global_batch=4", "global_batch=2") for a in args], "--resume", nproc=1,
                 check=False)
    assert proc.returncode != 0 and "sharded over 2 ranks but this run has 1; resume with --nproc 2" in proc.stderr
    myllm(tiny_run, *args, "--resume", nproc=2)
    assert losses(tiny_run) == uninterrupted  # bit-exact on the same world size
    assert max_diff(weights(tiny_run, 20), final) == 0.0


@pytest.mark.slow
def test_full_checkpoint_resumes_on_another_world_size(single, tiny_run):
    shutil.copytree(single / "checkpoints", tiny_run / "checkpoints")
    shutil.copy(single / "metrics.jsonl", tiny_run / "metrics.jsonl")
    for ckpt in list_checkpoints(tiny_run / "checkpoints" / "pretrain")[10:]:  # as if stopped after step 10
        shutil.rmtree(ckpt)
    myllm(tiny_run, *STEPS, "--set", "train.batch_size=2", "--resume", nproc=2)  # 1 process -> 2 ranks
    resumed, reference = losses(tiny_run), losses(single)
    assert resumed[:10] == reference[:10] and len(resumed) == 20
    # same data order and global batch: close, though not bit-exact (documented)
    assert resumed[10:] == pytest.approx(reference[10:], abs=2e-3)


@pytest.mark.slow
def test_a_dying_rank_stops_the_others(tiny_run):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "myllm",
           "pretrain", "--run-dir", str(tiny_run), "--no-progress", "--max-steps", "100000", "--set",
           "train.batch_size=2", "--set", "train.eval_every=100000", "--set", "train.ckpt_every=100000"]
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = tiny_run / "metrics.jsonl"
    deadline = time.time() + 120
    while not (metrics.exists() and metrics.read_text().count("\n") >= 3) and time.time() < deadline:
        time.sleep(0.1)
    workers = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    assert len(workers) == 2
    os.kill(int(workers[1]), signal.SIGKILL)
    t0 = time.time()
    _, err = proc.communicate(timeout=90)
    assert proc.returncode != 0 and time.time() - t0 < 90
    assert "SIGKILL" in err or "Signal 9" in err or "exitcode" in err


def test_ranks_read_distinct_windows_that_make_up_the_global_batch(tiny_data):
    reader = ShardReader(tiny_data / "shards", "train")
    one = TrainBatches(reader, 4, 16, seed=3)
    ranks = [TrainBatches(reader, 2, 16, seed=3, rank=r, world_size=2) for r in range(2)]
    for _ in range(5):
        x = one.next_batch()[0]
        parts = [b.next_batch()[0] for b in ranks]
        rows = {tuple(r.tolist()) for r in x}
        assert {tuple(r.tolist()) for p in parts for r in p} == rows
        assert not {tuple(r.tolist()) for r in parts[0]} & {tuple(r.tolist()) for r in parts[1]}
    # a position saved at world size 2 continues at world size 1 with the first unspent window
    state = ranks[0].state_dict()
    again = TrainBatches(reader, 4, 16, seed=3)
    again.load_state_dict(state)
    assert torch.equal(again.next_batch()[0], one.next_batch()[0])


def test_nproc_larger_than_the_machine_is_refused():
    with pytest.raises(MyLLMError, match="--nproc 999 is more than the .* CPU cores"):
        launch(999, ["pretrain", "--run", "x"], device="cpu")


def test_nproc_shortcut_hands_torchrun_the_same_command(tiny_run, capsys):
    from myllm.cli import _without_nproc, main

    assert _without_nproc(["pretrain", "--nproc", "2", "--run", "r", "--dist", "fsdp"]) == \
        ["pretrain", "--run-dir", "r", "--dist", "fsdp"]
    assert _without_nproc(["pretrain", "--nproc=2", "--run=r"]) == ["pretrain", "--run-dir=r"]
    assert main(["pretrain", "--run", str(tiny_run), "--nproc", "64", "--set", "train.device=cpu"]) == 2
    assert "--nproc 64 is more than the" in capsys.readouterr().err
