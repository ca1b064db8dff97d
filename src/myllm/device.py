"""Which device to run on, which autocast dtype, which attention kernels: the few facts about hardware
that training, evaluation and inference all share (a bottom-layer module, so evals and infer need not
import the training loop to learn them)."""

from __future__ import annotations

import contextlib

import torch

from myllm.errors import MyLLMError


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise MyLLMError("train.device = cuda but no CUDA device is visible; use train.device=cpu or auto")
    return torch.device(name)


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """bf16 autocast on CUDA; plain fp32 on CPU (CPUs without bf16 units run bf16 ~36x slower)."""
    return torch.bfloat16 if device.type == "cuda" else None


def attention_kernels(device: torch.device):
    """On CUDA, SDPA is steered to the flash and memory-efficient kernels (cuDNN next, math last);
    on CPU a no-op context, SDPA's own choice."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    order = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION, SDPBackend.MATH]
    return sdpa_kernel(order, set_priority=True)
