"""LoRA vs full fine-tuning: trainable parameters, optimizer state and peak memory, side by side.

    python bench/lora.py [--preset micro] [--rank 8] [--steps 5]

Each mode trains `--steps` AdamW steps on random tokens in a fresh subprocess, so its peak
resident memory (VmHWM) is its own; the ratio LoRA / full is what to read (the absolute
numbers include the Python and PyTorch runtime, the same in both). Trainable parameters and
AdamW state are exact counts.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys


def peak_rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def child(preset: str, rank: int, steps: int) -> None:
    import torch

    from myllm.config import RunConfig, apply_model_preset
    from myllm.model import Transformer
    from myllm.train.lora import apply_lora

    cfg = RunConfig()
    apply_model_preset(cfg, preset)
    torch.manual_seed(0)
    model = Transformer(cfg.model)
    total = model.num_params()
    trainable = apply_lora(model, rank, 16.0) if rank > 0 else total
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    T = min(cfg.model.context, 256)
    for _ in range(steps):
        x = torch.randint(0, cfg.model.vocab_size, (8, T + 1))
        loss = model(x[:, :-1], x[:, 1:])
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    state = sum(t.numel() * t.element_size() for s in opt.state.values() for t in s.values() if torch.is_tensor(t))
    print(json.dumps({"total": total, "trainable": trainable, "optimizer_mb": state / 2**20, "peak_mb": peak_rss_mb()}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="micro", help="model preset (micro = the default run's model)")
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child is not None:
        child(a.preset, a.child, a.steps)
        return
    rows = {}
    for name, rank in (("full", 0), (f"lora r{a.rank}", a.rank)):
        out = subprocess.run([sys.executable, __file__, "--preset", a.preset, "--steps", str(a.steps),
                              "--child", str(rank)], capture_output=True, text=True, check=True)
        rows[name] = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"preset {a.preset}: {rows['full']['total']:,} parameters; {a.steps} AdamW steps, batch 8")
    print(f"{'mode':<10} {'trainable':>12} {'share':>8} {'AdamW state':>12} {'peak RSS':>10}")
    for name, r in rows.items():
        print(f"{name:<10} {r['trainable']:>12,} {r['trainable'] / r['total']:>8.2%} "
              f"{r['optimizer_mb']:>10.2f}MB {r['peak_mb']:>8.0f}MB")
    full, lora = rows["full"], rows[f"lora r{a.rank}"]
    print(f"LoRA / full: trainable {lora['trainable'] / full['trainable']:.3f}, "
          f"AdamW state {lora['optimizer_mb'] / full['optimizer_mb']:.3f}, "
          f"peak RSS {lora['peak_mb'] / full['peak_mb']:.3f}")


if __name__ == "__main__":
    main()
