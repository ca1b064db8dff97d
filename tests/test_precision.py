"""Mixed precision right by construction, checked on CPU with bf16 autocast (`train.precision=bf16`, what
CUDA's `auto` means): a policy compared with itself gives GRPO ratio 1 and KL 0 and a DPO margin of 0 at
step 0, because reference and rollout log-probs run under the same autocast as the policy; evaluation and
training share that autocast; the FSDP2 policy keeps the RoPE tables fp32."""

import pytest
import torch

from myllm.chat import prompt_ids
from myllm.config import GRPOConfig, ModelConfig, TrainConfig
from myllm.device import autocast, autocast_dtype, resolve_device
from myllm.errors import ConfigError, MyLLMError
from myllm.model import Transformer
from myllm.rundir import RunDir
from myllm.train.dpo import add_reference_logprobs, dpo_loss, pair_tensors
from myllm.train.grpo import Rollouts, grpo_loss
from myllm.train.post import sequence_logprobs

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def tok(tiny_data):
    return RunDir(tiny_data).tokenizer()


def model_of(tok, seed=0):
    torch.manual_seed(seed)
    m = Transformer(ModelConfig(preset="nano", vocab_size=512, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2,
                                d_ff=128, context=64))
    with torch.no_grad():  # far-from-uniform logits, as a trained model's: bf16 rounding then shows
        for p in m.parameters():
            if p.ndim == 2:
                p.mul_(8)
    return m


def test_precision_names_and_dtypes():
    assert autocast_dtype(CPU, "auto") is None and autocast_dtype(CPU, "bf16") is torch.bfloat16
    assert autocast_dtype(torch.device("cuda"), "auto") is torch.bfloat16
    assert autocast_dtype(torch.device("cuda"), "fp32") is None
    with pytest.raises(ConfigError, match="train.precision"):
        TrainConfig(precision="fp16").validate()
    for bad in ("tpu", "cuda:x", "cuda:", ""):
        with pytest.raises(ConfigError, match="choose auto, cpu, cuda or cuda:N"):
            TrainConfig(device=bad).validate()
    TrainConfig(device="cuda:1").validate()  # a valid name; whether it exists is checked when it is used
    if not torch.cuda.is_available():
        with pytest.raises(MyLLMError, match="no CUDA device is visible"):
            resolve_device("cuda:1")


def grpo_batch(tok, policy, reference, precision):
    prompts = [{"ids": prompt_ids(tok, [{"role": "user", "content": q}]), "answer": "a", "verifier": "contains"}
               for q in ("the cat sat", "a dog ran on the mat", "red river")]
    cfg = GRPOConfig(batch_size=3, group_size=4, max_new_tokens=12, temperature=1.0)
    return Rollouts(policy, reference, tok, prompts, cfg, CPU, log=lambda *_: None, precision=precision).next_batch()


def test_grpo_ratio_is_one_and_kl_zero_at_step_zero_under_bf16(tok):
    policy = model_of(tok)
    reference = model_of(tok)  # the same weights: a frozen copy, as grpo() makes
    batch = grpo_batch(tok, policy, reference, "bf16")
    with autocast(CPU, "bf16"):  # as the training loop calls the loss
        logp = sequence_logprobs(policy, batch["ids"], batch["mask"])
        _, metrics = grpo_loss(policy, batch, GRPOConfig())
    mask = batch["mask"][:, 1:].bool()
    ratio = torch.exp(logp - batch["old"])[mask]
    assert ratio.numel() > 20
    assert torch.equal(ratio, torch.ones_like(ratio))
    assert metrics["kl"].item() == 0.0
    # What the fix is for: reference log-probs outside the autocast (fp32) differ from the bf16 policy's.
    fp32_ref = sequence_logprobs(reference, batch["ids"], batch["mask"])
    drift = (torch.exp(logp - fp32_ref)[mask] - 1).abs().max().item()
    print(f"max |ratio - 1| with an fp32 reference under a bf16 policy: {drift:.3g}")
    assert drift > 1e-3


def test_dpo_margin_is_zero_against_itself_under_bf16(tok):
    model = model_of(tok)
    end = tok.token_id("<|end|>")
    pairs = []
    for i, (q, a, b) in enumerate([("the cat", "sat on the mat", "ran"), ("a dog", "ran under the log", "red"),
                                   ("blue town", "one two", "the baker smith sat on a red mat"),
                                   ("river", "sat", "ran on the log under the blue mat")] * 3):
        prompt = prompt_ids(tok, [{"role": "user", "content": f"{q} {i}"}])
        pairs.append({"chosen": prompt + tok.encode(a) + [end], "rejected": prompt + tok.encode(b) + [end],
                      "start": len(prompt)})
    add_reference_logprobs(model, pairs, tok.pad_id, CPU, "bf16", batch=5)  # other batches than training's
    model.train()
    worst = 0.0
    for start in range(0, len(pairs), 4):
        batch = pairs[start : start + 4]
        with autocast(CPU, "bf16"):  # as the training loop calls the loss
            _, m = dpo_loss(model, batch, beta=1.0, pad_id=tok.pad_id, device=CPU)
            worst = max(worst, (policy_logprobs(model, batch, tok) - refs(batch)).abs().max().item())
        assert m["reward_margin"].item() == pytest.approx(0.0, abs=1e-5)
    # bf16 matmuls of other batch shapes could round differently in the last bits; on this CPU they do not.
    assert worst <= 1e-5
    fp32 = [dict(p) for p in pairs]
    add_reference_logprobs(model, fp32, tok.pad_id, CPU, "fp32")
    with autocast(CPU, "bf16"):
        drift = (policy_logprobs(model, fp32, tok) - refs(fp32)).abs().max().item()
    print(f"max |log pi - log ref| per reply: bf16 reference {worst:.2g}; fp32 reference {drift:.2g}")
    assert drift > 1e-3


def policy_logprobs(model, batch, tok):
    ids, mask = pair_tensors(batch, tok.pad_id)
    return sequence_logprobs(model, ids, mask).sum(-1).float()


def refs(batch):
    return torch.tensor([p["ref_chosen"] for p in batch] + [p["ref_rejected"] for p in batch])


def test_evaluation_runs_under_the_training_precision(tiny_model_run):
    from myllm.evals.bpb import run_bpb

    run = RunDir(tiny_model_run)
    cfg = run.config()
    model = run.load_model(run.model_checkpoint())
    fp32 = run_bpb(run, model, cfg, "val", CPU)
    cfg.train.precision = "bf16"
    bf16 = run_bpb(run, model, cfg, "val", CPU)
    assert bf16["tokens"] == fp32["tokens"] and bf16["bpb"] != fp32["bpb"]
    assert bf16["bpb"] == pytest.approx(fp32["bpb"], rel=2e-2)


def test_fsdp_blocks_keep_rope_tables_fp32():
    from myllm.train.distributed import fsdp_policies

    block, root = fsdp_policies(torch.bfloat16)
    assert block.param_dtype is torch.bfloat16 and block.reduce_dtype is torch.float32
    assert block.cast_forward_inputs is False  # cos/sin reach every block as fp32, as under DDP
    assert root.param_dtype is torch.bfloat16
    plain, _ = fsdp_policies(None)
    assert plain.param_dtype is None
