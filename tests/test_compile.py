"""Training-time `torch.compile` (per block, as on CUDA with compile=auto), proven on CPU: compiled
training equals eager within float tolerance, also with activation checkpointing and the chunked loss,
and a 28-layer model (myllm-1b's depth) compiles with no eager fallback and a bounded number of graphs,
its evaluation passes (no_grad, a shorter last batch) included. DDP and FSDP2 compiled on gloo are in
tests/test_distributed.py."""

import json

import pytest
import torch
import torch._dynamo

from myllm.rundir import RunDir
from myllm.train.pretrain import pretrain

pytestmark = pytest.mark.slow  # each compile takes tens of seconds on 2 cores

SHORT = ["train.max_steps=5", "train.eval_every=5", "train.ckpt_every=5", "train.warmup_steps=2"]


def losses(run_dir):
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if r["stage"] == "pretrain"], [r["val_loss"] for r in rows if "val_loss" in r]


def train(run_dir, *overrides):
    cfg = RunDir(run_dir).config([*SHORT, *overrides])
    pretrain(run_dir, cfg, restart=True, show_progress=False)
    return losses(run_dir)


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize("extra", [[], ["train.activation_checkpointing=true", "train.loss_chunk=48"]],
                         ids=["plain", "checkpointing+chunked-loss"])
def test_compiled_training_equals_eager(tiny_run, extra):
    eager, eager_val = train(tiny_run, "train.compile=false", *extra)
    compiled, compiled_val = train(tiny_run, "train.compile=true", *extra)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > 0  # it did compile
    print(f"max |loss diff| over 5 steps: {max(abs(a - b) for a, b in zip(eager, compiled)):.2e}")
    assert compiled == pytest.approx(eager, abs=1e-4)
    assert compiled_val == pytest.approx(eager_val, abs=1e-4)


def test_28_layers_compile_without_fallback_and_bounded_graphs(tiny_run):
    # An eager fallback at the recompile limit becomes an error here instead of a silent slowdown.
    # eval_tokens 4 x 64 + 40: the last evaluation batch is shorter than the others (another shape).
    with torch._dynamo.config.patch(fail_on_recompile_limit_hit=True):
        got, val = train(tiny_run, "train.compile=true", "model.n_layers=28", "model.d_model=32", "model.n_heads=2",
                         "model.n_kv_heads=1", "model.d_ff=64", "train.eval_every=2", "train.eval_tokens=296")
    assert len(got) == 5 and len(val) == 3
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    print(f"28 layers: {graphs} compiled graphs; counters {dict(torch._dynamo.utils.counters['stats'])}")
    # One block graph serves all 28 blocks: training, evaluation under no_grad, and the shorter batch
    # (automatic dynamic shapes) each add at most a graph, never one per block.
    assert graphs <= 6
