"""Smoke tests of the benchmark scripts' measuring parts (the benchmarks themselves run on demand)."""

import importlib.util
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from myllm.config import MODEL_PRESETS, ModelConfig
from myllm.model import Transformer

BENCH = Path(__file__).resolve().parents[1] / "bench"


def load(name):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_topics_corpus_is_cut_into_small_documents_without_losing_text(tmp_path):
    real_text = load("real_text")
    from pydoc_data.topics import topics

    info = real_text.write_topics_corpus(tmp_path)
    files = sorted(tmp_path.glob("*.txt"))
    assert info["documents"] == len(files) > 3 * len(topics)
    sizes = [len(f.read_bytes()) for f in files]
    assert sorted(sizes)[len(sizes) // 2] < 3000  # the median document is 1-3 KB
    words = lambda text: text.split()
    assert sum(len(words(f.read_text())) for f in files) == sum(len(words(t)) for t in topics.values())


def test_char_eval_predicts_every_character_once():
    real_text = load("real_text")
    model = real_text.CharGPT(vocab=10, block=8, n_layer=1, d=16, n_head=2)
    for p in model.parameters():
        torch.nn.init.zeros_(p)  # uniform predictions: exactly ln(V) nats per predicted character
    ids, unknown = real_text.encode_docs(["abcab", "ba?"], {"a": 2, "b": 3, "c": 4})
    assert unknown == 1 and ids.tolist() == [0, 2, 3, 4, 2, 3, 0, 3, 2, 1]
    assert math.isclose(real_text.evaluate_chars(model, ids, block=4, batch=2), 9 * math.log(10), rel_tol=1e-6)


def test_baseline_learns_in_a_short_budget():
    real_text = load("real_text")
    docs = ["the cat sat on the mat. " * 20] * 6
    result = real_text.train_baseline(docs, docs[:1], budget=2.0, block=16, batch=4, warmup=1)
    assert result["steps"] >= 1 and result["seconds"] >= 2.0  # trains until the budget is spent
    assert result["val_bpb"] < math.log2(result["vocab"]) - 0.3  # clearly better than a uniform guess


def test_flops_per_token_counts_the_tied_embedding_once():
    throughput = load("throughput")
    cfg = ModelConfig(preset="small", **MODEL_PRESETS["small"])
    with torch.device("meta"):
        model = Transformer(cfg)
    fpt, n = throughput.flops_per_token(model, 256)
    d, L, V, ff, kv = 256, 6, 4096, 768, 128
    expected_n = V * d + L * (2 * d * d + 2 * d * kv + 3 * d * ff + 2 * d) + d
    assert n == expected_n == 5_770_496
    assert fpt == 6 * expected_n + 12 * L * d * 256


def test_data_bench_corpus_and_dedup_measurement(tmp_path, capsys):
    data = load("data")
    size = data.make_corpus(tmp_path / "docs", 1.0)
    assert 1e6 <= size < 1.5e6
    data.dedup_quality(n_docs=300, n_planted=80)
    out = capsys.readouterr().out
    recall = float(out.split("recall at Jaccard >= 0.8: ")[1].split()[0])
    precision = float(out.split("precision: ")[1].split()[0])
    assert recall >= 0.95 and precision >= 0.99


def test_lora_bench_counts_trainable_parameters_and_optimizer_state(capsys):
    import json

    lora = load("lora")
    lora.child("nano", 4, 1)
    lora_row = json.loads(capsys.readouterr().out)
    lora.child("nano", 0, 1)
    full_row = json.loads(capsys.readouterr().out)
    assert full_row["trainable"] == full_row["total"] > lora_row["trainable"] > 0
    # AdamW keeps two fp32 moments per trainable parameter (plus a step counter per tensor).
    assert abs(full_row["optimizer_mb"] * 2**20 - 8 * full_row["total"]) < 1024
    assert lora_row["optimizer_mb"] < 0.1 * full_row["optimizer_mb"]


def test_inference_bench_measures_decode_and_the_bandwidth_bound():
    inference = load("inference")
    cfg = ModelConfig(preset="nano", **MODEL_PRESETS["nano"])
    n = 1000
    # every weight once, plus K and V (layers x kv heads x head dim) for each position up to the token
    per_position = 2 * cfg.n_layers * cfg.n_kv_heads * cfg.head_dim * 4
    assert inference.bytes_per_token(cfg, n, prompt=10, new=5) == 4 * n + per_position * 12
    assert inference.copy_bandwidth(mb=8, repeats=1) > 1e8  # any machine copies more than 100 MB/s
    torch.manual_seed(0)
    model = Transformer(cfg).eval()
    tok_s, _ = inference.myllm_decode(model, [1, 2, 3], 8, repeats=1)
    assert tok_s > 0
    assert inference.batched(model, [1, 2, 3], 8, batch=4, repeats=1) > 0


@pytest.mark.slow
def test_gpu_bench_smoke_runs_every_part_compiled_on_cpu():
    """bench/gpu.py --smoke: the acceptance script's own code on tiny shapes (CUDA tests skipped here)."""
    proc = subprocess.run([sys.executable, str(BENCH / "gpu.py"), "--smoke"], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "PYTHONPATH": str(BENCH.parent / "src")})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    out = proc.stdout
    rows = {line.split()[0] + " " + line.split()[1]: line.split() for line in out.splitlines()
            if line.startswith(("gpt2-124m", "myllm-1b"))}
    assert set(rows) == {"gpt2-124m eager", "gpt2-124m compiled", "myllm-1b fsdp2"}
    assert rows["gpt2-124m eager"][3] == "0"  # graphs: eager
    assert int(rows["gpt2-124m compiled"][3]) > 0 and int(rows["myllm-1b fsdp2"][3]) > 0  # compiled, FSDP2 too
    assert "skipped" in out and "MyLLM tok/s" in out and "done" in out
