"""Inference on a GPU: the same tokens as the CPU on the same fp32 weights, bf16 decoding with a
bf16 KV cache, `myllm serve --device cuda` answering the real `openai` client, and `quantize`
writing the same file on either device. Skipped (collected) on machines without CUDA; the CPU
side of the same story is tests/test_device_inference.py."""

import os
import shutil
import socket
import subprocess
import sys
import time

import httpx
import openai
import pytest
import torch

from conftest import cycle_model
from myllm.cli import main
from myllm.device import place_model
from myllm.infer.batch import generate_batch
from myllm.infer.engine import Decoder, SamplingParams, generate
from myllm.rundir import RunDir

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

CUDA = torch.device("cuda")
CPU = torch.device("cpu")


@pytest.fixture
def exact_fp32():
    """fp32 matmuls in full fp32 on the GPU (no TF32, which another test or library may have turned
    on), so that CPU and GPU differ only by summation order."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def test_gpu_greedy_decode_is_token_identical_to_the_cpu_on_fp32_weights(exact_fp32):
    cpu = cycle_model()  # trained briefly: peaked predictions, so summation order cannot flip a token
    gpu = place_model(cycle_model(), CUDA, torch.float32)
    assert gpu.embed_tokens.weight.device.type == "cuda" and gpu.embed_tokens.weight.dtype == torch.float32
    params = SamplingParams(max_new_tokens=64, temperature=0)
    prompts = [[1, 17, 250], [2, 40, 41, 42, 7]]
    for prompt in prompts:
        want = generate(cpu, prompt, params)
        assert len(want) == 64
        assert generate(gpu, prompt, params) == want
    assert generate_batch(gpu, prompts, params) == generate_batch(cpu, prompts, params)  # the server's engine


def test_bf16_cuda_decode_has_a_bf16_cache_and_fp32_rope():
    model = place_model(cycle_model(), CUDA)  # the inference dtype on CUDA: bf16
    assert model.embed_tokens.weight.dtype == torch.bfloat16
    assert model.rope_cos.dtype == model.rope_sin.dtype == torch.float32 and model.rope_cos.device.type == "cuda"
    decoder = Decoder(model)
    assert decoder.cache.k.dtype == torch.bfloat16 and decoder.cache.k.device.type == "cuda"
    ids = generate(model, [1, 17, 250], SamplingParams(max_new_tokens=64, temperature=0), decoder)
    assert len(ids) == 64 and all(0 <= t < model.cfg.vocab_size for t in ids)
    sampled = SamplingParams(max_new_tokens=32, temperature=0.8, top_p=0.9, seed=1, repetition_penalty=1.2)
    first = generate(model, [1, 17, 250], sampled)  # a CUDA generator, fp32 softmax over bf16 logits
    assert len(first) == 32 and generate(model, [1, 17, 250], sampled) == first


def test_generate_and_quantized_generate_on_cuda_say_so(tiny_model_run, tmp_path, capsys):
    base = ["--prompt", "The cat", "--max-new-tokens", "8", "--temperature", "0", "--device", "cuda"]
    assert main(["generate", "--run", str(tiny_model_run), *base]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("The cat")
    (line,) = [x for x in err.splitlines() if x.startswith("device: ")]
    assert line.startswith("device: cuda:0 (") and line.endswith("), bf16")
    run = tmp_path / "run"
    shutil.copytree(tiny_model_run, run)
    assert main(["quantize", str(run), "--bits", "8", "--no-eval"]) == 0
    capsys.readouterr()
    assert main(["generate", "--run", str(run), "--quantized", "8", *base]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("The cat") and "bf16 (int8 weights" in err


def test_quantize_writes_the_same_file_on_either_device(tiny_model_run, tmp_path):
    from myllm.export.quantize import quantize_run

    run = tmp_path / "run"
    shutil.copytree(tiny_model_run, run)
    on_cpu = quantize_run(run, 8, device="cpu")
    first = RunDir(run).quantized(8).read_bytes()
    on_gpu = quantize_run(run, 8, device="cuda")
    assert RunDir(run).quantized(8).read_bytes() == first
    assert (on_cpu["eval_dtype"], on_gpu["eval_dtype"]) == ("fp32", "bf16")
    assert abs(on_gpu["bpb_ratio"] - 1) < 0.02  # int8 costs about nothing, in bf16 as in fp32
    assert on_gpu["fp32_val_bpb"] == pytest.approx(on_cpu["fp32_val_bpb"], rel=0.02)


def test_cli_serve_on_cuda_answers_the_openai_client(tiny_model_run):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "myllm", "serve", str(tiny_model_run), "--port", str(port),
                             "--device", "cuda"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).raise_for_status()
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
                time.sleep(0.2)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=60)
        r = client.chat.completions.create(model=tiny_model_run.name, max_tokens=8, temperature=0,
                                           messages=[{"role": "user", "content": "Where does the cat sit?"}])
        assert r.choices[0].finish_reason in ("stop", "length") and isinstance(r.choices[0].message.content, str)
        assert r.usage.completion_tokens >= 1 or r.choices[0].finish_reason == "stop"
    finally:
        proc.terminate()
        proc.wait(10)
    out = proc.stdout.read()
    (line,) = [x for x in out.splitlines() if x.startswith("serving ")]
    assert "; device: cuda:0 (" in line and line.endswith("), bf16"), out
