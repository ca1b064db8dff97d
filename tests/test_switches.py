"""The scale switches, each against its reference: chunked cross-entropy, activation checkpointing,
the NaN/inf guard, loss-spike logging, the out-of-memory hint, compile defaults and the step's shape."""

import copy
import json

import pytest
import torch
import torch.nn.functional as F

from myllm.config import MODEL_PRESETS, ModelConfig, TrainConfig
from myllm.errors import MyLLMError
from myllm.losses import chunked_cross_entropy
from myllm.model import Transformer
from myllm.train.distributed import apply_activation_checkpointing, batch_plan, compile_enabled
from myllm.train.loop import train


def tiny_model(vocab=256) -> Transformer:
    torch.manual_seed(0)
    return Transformer(ModelConfig(**{**MODEL_PRESETS["nano"], "vocab_size": vocab, "context": 32}))


def test_chunked_cross_entropy_equals_the_full_loss_and_its_gradients():
    torch.manual_seed(0)
    h = torch.randn(37, 16, requires_grad=True)
    w = torch.randn(101, 16, requires_grad=True)
    t = torch.randint(0, 101, (37,))
    t[::5] = -100
    full = F.cross_entropy(h @ w.T, t, ignore_index=-100)
    gh, gw = torch.autograd.grad(full, (h, w))
    for chunk in (1, 8, 37, 64):
        loss = chunked_cross_entropy(h, w, t, chunk)
        ch, cw = torch.autograd.grad(loss, (h, w))
        assert loss.item() == pytest.approx(full.item(), abs=1e-6)
        assert torch.allclose(ch, gh, atol=1e-6) and torch.allclose(cw, gw, atol=1e-6)
    assert chunked_cross_entropy(h, w, t, 8, "sum").item() == pytest.approx(full.item() * (t != -100).sum().item(),
                                                                            rel=1e-5)


def test_chunked_loss_in_the_model_never_keeps_whole_logits():
    model = tiny_model(vocab=4096)
    x, y = torch.randint(0, 4096, (4, 32)), torch.randint(0, 4096, (4, 32))
    biggest = []

    def run(chunk):
        sizes = []
        model.zero_grad()
        with torch.autograd.graph.saved_tensors_hooks(lambda t: sizes.append(t.numel()) or t, lambda t: t):
            loss = model(x, y, loss_chunk=chunk)
        loss.backward()
        biggest.append(max(sizes))
        return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters()}

    full_loss, full_grads = run(0)
    loss, grads = run(16)
    assert loss == pytest.approx(full_loss, abs=1e-5)
    assert all(torch.allclose(grads[n], full_grads[n], atol=1e-6) for n in grads)
    logits = 4 * 32 * 4096
    assert biggest[0] >= logits  # the plain loss saves the whole (B*T, V) logits for backward
    assert biggest[1] == model.embed_tokens.weight.numel() < logits  # chunked: the largest is the embedding


def test_activation_checkpointing_gives_the_same_gradients_and_names():
    model = tiny_model()
    ckpt = copy.deepcopy(model)
    apply_activation_checkpointing(ckpt)
    assert list(ckpt.state_dict()) == list(model.state_dict())
    x, y = torch.randint(0, 256, (3, 32)), torch.randint(0, 256, (3, 32))
    model(x, y).backward()
    sizes = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: sizes.append(t.numel()) or t, lambda t: t):
        loss = ckpt(x, y)
    loss.backward()
    for (n, a), (_, b) in zip(model.named_parameters(), ckpt.named_parameters()):
        assert torch.allclose(a.grad, b.grad, atol=1e-7), n
    # what backward keeps: per block only its input; the full model keeps far more
    plain = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: plain.append(t.numel()) or t, lambda t: t):
        model(x, y)
    assert sum(sizes) < 0.6 * sum(plain)


class Batches:
    """Random token batches with a position, as the loop's loaders."""

    def __init__(self):
        self.i = 0

    def next_batch(self):
        g = torch.Generator().manual_seed(self.i)
        self.i += 1
        x = torch.randint(0, 256, (2, 33), generator=g)
        return x[:, :-1], x[:, 1:]

    def state_dict(self):
        return {"i": self.i}

    def load_state_dict(self, state):
        self.i = state["i"]


def run_loop(tmp_path, scale_at: dict[int, float], **cfg):
    """Train a tiny model; the loss of call i is multiplied by scale_at[i] (NaN, a spike, ...)."""
    model = tiny_model()
    snapshots = []

    def loss_fn(m, batch):
        snapshots.append(copy.deepcopy(model.state_dict()))
        return m(*batch) * scale_at.get(len(snapshots), 1.0)

    config = TrainConfig(**{"max_steps": 8, "warmup_steps": 1, "ckpt_every": 100, "eval_every": 100,
                            "batch_size": 2, "lr": 1e-3, **cfg})
    result = train(model, config, tmp_path, "pretrain", Batches(), loss_fn, lambda b: b[0].numel(),
                   show_progress=False)
    records = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    return result, records, snapshots


def test_nan_loss_skips_the_step_and_counts_it(tmp_path):
    result, records, snaps = run_loop(tmp_path, {3: float("nan"), 6: float("inf")})
    assert result.step == 8
    assert [r["loss"] is None for r in records] == [False, False, True, False, False, True, False, False]
    assert records[-1]["skipped_steps"] == 2
    # a skipped step leaves the weights as they were; a normal one changes them
    assert all(torch.equal(snaps[3][k], snaps[2][k]) for k in snaps[2])
    assert not all(torch.equal(snaps[2][k], snaps[1][k]) for k in snaps[1])
    state = json.loads((result.checkpoint / "state.json").read_text())
    assert state["skipped_steps"] == 2 and state["bad_in_row"] == 0


def test_nan_loss_k_times_in_a_row_stops_with_a_clear_message(tmp_path):
    nan = float("nan")
    with pytest.raises(MyLLMError, match="NaN/inf in 3 steps in a row .*lower train.lr"):
        run_loop(tmp_path, {4: nan, 5: nan, 6: nan}, max_bad_steps=3)


def test_loss_spikes_are_logged(tmp_path):
    _, records, _ = run_loop(tmp_path, {14: 5.0}, max_steps=16)
    assert [r["step"] for r in records if r.get("loss_spike")] == [14]
    assert all(r["grad_norm"] > 0 for r in records)


def test_out_of_memory_says_what_to_lower(tmp_path):
    def oom(m, batch):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    config = TrainConfig(max_steps=2, batch_size=2)
    with pytest.raises(MyLLMError, match="out of memory at step 1 with micro-batch 2.*train.batch_size.*"
                                         "activation_checkpointing=true"):
        train(tiny_model(), config, tmp_path, "pretrain", Batches(), oom, lambda b: 0, show_progress=False)


def test_compile_defaults_and_the_derived_step():
    cfg = TrainConfig()
    assert not compile_enabled(cfg, torch.device("cpu")) and compile_enabled(cfg, torch.device("cuda"))
    assert compile_enabled(TrainConfig(compile="true"), torch.device("cpu"))
    plan = batch_plan(TrainConfig(batch_size=4, global_batch=32), world_size=8, seq_len=8192)
    assert (plan.micro_batch, plan.grad_accum, plan.tokens_per_step) == (4, 1, 262_144)
    assert batch_plan(TrainConfig(batch_size=4, global_batch=32), world_size=2, seq_len=8192).grad_accum == 4
    with pytest.raises(MyLLMError, match="global_batch = 32 is not a multiple of micro-batch 4 x 3 ranks"):
        batch_plan(TrainConfig(batch_size=4, global_batch=32), world_size=3, seq_len=8192)
