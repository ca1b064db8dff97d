"""`myllm plan`: counts agree with the model, FLOPs with the benchmark, memory with a measured CPU step."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from myllm.cli import main
from myllm.config import MODEL_PRESETS, ModelConfig
from myllm.errors import ConfigError
from myllm.model import KVCache, Transformer
from myllm.plan import plan

BENCH = Path(__file__).resolve().parents[1] / "bench"


def preset(name):
    return ModelConfig(preset=name, **MODEL_PRESETS[name])


@pytest.mark.parametrize("name", list(MODEL_PRESETS))
def test_parameter_count_is_the_models_own(name):
    with torch.device("meta"):
        model = Transformer(preset(name))
    assert plan(preset(name))["parameters"]["total"] == sum(p.numel() for p in model.parameters())


def test_myllm_1b_headline_numbers():
    p = plan(preset("myllm-1b"), tokens=27.54e9, gpus=8, gpu="h100")
    assert p["parameters"]["total"] == 1_055_231_744
    assert round(p["training"]["tokens_per_parameter"], 1) == 26.1
    assert p["initial_loss"] == pytest.approx(11.090, abs=1e-3)  # ln 65536
    assert plan(preset("myllm-1b"))["training"]["tokens"] == 20 * 1_055_231_744  # Chinchilla default
    mem = p["memory"]["per_gpu"]
    n = 1_055_231_744  # fp32 weights, grads and 2 AdamW moments; bf16 autocast copies of the weights on a GPU
    assert (mem["ddp"]["weights"], mem["ddp"]["grads"], mem["ddp"]["optimizer"], mem["ddp"]["copies"]) == \
        (4 * n, 4 * n, 8 * n, 2 * n)
    assert mem["zero1"]["optimizer"] == 8 * n / 8 and mem["fsdp"]["weights"] == 4 * n / 8
    embedding = 65_536 * 1_792  # FSDP: the gathered bf16 embedding and two blocks' weights + grads
    assert mem["fsdp"]["copies"] == pytest.approx(2 * embedding + 8 * (n - embedding) / 28)
    assert mem["ddp"]["total"] > mem["zero1"]["total"] > mem["zero2"]["total"] > mem["fsdp"]["total"]


def test_kv_cache_matches_an_allocated_cache():
    cfg = preset("micro")
    inf = plan(cfg, gpu="cpu")["inference"]
    assert inf["kv_dtype"] == "fp32" and inf["kv_bytes_per_value"] == 4
    assert inf["kv_cache_bytes_at_context"] == KVCache.allocate(cfg, 1, cfg.context).nbytes()
    assert inf["kv_cache_bytes_per_token"] * cfg.context == inf["kv_cache_bytes_at_context"]
    # A GPU target's cache is in the inference dtype there, bf16 (myllm.device.inference_dtype): half the
    # bytes, the same as a bf16 cache allocated here (the numbers are unchanged; the dtype is now named).
    gpu = plan(cfg, gpu="h100")["inference"]
    assert gpu["kv_dtype"] == "bf16" and gpu["kv_bytes_per_value"] == 2
    assert gpu["kv_cache_bytes_at_context"] == KVCache.allocate(cfg, 1, cfg.context, dtype=torch.bfloat16).nbytes()


def test_flops_per_token_matches_the_benchmark():
    spec = importlib.util.spec_from_file_location("bench_throughput", BENCH / "throughput.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    for name in ("small", "myllm-1b"):
        cfg = preset(name)
        with torch.device("meta"):
            model = Transformer(cfg)
        assert plan(cfg)["training"]["flops_per_token"] == bench.flops_per_token(model, cfg.context)[0]


PEAK_SCRIPT = """
import sys, torch
from myllm.config import MODEL_PRESETS, ModelConfig, TrainConfig
from myllm.model import Transformer
from myllm.train.optim import make_optimizer

def status(key):
    return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith(key + ":"))

def step(model, opt, x):
    model(x[:, :-1], x[:, 1:]).backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)

