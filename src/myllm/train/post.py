"""What SFT, DPO and GRPO share: where a stage starts, where its data comes from, how it runs.

- **Chain.** The stages run in the order sft -> dpo -> grpo. Each starts from the final
  checkpoint of the latest earlier stage that has one (pretrain at the start of the chain),
  and names it as `base` in its checkpoints' state.json.
- **Data.** A section's `data` is a JSONL file, or "universe": then the stage writes its
  records from the run's world to `tasks/<stage>.jsonl` first, so the data it trained on is in
  the run directory for anyone to read.
- **Run.** `run_post_stage` builds the model (optionally with LoRA adapters), restarts or
  resumes the stage's checkpoints, and hands batches and loss to the shared training loop.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from myllm import universe
from myllm.chat import read_jsonl, save_template
from myllm.config import PostTrainConfig, RunConfig
from myllm.device import resolve_device
from myllm.errors import MyLLMError
from myllm.io import atomic_open
from myllm.rundir import RunDir, resume_fingerprint
from myllm.tokenizer import Tokenizer
from myllm.train.checkpoint import latest_checkpoint, read_state
from myllm.train.loop import TrainResult, train
from myllm.train.lora import apply_lora, parse_targets
from myllm.train.optim import check_optimizer
from myllm.universe import tasks as universe_tasks


def write_jsonl(path: Path, records: list[dict]) -> None:
    with atomic_open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")


def universe_records(world: universe.World, stage: str, section: PostTrainConfig) -> list[dict]:
    if stage == "sft":
        return universe_tasks.sft_conversations(world, section.seed, section.examples)
    if stage == "dpo":
        return universe_tasks.preference_pairs(world, section.seed, section.examples,
                                               arith_fraction=section.arith_fraction)
    return universe_tasks.grpo_prompts(world, section.seed, section.examples, section.fact_fraction)


def check_data_file(path: Path, check_record: Callable[[dict, str], Any], expected: str) -> int:
    """Read a stage's JSONL file once and check every record's shape (no tokenizer needed), so a bad
    line stops the stage, with file:line and the expected format, before anything is written or deleted."""
    count = 0
    for n, record in read_jsonl(path, expected):
        check_record(record, f"{path}:{n}")
        count += 1
    if not count:
        raise MyLLMError(f"data file {path} is empty; expected {expected}")
    return count


def data_file(run: RunDir, stage: str, section: PostTrainConfig) -> Path:
    """The stage's JSONL: the configured file, or the universe records written into the run."""
    if section.data != "universe":
        return Path(section.data)
    path = run.tasks(stage)
    write_jsonl(path, universe_records(run.world(), stage, section))
    return path


def run_post_stage(
    run_dir: RunDir | Path,
    cfg: RunConfig,
    stage: str,
    make: Callable[[torch.nn.Module, Tokenizer, Path, torch.device], tuple[Any, Callable, Callable]],
    data: str | None = None,
    restart: bool = False,
    show_progress: bool = True,
    log: Callable[[str], None] = print,
    check_file: Callable[[Path], int] | None = None,
) -> TrainResult:
    """Train one post-training stage. `make(model, tok, data_path, device)` returns
    (batches, loss_fn, tokens_in) for the loop; it runs after the model is loaded and before
    LoRA is applied, so it may copy the model as a frozen reference. `check_file(path)` checks a
    user's data file first, before anything is read from the run or written to it."""
    run = RunDir.of(run_dir)
    section: PostTrainConfig = getattr(cfg, stage)
    if data is not None:
        section.data = str(data)
    if check_file is not None and section.data != "universe":
        check_file(Path(section.data))
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    device = resolve_device(cfg.train.device)
    start = run.model_checkpoint(before=stage, cfg=cfg)
    tok = Tokenizer.load(run.tokenizer_file)
    save_template(run.tokenizer_dir)
    path = data_file(run, stage, section)
    ckpt_root = run.checkpoints(stage)
    fingerprint = resume_fingerprint(run, cfg, stage, start, path)
    latest = latest_checkpoint(ckpt_root)
    start_over = restart or (latest is not None and read_state(latest).get("fingerprint") != fingerprint)
    torch.manual_seed(section.seed)
    model = run.load_model(start, device).train()
    batches, loss_fn, tokens_in = make(model, tok, path, device)
    lora = None
    if section.lora_rank > 0:
        targets = parse_targets(section.lora_targets)
        trainable = apply_lora(model, section.lora_rank, section.lora_alpha, targets)
        total = sum(p.numel() for p in model.parameters())
        log(f"{stage}: LoRA rank {section.lora_rank} on {', '.join(targets)}: {trainable:,} of {total:,} "
            f"parameters train ({trainable / total:.2%}); AdamW state {trainable * 8 / 1e6:.2f} MB "
            f"instead of {total * 8 / 1e6:.2f} MB")
        lora = {"rank": section.lora_rank, "alpha": section.lora_alpha, "targets": list(targets)}
    train_cfg = section.train_config(cfg.train)
    check_optimizer(model, train_cfg, device)  # validate, then delete
    if start_over:
        shutil.rmtree(ckpt_root, ignore_errors=True)  # a different start, data or recipe: start over
    resume = latest_checkpoint(ckpt_root) is not None  # same start, data and recipe: continue
    extra = {"base": str(start.relative_to(run.root)), "lora": lora}
    return train(model, train_cfg, run, stage, batches, loss_fn, tokens_in,
                 fingerprint=fingerprint, resume=resume, show_progress=show_progress, extra_state=extra)


class Shuffled:
    """Indices 0..n-1 in a fresh seeded order each epoch; the state is (epoch, position)."""

    def __init__(self, n: int, seed: int):
        if n <= 0:
            raise MyLLMError("no usable training records (see the counts above); check the data file")
        self.n, self.seed, self.epoch, self.pos = n, seed, 0, 0
        self._order = self._make_order()

    def _make_order(self) -> list[int]:
        return torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 100003 + self.epoch)).tolist()

    def take(self, k: int) -> list[int]:
        out = []
        for _ in range(k):
            if self.pos >= self.n:
                self.epoch, self.pos = self.epoch + 1, 0
                self._order = self._make_order()
            out.append(self._order[self.pos])
            self.pos += 1
        return out

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.pos = state["epoch"], state["pos"]
        self._order = self._make_order()


def sequence_logprobs(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-token log p(ids[t] | ids[<t]) at positions where mask[t] (else 0): (B, T-1).

    `mask` (B, T) marks the tokens to score (a response); position 0 is never scored.
    """
    logits = model(ids[:, :-1]).float()
    targets = ids[:, 1:]
    logp = -torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                              reduction="none").view_as(targets)
    return logp * mask[:, 1:]


def pad_rows(rows: list[list[int]], value: int) -> torch.Tensor:
    width = max(len(r) for r in rows)
    out = torch.full((len(rows), width), value, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(r, dtype=torch.long)
    return out
