"""Direct preference optimization (Rafailov et al. 2023): prefer `chosen` over `rejected`.

For a prompt x and replies y_w (chosen), y_l (rejected), with log-probabilities summed over
the reply tokens, the loss is

    -log sigmoid( beta * [ (log pi(y_w|x) - log ref(y_w|x)) - (log pi(y_l|x) - log ref(y_l|x)) ] )

where ref is the frozen model the stage starts from. Its log-probabilities never change, so
they are computed once, before training, and kept with the pairs: the reference model is not
held in memory while training. Logged per step: the implicit rewards beta * (log pi - log ref)
of chosen and rejected, their margin, and preference accuracy (margin > 0).

Records: {"prompt": str | messages, "chosen": str, "rejected": str} (a reply may also be an
assistant message or a one-message list). Pairs with identical replies are skipped and counted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from myllm.chat import as_messages, prompt_ids, read_jsonl
from myllm.config import RunConfig
from myllm.device import autocast
from myllm.errors import MyLLMError
from myllm.tokenizer import Tokenizer
from myllm.train.loop import TrainResult
from myllm.train.post import Shuffled, check_data_file, pad_rows, run_post_stage, sequence_logprobs


def reply_text(value: Any, where: str) -> str:
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if isinstance(value, dict):
        value = value.get("content")
    if not isinstance(value, str):
        raise MyLLMError(f"{where}: a reply must be a string or an assistant message {{\"content\": ...}}, "
                         f"got {type(value).__name__}")
    return value


FORMAT = '{"prompt": "..." (or a messages list), "chosen": "...", "rejected": "..."} per line'


def check_record(record: dict, where: str) -> tuple[list[dict[str, str]], str, str]:
    """(prompt messages, chosen reply, rejected reply), or one line naming `where` (file:line) and the format."""
    for key in ("prompt", "chosen", "rejected"):
        if key not in record:
            raise MyLLMError(f"{where}: a preference pair needs \"prompt\", \"chosen\" and \"rejected\" "
                             f"(no \"{key}\"); expected {FORMAT}")
    return as_messages(record["prompt"], where), reply_text(record["chosen"], where), \
        reply_text(record["rejected"], where)


def check_file(path: Path) -> int:
    return check_data_file(path, check_record, FORMAT)


def load_pairs(path: Path, tok: Tokenizer, seq_len: int, log=print) -> list[dict[str, Any]]:
    """Tokenized pairs: `chosen`/`rejected` are whole sequences (prompt + reply + <|end|>);
    `start` is where the reply begins."""
    end = tok.token_id("<|end|>")
    pairs, same, long = [], 0, 0
    for n, record in read_jsonl(path, FORMAT):
        messages, chosen, rejected = check_record(record, f"{path}:{n}")
        if chosen.strip() == rejected.strip():
            same += 1
            continue
        prompt = prompt_ids(tok, messages)
        seqs = [prompt + tok.encode(r) + [end] for r in (chosen, rejected)]
        if max(len(s) for s in seqs) > seq_len + 1:
            long += 1
            continue
        pairs.append({"chosen": seqs[0], "rejected": seqs[1], "start": len(prompt)})
    log(f"dpo: {len(pairs)} pairs from {path} ({same} skipped with identical replies, "
        f"{long} longer than the context)")
    if not pairs:
        raise MyLLMError(f"{path} has no usable preference pairs; each needs different chosen and rejected replies")
    return pairs


def pair_tensors(pairs: list[dict[str, Any]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, reply mask), chosen rows first then rejected rows, right-padded."""
    rows = [p["chosen"] for p in pairs] + [p["rejected"] for p in pairs]
    starts = [p["start"] for p in pairs] * 2
    ids = pad_rows(rows, pad_id)
    mask = torch.zeros_like(ids, dtype=torch.float32)
    for i, (r, s) in enumerate(zip(rows, starts)):
        mask[i, s : len(r)] = 1.0
    return ids, mask


@torch.no_grad()
def add_reference_logprobs(model: torch.nn.Module, pairs: list[dict], pad_id: int, device, precision: str = "auto",
                           batch: int = 64) -> None:
    """The start model's log-probabilities, under the same autocast as the policy's in training (`precision`):
    in bf16 the policy would otherwise differ from its own reference at step 0, and the margin not be 0."""
    model.eval()
    for i in range(0, len(pairs), batch):
        chunk = pairs[i : i + batch]
        ids, mask = pair_tensors(chunk, pad_id)
        with autocast(torch.device(device), precision):
            logp = sequence_logprobs(model, ids.to(device), mask.to(device)).sum(-1).float().cpu()
        for k, p in enumerate(chunk):
            p["ref_chosen"], p["ref_rejected"] = float(logp[k]), float(logp[len(chunk) + k])
    model.train()


class PairBatches:
    def __init__(self, pairs: list[dict], batch_size: int, seed: int):
        self.pairs, self.batch_size, self.order = pairs, batch_size, Shuffled(len(pairs), seed)

    def next_batch(self) -> list[dict]:
        return [self.pairs[i] for i in self.order.take(self.batch_size)]

    def state_dict(self) -> dict:
        return self.order.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.order.load_state_dict(state)


def dpo_loss(model: torch.nn.Module, batch: list[dict], beta: float, pad_id: int, device) -> tuple[torch.Tensor, dict]:
    ids, mask = pair_tensors(batch, pad_id)
    logp = sequence_logprobs(model, ids.to(device), mask.to(device)).sum(-1)
    n = len(batch)
    ref = torch.tensor([p["ref_chosen"] for p in batch] + [p["ref_rejected"] for p in batch], device=device)
    rewards = beta * (logp - ref)
    margin = rewards[:n] - rewards[n:]
    loss = -F.logsigmoid(margin).mean()
    # Tensors, read back by the loop with the loss in one sync per step.
    return loss, {"reward_chosen": rewards[:n].mean().detach(), "reward_rejected": rewards[n:].mean().detach(),
                  "reward_margin": margin.mean().detach(), "pref_accuracy": (margin > 0).float().mean()}


def dpo(run_dir: Path, cfg: RunConfig, data: str | None = None, restart: bool = False,
        show_progress: bool = True, log=print) -> TrainResult:
    def make(model, tok, path, device):
        pairs = load_pairs(path, tok, cfg.seq_len, log)
        add_reference_logprobs(model, pairs, tok.pad_id, device, cfg.train.precision)  # the start model
        batches = PairBatches(pairs, cfg.dpo.batch_size, cfg.dpo.seed)
        loss = lambda m, b: dpo_loss(m, b, cfg.dpo.beta, tok.pad_id, device)  # noqa: E731
        return batches, loss, lambda b: sum(len(p["chosen"]) + len(p["rejected"]) for p in b)

    return run_post_stage(run_dir, cfg, "dpo", make, data, restart, show_progress, log, check_file)
