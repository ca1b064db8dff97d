"""A run directory with a small model checkpoint and a live server on 127.0.0.1, for the serving tests."""

import shutil
from pathlib import Path

import pytest
import torch

from myllm.config import ModelConfig, dump_config, load_run_config
from myllm.model import Transformer
from myllm.tokenizer import Tokenizer
from myllm.train.checkpoint import save_checkpoint


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models gain nothing from intra-op threads and lose much to them on a busy machine
    (measured: a test module took 93 s with PyTorch's 2 threads and 7 s with 1)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_served_run(tiny_data: Path, out: Path, context: int = 1024) -> Path:
    """Copy the tiny run and give it a finished pretrain checkpoint of a small random model.

    The context is long so that a reply can outlast a client (the disconnect test); the weights
    are random, which is all the protocol tests need (they compare against the library engine).
    """
    shutil.copytree(tiny_data, out)
    tok = Tokenizer.load(out / "tokenizer" / "tokenizer.json")
    torch.manual_seed(0)
    model = Transformer(ModelConfig(vocab_size=tok.vocab_size, d_model=32, n_layers=2, n_heads=2, n_kv_heads=1,
                                    d_ff=64, context=context))
    save_checkpoint(out / "checkpoints" / "pretrain", 1, model, None, {"done": True}, keep_last=1)
    cfg = load_run_config(out / "config.toml")  # the run's config says what its model is, as myllm's runs do
    cfg.model = model.cfg
    (out / "config.toml").write_text(dump_config(cfg))
    return out
