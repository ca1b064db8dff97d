"""Pretraining: determinism, exact resume (also after SIGKILL), time budget, bad resumes."""

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from myllm.config import TrainConfig
from myllm.errors import MyLLMError
from myllm.rundir import RunDir
from myllm.train.checkpoint import list_checkpoints
from myllm.train.optim import lr_at, param_groups
from myllm.train.pretrain import pretrain


def losses(run_dir):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [(r["step"], r["loss"], r.get("val_bpb")) for r in map(json.loads, lines) if r["stage"] == "pretrain"]


def final_weights(run_dir):
    return load_file(str(list_checkpoints(run_dir / "checkpoints" / "pretrain")[-1] / "model.safetensors"))


def same_weights(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_training_lowers_loss_and_is_deterministic(tiny_run, tmp_path):
    cfg = RunDir(tiny_run).config()
    result = pretrain(tiny_run, cfg, show_progress=False)
    first = losses(tiny_run)
    assert result.step == 20 and len(first) == 20
    assert first[-1][1] < first[0][1] - 1.0  # it learns
    assert first[9][2] is not None and result.last_eval["val_bpb"] > 0
    state = json.loads((result.checkpoint / "state.json").read_text())
    assert state["done"] and state["tokens"] == 20 * 4 * 64
    # Same seed, same config: bit-identical losses and weights.
    import shutil
    other = tmp_path / "again"
    shutil.copytree(tiny_run, other, ignore=shutil.ignore_patterns("checkpoints", "metrics.jsonl"))
    pretrain(other, RunDir(other).config(), show_progress=False)
    assert losses(other) == first
    assert same_weights(final_weights(other), final_weights(tiny_run))


def test_resume_after_losing_the_last_checkpoints_is_bit_exact(tiny_run, tmp_path):
    import shutil
    cfg = RunDir(tiny_run).config()
    pretrain(tiny_run, cfg, show_progress=False)
    reference, ref_weights = losses(tiny_run), final_weights(tiny_run)
    # Pretend the process died at step 12: only checkpoints up to step 10 survive.
    for ckpt in list_checkpoints(tiny_run / "checkpoints" / "pretrain")[2:]:
        shutil.rmtree(ckpt)
    pretrain(tiny_run, cfg, resume=True, show_progress=False)
    assert losses(tiny_run) == reference
    assert same_weights(final_weights(tiny_run), ref_weights)


def test_sigkill_mid_training_then_resume_matches_uninterrupted(tiny_run, tmp_path):
    import shutil
    clean = tmp_path / "clean"
    shutil.copytree(tiny_run, clean)
    overrides = ["--set", "train.max_steps=40", "--set", "train.ckpt_every=4"]
    base = [sys.executable, "-m", "myllm", "pretrain", "--no-progress", *overrides]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([*base, "--run", str(clean)], check=True, env=env, capture_output=True)
    proc = subprocess.Popen([*base, "--run", str(tiny_run)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    ckpts = tiny_run / "checkpoints" / "pretrain"
    deadline = time.time() + 120
    while len(list_checkpoints(ckpts)) < 3 and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = list_checkpoints(ckpts)[-1].name
    assert killed_at != "step-000040", "the kill came too late to test anything"
    subprocess.run([*base, "--run", str(tiny_run), "--resume"], check=True, env=env, capture_output=True)
    assert losses(tiny_run) == losses(clean)
    assert same_weights(final_weights(tiny_run), final_weights(clean))


def test_time_budget_stops_training_and_fits_the_schedule(tiny_run):
    cfg = RunDir(tiny_run).config(["train.max_steps=100000", "train.time_budget=1.5", "train.eval_every=100000"])
    t0 = time.time()
    result = pretrain(tiny_run, cfg, show_progress=False)
    assert 1.5 <= result.seconds < 3.0 and time.time() - t0 < 20
    records = [json.loads(x) for x in (tiny_run / "metrics.jsonl").read_text().splitlines()]
    # the LR schedule followed the clock: it ended close to its floor, not at step 1 of 100000
    assert records[-1]["lr"] < 0.2 * cfg.train.lr


def test_resume_errors(tiny_run):
    cfg = RunDir(tiny_run).config()
    with pytest.raises(MyLLMError, match="no checkpoint"):
        pretrain(tiny_run, cfg, resume=True, show_progress=False)
    pretrain(tiny_run, RunDir(tiny_run).config(["train.max_steps=5"]), show_progress=False)
    with pytest.raises(MyLLMError, match="already has checkpoints"):
        pretrain(tiny_run, cfg, show_progress=False)
    with pytest.raises(MyLLMError, match="different model config.*d_model: checkpoint 64 vs config 32"):
        pretrain(tiny_run, RunDir(tiny_run).config(["model.d_model=32"]), resume=True, show_progress=False)
    with pytest.raises(MyLLMError, match="different data or training config"):
        pretrain(tiny_run, RunDir(tiny_run).config(["train.lr=0.5"]), resume=True, show_progress=False)


def test_schedule_and_decay_groups():
    cfg = TrainConfig(lr=1.0, warmup_steps=10, max_steps=110, min_lr_ratio=0.1)
    assert lr_at(0, 0.0, cfg) == pytest.approx(0.1)
    assert lr_at(9, 9 / 110, cfg) == pytest.approx(1.0)
    assert lr_at(60, 60 / 110, cfg) == pytest.approx(0.55)  # half way through the cosine
    assert lr_at(110, 1.0, cfg) == pytest.approx(0.1)
    # Under a time budget a long warmup is cut at 5% of the budget.
    budget = TrainConfig(lr=1.0, warmup_steps=1000, max_steps=10**9, time_budget=100.0, min_lr_ratio=0.1)
    assert lr_at(10, 0.025, budget) == pytest.approx(0.5)
    assert lr_at(20, 0.06, budget) == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi * 0.06)))
    from myllm.config import MODEL_PRESETS, ModelConfig
    from myllm.model import Transformer
    model = Transformer(ModelConfig(**MODEL_PRESETS["nano"]))
    decay, no_decay = param_groups(model, 0.1)
    assert all(p.dim() == 2 for p in decay["params"]) and all(p.dim() == 1 for p in no_decay["params"])
    assert len(no_decay["params"]) == 2 * model.cfg.n_layers + 1  # the RMSNorm gains


def test_gradient_accumulation_equals_the_larger_batch(tiny_run, tmp_path):
    import shutil
    other = tmp_path / "accum"
    shutil.copytree(tiny_run, other)
    pretrain(tiny_run, RunDir(tiny_run).config(["train.max_steps=3", "train.batch_size=8"]), show_progress=False)
    pretrain(other, RunDir(other).config(["train.max_steps=3", "train.batch_size=4", "train.grad_accum=2"]),
             show_progress=False)
    a, b = final_weights(tiny_run), final_weights(other)
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5
    assert [r[1] for r in losses(tiny_run)] == pytest.approx([r[1] for r in losses(other)], abs=1e-4)

    # Adam is nearly blind to a gradient's scale, so also compare the pre-clip gradient norms:
    # a micro-batch loss not divided by grad_accum would double them.
    def norms(run_dir):
        return [json.loads(x)["grad_norm"] for x in (run_dir / "metrics.jsonl").read_text().splitlines()]

    assert norms(tiny_run) == pytest.approx(norms(other), rel=1e-3)
