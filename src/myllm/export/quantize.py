"""`myllm quantize`: a weight-only int8/int4 copy of a run's model, saved in the run
(`quantized/model-intN.safetensors`), with its size and val bits per byte against the fp32 model.

The quantization itself is the library's (`myllm.infer.quant`); this is the command around it,
which reads and writes the run directory, so it sits with the exports above the library.
"""

from __future__ import annotations

from pathlib import Path

import torch

from myllm.device import dtype_name, inference_dtype, place_model, resolve_device
from myllm.evals.bpb import run_bpb
from myllm.infer.quant import load_quantized, quantize_model, save_quantized
from myllm.io import remove_leftovers
from myllm.rundir import RunDir
from myllm.train.checkpoint import load_model


def quantize_run(run_dir: RunDir | str | Path, bits: int, group_size: int | None = None, stage: str | None = None,
                 evaluate: bool = True, device: str | torch.device = "auto") -> dict:
    """Quantize the run's final model (or `stage`'s), save it in the run, and measure it on `device`.

    The file is quantized from the checkpoint's fp32 weights on the CPU whatever `device` is, so it is
    the same bytes on any machine; only the val bpb comparison runs on `device`, both models in its
    inference dtype (bf16 on CUDA, fp32 on CPU), so the ratio measures the quantization alone."""
    device = device if isinstance(device, torch.device) else resolve_device(device, "--device")
    run = RunDir.of(run_dir)
    cfg = run.config([f"quant.bits={bits}"] + ([f"quant.group_size={group_size}"] if group_size is not None else []))
    run.require_tokenizer()
    ckpt = run.model_checkpoint(stage)
    model = run.load_model(ckpt)
    remove_leftovers(run.quantized(cfg.quant.bits))  # temps of killed writes (save_quantized is atomic)
    out = save_quantized(quantize_model(load_model(ckpt), cfg.quant.bits, cfg.quant.group_size),
                         run.quantized(cfg.quant.bits), str(ckpt))
    fp32_bytes = sum(v.numel() * 4 for v in model.state_dict().values())
    result = {"path": str(out), "bits": cfg.quant.bits, "group_size": cfg.quant.group_size if bits == 4 else None,
              "checkpoint": str(ckpt), "fp32_bytes": fp32_bytes, "bytes": out.stat().st_size}
    result["size_ratio"] = result["bytes"] / fp32_bytes
    if evaluate:
        dtype = inference_dtype(device)
        result["eval_device"], result["eval_dtype"] = str(device), dtype_name(dtype)
        # "fp32" names the unquantized model (the keys predate --device); on CUDA it runs in bf16 too.
        for name, m in (("fp32", model), ("quantized", load_quantized(out))):
            if (r := run_bpb(run, place_model(m, device, dtype), cfg, "val", device)) is None:
                break  # no val split to measure on
            result[f"{name}_val_bpb"] = r["bpb"]
        else:
            result["bpb_ratio"] = result["quantized_val_bpb"] / result["fp32_val_bpb"]
    return result
