"""The post-training sections of a run's config: [sft], [dpo] and [grpo], and what they share.

They live apart from `schema.py` (which re-exports them) only to keep each file short; import
them from `myllm.config` as before.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from myllm.errors import ConfigError, MyLLMError

INF = float("inf")
MAX_LR = 10.0  # as [train]'s (see schema.py): far above any rate that trains, within float32's range

# The linears of a block that LoRA can wrap (see myllm.train.lora), named as in myllm.model.
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def parse_targets(targets: str | tuple[str, ...]) -> tuple[str, ...]:
    """`"q_proj,v_proj"` (or a tuple) -> the LoRA target names, each checked against LORA_TARGETS."""
    names = tuple(t.strip() for t in targets.split(",")) if isinstance(targets, str) else tuple(targets)
    bad = [t for t in names if t not in LORA_TARGETS]
    if bad or not names:
        raise MyLLMError(f"LoRA targets {bad or names}: choose from {', '.join(LORA_TARGETS)} (comma-separated)")
    return names


@dataclass
class PostTrainConfig:
    """What SFT, DPO and GRPO share: their data, a short training recipe, optional LoRA.

    Each stage starts from the previous enabled stage's final checkpoint (SFT from pretraining,
    DPO from SFT, GRPO from DPO) and trains with the shared loop; `train_config` turns this
    section into the loop's TrainConfig (device and threads come from [train]).
    """

    enabled: bool = True
    data: str = "universe"  # "universe" (generated from the world) or a JSONL file
    examples: int = 2000  # how many universe records to generate
    max_steps: int = 100
    batch_size: int = 16
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 10
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    lora_rank: int = 0  # 0 = full fine-tuning; > 0 trains rank-r adapters only
    lora_alpha: float = 16.0
    lora_targets: str = "q_proj,k_proj,v_proj,o_proj"
    seed: int = 0

    def validate(self, name: str) -> None:
        for key in ("max_steps", "batch_size", "examples"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"{name}.{key} = {getattr(self, key)} must be positive")
        if not (0 < self.lr <= MAX_LR and 0 < self.lora_alpha < INF and 0 <= self.weight_decay < INF) \
                or self.lora_rank < 0:
            raise ConfigError(f"{name}.lr (> 0, at most {MAX_LR:g}), {name}.lora_alpha (> 0) and {name}.weight_decay "
                              f"(>= 0) must be finite; {name}.lora_rank >= 0")
        if not (0 <= self.min_lr_ratio <= 1 and self.warmup_steps >= 0 and 0 <= self.grad_clip < INF):
            raise ConfigError(f"{name}.min_lr_ratio must be in [0, 1], {name}.warmup_steps >= 0, {name}.grad_clip >= 0")
        try:
            parse_targets(self.lora_targets)
        except MyLLMError as e:
            raise ConfigError(f"{name}.lora_targets: {e}") from None

    def train_config(self, base: Any) -> Any:  # a TrainConfig -> a TrainConfig (schema.py imports this module)
        return dataclasses.replace(
            base, batch_size=self.batch_size, grad_accum=1, max_steps=self.max_steps, time_budget=0.0, lr=self.lr,
            min_lr_ratio=self.min_lr_ratio, warmup_steps=self.warmup_steps, weight_decay=self.weight_decay,
            grad_clip=self.grad_clip, eval_every=self.max_steps, ckpt_every=max(self.max_steps // 2, 1), keep_last=1,
            seed=self.seed, compile="false", global_batch=0, phases="")


@dataclass
class SFTConfig(PostTrainConfig):
    """Supervised fine-tuning on chats, loss on assistant tokens only, short chats packed per row."""

    examples: int = 3000
    max_steps: int = 250  # with text rows: 150 steps gave 58% held-out fact QA, 250 gave 98%
    batch_size: int = 8
    lr: float = 2e-3
    overlong: str = "truncate"  # a chat longer than the context: "truncate" (keep its start) or "drop"
    text_rows: int = 2  # pretraining-text windows added to each batch, so SFT keeps the book text (0: chats only)

    def validate(self, name: str = "sft") -> None:
        super().validate(name)
        if self.text_rows < 0:
            raise ConfigError(f"sft.text_rows = {self.text_rows} must be >= 0")
        if self.overlong not in ("truncate", "drop"):
            raise ConfigError(f"sft.overlong = {self.overlong!r}; choose truncate or drop")


@dataclass
class DPOConfig(PostTrainConfig):
    """Direct preference optimization against the frozen starting model."""

    examples: int = 1000
    max_steps: int = 60
    batch_size: int = 16
    lr: float = 5e-5  # small: at 1e-4 the default run's fact-QA accuracy fell 4 points, at 5e-4 by 77
    beta: float = 0.1  # strength of the preference; larger stays closer to the reference
    # Universe pairs: share that are sums (chosen right, rejected off by 1-2). Off: at 0.3 the default run's DPO kept
    # more arithmetic (14% vs 10%) but GRPO then ended lower (14.5% vs 21%).
    arith_fraction: float = 0.0

    def validate(self, name: str = "dpo") -> None:
        super().validate(name)
        if not 0 < self.beta < INF:
            raise ConfigError(f"dpo.beta = {self.beta} must be positive")
        if not 0 <= self.arith_fraction <= 1:
            raise ConfigError(f"dpo.arith_fraction = {self.arith_fraction} must be in [0, 1]")


@dataclass
class GRPOConfig(PostTrainConfig):
    """Group-relative policy optimization with verifiable rewards."""

    examples: int = 1000
    max_steps: int = 45
    batch_size: int = 8  # prompts per step; each gets group_size completions
    lr: float = 5e-4  # at 1e-3 (kl_coef 0.02) the default run's fact QA fell 12 points during GRPO, here 7
    warmup_steps: int = 5
    group_size: int = 8
    max_new_tokens: int = 40
    temperature: float = 0.8  # rollouts a little sharper than the model: at 1.0 more groups were all wrong
    kl_coef: float = 0.05  # weight of the k3 KL estimate to the frozen reference
    clip_eps: float = 0.2  # policy-ratio clip range
    fact_fraction: float = 0.2  # universe prompts: share of fact questions kept beside the arithmetic
    oversample: int = 1  # roll out oversample x batch_size prompts, train on the groups with a signal

    def validate(self, name: str = "grpo") -> None:
        super().validate(name)
        if self.group_size < 2:
            raise ConfigError(f"grpo.group_size = {self.group_size} must be at least 2 (advantages compare a group)")
        if self.max_new_tokens <= 0 or self.temperature <= 0 or self.kl_coef < 0 or not 0 < self.clip_eps <= 10:
            raise ConfigError("grpo.max_new_tokens and grpo.temperature must be > 0, grpo.clip_eps in (0, 10] "
                              "(a ratio clip past 10 is none), grpo.kl_coef >= 0")
        if not 0 <= self.fact_fraction <= 1:
            raise ConfigError(f"grpo.fact_fraction = {self.fact_fraction} must be in [0, 1]")
        if self.oversample < 1:
            raise ConfigError(f"grpo.oversample = {self.oversample} must be at least 1 (1 = plain GRPO)")

    def train_config(self, base: Any) -> Any:
        # GRPO's loss is a policy-gradient surrogate near 0 whose size follows the advantages, so a
        # "spike" against its running mean means nothing: spike logging is off for this stage.
        return dataclasses.replace(super().train_config(base), spike_factor=0.0)
