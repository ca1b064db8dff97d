"""Fuzz: damaged checkpoints, from classes of damage, through every command that loads a model (issue 16).

Each class damages the finished checkpoint of a tiny run in one way; a seeded generator picks where
and how (which bytes flip, where the file is cut, which key of the model shape gets which wrong
value). Damage that leaves the checksums stale must be caught by every command (exit 2, one line,
nothing in the run changed). Damage whose checksums were rewritten to match (as a careless tool
or an attacker would) may load if the files still make a model of the recorded shape; otherwise
it is one line too. Never a traceback, never a file lost.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest

from fuzzing import SEEDS, assert_nothing_lost, assert_one_line_error, cli, rng_for, snapshot
from myllm.train.checkpoint import file_sha256, state_digest

COMMANDS = {
    "generate": ["generate", "--run", "RUN", "--prompt", "the cat", "--max-new-tokens", "2"],
    "export hf": ["export", "hf", "RUN"],
    "quantize": ["quantize", "--bits", "4", "--no-eval", "RUN"],
    "resume": ["pretrain", "--run", "RUN", "--resume", "--no-progress", "--max-steps", "2"],
}
READS = {"resume": {"model.safetensors", "optim.pt", "state.json"}}  # the others need no optimizer state
MODEL_FILES = {"model.safetensors", "state.json"}


def ckpt_of(run: Path) -> Path:
    return next((run / "checkpoints" / "pretrain").glob("step-*"))


def state_of(ckpt: Path) -> dict:
    return json.loads((ckpt / "state.json").read_text())


def write_state(ckpt: Path, state: dict, *, digest: bool = True) -> None:
    """state.json as a tool that knows the format would write it: with its own digest made to match."""
    if digest:
        state["state_sha256"] = state_digest(state)
    (ckpt / "state.json").write_text(json.dumps(state))


def rewrite_checksums(ckpt: Path) -> None:
    state = state_of(ckpt)
    state["checksums"] = {n: file_sha256(ckpt / n) for n in state["checksums"] if (ckpt / n).is_file()}
    write_state(ckpt, state)


def flip_bytes(rng: random.Random, ckpt: Path) -> None:
    f = ckpt / rng.choice(["model.safetensors", "optim.pt"])
    data = bytearray(f.read_bytes())
    for _ in range(rng.randint(1, 8)):
        i = rng.randrange(len(data))
        data[i] ^= 1 << rng.randrange(8)
    f.write_bytes(bytes(data))
    return f.name


def truncate(rng: random.Random, ckpt: Path) -> None:
    f = ckpt / rng.choice(["model.safetensors", "optim.pt"])
    data = f.read_bytes()
    f.write_bytes(data[: rng.randrange(len(data))])
    return f.name


def garbage_header(rng: random.Random, ckpt: Path) -> None:
    f = ckpt / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes(rng.randbytes(rng.randint(1, 64)) + data[8:])
    return f.name


def bad_state_json(rng: random.Random, ckpt: Path) -> None:
    text = (ckpt / "state.json").read_text()
    choice = rng.randrange(4)
    if choice == 0:
        text = text[: rng.randrange(len(text))]  # cut
    elif choice == 1:
        text = json.dumps(rng.choice([[1, 2], 3, "x", None, True]))  # not an object
    elif choice == 2:
        text = "[" * rng.randint(10_000, 100_000)  # nesting past any recursion limit
    else:
        text = rng.randbytes(200).decode("latin-1")  # bytes, not UTF-8 JSON
    (ckpt / "state.json").write_text(text, encoding="latin-1")
    return "state.json"


WRONG_VALUES = ["x", -3, 0, 1.5, None, [1], {"a": 1}, True, 10**30]


# Values that still describe this very model (same tensor shapes, a number where one is meant): such an
# edit, its digest made to match, is a consistent checkpoint of another recipe and may load.
STILL_VALID = {"preset": lambda v: isinstance(v, str),
               "rope_theta": lambda v: type(v) in (int, float) and v > 0,
               "norm_eps": lambda v: type(v) in (int, float) and v > 0,
               "init_std": lambda v: type(v) in (int, float) and v >= 0}


def bad_model_config(rng: random.Random, ckpt: Path):
    state = state_of(ckpt)
    cfg = state["model_config"]
    key, value = f"unknown_{rng.randrange(99)}", 1
    if rng.random() > 0.2:
        key, value = rng.choice(sorted(cfg)), rng.choice(WRONG_VALUES)
    cfg[key] = value
    write_state(ckpt, state)
    return "state.json", STILL_VALID.get(key, lambda v: False)(value)


def other_shape(rng: random.Random, ckpt: Path) -> None:
    """A consistent-looking state.json that records another model shape than the weights have."""
    state = state_of(ckpt)
    key = rng.choice(["d_model", "n_layers", "d_ff", "vocab_size"])
    state["model_config"][key] = state["model_config"][key] * 2  # (twice d_model still has whole heads)
    write_state(ckpt, state)
    return "state.json"


def stale_digest(rng: random.Random, ckpt: Path) -> None:
    """Any edit of state.json by hand or by a flipped bit, its digest left as it was."""
    state = state_of(ckpt)
    key = rng.choice(["step", "base", "model_config", "lora", "fingerprint"])
    state[key] = rng.choice(WRONG_VALUES)
    write_state(ckpt, state, digest=False)
    return "state.json"


def missing_file(rng: random.Random, ckpt: Path) -> None:
    name = rng.choice(["model.safetensors", "optim.pt"])
    (ckpt / name).unlink()
    return name


# (damage, whether the checksums are rewritten afterwards so the damage is not caught by them alone)
CLASSES = {
    "flipped bytes": (flip_bytes, False),
    "truncated file": (truncate, False),
    "truncated file, checksums rewritten": (truncate, True),
    "garbage safetensors header, checksums rewritten": (garbage_header, True),
    "malformed state.json": (bad_state_json, False),
    "wrong model_config value": (bad_model_config, False),
    "weights of another shape": (other_shape, False),
    "missing file": (missing_file, False),
    "state.json edited, digest stale": (stale_digest, False),
}


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("damage", list(CLASSES))
def test_a_damaged_checkpoint_is_one_line_and_nothing_is_lost(tiny_model_run, tmp_path, capsys, damage, seed):
    fn, rewrite = CLASSES[damage]
    rng = rng_for(seed, damage)
    for command, template in COMMANDS.items():
        run = tmp_path / command.replace(" ", "-")
        shutil.copytree(tiny_model_run, run)
        damaged, may_load = fn(rng, ckpt_of(run)), rewrite
        if isinstance(damaged, tuple):
            damaged, may_load = damaged
        if rewrite:
            rewrite_checksums(ckpt_of(run))
        before = snapshot(run)
        rc, err = cli([str(run) if a == "RUN" else a for a in template], capsys)
        assert "Traceback" not in err and "internal error" not in err, f"{command}: {err}"
        if rc != 0:
            assert_one_line_error(rc, err)
            assert_nothing_lost(before, run)
        else:  # only a file the command does not read, or damage that still makes the recorded model, may pass
            assert may_load or damaged not in READS.get(command, MODEL_FILES), \
                f"myllm {command} accepted a checkpoint with {damage} in {damaged}"
