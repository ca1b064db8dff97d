"""Weight-only quantization: int8 per output channel, or int4 in groups, for every linear layer.

- **int8**: each output row `w[o, :]` is stored as int8 `q[o, :]` and one fp32 scale
  `s[o] = max|w[o, :]| / 127`; the weight is `q * s`.
- **int4**: each row is cut into groups of `group_size` consecutive inputs; each group has its
  own fp16 scale `max|w| / 7` and values in [-8, 7], stored as `value + 8` in 4 bits, two per
  byte (even column in the low nibble): 4.25 bits per weight at the default group size 64. Groups keep one
  outlier from ruining a whole row's precision.

Activations stay in floating point; `QuantLinear` dequantizes its weight for each matmul (no
custom kernels), so the gain is memory and file size (~1/4 and ~1/8 of fp32), not speed: a small
model's decode is bound by per-step overhead, not memory bandwidth, and int4's unpacking adds work
(`bench/inference.py` prints int8/int4 decode speed beside fp32).

**The tied embedding is quantized too** (as `QuantEmbedding`, with the same per-row layout):
it is a quarter of the default model's parameters, so leaving it in fp32 would cap the file at
~0.44x of fp32 for int8 instead of ~0.26x. Its rows are both the input embeddings and the
output head's output channels, so per-row scales are exactly "per output channel" for the head
and one quantized copy serves both uses. Norm gains (a few hundred numbers) stay fp32.

The quantized model is the ordinary `Transformer` with its `nn.Linear`s and embedding swapped
for these modules, so `myllm.infer.engine` runs it unchanged. It is saved as one safetensors
file (`RUN_DIR/quantized/model-int8.safetensors`, `-int4`) whose metadata holds the model
config, bits, group size and source checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save

from myllm.config import ModelConfig
from myllm.errors import MyLLMError
from myllm.io import atomic_open


def quantize_int8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(int8 values (out, in), fp32 scales (out, 1)) with w ~= q * s."""
    w = w.detach().float()
    scale = (w.abs().amax(dim=1, keepdim=True) / 127).clamp(min=1e-12)
    return torch.round(w / scale).clamp(-127, 127).to(torch.int8), scale


def quantize_int4(w: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 packed (out, in/2), fp16 scales (out, in/group_size)) with w ~= unpack(q) * s."""
    out_f, in_f = w.shape
    if in_f % group_size:
        raise MyLLMError(f"quant.group_size = {group_size} does not divide a layer's {in_f} inputs; "
                         f"pick a divisor of {in_f}, e.g. 32")
    g = w.detach().float().view(out_f, in_f // group_size, group_size)
    scale = (g.abs().amax(dim=2, keepdim=True) / 7).clamp(min=1e-6).half().float()  # the scale as stored
    q = (torch.round(g / scale).clamp(-8, 7) + 8).to(torch.uint8).view(out_f, in_f)
    packed = q[:, 0::2] | (q[:, 1::2] << 4)
    return packed, scale.squeeze(2).half()  # fp16 scales: 0.25 bit per weight at group 64 instead of 0.5


def dequantize(q: torch.Tensor, scale: torch.Tensor, bits: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    # In place after the one conversion (one allocation per call): every fresh matrix-sized
    # temporary is a new allocation and, above glibc's mmap threshold, fresh page faults. For the
    # default model's 2,048 x 128 output head that measured ~20x slower at int8 (4x at int4);
    # for its small layers 1.1-1.4x.
    if bits == 8:
        return q.to(dtype, copy=True).mul_(scale.to(dtype))  # copy: never scale the stored integers
    out_f, groups = q.shape[0], scale.shape[1]
    values = torch.empty(out_f, q.shape[1], 2, dtype=dtype, device=q.device)
    values[..., 0], values[..., 1] = q & 0xF, q >> 4
    return values.sub_(8).view(out_f, groups, -1).mul_(scale.to(dtype).unsqueeze(2)).view(out_f, -1)


class _Quantized(nn.Module):
    """Holds `qweight` and `scales` buffers; `weight` is the dequantized matrix (computed on use)."""

    def __init__(self, w: torch.Tensor, bits: int, group_size: int):
        super().__init__()
        self.bits, self.group_size = bits, group_size
        self.out_features, self.in_features = w.shape
        q, s = quantize_int8(w) if bits == 8 else quantize_int4(w, group_size)
        self.register_buffer("qweight", q)
        self.register_buffer("scales", s)
        self.dtype = torch.float32

    @property
    def weight(self) -> torch.Tensor:
        return dequantize(self.qweight, self.scales, self.bits, self.dtype)

    def _apply(self, fn, recurse=True):  # .to(dtype) changes the compute dtype, never the stored integers
        probe = fn(torch.zeros((), dtype=self.dtype))
        if probe.is_floating_point():
            self.dtype = probe.dtype
        self.qweight = self.qweight.to(probe.device)
        self.scales = self.scales.to(probe.device)
        return self

    def extra_repr(self) -> str:
        group = "" if self.bits == 8 else f", group_size={self.group_size}"
        return f"in={self.in_features}, out={self.out_features}, int{self.bits}{group}"


class QuantLinear(_Quantized):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight.to(x.dtype))


class QuantEmbedding(_Quantized):
    """The tied embedding/output matrix: `forward` looks rows up (dequantizing only those rows);
    the model's output head reads `.weight`."""

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        q, s = self.qweight[idx.reshape(-1)], self.scales[idx.reshape(-1)]
        return dequantize(q, s, self.bits, self.dtype).view(*idx.shape, self.in_features)