torch.set_num_threads(1)
B, T = int(sys.argv[1]), int(sys.argv[2])
# Warm up on a tiny model first: the first backward/AdamW step maps ~90 MB of library code and
# thread state, which is the process's, not the model's.
nano = ModelConfig(preset="nano", **MODEL_PRESETS["nano"])
w = Transformer(nano)
step(w, make_optimizer(w, TrainConfig(), torch.device("cpu")), torch.randint(nano.vocab_size, (1, 17)))
del w
cfg = ModelConfig(preset="small", **MODEL_PRESETS["small"])
x = torch.randint(cfg.vocab_size, (B, T + 1))
try:  # reset VmHWM to the current RSS (Linux >= 4.0)
    open("/proc/self/clear_refs", "w").write("5")
except OSError:
    pass
base = status("VmRSS")
model = Transformer(cfg)
opt = make_optimizer(model, TrainConfig(), torch.device("cpu"))
for _ in range(2):  # the second step is the steady state: AdamW moments exist
    step(model, opt, x)
print(status("VmHWM") - base)
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_training_memory_estimate_matches_a_measured_cpu_step():
    """plan's weights + grads + AdamW + activations + logits vs the peak RSS increase of a real step.

    glibc keeps freed heap blocks below its (self-raising) mmap threshold, so RSS would also count
    memory no tensor uses and grow step after step; a fixed threshold makes freed tensors go back to
    the OS, so the peak measures live tensors, which is what the plan estimates.
    """
    B, T = 8, 256
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    out = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, str(B), str(T)], env=env, capture_output=True,
                         text=True, check=True).stdout
    measured = int(out.split()[-1])
    cfg = preset("small")
    cfg.context = T
    mem = plan(cfg, gpu="cpu", micro_batch=B)["memory"]["per_gpu"]["ddp"]
    estimate = sum(mem[k] for k in ("weights", "grads", "optimizer", "copies", "activations", "logits"))
    assert estimate == mem["total"]
    print(f"training memory, small 8 x 256 on CPU: estimate {estimate / 1e6:.1f} MB, "
          f"measured peak {measured / 1e6:.1f} MB ({(estimate - measured) / measured:+.1%})")
    assert abs(estimate - measured) / measured < 0.15, (estimate, measured)


@pytest.mark.parametrize("kwargs, words", [
    (dict(gpu="tpu"), ["'tpu'", "h100, a100, h200, cpu"]),
    (dict(dist="zero3"), ["'zero3'", "ddp, zero1, zero2, fsdp"]),
    (dict(tokens=0), ["--tokens", "positive"]),
    (dict(tokens=-5), ["--tokens", "positive"]),
    (dict(gpus=0), ["--gpus"]),
    (dict(micro_batch=0), ["--micro-batch"]),
    (dict(loss_chunk=-1), ["--loss-chunk", ">= 0"]),
])
def test_bad_input_is_a_one_line_config_error(kwargs, words):
    with pytest.raises(ConfigError) as err:
        plan(preset("nano"), **kwargs)
    assert "\n" not in str(err.value) and all(w in str(err.value) for w in words)


def test_a_loss_chunk_larger_than_the_micro_batch_is_the_whole_logits():
    whole = plan(preset("nano"), micro_batch=2)["memory"]["per_gpu"]["ddp"]["logits"]
    assert whole > 0
    assert plan(preset("nano"), micro_batch=2, loss_chunk=10**15)["memory"]["per_gpu"]["ddp"]["logits"] == whole
    assert 0 < plan(preset("nano"), micro_batch=2, loss_chunk=16)["memory"]["per_gpu"]["ddp"]["logits"] < whole


def test_impossible_shape_is_a_config_error():
    cfg = preset("nano")
    cfg.n_heads = 3  # does not divide d_model 64
    with pytest.raises(ConfigError, match="pick heads from"):
        plan(cfg)


