"""The one device story for inference, on the CPU: `--device` on every command that runs a model,
the one line saying which device and dtype, bad values as one line, bf16 decoding (CPU bf16 runs
the CUDA numerics, slowly), and exports that are the same bytes however often they run.
tests/test_cuda_inference.py runs the same paths on a GPU."""

import io
import shutil

import pytest
import torch

from conftest import cycle_model
from myllm.cli import main
from myllm.device import describe, inference_dtype, place_model, resolve_device
from myllm.errors import MyLLMError
from myllm.infer.batch import BatchEngine
from myllm.infer.engine import Decoder, SamplingParams, beam_search, generate
from myllm.rundir import RunDir

CPU = torch.device("cpu")
AUTO_LINE = f"device: {describe(resolve_device('auto'), inference_dtype(resolve_device('auto')))}"


def one_line_error(rc: int, err: str, *fragments: str) -> str:
    assert rc == 2, err
    assert "Traceback" not in err
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def test_generate_on_the_cpu_says_so_once_on_stderr(tiny_model_run, capsys):
    base = ["generate", "--run", str(tiny_model_run), "--prompt", "The cat", "--max-new-tokens", "8",
            "--temperature", "0"]
    assert main(base + ["--device", "cpu"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("The cat") and "device" not in out  # stdout is the text alone
    assert [x for x in err.splitlines() if "device" in x] == ["device: cpu, fp32"]
    assert main(base) == 0  # the default is auto
    out_auto, err_auto = capsys.readouterr()
    assert AUTO_LINE in err_auto.splitlines()
    if resolve_device("auto").type == "cpu":
        assert out_auto == out


def test_chat_serve_and_quantize_print_the_device_line_on_stdout(tiny_model_run, tmp_path, monkeypatch, capsys):
    import uvicorn

    monkeypatch.setattr("sys.stdin", io.StringIO(""))  # the chat ends at once (end of input)
    assert main(["chat", "--run", str(tiny_model_run), "--device", "cpu"]) == 0
    assert "device: cpu, fp32" in capsys.readouterr().out.splitlines()

    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: None)  # the startup line, no serving
    assert main(["serve", str(tiny_model_run), "--port", "0", "--device", "cpu"]) == 0
    (line,) = [x for x in capsys.readouterr().out.splitlines() if x.startswith("serving ")]
    assert line.endswith("; device: cpu, fp32")

    run = tmp_path / "run"
    shutil.copytree(tiny_model_run, run)
    assert main(["quantize", str(run), "--bits", "8", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "device: cpu, fp32" and "vs unquantized fp32" in out
    assert main(["quantize", str(run), "--bits", "8", "--no-eval", "--device", "cpu"]) == 0
    assert "device" not in capsys.readouterr().out  # no model runs, so no device to name


def test_eval_on_the_cpu(tiny_run, capsys):
    from myllm.train.pretrain import pretrain

    pretrain(tiny_run, RunDir(tiny_run).config(["train.max_steps=2"]), show_progress=False)  # eval reads its state
    assert main(["eval", "--run", str(tiny_run), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "device: cpu, fp32" and "val" in out
    assert RunDir(tiny_run).summary()["val_bpb"] > 0


COMMANDS = {"generate": ["generate", "--run", "RUN"], "chat": ["chat", "--run", "RUN"], "serve": ["serve", "RUN"],
            "quantize": ["quantize", "RUN", "--bits", "8"], "eval": ["eval", "--run", "RUN"]}


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("value", ["tpu", "cuda:x", "gpu0", ""])
def test_a_bad_device_name_is_one_line_with_the_choices(command, value, tiny_model_run, capsys):
    argv = [str(tiny_model_run) if x == "RUN" else x for x in COMMANDS[command]]
    rc = main(argv + ["--device", value])
    one_line_error(rc, capsys.readouterr().err, f"myllm {command}: error: --device = {value!r}",
                   "choose auto, cpu, cuda or cuda:N")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")
@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("value", ["cuda", "cuda:1"])
def test_cuda_without_cuda_is_one_line_naming_the_flag(command, value, tmp_path, capsys):
    # A run that does not exist: the device is refused before the run is even read.
    argv = [str(tmp_path / "nope") if x == "RUN" else x for x in COMMANDS[command]]
    rc = main(argv + ["--device", value])
    one_line_error(rc, capsys.readouterr().err, f"--device = {value} but no CUDA device is visible",
                   "use cpu or auto")


def test_the_library_refuses_a_bad_device_before_loading(tiny_model_run):
    from myllm.export.quantize import quantize_run
    from myllm.serve.server import load_for_serving

    with pytest.raises(MyLLMError, match="--device = 'tpu'"):
        load_for_serving(tiny_model_run, device="tpu")
    with pytest.raises(MyLLMError, match="--device = 'tpu'"):
        quantize_run(tiny_model_run, 8, device="tpu")
    model, _, _ = load_for_serving(tiny_model_run, device="cpu")
    assert model.embed_tokens.weight.dtype == torch.float32 and model.embed_tokens.weight.device == CPU


@pytest.fixture(scope="module")
def bf16_model():
    return place_model(cycle_model(), CPU, torch.bfloat16)


def test_bf16_greedy_decode_keeps_a_bf16_cache_and_fp32_rope(bf16_model):
    fp32 = cycle_model()
    assert bf16_model.embed_tokens.weight.dtype == torch.bfloat16
    assert bf16_model.rope_cos.dtype == bf16_model.rope_sin.dtype == torch.float32  # angles stay exact
    prompt = [1, 17, 250, 3]
    params = SamplingParams(max_new_tokens=24, temperature=0)
    decoder = Decoder(bf16_model, 32)
    assert decoder.cache.k.dtype == decoder.cache.v.dtype == torch.bfloat16
    ids = generate(bf16_model, prompt, params, decoder)
    assert len(ids) == 24 and all(0 <= t < bf16_model.cfg.vocab_size for t in ids)
    # The cycle model is peaked, so bf16 rounding does not change its greedy path.
    assert ids == generate(fp32, prompt, params)


def test_bf16_sampling_penalties_batching_and_beams_run(bf16_model):
    params = SamplingParams(max_new_tokens=12, temperature=0.8, top_k=20, top_p=0.9, seed=3,
                            repetition_penalty=1.3, frequency_penalty=0.5)
    first = generate(bf16_model, [1, 5, 9], params)
    assert len(first) == 12 and generate(bf16_model, [1, 5, 9], params) == first  # seeded: reproducible
    engine = BatchEngine(bf16_model, max_batch=2, max_len=32)
    assert engine.cache.k.dtype == torch.bfloat16
    seqs = [engine.submit(p, params) for p in ([1, 5, 9], [2, 4])]
    while engine.active or engine.waiting:
        engine.step()
    assert seqs[0].out == first and len(seqs[1].out) == 12  # batched = alone, in bf16 too
    (tokens, score), *_ = beam_search(bf16_model, [1, 5, 9], 3, 8)
    assert len(tokens) == 8 and score < 0


def test_a_quantized_model_runs_in_bf16_with_its_integers_kept():
    """The choice in cli/commands.py `_load`: quantized layers change only their compute dtype."""
    from myllm.infer.quant import quantize_model

    model = place_model(quantize_model(cycle_model(), 8), CPU, torch.bfloat16)
    layer = model.layers[0].mlp.down_proj
    assert layer.qweight.dtype == torch.int8 and layer.weight.dtype == torch.bfloat16
    decoder = Decoder(model, 32)
    assert decoder.cache.k.dtype == torch.bfloat16
    assert len(generate(model, [1, 17, 250], SamplingParams(max_new_tokens=8, temperature=0), decoder)) == 8


def files_of(path):
    return {p.relative_to(path): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_exporting_twice_gives_the_same_bytes(tiny_model_run, tmp_path):
    from myllm.export.hf import export_hf

    first, second = export_hf(tiny_model_run, tmp_path / "a"), export_hf(tiny_model_run, tmp_path / "b")
    assert files_of(first) == files_of(second) and len(files_of(first)) >= 6
    pytest.importorskip("gguf")
    from myllm.export.gguf import export_gguf

    for kind in ("f32", "q8_0"):
        a, b = export_gguf(tiny_model_run, tmp_path / f"a-{kind}.gguf", kind), export_gguf(
            tiny_model_run, tmp_path / f"b-{kind}.gguf", kind)
        assert a.read_bytes() == b.read_bytes()


def test_quantizing_twice_writes_the_same_bytes(tiny_model_run, tmp_path):
    from myllm.export.quantize import quantize_run

    run = tmp_path / "run"
    shutil.copytree(tiny_model_run, run)
    path = RunDir(run).quantized(4)
    quantize_run(run, 4, evaluate=False, device="cpu")
    first = path.read_bytes()
    quantize_run(run, 4, evaluate=False, device="auto")
    assert path.read_bytes() == first


def test_eval_of_a_checkpoint_without_training_figures_is_one_line(tiny_model_run, tmp_path, capsys):
    """A state.json without "tokens"/"seconds" (hand-made, or another tool's) ends in one line, not a KeyError."""
    run = tmp_path / "run"
    shutil.copytree(tiny_model_run, run)
    assert main(["eval", "--run", str(run), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "lacks its token count or training time" in err