def is_quantized(model: nn.Module) -> bool:
    return any(isinstance(m, _Quantized) for m in model.modules())


def quantize_model(model: nn.Module, bits: int, group_size: int = 32) -> nn.Module:
    """Replace every `nn.Linear` and the embedding of `model` (in place) by quantized modules."""
    if bits not in (4, 8):
        raise MyLLMError(f"--bits {bits} is not supported; pick 8 or 4")
    n_params = model.num_params()
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.Linear):
                setattr(module, child_name, QuantLinear(child.weight, bits, group_size))
            elif isinstance(child, nn.Embedding):
                setattr(module, child_name, QuantEmbedding(child.weight, bits, group_size))
    model.num_params = lambda: n_params  # the weights are buffers now; the model still has this many
    return model.eval()


def save_quantized(model: nn.Module, path: str | Path, source: str = "") -> Path:
    """One safetensors file: every buffer and remaining parameter, plus metadata to rebuild it."""
    path = Path(path)
    quantized = [m for m in model.modules() if isinstance(m, _Quantized)]
    if not quantized:
        raise MyLLMError("the model has no quantized layers; call quantize_model first")
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    # One metadata key: safetensors keeps the metadata in a Rust HashMap whose order changes from call to
    # call, so a second key ("format") made the same model two different files (myllm reads only this one).
    meta = {"myllm_quant": json.dumps({
        "bits": quantized[0].bits, "group_size": quantized[0].group_size, "source": source,
        "model_config": {k: getattr(model.cfg, k) for k in model.cfg.__dataclass_fields__},
    })}
    with atomic_open(path, "wb") as f:
        f.write(save(tensors, metadata=meta))
    return path


def load_quantized(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """A `Transformer` with quantized layers, from a file written by `save_quantized`."""
    from myllm.model import Transformer

    path = Path(path)
    if not path.is_file():
        raise MyLLMError(f"quantized model {path} not found; create it with `myllm quantize RUN_DIR --bits 8`")
    with safe_open(str(path), "pt") as f:
        meta = json.loads((f.metadata() or {}).get("myllm_quant", "null") or "null")
        if meta is None:
            raise MyLLMError(f"{path} is not a MyLLM quantized model (no myllm_quant metadata)")
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    with torch.device("meta"):
        model = Transformer(ModelConfig(**meta["model_config"]))
    model = quantize_model(model.to_empty(device="cpu"), meta["bits"], meta["group_size"])
    model.load_state_dict(tensors, strict=False, assign=True)
    missing = set(model.state_dict()) - set(tensors)
    if missing:
        raise MyLLMError(f"{path} lacks tensors {sorted(missing)[:3]}; re-create it with `myllm quantize`")
    model.rope_cos, model.rope_sin = _rope(model.cfg)
    return model.to(device).eval()


def _rope(cfg: ModelConfig) -> tuple[torch.Tensor, torch.Tensor]:
    from myllm.model import rope_tables

    return rope_tables(cfg.head_dim, cfg.context, cfg.rope_theta)


def weight_bytes(model: nn.Module) -> int:
    """Bytes of every stored tensor (parameters and buffers that are saved)."""
    return sum(v.numel() * v.element_size() for v in model.state_dict().values())
