"""Which device to run on, in which precision, with which attention kernels: the few facts about
hardware that training, evaluation and inference all share (a bottom-layer module, so evals and
infer need not import the training loop to learn them).

The one device story:
- `--device` / `train.device` is `auto` (CUDA when present, else CPU), `cpu`, `cuda` or `cuda:N`.
- Training precision, `train.precision`: `auto` is bf16 autocast on CUDA and plain fp32 on CPU
  (CPUs without bf16 units run bf16 ~36x slower); `bf16` forces bf16 autocast anywhere (CPU autocast
  works: the tests use it to check the CUDA numerics on a laptop); `fp32` turns autocast off. Every
  forward of a stage (policy, reference, rollout, evaluation) runs under the same `autocast`, so a
  model compared with itself gives a ratio of exactly 1.
- Inference (`generate`, `chat`, `serve`, `quantize`'s check, `eval`): weights and KV cache in bf16 on
  CUDA (decoding is bound by memory bandwidth: half the bytes, twice the tokens), fp32 on CPU; the
  RoPE tables stay fp32 either way (`place_model`).
"""

from __future__ import annotations

import contextlib

import torch

from myllm.config.schema import DEVICE_CHOICES, PRECISIONS, valid_device_name  # noqa: F401 (re-exported)
from myllm.errors import MyLLMError


def resolve_device(name: str, what: str = "train.device") -> torch.device:
    """`auto` -> CUDA when present, else CPU; `cuda`/`cuda:N` checked against the visible devices."""
    if not valid_device_name(name):
        raise MyLLMError(f"{what} = {name!r}; choose {DEVICE_CHOICES}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise MyLLMError(f"{what} = {name} but no CUDA device is visible; use cpu or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise MyLLMError(f"{what} = {name} but only {torch.cuda.device_count()} CUDA device(s) are visible "
                             f"(cuda:0 .. cuda:{torch.cuda.device_count() - 1})")
    return device


def autocast_dtype(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """The autocast dtype of a training or evaluation forward, or None for plain fp32."""
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


def autocast(device: torch.device, precision: str = "auto"):
    """The autocast context every training-side forward runs under (see the module docstring)."""
    dtype = autocast_dtype(device, precision)
    return torch.autocast(device_type=device.type, dtype=dtype, enabled=dtype is not None)


def inference_dtype(device: torch.device) -> torch.dtype:
    """Weights and KV cache for decoding: bf16 on CUDA, fp32 on CPU."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def place_model(model: torch.nn.Module, device: torch.device, dtype: torch.dtype | None = None) -> torch.nn.Module:
    """Move a model to `device` in `dtype` (default `inference_dtype`), keeping the RoPE tables in fp32
    (bf16 angles would be off by up to 0.4% at long positions; the tables are tiny)."""
    dtype = dtype or inference_dtype(device)
    model = model.to(device=device, dtype=dtype)  # integer tensors (quantized weights) keep their dtype
    for name in ("rope_cos", "rope_sin"):
        table = getattr(model, name, None)
        if isinstance(table, torch.Tensor):
            setattr(model, name, table.float())
    return model


def describe(device: torch.device, dtype: torch.dtype | None) -> str:
    """'cuda:0 (NVIDIA H100 80GB HBM3), bf16' or 'cpu, fp32': what a command prints once."""
    name = str(device)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        name = f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return f"{name}, {dtype_name(dtype)}"


def dtype_name(dtype: torch.dtype | None) -> str:
    return {torch.bfloat16: "bf16", torch.float16: "fp16", None: "fp32", torch.float32: "fp32"}.get(dtype, str(dtype))


def attention_kernels(device: torch.device):
    """On CUDA, SDPA is steered to the flash and memory-efficient kernels (cuDNN next, math last);
    on CPU a no-op context, SDPA's own choice."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    order = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION, SDPBackend.MATH]
    return sdpa_kernel(order, set_priority=True)
