"""SFT, LoRA, DPO and GRPO: their losses and masks, their data checks, and short real runs."""

import copy
import itertools
import json
import shutil

import pytest
import torch

from conftest import TINY
from myllm.chat import render
from myllm.config import ModelConfig, resolve_config
from myllm.data.shards import ShardReader
from myllm.errors import ConfigError, MyLLMError
from myllm.evals.bpb import evaluate_bpb
from myllm.evals.verifiers import VERIFIERS, get_verifier, register
from myllm.model import Transformer
from myllm.rundir import RunDir
from myllm.tokenizer import Tokenizer
from myllm.train.checkpoint import latest_checkpoint, load_model, read_state
from myllm.train.dpo import dpo, dpo_loss, load_pairs
from myllm.train.grpo import Rollouts, grpo, grpo_loss
from myllm.train.lora import apply_lora, merge_lora
from myllm.train.pretrain import pretrain
from myllm.train.sft import IGNORE, PackedBatches, load_examples, sft


def chat(q: str, a: str) -> dict:
    return {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.fixture(scope="module")
def pretrained(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("post") / "run"
    shutil.copytree(tiny_data, out)
    pretrain(out, RunDir(out).config(TINY), show_progress=False)
    return out


@pytest.fixture
def run_dir(pretrained, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(pretrained, out)
    return out


@pytest.fixture(scope="module")
def tok(tiny_data):
    return Tokenizer.load(tiny_data / "tokenizer")


def small_model(tok, seed=0):
    torch.manual_seed(seed)
    return Transformer(ModelConfig(vocab_size=tok.vocab_size, d_model=32, n_layers=2, n_heads=2, n_kv_heads=1,
                                   d_ff=64, context=64))


def sft_batch(tok, conversations, seq_len=64):
    """One row packing exactly `conversations` (in order), padded to seq_len, as PackedBatches lays it out."""
    x, y, seg = [], [], []
    for k, c in enumerate(conversations):
        r = render(tok, c["messages"])
        x += r.ids[:-1]
        y += [t if m else IGNORE for t, m in zip(r.ids[1:], r.mask[1:])]
        seg += [k] * (len(r.ids) - 1)
    pad = seq_len - len(x)
    rows = (x + [tok.pad_id] * pad, y + [IGNORE] * pad, seg + [len(conversations)] * pad)
    return tuple(torch.tensor([r]) for r in rows)


# --- SFT ----------------------------------------------------------------------------------
def test_sft_loss_ignores_every_non_assistant_token(tok):
    model = small_model(tok)
    x, y, seg = sft_batch(tok, [chat("Where does Mira live?", "Oakridge.")])
    logits = model(x, segments=seg).detach().requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(logits.view(-1, logits.shape[-1]), y.view(-1), ignore_index=IGNORE)
    loss.backward()
    trained = y[0] != IGNORE
    assert trained.sum() == len(tok.encode("Oakridge.")) + 1  # the reply and its <|end|>
    assert logits.grad[0, ~trained].abs().max() == 0 and logits.grad[0, trained].abs().max() > 0

    def loss_and_grads(conversation):
        model.zero_grad()
        x, y, seg = sft_batch(tok, [conversation])
        loss = model(x, y, segments=seg)
        loss.backward()
        return loss.item(), [p.grad.clone() for p in model.parameters()]

    # A later user turn changes only non-assistant tokens after the reply: same loss, same gradients.
    base = chat("Where does Mira live?", "Oakridge.")
    more = {"messages": base["messages"] + [{"role": "user", "content": "Thanks! And what else?"}]}
    (l1, g1), (l2, g2) = loss_and_grads(base), loss_and_grads(more)
    assert l1 == pytest.approx(l2, abs=1e-6)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(g1, g2))


def test_a_packed_row_trains_exactly_as_its_conversations_alone(tok):
    model = small_model(tok)
    convs = [chat("Mira?", "Oak."), chat("Two?", "Four."), chat("Tom?", "A baker.")]
    x, y, seg = sft_batch(tok, convs)
    assert seg[0].unique().numel() == 4  # three conversations and the padding
    packed = model(x, y, segments=seg, reduction="sum")
    alone = sum(model(*sft_batch(tok, [c], seq_len=len(render(tok, c["messages"]).ids) - 1)[:2], reduction="sum")
                for c in convs)
    assert packed.item() == pytest.approx(alone.item(), rel=1e-5)


def test_sft_data_problems_are_counted_or_named(tok, tmp_path):
    long = chat("word " * 80, "yes")
    path = write_jsonl(tmp_path / "c.jsonl", [chat("a", "b"), {"messages": [{"role": "user", "content": "no reply"}]},
                                               long])
    logs = []
    examples = load_examples(path, tok, 64, "drop", logs.append)
    assert len(examples) == 1 and "1 no assistant turn" in logs[0] and "1 too long, dropped" in logs[0]
    bad = write_jsonl(tmp_path / "bad.jsonl", [chat("a", "b"), {"messages": [{"role": "bot", "content": "x"}]}])
    with pytest.raises(MyLLMError, match=r"bad.jsonl:2: message 0 must be"):
        load_examples(bad, tok, 64, "drop", logs.append)


def test_packed_batches_resume_exactly(tok):
    examples = [([1, 2, 3] * k, [4, 5, 6] * k) for k in range(1, 9)]
    a = PackedBatches(examples, 2, 16, seed=3, pad_id=0)
    a.next_batch()
    state = json.loads(json.dumps(a.state_dict()))
    expected = a.next_batch()
    b = PackedBatches(examples, 2, 16, seed=3, pad_id=0)
    b.load_state_dict(state)
    assert all(torch.equal(u, v) for u, v in zip(b.next_batch(), expected))


def test_sft_run_learns_the_replies(run_dir, tmp_path):
    data = write_jsonl(tmp_path / "chats.jsonl", [chat(f"Say {w}.", f"{w} {w}.") for w in
                                                   ("apple", "river", "stone", "cloud")] * 20)
    cfg = RunDir(run_dir).config(["sft.max_steps=30", "sft.batch_size=4", "sft.lr=3e-3", "sft.text_rows=0"])
    result = sft(run_dir, cfg, data=str(data), show_progress=False, log=lambda _: None)
    losses = [json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()
              if json.loads(line)["stage"] == "sft"]
    assert len(losses) == 30 and sum(losses[-5:]) < 0.5 * sum(losses[:5])
    assert read_state(result.checkpoint)["base"].startswith("checkpoints/pretrain/")


def test_text_rows_keep_the_book_text_that_chat_only_sft_forgets(run_dir, tmp_path):
    data = write_jsonl(tmp_path / "chats.jsonl", [chat(f"Say {w}.", f"{w} {w}.") for w in
                                                   ("apple", "river", "stone", "cloud")] * 20)
    index = json.loads((run_dir / "shards" / "index.json").read_text())
    val = ShardReader(run_dir / "shards", "val")

    def val_bpb_after(text_rows: int) -> float:
        cfg = RunDir(run_dir).config(["sft.max_steps=30", "sft.batch_size=4", "sft.lr=3e-3",
                                      f"sft.text_rows={text_rows}"])
        result = sft(run_dir, cfg, data=str(data), restart=True, show_progress=False, log=lambda _: None)
        model = load_model(result.checkpoint).eval()
        return evaluate_bpb(model, val, index["splits"]["val"]["bytes"], 4, 64, None, torch.device("cpu"))["bpb"]

    chat_only, mixed = val_bpb_after(0), val_bpb_after(2)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in records if r["stage"] == "sft"][-1]
    assert last["loss"] == pytest.approx(last["chat_loss"] + last["text_loss"], rel=1e-4)
    assert mixed < chat_only


def test_text_rows_need_shards(run_dir, tmp_path):
    data = write_jsonl(tmp_path / "chats.jsonl", [chat("Hi.", "Hello.")] * 4)
    shutil.rmtree(run_dir / "shards")
    with pytest.raises(MyLLMError, match="sft.text_rows=0"):
        sft(run_dir, RunDir(run_dir).config(["sft.max_steps=2"]), data=str(data), show_progress=False,
            log=lambda _: None)


# --- LoRA ---------------------------------------------------------------------------------
def test_lora_rank_8_trains_under_5_percent_of_the_default_model():
    model = Transformer(resolve_config("default").model)
    total = model.num_params()
    trainable = apply_lora(model, 8, 16.0)
    assert trainable == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert 0 < trainable < 0.05 * total


def test_merged_lora_equals_base_plus_adapters(tok):
    model = small_model(tok)
    x = torch.randint(0, tok.vocab_size, (2, 16))
    apply_lora(model, 4, 8.0, "q_proj,v_proj,down_proj")
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.1)  # B starts at 0; make the adapters do something
    with torch.no_grad():
        with_adapters = model(x)
        merged_model = merge_lora(copy.deepcopy(model))
        merged = merged_model(x)
    assert not any("lora" in n for n in merged_model.state_dict())
    assert torch.allclose(with_adapters, merged, atol=1e-5)
    assert (with_adapters - small_model(tok)(x)).abs().max() > 1e-3  # and they differ from the base


