"""The OpenAI-compatible server, tested with the official `openai` client against a live server on 127.0.0.1."""

import json
import os
import pickle
import subprocess
import sys
import threading
import time

import httpx
import openai
import pytest
import torch

from myllm.chat import prompt_ids
from myllm.errors import MyLLMError
from myllm.infer.engine import SamplingParams, generate
from myllm.serve.app import create_app
from myllm.serve.server import ServerThread, load_for_serving
from serve_fixtures import make_served_run, one_thread  # noqa: F401  (autouse)

MODEL = "run"  # the served model's id is the run directory's name


@pytest.fixture(scope="module")
def served(tiny_data, tmp_path_factory):
    return make_served_run(tiny_data, tmp_path_factory.mktemp("serve") / "run")


@pytest.fixture(scope="module")
def loaded(served):
    model, tok, _ = load_for_serving(served)
    return model, tok


@pytest.fixture(scope="module")
def server(loaded):
    model, tok = loaded
    app = create_app(model, tok, MODEL, max_batch=8)
    with ServerThread(app) as url:
        yield url, app.state.service.engine


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server[0] + "/v1", api_key="unused", max_retries=0, timeout=60)


def greedy_text(loaded, prompt: list[int], max_tokens: int, stop_ids=()) -> tuple[str, int]:
    model, tok = loaded
    ids = generate(model, prompt, SamplingParams(max_new_tokens=max_tokens, temperature=0, stop_ids=stop_ids))
    return tok.decode(ids, skip_special=True), len(ids)


def idle(server, timeout: float = 10.0) -> dict:
    """/health once the engine has no sequence left (a leaked slot fails here)."""
    deadline = time.monotonic() + timeout
    while True:
        h = httpx.get(server[0] + "/health").json()
        if (h["active"] == 0 and h["waiting"] == 0) or time.monotonic() > deadline:
            return h
        time.sleep(0.02)


def test_models_and_health(server, client):
    assert [m.id for m in client.models.list().data] == [MODEL]
    h = httpx.get(server[0] + "/health").json()
    assert h["status"] == "ok" and h["slots"] == 8 and h["free_slots"] == 8


def test_completion_equals_the_library_engine(loaded, client):
    model, tok = loaded
    want, n = greedy_text(loaded, [tok.bos_id] + tok.encode("the cat sat"), 20, (tok.bos_id, tok.eos_id))
    r = client.completions.create(model=MODEL, prompt="the cat sat", max_tokens=20, temperature=0)
    assert r.object == "text_completion" and r.choices[0].text == want
    assert r.choices[0].finish_reason == ("length" if n == 20 else "stop")
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (1 + len(tok.encode("the cat sat")), n)
    pieces = [c.choices[0].text for c in client.completions.create(model=MODEL, prompt="the cat sat", max_tokens=20,
                                                                    temperature=0, stream=True)]
    assert "".join(pieces) == want and len(pieces) > 2


