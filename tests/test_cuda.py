"""The CUDA training paths, run for real on a GPU (`python bench/gpu.py` runs this file first); skipped
where CUDA is absent. Every check here has a CPU twin that always runs (tests/test_compile.py,
tests/test_precision.py, tests/test_distributed.py, tests/test_resume.py); here the same code takes
the CUDA branches: bf16 autocast, fused AdamW, the SDPA flash/efficient kernels, NCCL, pinned memory.
GPU inference and serving: tests/test_cuda_inference.py."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from myllm.rundir import RunDir
from myllm.train.checkpoint import list_checkpoints
from myllm.train.pretrain import pretrain

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (bench/gpu.py runs it)")

GPU = ["train.device=cuda", "train.max_steps=12", "train.eval_every=6", "train.ckpt_every=3", "train.keep_last=10",
       "train.warmup_steps=2"]


def metrics(run_dir, stage="pretrain"):
    return [r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if r["stage"] == stage]


def losses(run_dir, stage="pretrain"):
    return [r["loss"] for r in metrics(run_dir, stage)]


def train(run_dir, *overrides, **kw):
    cfg = RunDir(run_dir).config([*GPU, *overrides])
    return pretrain(run_dir, cfg, show_progress=False, **kw)


def test_bf16_compiled_checkpointed_chunked_training_learns_like_fp32_cpu(tiny_run, tmp_path):
    cpu = tmp_path / "cpu"
    shutil.copytree(tiny_run, cpu)
    train(cpu, "train.device=cpu", "train.precision=fp32", "train.compile=false")
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    result = train(tiny_run, "train.compile=auto", "train.activation_checkpointing=true", "train.loss_chunk=48")
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > 0  # compile=auto compiles on CUDA
    gpu, ref = losses(tiny_run), losses(cpu)
    assert len(gpu) == 12 and all(map(lambda x: x is not None, gpu))
    assert gpu[-1] < gpu[0]
    assert gpu == pytest.approx(ref, rel=3e-2)  # bf16 vs fp32: rounding, not a different model
    assert result.last_eval["val_bpb"] == pytest.approx(metrics(cpu)[-1]["val_bpb"], rel=3e-2)


def test_kill_and_resume_on_gpu(tiny_run, tmp_path):
    """A real SIGKILL mid-run, then --resume: the uninterrupted curve (bf16 and the flash backward's atomics
    make GPU runs reproducible to rounding, not to the bit, so within 1%)."""
    import signal
    import time

    long = ["train.max_steps=300", "train.ckpt_every=20", "train.eval_every=1000", "train.compile=false"]
    whole = tmp_path / "whole"
    shutil.copytree(tiny_run, whole)
    train(whole, *long)
    sets = [a for o in [*GPU, *long] for a in ("--set", o)]
    cmd = [sys.executable, "-m", "myllm", "pretrain", "--run", str(tiny_run), "--no-progress", *sets]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    ckpts = tiny_run / "checkpoints" / "pretrain"
    deadline = time.time() + 180
    while not (ckpts / "step-000100").is_dir() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed: " + proc.stderr.read()[-2000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (ckpts / "step-000300").exists()
    train(tiny_run, *long, resume=True)
    assert len(losses(tiny_run)) == 300
    assert losses(tiny_run) == pytest.approx(losses(whole), rel=1e-2)


@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_ddp_and_fsdp_on_one_gpu_through_torchrun(mode, tiny_run, tmp_path):
    single = tmp_path / "single"
    shutil.copytree(tiny_run, single)
    train(single, "train.compile=false")
    sets = [a for o in [*GPU, "train.compile=false"] for a in ("--set", o)]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", "-m", "myllm",
           "pretrain", "--run-dir", str(tiny_run), "--no-progress", "--dist", mode, *sets]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=dict(os.environ))
    assert proc.returncode == 0, proc.stderr[-3000:]
    # FSDP2 computes in bf16 weights, DDP in fp32 weights under autocast: both track the single-GPU run.
    assert losses(tiny_run) == pytest.approx(losses(single), rel=2e-2)
    state = json.loads((list_checkpoints(tiny_run / "checkpoints" / "pretrain")[-1] / "state.json").read_text())
    assert state.get("sharded", False) == (mode == "fsdp")


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_sft_dpo_grpo_steps_on_gpu(tiny_run, tmp_path):
    """A few steps of each post-training stage on CUDA under bf16; at step 0 the DPO margin and the GRPO
    KL are 0, because reference and policy run under the same autocast."""
    from myllm.train.dpo import dpo
    from myllm.train.grpo import grpo
    from myllm.train.sft import sft

    train(tiny_run, "train.compile=false")
    words = ("apple", "river", "stone", "cat")
    chats = [{"messages": [{"role": "user", "content": f"Say {w}"}, {"role": "assistant", "content": w}]}
             for w in words] * 4
    pairs = [{"prompt": f"Name {w}.", "chosen": f"{w}.", "rejected": f"Hmm, {w} maybe."} for w in words] * 3
    prompts = [{"prompt": f"Say {w}", "answer": w, "verifier": "contains"} for w in words]
    cfg = RunDir(tiny_run).config(["train.device=cuda", "sft.max_steps=3", "dpo.max_steps=3", "dpo.batch_size=4",
                                   "grpo.max_steps=3", "grpo.batch_size=2", "grpo.group_size=4",
                                   "grpo.max_new_tokens=8"])
    quiet = {"show_progress": False, "log": lambda _: None}
    sft(tiny_run, cfg, data=str(write_jsonl(tmp_path / "sft.jsonl", chats)), **quiet)
    dpo(tiny_run, cfg, data=str(write_jsonl(tmp_path / "dpo.jsonl", pairs)), **quiet)
    grpo(tiny_run, cfg, data=str(write_jsonl(tmp_path / "grpo.jsonl", prompts)), **quiet)
    assert len(losses(tiny_run, "sft")) == 3
    first_dpo = metrics(tiny_run, "dpo")[0]
    assert first_dpo["reward_margin"] == pytest.approx(0.0, abs=1e-3)
    assert metrics(tiny_run, "grpo")[0]["kl"] == pytest.approx(0.0, abs=1e-6)