def test_lora_stage_trains_and_saves_only_adapters(run_dir, tmp_path):
    data = write_jsonl(tmp_path / "chats.jsonl", [chat("Say hi.", "hi hi.")] * 20)
    cfg = RunDir(run_dir).config(["sft.max_steps=4", "sft.batch_size=2", "sft.lora_rank=4"])
    logs = []
    result = sft(run_dir, cfg, data=str(data), show_progress=False, log=logs.append)
    assert any("LoRA rank 4" in line and "AdamW state" in line for line in logs)
    from safetensors.torch import load_file

    saved = load_file(str(result.checkpoint / "model.safetensors"))
    assert saved and all("lora_" in k for k in saved)
    base = load_model(latest_checkpoint(run_dir / "checkpoints" / "pretrain"))
    tuned = load_model(result.checkpoint)  # base + adapters, merged into a plain Transformer
    assert not any("lora" in n for n in tuned.state_dict())
    x = torch.randint(0, 100, (1, 12))
    assert (tuned(x) - base(x)).abs().max() > 0


# --- DPO ----------------------------------------------------------------------------------
def test_dpo_loss_starts_at_log_2_and_prefers_chosen(tok, tmp_path):
    model = small_model(tok)
    pairs = [{"prompt": "Where does Mira live?", "chosen": "Oakridge.", "rejected": "Well, who knows, really."}]
    path = write_jsonl(tmp_path / "pairs.jsonl", pairs)
    loaded = load_pairs(path, tok, 64, log=lambda _: None)
    from myllm.train.dpo import add_reference_logprobs

    add_reference_logprobs(model, loaded, tok.pad_id, "cpu")
    loss, stats = dpo_loss(model, loaded, 0.1, tok.pad_id, "cpu")
    assert loss.item() == pytest.approx(torch.log(torch.tensor(2.0)).item(), abs=1e-5)
    assert stats["reward_margin"] == pytest.approx(0.0, abs=1e-6)
    loss.backward()
    with torch.no_grad():
        for p in model.parameters():
            p -= 1.0 * p.grad
    _, after = dpo_loss(model, loaded, 0.1, tok.pad_id, "cpu")
    assert after["reward_margin"] > 0 and after["pref_accuracy"] == 1.0