def test_chat_streaming_and_not_agree_and_use_the_chat_template(loaded, client):
    model, tok = loaded
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Where does the cat sit?"}]
    from myllm.chat import stop_ids
    want, n = greedy_text(loaded, prompt_ids(tok, messages), 25, stop_ids(tok))
    r = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=25, temperature=0)
    assert r.object == "chat.completion" and r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content == want
    assert r.usage.prompt_tokens == len(prompt_ids(tok, messages)) and r.usage.completion_tokens == n
    assert r.usage.total_tokens == r.usage.prompt_tokens + n
    chunks = list(client.chat.completions.create(model=MODEL, messages=messages, max_tokens=25, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == want
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == r.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == n


def test_raw_sse_ends_with_done(server):
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5, "stream": True}
    with httpx.stream("POST", server[0] + "/v1/chat/completions", json=body) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [line for line in r.iter_lines() if line]
    assert events[-1] == "data: [DONE]" and all(e.startswith("data: {") for e in events[:-1])
    assert json.loads(events[-2][6:])["choices"][0]["finish_reason"] in ("stop", "length")


def test_stop_strings_cut_the_text(loaded, client):
    model, tok = loaded
    full = client.completions.create(model=MODEL, prompt="a", max_tokens=40, temperature=0).choices[0].text
    stop = full[len(full) // 2 : len(full) // 2 + 3]
    assert len(stop) == 3
    r = client.completions.create(model=MODEL, prompt="a", max_tokens=40, temperature=0, stop=[stop, "\x00never"])
    assert r.choices[0].text == full[: full.index(stop)] and r.choices[0].finish_reason == "stop"
    streamed = client.completions.create(model=MODEL, prompt="a", max_tokens=40, temperature=0, stop=stop,
                                         stream=True)
    assert "".join(c.choices[0].text for c in streamed) == r.choices[0].text


def test_n_seed_temperature_top_p(client):
    kw = dict(model=MODEL, messages=[{"role": "user", "content": "tell me"}], max_tokens=12, temperature=1.0,
              top_p=0.9)
    a = client.chat.completions.create(n=3, seed=7, **kw)
    b = client.chat.completions.create(n=3, seed=7, **kw)
    c = client.chat.completions.create(n=3, seed=8, **kw)
    texts = [ch.message.content for ch in a.choices]
    assert [ch.index for ch in a.choices] == [0, 1, 2] and len(set(texts)) == 3
    assert texts == [ch.message.content for ch in b.choices] and texts != [ch.message.content for ch in c.choices]
    assert a.usage.completion_tokens == 36  # a random model rarely emits <|end|>: 3 choices x 12 tokens
    streamed = client.chat.completions.create(n=3, seed=7, stream=True, **kw)
    got = ["", "", ""]
    for chunk in streamed:
        for ch in chunk.choices:
            got[ch.index] += ch.delta.content or ""
    assert got == texts


def test_concurrent_requests_are_batched_not_serialized(loaded, server, client):
    model, tok = loaded
    engine = server[1]
    engine.stats["max_active"] = 0
    prompts = [f"the {w} ran" for w in ("cat", "dog", "smith", "baker", "river", "town")]
    out: dict[int, str] = {}

    def ask(i):
        stream = client.completions.create(model=MODEL, prompt=prompts[i], max_tokens=60, temperature=0, stream=True)
        out[i] = "".join(c.choices[0].text for c in stream)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert engine.stats["max_active"] >= 3  # several sequences were in one decode step
    for i, p in enumerate(prompts):
        assert out[i] == greedy_text(loaded, [tok.bos_id] + tok.encode(p), 60, (tok.bos_id, tok.eos_id))[0]
    assert idle(server)["active"] == 0


BAD = [
    (b"{not json", 400, None),
    (b"[1, 2]", 400, None),
    ({"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}]}, 404, "model"),
    ({"model": MODEL, "messages": "hi"}, 400, "messages"),
    ({"model": MODEL, "messages": []}, 400, "messages"),
    ({"model": MODEL, "messages": [{"role": "robot", "content": "hi"}]}, 400, "messages.0.role"),
    ({"model": MODEL, "messages": [{"role": "user", "content": 5}]}, 400, "messages.0.content"),
    ({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}, 400, "temperature"),
    ({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "temperature": 3}, 400, "temperature"),
    ({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": "5"}, 400, "max_tokens"),
    ({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}, 400, "max_tokens"),
    ({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": -3}, 400, "max_tokens"),
    ({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5000}, 400, "max_tokens"),
    ({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "n": 17}, 400, "n"),
    ({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "n": True}, 400, "n"),
    ({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stop": ["a", "b", "c", "d", "e"]}, 400,
     "stop"),
    ({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": "yes"}, 400, "stream"),
    ({"model": MODEL, "messages": [{"role": "user", "content": "the cat " * 1000}]}, 400, "messages"),
    ({"messages": [{"role": "user", "content": "hi"}]}, 400, "model"),
    ({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "logprobs": True}, 400, "logprobs"),
    ({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "seed": 2**70}, 400, "seed"),
]


@pytest.mark.parametrize("body,status,param", BAD)
def test_bad_requests_get_openai_shaped_errors_and_the_server_keeps_serving(server, client, body, status, param):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = httpx.post(server[0] + "/v1/chat/completions", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["message"] and err["type"] == "invalid_request_error" and err["param"] == param
    assert idle(server)["active"] == 0
    ok = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    assert ok.usage.completion_tokens <= 2


def test_openai_client_raises_its_typed_errors(client):
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.BadRequestError, match="context length"):
        client.completions.create(model=MODEL, prompt="the cat " * 1000)


def test_unknown_route_is_an_openai_shaped_404(server):
    r = httpx.get(server[0] + "/v1/nothing")
    assert r.status_code == 404 and "error" in r.json()


def test_client_disconnect_mid_stream_frees_its_slot(loaded, server, monkeypatch):
    engine = server[1]
    real = engine.model.forward

    def slow(*args, **kwargs):  # make the reply outlast the client: 900 tokens at >= 5 ms each
        time.sleep(0.005)
        return real(*args, **kwargs)

    tok = loaded[1]
    n = greedy_text(loaded, [tok.bos_id] + tok.encode("a"), 900, (tok.bos_id, tok.eos_id))[1]
    assert n == 900  # greedy does not stop by itself: only the disconnect can end it early
    monkeypatch.setattr(engine.model, "forward", slow)
    before = engine.stats["cancelled"]
    body = {"model": MODEL, "prompt": "a", "max_tokens": 900, "stream": True, "temperature": 0}
    with httpx.stream("POST", server[0] + "/v1/completions", json=body) as r:
        lines = r.iter_lines()
        assert next(lines).startswith("data: ")
        assert httpx.get(server[0] + "/health").json()["active"] == 1
    h = idle(server, timeout=5)
    assert h["active"] == 0 and h["free_slots"] == 8 and engine.stats["cancelled"] == before + 1


def test_api_key_is_required_when_set(loaded):
    model, tok = loaded
    with ServerThread(create_app(model, tok, MODEL, api_key="s3cret", max_batch=2)) as url:
        bad = openai.OpenAI(base_url=url + "/v1", api_key="wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            bad.models.list()
        assert httpx.get(url + "/v1/models").status_code == 401
        good = openai.OpenAI(base_url=url + "/v1", api_key="s3cret", max_retries=0)
        assert good.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}],
                                            max_tokens=3).usage.completion_tokens <= 3
        assert httpx.get(url + "/health").status_code == 200  # health checks need no key


def test_loading_never_unpickles(served, monkeypatch, tmp_path):
    def refuse(*a, **k):
        raise AssertionError("serving must not unpickle anything")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    model, _, path = load_for_serving(served)
    assert (path / "optim.pt").is_file() and model.num_params() > 0
    bad = tmp_path / "bad"
    import shutil
    shutil.copytree(served, bad)
    ckpt = next((bad / "checkpoints" / "pretrain").iterdir())
    (ckpt / "model.safetensors").write_bytes(b"\x80\x04\x95 a pickle, not safetensors")
    with pytest.raises(MyLLMError, match="safetensors"):
        load_for_serving(bad)


@pytest.mark.slow  # a fresh interpreter imports torch and FastAPI: 9-19 s on the shared machine
def test_cli_serve_binds_localhost_and_serves(served, tmp_path):
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "myllm", "serve", str(served), "--port", str(port),
                             "--threads", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                h = httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).json()
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
                time.sleep(0.2)
        assert h["model"] == "run" and h["slots"] == 32
    finally:
        proc.terminate()
        proc.wait(10)
    assert "127.0.0.1" in proc.stdout.read()
    missing = subprocess.run([sys.executable, "-m", "myllm", "serve", str(tmp_path / "nope")], capture_output=True,
                             text=True)
    assert missing.returncode == 2 and "does not exist" in missing.stderr


def test_generate_command_beams_penalties_and_stop_strings(served, loaded, capsys):
    from myllm.cli import main

    model, tok = loaded
    base = ["generate", "--run", str(served), "--prompt", "the cat", "--max-new-tokens", "15", "--temperature", "0"]
    assert main(base) == 0
    greedy = capsys.readouterr().out
    ids = generate(model, [tok.bos_id] + tok.encode("the cat"),
                   SamplingParams(max_new_tokens=15, temperature=0, stop_ids=(tok.bos_id, tok.eos_id)))
    assert greedy == "the cat" + tok.decode(ids) + "\n"  # `generate` prints special tokens as text
    assert main(base + ["--beams", "1"]) == 0 and capsys.readouterr().out == greedy
    stop = greedy[len("the cat") + 5 : len("the cat") + 8]
    assert main(base + ["--stop", stop]) == 0
    assert capsys.readouterr().out == greedy[: greedy.index(stop, len("the cat"))] + "\n"
    assert main(base + ["--frequency-penalty", "2"]) == 0 and capsys.readouterr().out != greedy


@pytest.mark.slow
def test_generate_command_with_a_compiled_decoder_prints_the_same_text(served, capsys):
    from myllm.cli import main

    base = ["generate", "--run", str(served), "--prompt", "the cat", "--max-new-tokens", "15", "--temperature", "0"]
    assert main(base) == 0
    eager = capsys.readouterr().out
    assert main(base + ["--compile"]) == 0 and capsys.readouterr().out == eager


def test_chat_page_is_self_contained(server):
    import re

    r = httpx.get(server[0] + "/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "/v1/chat/completions" in r.text and "stream: true" in r.text
    external = re.findall(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", r.text) + re.findall(r"@import", r.text)
    assert external == []  # no CDN, no web fonts: it works offline
