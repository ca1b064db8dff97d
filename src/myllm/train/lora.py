"""LoRA: fine-tune a frozen model through low-rank adapters (Hu et al. 2021).

A targeted linear layer `y = x W^T` becomes `y = x W^T + (alpha / r) * x A^T B^T` with
A (r x in) and B (out x r); only A and B train. B starts at zero, so training starts from
exactly the base model. The layer keeps its `weight` parameter under the same name and adds
`lora_A` / `lora_B` beside it, so a state dict still maps onto Hugging Face names and the
adapters are just the keys that contain "lora_".

Checkpoints of a LoRA stage hold only the adapters (the trainable weights); `state.json`
names the base checkpoint and the LoRA settings. `merge_lora` folds `W + (alpha / r) B A`
into plain `nn.Linear` layers, which is how a LoRA stage is loaded for evaluation, chat and
export: the merged model is an ordinary Transformer.

Default targets are the attention projections (q, k, v, o), as in the LoRA paper; the MLP
projections (gate_proj, up_proj, down_proj) can be added (`LORA_TARGETS` in myllm.config.schema).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from myllm.config import parse_targets  # target names are checked where the config is (myllm.config.schema)
from myllm.errors import MyLLMError

DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")


class LoRALinear(nn.Module):
    def __init__(self, base: nn.Linear, rank: int, alpha: float):
        super().__init__()
        self.weight = base.weight
        self.weight.requires_grad_(False)
        out_features, in_features = base.weight.shape
        self.scale = alpha / rank
        self.lora_A = nn.Parameter(torch.empty(rank, in_features, device=base.weight.device))
        self.lora_B = nn.Parameter(torch.zeros(out_features, rank, device=base.weight.device))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # as nn.Linear initialises its weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight) + F.linear(F.linear(x, self.lora_A), self.lora_B) * self.scale

    def merged(self) -> nn.Linear:
        out_features, in_features = self.weight.shape
        linear = nn.Linear(in_features, out_features, bias=False, device=self.weight.device)
        with torch.no_grad():
            delta = (self.lora_B.float() @ self.lora_A.float()) * self.scale
            linear.weight.copy_((self.weight.float() + delta).to(self.weight.dtype))
        return linear


def apply_lora(model: nn.Module, rank: int, alpha: float, targets: str | tuple[str, ...] = DEFAULT_TARGETS) -> int:
    """Freeze `model` and wrap its target linears with adapters, in place; returns the trainable count."""
    if rank <= 0:
        raise MyLLMError(f"LoRA rank {rank} must be positive (e.g. --lora-rank 8)")
    names = parse_targets(targets)
    for p in model.parameters():
        p.requires_grad_(False)
    for module in list(model.modules()):
        for name in names:
            child = getattr(module, name, None)
            if isinstance(child, nn.Linear):
                setattr(module, name, LoRALinear(child, rank, alpha))
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def has_lora(model: nn.Module) -> bool:
    return any(isinstance(m, LoRALinear) for m in model.modules())


def merge_lora(model: nn.Module) -> nn.Module:
    """Replace every adapter layer by the equivalent plain linear layer, in place; trainable again."""
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, LoRALinear):
                setattr(module, name, child.merged())
    for p in model.parameters():
        p.requires_grad_(True)
    return model