def test_dpo_skips_identical_pairs_and_runs(run_dir, tmp_path, tok):
    pairs = [{"prompt": f"Name {w}.", "chosen": f"{w}.", "rejected": f"Hmm, well, {w} I think maybe."}
             for w in ("apple", "river", "stone")] * 4
    pairs.append({"prompt": "same", "chosen": "x", "rejected": " x "})
    path = write_jsonl(tmp_path / "pairs.jsonl", pairs)
    logs = []
    assert len(load_pairs(path, tok, 64, logs.append)) == 12 and "1 skipped with identical replies" in logs[0]
    cfg = RunDir(run_dir).config(["dpo.max_steps=6", "dpo.batch_size=4", "dpo.lr=1e-3"])
    dpo(run_dir, cfg, data=str(path), show_progress=False, log=lambda _: None)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    dpo_records = [r for r in records if r["stage"] == "dpo"]
    assert len(dpo_records) == 6 and dpo_records[-1]["reward_margin"] > dpo_records[0]["reward_margin"]
    assert {"reward_chosen", "reward_rejected", "pref_accuracy"} <= set(dpo_records[-1])


# --- GRPO ---------------------------------------------------------------------------------
def test_verifiers():
    assert get_verifier("number")("3 + 4 = 7. Mira has 7 plums.", "7") == 1.0
    assert get_verifier("number")("Mira has 8 plums.", "7") == 0.0
    assert get_verifier("exact")(" Oakridge. ", "oakridge") == 1.0
    assert get_verifier("contains")("Mira lives in Oakridge.", "Oak") == 0.0
    assert get_verifier("format")("Mira lives in Oakridge.", "") == 1.0
    assert get_verifier("format")("Well, let me think. Mira lives in Oakridge.", "") == 0.0
    with pytest.raises(MyLLMError, match="unknown verifier"):
        get_verifier("nope")


