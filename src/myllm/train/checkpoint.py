"""Checkpoints: `checkpoints/<stage>/step-NNNNNN/{model.safetensors, optim.pt, state.json}`.

- `model.safetensors`: the weights, the only file a user needs to share (never a pickle). A
  stage that trains only some weights (LoRA adapters) saves only those; its `state.json`
  names the checkpoint it started from (`base`), which holds the rest.
- `optim.pt`: AdamW moments and RNG states, tensors only, read back with
  `torch.load(weights_only=True)` so loading cannot execute code.
- `state.json`: step, tokens seen, elapsed seconds, the data loader's position, the model
  shape, the run fingerprint that says which config produced it, and the SHA-256 of every
  other file (`checksums`), written last.

Every load checks what it reads and says in one line what is wrong: `load_model` verifies the
weights against their checksum, the model shape in `state.json` against the schema and the tensor
shapes against that model; `optim.pt` is read with `weights_only=True` and its layout checked.

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
import pickle
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from myllm.config import ModelConfig
from myllm.errors import ConfigError, MyLLMError, brief
from myllm.io import atomic_dir, require_space

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
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    weights = {k: v.detach() for k, v in model.state_dict().items() if k not in frozen}
    moments = 2 if optimizer is not None else 0  # AdamW keeps two moments per trained weight
    require_space(root, (1 + moments) * sum(v.numel() * v.element_size() for v in weights.values()) + (1 << 20),
                  f"checkpoint step {step}")
    with atomic_dir(path) as tmp:
        weights = {k: v.contiguous().cpu() for k, v in weights.items()}
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
        make_room(root, keep_last, step)
    prune(root, keep_last)
    return path


def prune(root: Path, keep_last: int) -> None:
    """Keep the newest `keep_last` checkpoints; drop temp folders that a killed writer left."""
    for old in list_checkpoints(root)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    remove_stale_writes(root)


def make_room(root: Path, keep_last: int, step: int) -> None:
    """Before checkpoint `step` becomes visible, delete the older ones it will push out, so that a kill at
    any moment leaves at most `keep_last` (deleting after the rename left a window with one too many).
    The newest checkpoint before `step` always stays until its successor is in place (`prune` removes it
    after the rename when keep_last = 1), and newer ones (torn ones a resume skipped) count as kept."""
    found = list_checkpoints(root)
    older = [p for p in found if int(STEP_DIR.match(p.name).group(1)) < step]
    may_stay = max(keep_last - 1 - (len(found) - len(older)), 1)
    for old in older[:-may_stay]:
        shutil.rmtree(old, ignore_errors=True)


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
    """state.json, written last, with the checksum of every other file in `folder` and a digest of itself."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != "state.json")
    state = {**state, "checksums": {str(p.relative_to(folder)): file_sha256(p) for p in files}}
    state["state_sha256"] = state_digest(state)
    (folder / "state.json").write_text(json.dumps(state, indent=2) + "\n")


