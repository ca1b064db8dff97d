"""`myllm plan`: what a model shape costs, counted from the model itself.

The model is instantiated on PyTorch's meta device (shapes, no memory), so even the
1,055,231,744-parameter `myllm-1b` is counted in milliseconds and the count is the model's
own, not a formula that could drift from it.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch

from myllm.config import ModelConfig
from myllm.model import Transformer

COMPONENTS = ("embedding (tied with output)", "attention", "mlp", "norms")


def component_of(name: str) -> str:
    if name.startswith("embed_tokens"):
        return COMPONENTS[0]
    if ".self_attn." in name:
        return COMPONENTS[1]
    if ".mlp." in name:
        return COMPONENTS[2]
    return COMPONENTS[3]


def param_counts(cfg: ModelConfig) -> OrderedDict[str, int]:
    """Parameters per component, plus `total` and `non-embedding`, from a meta-device model."""
    with torch.device("meta"):
        model = Transformer(cfg)
    counts: OrderedDict[str, int] = OrderedDict((c, 0) for c in COMPONENTS)
    for name, p in model.named_parameters():
        counts[component_of(name)] += p.numel()
    counts["total"] = sum(p.numel() for p in model.parameters())
    counts["non-embedding"] = counts["total"] - counts[COMPONENTS[0]]
    return counts


def format_plan(cfg: ModelConfig) -> str:
    counts = param_counts(cfg)
    lines = [
        f"model {cfg.preset}: d_model {cfg.d_model}, layers {cfg.n_layers}, heads {cfg.n_heads} x {cfg.head_dim} "
        f"(kv heads {cfg.n_kv_heads}), ff {cfg.d_ff}, vocab {cfg.vocab_size:,}, context {cfg.context:,}",
        "",
        f"{'component':<30}{'parameters':>16}{'share':>9}",
    ]
    for name, n in counts.items():
        if name == "total":
            lines.append("-" * 55)
        lines.append(f"{name:<30}{n:>16,}{n / counts['total']:>9.1%}")
    lines += ["", f"initial loss ln(V) = {math.log(cfg.vocab_size):.3f} nats/token (a uniform guess)"]
    return "\n".join(lines)
