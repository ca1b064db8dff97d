"""Group-relative policy optimization with verifiable rewards (Shao et al. 2024, DeepSeekMath).

Per step, for each of `batch_size` prompts, sample a group of `group_size` replies with the
KV-cache engine, score each with the prompt's verifier, and give each reply the advantage

    A_i = (r_i - mean(r)) / (std(r) + eps)          within its group.

A group whose rewards are all equal says nothing about which reply is better: its advantages
are exactly 0, it is counted (`flat_groups`), and only its KL term trains. With
`oversample` k > 1 (DAPO's dynamic sampling, Yu et al. 2025) a step rolls out k times as many
prompts and trains on the groups that do carry a signal, topped up with flat ones only when
fewer than `batch_size` do: a small model's groups are mostly all right or all wrong, so
without it most of each step's replies teach nothing. The loss per reply token is the clipped
policy-ratio objective plus a KL penalty to the frozen starting model,

    -[ min(rho A, clip(rho, 1-eps, 1+eps) A) - kl_coef * KL_k3 ],   rho = pi / pi_old,
    KL_k3 = exp(ref - logp) - (ref - logp) - 1   (Schulman's unbiased, always >= 0 estimator),

averaged over all reply tokens of the step. Sampling and the update use the same weights, so
pi_old is the policy's own detached log-probability (rho = 1, the gradient is the plain
policy gradient; the clip matters as soon as one rollout feeds several updates).

Records: {"prompt": str | messages, "answer": str, "verifier": "number" | "exact" | "contains"
| "format" | a registered name}. A verifier that raises scores 0; the errors are counted and the
first one is printed.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch

from myllm.chat import as_messages, prompt_ids, read_jsonl, stop_ids
from myllm.config import GRPOConfig, RunConfig
from myllm.device import autocast
from myllm.errors import MyLLMError
from myllm.evals.verifiers import get_verifier
from myllm.infer.engine import SamplingParams, generate_many
from myllm.tokenizer import Tokenizer
from myllm.train.loop import TrainResult
from myllm.train.post import Shuffled, check_data_file, pad_rows, run_post_stage, sequence_logprobs

FORMAT = '{"prompt": "..." (or a messages list), "answer": "7", "verifier": "number"} per line (verifier optional)'


def check_record(record: dict, where: str) -> tuple[list[dict[str, str]], str, str]:
    """(prompt messages, answer, verifier name), or one line naming `where` (file:line) and the format."""
    if "prompt" not in record or "answer" not in record:
        raise MyLLMError(f"{where}: a GRPO record needs \"prompt\" and \"answer\"; expected {FORMAT}")
    answer, verifier = record["answer"], record.get("verifier", "exact")
    if isinstance(answer, (dict, list)) or answer is None:
        raise MyLLMError(f"{where}: \"answer\" must be a string or a number, got {type(answer).__name__}")
    if not isinstance(verifier, str):
        raise MyLLMError(f"{where}: \"verifier\" must be a verifier's name, got {type(verifier).__name__}")
    try:
        get_verifier(verifier)  # unknown names fail here, before training
    except MyLLMError as e:
        raise MyLLMError(f"{where}: {e}") from None
    return as_messages(record["prompt"], where), str(answer), verifier


def check_file(path: Path) -> int:
    return check_data_file(path, check_record, FORMAT)


def load_prompts(path: Path, tok: Tokenizer, max_prompt: int, log=print) -> list[dict[str, Any]]:
    prompts, long = [], 0
    for n, record in read_jsonl(path, FORMAT):
        messages, answer, verifier = check_record(record, f"{path}:{n}")
        ids = prompt_ids(tok, messages)
        if len(ids) > max_prompt:
            long += 1
            continue
        prompts.append({"ids": ids, "answer": answer, "verifier": verifier})
    log(f"grpo: {len(prompts)} prompts from {path}" + (f" ({long} too long for the context, skipped)" if long else ""))
    if not prompts:
        raise MyLLMError(f"{path} has no usable prompts")
    return prompts


class Rollouts:
    """Each batch is a fresh rollout: sampled groups, rewards, advantages, and reference log-probs."""

    def __init__(self, policy, reference, tok: Tokenizer, prompts: list[dict], cfg: GRPOConfig, device, log=print,
                 precision: str = "auto"):
        self.policy, self.reference, self.tok, self.prompts, self.cfg = policy, reference, tok, prompts, cfg
        self.device, self.log, self.precision = device, log, precision
        self.order = Shuffled(len(prompts), cfg.seed)
        self.generator = torch.Generator(device=device).manual_seed(cfg.seed)
        self.params = SamplingParams(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                                     stop_ids=stop_ids(tok))
        self.verifier_errors = 0

    def reward(self, reply: str, prompt: dict) -> float:
        try:
            return float(get_verifier(prompt["verifier"])(reply, prompt["answer"]))
        except Exception as e:  # a user's verifier may fail on odd replies: score 0, keep training
            if self.verifier_errors == 0:
                self.log(f"grpo: verifier {prompt['verifier']!r} raised {type(e).__name__}: {e} "
                         f"on reply {reply[:60]!r}; such replies score 0 (counted as verifier_errors)")
            self.verifier_errors += 1
            return 0.0

    @torch.no_grad()
    def next_batch(self) -> dict[str, Any]:
        self.policy.eval()
        rows, starts, advantages, flat = [], [], [], 0
        stops = set(self.params.stop_ids)
        chosen = [self.prompts[i] for i in self.order.take(self.cfg.batch_size * self.cfg.oversample)]
        G = self.cfg.group_size
        # All groups of the step decode together (prompts of equal length share a batch), on the training
        # device, eagerly (post-training stages never compile: their shapes change every step).
        replies = generate_many(self.policy, [p["ids"] for p in chosen for _ in range(G)], self.params,
                                batch_size=256, generator=self.generator)
        groups = []
        for k, prompt in enumerate(chosen):
            group = replies[k * G : (k + 1) * G]
            r = torch.tensor([self.reward(self.tok.decode([t for t in g if t not in stops]), prompt) for g in group])
            groups.append((prompt, group, r, bool((r == r[0]).all())))
        rewards = [x for g in groups for x in g[2].tolist()]  # of every reply rolled out: the policy's reward
        flat_rolled = sum(g[3] for g in groups)
        # Groups with a signal first (in rollout order), then flat ones to fill the batch.
        groups = sorted(groups, key=lambda g: g[3])[: self.cfg.batch_size]
        for prompt, group, r, is_flat in groups:
            if is_flat:
                flat += 1
                adv = torch.zeros_like(r)
            else:
                adv = (r - r.mean()) / (r.std() + 1e-4)
            rows += [prompt["ids"] + g for g in group]
            starts += [len(prompt["ids"])] * len(group)
            advantages += adv.tolist()
        ids = pad_rows(rows, self.tok.pad_id)
        mask = torch.zeros_like(ids, dtype=torch.float32)
        for k, (row, s) in enumerate(zip(rows, starts)):
            mask[k, s : len(row)] = 1.0
        ids, mask = ids.to(self.device), mask.to(self.device)
        # Under the policy's own autocast (train.precision), on the same batch as the update: at the
        # first update the ratio is exactly 1 and the KL exactly 0, in bf16 as in fp32.
        with autocast(self.device, self.precision):
            old = sequence_logprobs(self.policy, ids, mask)
            ref = sequence_logprobs(self.reference, ids, mask)
        self.policy.train()
        return {"ids": ids, "mask": mask, "old": old, "ref": ref,
                "advantages": torch.tensor(advantages, device=self.device),
                "stats": {"reward_mean": sum(rewards) / len(rewards),
                          "accuracy": sum(x >= 1.0 for x in rewards) / len(rewards),
                          "completion_len": sum(map(len, replies)) / len(replies),  # every reply rolled out
                          "flat_groups": flat / self.cfg.batch_size,  # of the groups trained on
                          "flat_rolled": flat_rolled / len(chosen),  # of the groups rolled out
                          "verifier_errors": float(self.verifier_errors)}}

    def state_dict(self) -> dict:
        return {**self.order.state_dict(), "generator": self.generator.get_state().tolist()}

    def load_state_dict(self, state: dict) -> None:
        self.order.load_state_dict(state)
        self.generator.set_state(torch.tensor(state["generator"], dtype=torch.uint8))


def grpo_loss(model: torch.nn.Module, batch: dict[str, Any], cfg: GRPOConfig) -> tuple[torch.Tensor, dict]:
    mask = batch["mask"][:, 1:]
    logp = sequence_logprobs(model, batch["ids"], batch["mask"])
    ratio = torch.exp(logp - batch["old"])
    adv = batch["advantages"][:, None]
    surrogate = torch.minimum(ratio * adv, ratio.clamp(1 - cfg.clip_eps, 1 + cfg.clip_eps) * adv)
    delta = batch["ref"] - logp
    kl = torch.exp(delta) - delta - 1
    tokens = mask.sum().clamp(min=1)
    loss = -((surrogate - cfg.kl_coef * kl) * mask).sum() / tokens
    return loss, {**batch["stats"], "kl": ((kl * mask).sum() / tokens).detach()}


def grpo(run_dir: Path, cfg: RunConfig, data: str | None = None, restart: bool = False,
         show_progress: bool = True, log=print) -> TrainResult:
    def make(model, tok, path, device):
        prompts = load_prompts(path, tok, model.cfg.context - cfg.grpo.max_new_tokens, log)
        reference = copy.deepcopy(model).eval().requires_grad_(False)  # frozen: the KL anchor
        batches = Rollouts(model, reference, tok, prompts, cfg.grpo, device, log, cfg.train.precision)
        return batches, lambda m, b: grpo_loss(m, b, cfg.grpo), lambda b: int(b["mask"].sum())

    return run_post_stage(run_dir, cfg, "grpo", make, data, restart, show_progress, log, check_file)