def state_digest(state: dict[str, Any]) -> str:
    """SHA-256 of a state's content (its own digest left out): an edited or bit-flipped state.json (a changed
    model shape, a different base) is caught, as the checksums catch the other files."""
    body = {k: v for k, v in state.items() if k != "state_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def checkpoint_problem(path: Path) -> str | None:
    """Why checkpoint `path` cannot be trusted (unreadable state, missing or changed file), or None."""
    try:
        state = read_state(path)
    except MyLLMError:
        return "state.json is unreadable or was changed"
    checksums = state.get("checksums")
    if not isinstance(checksums, dict):
        return "state.json lists no checksums"
    for name, digest in checksums.items():
        f = path / name
        if not isinstance(name, str) or name.startswith("/") or ".." in Path(name).parts:
            return f"state.json lists {name!r}, which is not a file of the checkpoint"
        if not f.is_file():
            return f"{name} is missing"
        if file_sha256(f) != digest:
            return f"{name} does not match its checksum"
    return None


def latest_valid_checkpoint(root: Path) -> Path | None:
    """The newest checkpoint whose files match their checksums; torn ones are named and skipped.

    None if there is no checkpoint; if there are some but every one is torn, that is an error (the
    caller would otherwise start over and replace them)."""
    torn = []
    for path in reversed(list_checkpoints(root)):
        problem = checkpoint_problem(path)
        if problem is None:
            for bad, why in torn:
                print(f"myllm: checkpoint {bad} is torn ({why}); using the one before it", file=sys.stderr)
            return path
        torn.append((path, problem))
    if torn:
        raise MyLLMError(f"every checkpoint in {root} is damaged ({torn[0][0].name}: {torn[0][1]}); restore them, "
                         "or start over with --restart")
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
        state = json.loads((path / "state.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, RecursionError, ValueError) as e:
        raise MyLLMError(f"checkpoint {path} is unreadable (state.json: {e}); delete it to fall back to an older one, "
                         "or re-run the stage with --restart") from None
    if not isinstance(state, dict):
        raise MyLLMError(f"checkpoint {path}: state.json is not a JSON object; delete the checkpoint to fall back to "
                         "an older one, or re-run the stage with --restart")
    if "state_sha256" in state and state["state_sha256"] != state_digest(state):  # older checkpoints have none
        raise MyLLMError(f"checkpoint {path}: state.json was changed after it was written (its digest does not "
                         "match); restore it, delete the checkpoint to use an older one, or re-run with --restart")
    return state


def verify_file(path: Path, name: str) -> Path:
    """`path/name`, if it matches the checksum `state.json` gives it (else one line: damaged, what to do)."""
    checksums = read_state(path).get("checksums")
    digest = checksums.get(name) if isinstance(checksums, dict) else None
    if digest is None:
        raise MyLLMError(f"checkpoint {path}: state.json has no checksum for {name}, so it cannot be trusted; "
                         "re-run the stage that wrote it")
    if not (path / name).is_file() or file_sha256(path / name) != digest:
        raise MyLLMError(f"checkpoint {path}: {name} is missing or does not match its checksum (damaged or edited); "
                         "restore it, delete the checkpoint to use an older one, or re-run the stage with --restart")
    return path / name


def model_config_of(path: Path) -> ModelConfig:
    """The model shape a checkpoint's `state.json` records, checked like any config."""
    saved = read_state(path).get("model_config")
    try:
        if not isinstance(saved, dict):
            raise TypeError("missing")
        cfg = ModelConfig(**saved)
        for f in dataclasses.fields(cfg):
            value, kind = getattr(cfg, f.name), type(f.default)
            if not (type(value) is kind or (kind is float and type(value) is int)):
                raise TypeError(f"{f.name} = {value!r} is not a {kind.__name__}")
        cfg.validate()
    except (TypeError, ConfigError) as e:
        raise MyLLMError(f"checkpoint {path}: the model_config in state.json is damaged ({e}); restore the "
                         "checkpoint, or re-run the stage with --restart") from None
    return cfg


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
    try:
        weights = load_file(str(path / "model.safetensors"), device="cpu")
    except (SafetensorError, OSError) as e:
        raise MyLLMError(f"checkpoint {path}: model.safetensors cannot be read ({e}); restore it, or re-run the "
                         "stage with --restart") from None
    try:
        missing, unexpected = model.load_state_dict(weights, strict=False)
    except RuntimeError as e:  # a tensor of another shape
        raise MyLLMError(f"checkpoint {path} holds weights of another shape than its model config ({brief(e, 300)}); "
                         "it was damaged or written by a different config") from None
    bad = next((k for k, v in weights.items() if v.is_floating_point() and not torch.isfinite(v).all()), None)
    if bad is not None:
        raise MyLLMError(f"checkpoint {path}: weight {bad} holds NaN or inf (the training that wrote it diverged); "
                         "use an earlier checkpoint, or re-run the stage with a lower learning rate and --restart")
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    missing = [k for k in missing if k not in frozen]  # frozen weights come from the base checkpoint
    if missing or unexpected:
        raise MyLLMError(
            f"checkpoint {path} does not match the model (missing {missing[:3]}, unexpected {unexpected[:3]}); "
            "it was written by a different model config"
        )


def load_training_state(path: Path, optimizer: torch.optim.Optimizer | None) -> None:
    """Optimizer moments and RNG states from `optim.pt`: tensors and plain values only, never code."""
    damaged = (f"checkpoint {path}: optim.pt is damaged or not written by myllm ({{}}); delete the checkpoint to "
               "fall back to an older one, or start over with --restart")
    try:
        blob = torch.load(path / "optim.pt", map_location="cpu", weights_only=True)
        rng = blob["rng"]
        if optimizer is not None and blob["optimizer"] is not None:
            optimizer.load_state_dict(blob["optimizer"])
        torch.set_rng_state(rng["torch"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, KeyError, TypeError,
            IndexError) as e:
        raise MyLLMError(damaged.format(brief(e))) from None


def load_model(path: Path, device: str | torch.device = "cpu", _bases_left: int = 8):
    """A Transformer with the weights of checkpoint `path` (a `step-*` directory), in eval mode."""
    from myllm.model import Transformer

    if not (path / "model.safetensors").is_file():
        raise MyLLMError(f"{path} is not a checkpoint (no model.safetensors); run pretraining first")
    state = read_state(path)
    verify_file(path, "model.safetensors")
    if state.get("lora"):
        from myllm.train.lora import apply_lora, merge_lora

        if _bases_left <= 0:
            raise MyLLMError(f"checkpoint {path}: its chain of LoRA base checkpoints does not end; "
                             "re-run the stage with --restart")
        model = load_model(base_checkpoint(path), device, _bases_left - 1)
        try:
            apply_lora(model, **state["lora"])
        except (TypeError, ValueError, MyLLMError) as e:
            raise MyLLMError(f"checkpoint {path}: its LoRA settings in state.json are damaged ({e}); "
                             "re-run the stage with --restart") from None
        load_weights(path, model)
        return merge_lora(model).eval()
    cfg = model_config_of(path)
    check_shapes(path, cfg)
    model = Transformer(cfg)
    load_weights(path, model)
    return model.to(device).eval()


def check_shapes(path: Path, cfg: ModelConfig) -> None:
    """The weights' shapes (from the safetensors header) against the model `cfg` builds, before any memory is
    allocated: a model_config that does not match its weights is one line, not a failed allocation."""
    from myllm.model import Transformer

    try:
        with torch.device("meta"):
            expected = {k: tuple(v.shape) for k, v in Transformer(cfg).state_dict().items()}
        with safe_open(str(path / "model.safetensors"), "pt") as f:
            saved = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except (SafetensorError, OSError) as e:
        raise MyLLMError(f"checkpoint {path}: model.safetensors cannot be read ({e}); restore it, or re-run the "
                         "stage with --restart") from None
    except (RuntimeError, OverflowError, ValueError, TypeError, MemoryError) as e:
        raise MyLLMError(f"checkpoint {path}: the model_config in state.json describes no buildable model "
                         f"({brief(e)}); restore the checkpoint, or re-run the stage with --restart") from None
    wrong = [f"{k} {saved[k]} vs {expected[k]}" for k in saved if k in expected and saved[k] != expected[k]]
    if wrong:
        raise MyLLMError(f"checkpoint {path} holds weights of another shape than its model config ({wrong[0]}"
                         f"{f' and {len(wrong) - 1} more' if len(wrong) > 1 else ''}); it was damaged or written "
                         "by a different config")


def base_checkpoint(path: Path) -> Path:
    """The checkpoint a fine-tuning checkpoint started from (`state.json` "base", relative to the run)."""
    base = read_state(path).get("base")
    if not base or not isinstance(base, str):
        raise MyLLMError(f"checkpoint {path} names no base checkpoint")
    run = path.parents[2]  # <run>/checkpoints/<stage>/step-N -> <run>
    full = run / base
    if not full.resolve().is_relative_to(run.resolve()) or full.resolve() == path.resolve():
        raise MyLLMError(f"checkpoint {path} names base {base!r}, which is not another checkpoint of its run; "
                         "re-run the stage with --restart")
    if not (full / "model.safetensors").is_file():
        raise MyLLMError(f"checkpoint {path} holds LoRA adapters for {full}, which is missing; "
                         "restore it or re-run the stage that wrote it")
    return full
