"""The scale presets, counted on the meta device, and ordered data phases."""

import json
import math
import shutil

import pytest
import torch

from myllm.config import TRAIN_PRESETS, RunConfig, parse_phases, train_preset
from myllm.data.loader import PhasedBatches
from myllm.data.shards import ShardReader
from myllm.errors import ConfigError, MyLLMError
from myllm.model import Transformer
from myllm.plan import plan
from myllm.rundir import RunDir
from myllm.train.distributed import batch_plan
from myllm.train.pretrain import pretrain


def preset_config(name: str) -> RunConfig:
    cfg = RunConfig()
    train_preset(name)(cfg)
    return cfg.validate()


def test_myllm_1b_is_the_seed_design():
    cfg = preset_config("myllm-1b")
    with torch.device("meta"):
        model = Transformer(cfg.model)
    assert sum(p.numel() for p in model.parameters()) == 1_055_231_744
    assert (cfg.model.vocab_size, cfg.seq_len) == (65_536, 8_192)
    step = batch_plan(cfg.train, world_size=8, seq_len=cfg.seq_len)
    assert (step.global_batch, step.micro_batch, step.grad_accum, step.tokens_per_step) == (32, 4, 1, 262_144)
    phases = parse_phases(cfg.train.phases)
    assert [t for _, t in phases] == [12_540_000_000, 15_000_000_000]  # math text, then general prose
    assert sum(t for _, t in phases) == 27_540_000_000
    # each phase ends on a whole step (the loader moves on once its budget is spent): 47,837 + 57,221 steps
    assert cfg.train.max_steps == sum(math.ceil(t / 262_144) for _, t in phases) == 105_058
    assert cfg.train.lr == 3e-4 and cfg.train.warmup_steps == 2000


def test_myllm_1b_fits_an_80_gb_gpu_per_rank_only_with_its_memory_savers():
    cfg = preset_config("myllm-1b")
    t = cfg.train
    fits = plan(cfg.model, gpus=8, dist=t.dist, micro_batch=t.batch_size, checkpointing=True, loss_chunk=4096)
    ddp = fits["memory"]["per_gpu"]["ddp"]
    # 16 bytes/parameter of state: 16.9 GB, + checkpointed activations of 4 x 8,192 tokens + one logits chunk
    assert ddp["weights"] + ddp["grads"] + ddp["optimizer"] == 16 * 1_055_231_744
    assert 25e9 < ddp["total"] < 35e9 and ddp["max_micro_batch"] >= 4
    bare = plan(cfg.model, gpus=8, dist="ddp", micro_batch=4)["memory"]["per_gpu"]["ddp"]
    assert bare["total"] > 80e9  # without checkpointing and chunked loss it does not fit
    fsdp = fits["memory"]["per_gpu"]["fsdp"]
    assert fsdp["weights"] + fsdp["grads"] + fsdp["optimizer"] == 16 * 1_055_231_744 / 8


def test_gpt2_124m_preset():
    cfg = preset_config("gpt2-124m")
    with torch.device("meta"):
        n = Transformer(cfg.model).num_params()
    assert n == 123_587_328  # GPT-2 small's 124 M, with SwiGLU and RoPE (no position table)
    step = batch_plan(cfg.train, world_size=8, seq_len=cfg.seq_len)
    assert (step.grad_accum, step.tokens_per_step) == (4, 524_288)


def test_unknown_preset_and_bad_phases():
    with pytest.raises(ConfigError, match="unknown training preset 'big'; choose from myllm-1b, gpt2-124m"):
        train_preset("big")
    with pytest.raises(MyLLMError, match="expected SHARDS_DIR:TOKENS"):
        parse_phases("shards-math")
    assert parse_phases("a:1e3, b:2000") == [("a", 1000), ("b", 2000)]
    assert set(TRAIN_PRESETS) == {"myllm-1b", "gpt2-124m"}


def test_phases_are_consumed_in_order_and_resume_mid_phase(tiny_data):
    reader = ShardReader(tiny_data / "shards", "train")
    val = ShardReader(tiny_data / "shards", "val")
    make = lambda: PhasedBatches([(reader, 3 * 2 * 16), (val, 10**9)], 2, 16, seed=0)  # noqa: E731
    batches = make()
    seen = [batches.next_batch()[0] for _ in range(6)]
    train_rows = {tuple(reader.slice(i, i + 16).tolist()) for i in range(0, len(reader) - 16, 16)}
    assert [all(tuple(r.tolist()) in train_rows for r in x) for x in seen] == [True] * 3 + [False] * 3
    again = make()
    for _ in range(4):
        again.next_batch()
    state = json.loads(json.dumps(again.state_dict()))
    resumed = make()
    resumed.load_state_dict(state)
    assert state["phase"] == 1 and torch.equal(resumed.next_batch()[0], seen[4])


def test_pretrain_runs_its_phases(tiny_run):
    with pytest.raises(MyLLMError, match="train.phases names .*shards-a, which holds no shards"):
        pretrain(tiny_run, RunDir(tiny_run).config(["train.phases=shards-a:512"]), show_progress=False)
    for name in ("shards-a", "shards-b"):
        shutil.copytree(tiny_run / "shards", tiny_run / name)
    cfg = RunDir(tiny_run).config(["train.phases=shards-a:512,shards-b:100000", "train.max_steps=4"])
    result = pretrain(tiny_run, cfg, show_progress=False)  # 256 tokens a step: 2 steps of each
    state = json.loads((result.checkpoint / "state.json").read_text())
    assert state["loader"]["phase"] == 1 and state["loader"]["spent"] == 512
