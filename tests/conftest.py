"""Shared fixtures: a tiny run directory built through the real stages."""

import random
import shutil
from pathlib import Path

import pytest
import torch

from myllm.config import MODEL_PRESETS, ModelConfig
from myllm.model import Transformer
from myllm.run import prepare_run_dir, stage_corpus, stage_shards, stage_tokenizer

TINY = ["model.preset=nano", "model.vocab_size=512", "model.context=64", "train.batch_size=4",
        "train.max_steps=20", "train.warmup_steps=3", "train.eval_every=10", "train.ckpt_every=5",
        "train.keep_last=10", "train.eval_tokens=512"]


def write_folder_corpus(folder: Path, n_docs: int = 120, seed: int = 0) -> Path:
    rng = random.Random(seed)
    words = "the a cat dog sat ran on under mat log river town baker smith red blue one two".split()
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n_docs):
        text = "\n\n".join(" ".join(rng.choice(words) for _ in range(rng.randint(20, 60))).capitalize() + "."
                           for _ in range(3))
        (folder / f"doc{i:03d}.txt").write_text(text)
    return folder


class Interrupt:
    """Replace `owner.name` with a wrapper that raises KeyboardInterrupt on call number `at` (as a kill
    would stop the work there) and counts calls; `disarm()` lets every later call through."""

    def __init__(self, monkeypatch, owner, name: str, at: int):
        self.calls, self.at = 0, at
        real = getattr(owner, name)

        def wrapper(*args, **kwargs):
            self.calls += 1
            if self.calls == self.at:
                raise KeyboardInterrupt
            return real(*args, **kwargs)

        monkeypatch.setattr(owner, name, wrapper)

    def disarm(self) -> None:
        self.calls, self.at = 0, -1


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """A run directory with corpus, tokenizer and shards of a small folder corpus (no checkpoints)."""
    root = tmp_path_factory.mktemp("tiny")
    data = write_folder_corpus(root / "docs")
    out = root / "run"
    cfg = prepare_run_dir(out, "default", None, TINY, str(data), None)
    stage_corpus(out, cfg)
    stage_tokenizer(out, cfg)
    stage_shards(out, cfg)
    return out


@pytest.fixture
def tiny_run(tiny_data, tmp_path) -> Path:
    """A fresh copy of the tiny run directory for a test to train in."""
    out = tmp_path / "run"
    shutil.copytree(tiny_data, out)
    return out


def save_trained_like_checkpoint(run_dir: Path, seed: int = 0, scale: float = 0.15) -> Path:
    """A finished pretrain checkpoint of random weights large enough to give far-from-uniform logits
    (as a trained model's are), so that comparing exports is meaningful, without training."""
    import torch

    from myllm.model import Transformer
    from myllm.rundir import RunDir
    from myllm.train.checkpoint import save_checkpoint

    torch.manual_seed(seed)
    model = Transformer(RunDir(run_dir).config().model)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(1 + 0.2 * torch.randn_like(p) if p.ndim == 1 else scale * torch.randn_like(p))
    return save_checkpoint(run_dir / "checkpoints" / "pretrain", 1, model, None, {"done": True}, keep_last=1)


@pytest.fixture(scope="session")
def tiny_model_run(tiny_data, tmp_path_factory) -> Path:
    """The tiny run directory plus a finished pretrain checkpoint (read-only: copy it to write)."""
    out = tmp_path_factory.mktemp("tiny_model") / "run"
    shutil.copytree(tiny_data, out)
    save_trained_like_checkpoint(out)
    return out


def cycle_model() -> Transformer:
    """A nano model trained briefly on a permutation cycle: peaked but varied predictions, so greedy
    and sampled paths are non-trivial (a random tied-embedding model just repeats its input)."""
    torch.manual_seed(0)
    m = Transformer(ModelConfig(preset="nano", **MODEL_PRESETS["nano"]))
    cycle = torch.randperm(300)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2)
    for _ in range(40):
        starts = torch.randint(0, 300, (8, 1))
        seq = cycle[(starts + torch.arange(33)) % 300]
        m(seq[:, :-1], seq[:, 1:]).backward()
        opt.step()
        opt.zero_grad()
    return m.eval()
