"""Checkpoints: `checkpoints/<stage>/step-NNNNNN/{model.safetensors, optim.pt, state.json}`.

- `model.safetensors`: the weights, the only file a user needs to share (never a pickle). A
  stage that trains only some weights (LoRA adapters) saves only those; its `state.json`
  names the checkpoint it started from (`base`), which holds the rest.
- `optim.pt`: AdamW moments and RNG states, tensors only, read back with
  `torch.load(weights_only=True)` so loading cannot execute code.
- `state.json`: step, tokens seen, elapsed seconds, the data loader's position, the model
  shape, the run fingerprint that says which config produced it, and the SHA-256 of every
  other file (`checksums`), written last.

A checkpoint directory is built in a temp folder and renamed into place, so a directory named
`step-*` is always complete; the last `keep_last` are kept. A checkpoint whose files do not match
their checksums (a torn write on a filesystem without atomic rename, a disk error, a partial
copy) is skipped on resume in favour of the one before it (`latest_valid_checkpoint`).
FSDP runs write sharded checkpoints (see `myllm.train.sharded`) with the same layout rules.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from myllm.config import ModelConfig
from myllm.errors import MyLLMError
from myllm.io import atomic_dir

STEP_DIR = re.compile(r"^step-(\d{6,})$")


def save_checkpoint(
    root: Path,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    state: dict[str, Any],
    keep_last: int,
) -> Path:
    path = root / f"step-{step:06d}"
    with atomic_dir(path) as tmp:
        frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
        weights = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items() if k not in frozen}
        save_file(weights, str(tmp / "model.safetensors"))
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        torch.save({"optimizer": optimizer.state_dict() if optimizer else None, "rng": rng}, tmp / "optim.pt")
        cfg = model.cfg if hasattr(model, "cfg") else None
        full_state = {"step": step, **state}
        if cfg is not None:
            full_state["model_config"] = dataclasses.asdict(cfg)
        write_state(tmp, full_state)
    prune(root, keep_last)
    return path


def prune(root: Path, keep_last: int) -> None:
    """Keep the newest `keep_last` checkpoints; drop temp folders that a killed writer left."""
    for old in list_checkpoints(root)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    remove_stale_writes(root)


def remove_stale_writes(root: Path) -> None:
    """Temp folders of checkpoint writes that a kill interrupted (never read: only `step-*` are)."""
    if root.is_dir():
        for stale in root.glob(".step-*"):
            shutil.rmtree(stale, ignore_errors=True)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_state(folder: Path, state: dict[str, Any]) -> None:
    """state.json, written last, with the checksum of every other file in `folder`."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != "state.json")
    state = {**state, "checksums": {str(p.relative_to(folder)): file_sha256(p) for p in files}}
    (folder / "state.json").write_text(json.dumps(state, indent=2) + "\n")


def checkpoint_problem(path: Path) -> str | None:
    """Why checkpoint `path` cannot be trusted (unreadable state, missing or changed file), or None."""
    try:
        state = json.loads((path / "state.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        return f"state.json unreadable ({e})"
    for name, digest in state.get("checksums", {}).items():
        f = path / name
        if not f.is_file():
            return f"{name} is missing"
        if file_sha256(f) != digest:
            return f"{name} does not match its checksum"
    return None


def latest_valid_checkpoint(root: Path) -> Path | None:
    """The newest checkpoint whose files match their checksums; torn ones are named and skipped."""
    for path in reversed(list_checkpoints(root)):
        problem = checkpoint_problem(path)
        if problem is None:
            return path
        print(f"myllm: checkpoint {path} is torn ({problem}); using the one before it", file=sys.stderr)
    return None


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if STEP_DIR.match(p.name) and (p / "state.json").is_file()]
    return sorted(found, key=lambda p: int(STEP_DIR.match(p.name).group(1)))


def latest_checkpoint(root: Path) -> Path | None:
    ckpts = list_checkpoints(root)
    return ckpts[-1] if ckpts else None


def read_state(path: Path) -> dict[str, Any]:
    try:
        return json.loads((path / "state.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise MyLLMError(f"checkpoint {path} is unreadable ({e}); delete it to fall back to an older one") from None


def check_compatible(path: Path, cfg: ModelConfig) -> None:
    """A checkpoint from a different model shape cannot be loaded: say which keys differ."""
    saved = read_state(path).get("model_config", {})
    current = dataclasses.asdict(cfg)
    diff = {k: (saved.get(k), v) for k, v in current.items() if k != "preset" and saved.get(k) != v}
    if diff:
        shown = ", ".join(f"{k}: checkpoint {a} vs config {b}" for k, (a, b) in diff.items())
        raise MyLLMError(
            f"checkpoint {path} was trained with a different model config ({shown}); "
            "restore those settings, or start a fresh run directory with --out"
        )


def load_weights(path: Path, model: torch.nn.Module) -> None:
    weights = load_file(str(path / "model.safetensors"), device="cpu")
    missing, unexpected = model.load_state_dict(weights, strict=False)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    missing = [k for k in missing if k not in frozen]  # frozen weights come from the base checkpoint
    if missing or unexpected:
        raise MyLLMError(
            f"checkpoint {path} does not match the model (missing {missing[:3]}, unexpected {unexpected[:3]}); "
            "it was written by a different model config"
        )


def load_training_state(path: Path, optimizer: torch.optim.Optimizer | None) -> None:
    blob = torch.load(path / "optim.pt", map_location="cpu", weights_only=True)
    if optimizer is not None and blob["optimizer"] is not None:
        optimizer.load_state_dict(blob["optimizer"])
    torch.set_rng_state(blob["rng"]["torch"])
    if "cuda" in blob["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(blob["rng"]["cuda"])


def load_model(path: Path, device: str | torch.device = "cpu"):
    """A Transformer with the weights of checkpoint `path` (a `step-*` directory), in eval mode."""
    from myllm.model import Transformer

    if not (path / "model.safetensors").is_file():
        raise MyLLMError(f"{path} is not a checkpoint (no model.safetensors); run pretraining first")
    state = read_state(path)
    if state.get("lora"):
        from myllm.train.lora import apply_lora, merge_lora

        model = load_model(base_checkpoint(path), device)
        apply_lora(model, **state["lora"])
        load_weights(path, model)
        return merge_lora(model).eval()
    model = Transformer(ModelConfig(**state["model_config"]))
    load_weights(path, model)
    return model.to(device).eval()


def base_checkpoint(path: Path) -> Path:
    """The checkpoint a fine-tuning checkpoint started from (`state.json` "base", relative to the run)."""
    base = read_state(path).get("base")
    if not base:
        raise MyLLMError(f"checkpoint {path} names no base checkpoint")
    full = path.parents[2] / base  # <run>/checkpoints/<stage>/step-N -> <run>
    if not (full / "model.safetensors").is_file():
        raise MyLLMError(f"checkpoint {path} holds LoRA adapters for {full}, which is missing; "
                         "restore it or re-run the stage that wrote it")
    return full