def test_cli_plan_table_json_and_errors(capsys):
    assert main(["plan", "--preset", "myllm-1b", "--gpus", "8", "--gpu", "h100"]) == 0
    out = capsys.readouterr().out
    assert "1,055,231,744" in out and "head_dim x 2 B (bf16, the inference dtype" in out  # the KV row says its dtype
    table = out[out.index("memory per GPU"):]
    assert all(f"\n{d} " in table for d in ("ddp", "zero1", "zero2", "fsdp"))
    assert main(["plan", "--preset", "small", "--layers", "2", "--tokens", "1e6", "--json"]) == 0
    p = json.loads(capsys.readouterr().out)
    assert p["model"]["n_layers"] == 2 and p["training"]["tokens"] == 1e6
    assert main(["plan", "--preset", "small", "--gpu", "tpu"]) == 2
    assert main(["plan", "--preset", "small", "--heads", "3"]) == 2
    assert main(["plan", "--preset", "small", "--tokens", "0"]) == 2


def test_fit_time_picks_the_lowest_predicted_loss_and_grows_with_the_budget():
    from myllm.config import resolve_config
    from myllm.plan import CHINCHILLA, fit_time

    small = fit_time(600, 2048, 256, flops_per_second=8e10)
    best = small["best"]
    assert best["predicted_loss"] == min(r["predicted_loss"] for r in small["candidates"])
    k = CHINCHILLA
    assert best["predicted_loss"] == pytest.approx(
        k["E"] + k["A"] / best["parameters"] ** k["alpha"] + k["B"] / best["tokens"] ** k["beta"])
    assert best["tokens"] * flops_per_token_of(best) == pytest.approx(600 * 8e10)
    bigger = [fit_time(600 * f, 2048, 256, flops_per_second=8e10)["best"]["parameters"] for f in (1, 100, 10**4)]
    assert bigger == sorted(bigger) and bigger[0] < bigger[-1]
    huge = fit_time(3600, 32768, 2048, flops_per_second=8 * 989e12 * 0.4)["best"]  # an hour on 8 H100s
    assert 5 < huge["tokens_per_parameter"] < 80  # near Chinchilla's ~20 tokens per parameter
    overrides = small["command"].split("--set ")[1:]  # the printed command is a valid run config
    cfg = resolve_config("default", None, [o.strip() for o in overrides] + ["model.vocab_size=2048"])
    assert cfg.model.d_model == best["model"]["d_model"] and cfg.model.n_layers == best["model"]["n_layers"]


def flops_per_token_of(row):
    from myllm.config import ModelConfig
    from myllm.plan import flops_per_token

    cfg = ModelConfig(vocab_size=2048, context=256, **row["model"])
    return flops_per_token(cfg, row["parameters"], 256)


def test_fit_time_command_line(capsys):
    from myllm.cli import main

    assert main(["plan", "--preset", "micro", "--fit-time", "300", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["command"].startswith("myllm run --time-budget 300 --set model.d_model=")
    assert out["flops_per_second"] > 1e9 and "MFU" in out["throughput"]
    assert main(["plan", "--fit-time", "0"]) == 2
    assert "--fit-time = 0 must be a positive" in capsys.readouterr().err


def test_cli_plan_of_a_training_preset_uses_its_recipe(capsys):
    """`myllm plan --preset myllm-1b` plans the seed's run: 8 GPUs x micro-batch 4, 27.54B tokens,
    checkpointing, the chunked loss; a flag given overrides its part."""
    assert main(["plan", "--preset", "myllm-1b", "--json"]) == 0
    p = json.loads(capsys.readouterr().out)
    t, m = p["training"], p["memory"]
    assert (t["gpus"], t["micro_batch"], t["tokens"]) == (8, 4, 27.54e9)
    assert m["checkpointing"] is True and m["loss_chunk"] == 4096
    assert main(["plan", "--preset", "myllm-1b", "--gpus", "2", "--no-checkpointing"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("recipe of the myllm-1b training preset (flags override): micro batch 4, tokens "
                          "27,540,000,000, loss chunk 4096")
    assert "2 x h100" in out and "without activation checkpointing" in out
    assert main(["plan", "--preset", "small", "--json"]) == 0  # a model-only preset: the plain defaults
    small = json.loads(capsys.readouterr().out)
    assert small["training"]["gpus"] == 1 and small["memory"]["checkpointing"] is False