def test_grpo_advantages_flat_groups_kl_and_failing_verifiers(tok):
    policy = small_model(tok)
    reference = copy.deepcopy(policy)

    @register("explodes_on_odd")
    def explodes(response: str, answer: str) -> float:
        if len(response) % 2:
            raise ValueError("odd length")
        return 1.0

    try:
        prompts = [{"ids": render(tok, [{"role": "user", "content": q}], True).ids, "answer": "1", "verifier": v}
                   for q, v in (("one", "number"), ("two", "explodes_on_odd"), ("three", "format"))]
        cfg = resolve_config("default", overrides=["grpo.batch_size=3", "grpo.group_size=4",
                                                   "grpo.max_new_tokens=6"]).grpo
        logs = []
        rollouts = Rollouts(policy, reference, tok, prompts, cfg, torch.device("cpu"), logs.append)
        batch = rollouts.next_batch()
        adv = batch["advantages"].view(3, 4)
        flat = [bool((a == 0).all()) for a in adv]
        assert batch["stats"]["flat_groups"] == sum(flat) / 3
        for a in adv:  # each group's advantages are centred: zero mean, never NaN
            assert torch.isfinite(a).all() and abs(a.sum().item()) < 1e-4
        loss, stats = grpo_loss(policy, batch, cfg)
        assert torch.isfinite(loss) and stats["kl"] == pytest.approx(0.0, abs=1e-6)  # policy == reference
        if rollouts.verifier_errors:
            assert "raised ValueError" in logs[0]
    finally:
        VERIFIERS.pop("explodes_on_odd")


def test_grpo_oversampling_trains_on_the_groups_with_a_signal(tok):
    """Dynamic sampling: of 3 rolled-out groups (two always rewarded, one half right) the step
    trains on the informative one; the reward stats still describe every rolled-out reply."""
    policy = small_model(tok)
    turns = itertools.cycle([1.0, 0.0])
    register("always")(lambda response, answer: 1.0)
    register("alternating")(lambda response, answer: next(turns))
    try:
        prompts = [{"ids": render(tok, [{"role": "user", "content": q}], True).ids, "answer": "", "verifier": v}
                   for q, v in (("one", "always"), ("two", "alternating"), ("three", "always"))]
        cfg = resolve_config("default", overrides=["grpo.batch_size=1", "grpo.group_size=4", "grpo.oversample=3",
                                                   "grpo.max_new_tokens=4"]).grpo
        batch = Rollouts(policy, copy.deepcopy(policy), tok, prompts, cfg, torch.device("cpu")).next_batch()
        assert batch["ids"].shape[0] == 4  # one group of 4 replies trained on
        assert batch["advantages"].tolist() == pytest.approx([0.75**0.5, -(0.75**0.5)] * 2, abs=1e-3)
        stats = batch["stats"]
        assert stats["flat_groups"] == 0 and stats["flat_rolled"] == pytest.approx(2 / 3)
        assert stats["reward_mean"] == pytest.approx(10 / 12)  # 4 + 2 + 4 of 12 rolled-out replies
    finally:
        VERIFIERS.pop("always"), VERIFIERS.pop("alternating")
    with pytest.raises(ConfigError, match="oversample"):
        resolve_config("default", overrides=["grpo.oversample=0"])


def test_grpo_run_logs_rewards_and_kl(run_dir, tmp_path):
    prompts = [{"prompt": f"Say {w}", "answer": w, "verifier": "contains"} for w in ("the", "a", "cat", "dog")]
    path = write_jsonl(tmp_path / "prompts.jsonl", prompts)
    cfg = RunDir(run_dir).config(["grpo.max_steps=3", "grpo.batch_size=2", "grpo.group_size=4",
                                  "grpo.max_new_tokens=8"])
    result = grpo(run_dir, cfg, data=str(path), show_progress=False, log=lambda _: None)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    grpo_records = [r for r in records if r["stage"] == "grpo"]
    assert len(grpo_records) == 3
    for key in ("reward_mean", "accuracy", "kl", "completion_len", "flat_groups"):
        assert key in grpo_records[-1]
    assert read_state(result.checkpoint)["done"]


@pytest.mark.slow
def test_grpo_raises_a_learnable_reward(run_dir, tmp_path):
    # Reward: the reply contains "cat". The tiny model says it now and then; GRPO must make it common.
    prompts = [{"prompt": f"Tell me about the {w}", "answer": "cat", "verifier": "contains"}
               for w in ("river", "town", "log", "mat")]
    path = write_jsonl(tmp_path / "prompts.jsonl", prompts)
    cfg = RunDir(run_dir).config(["grpo.max_steps=40", "grpo.batch_size=4", "grpo.group_size=8",
                                  "grpo.max_new_tokens=6", "grpo.lr=3e-3", "grpo.warmup_steps=2", "grpo.kl_coef=0.0"])
    grpo(run_dir, cfg, data=str(path), show_progress=False, log=lambda _: None)
    rewards = [json.loads(line)["reward_mean"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()
               if json.loads(line)["stage"] == "grpo"]
    first, last = sum(rewards[:8]) / 8, sum(rewards[-8:]) / 8
    assert last > 0.2 and last > 5 * first, (first, last)  # measured: 0.008 -> 0.30
