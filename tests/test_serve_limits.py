"""The server bounds its work (issue 16): body size (413), time to send a request (408), CPU work
off the event loop, OpenAI-style JSON for every error, and one-line errors for bad --port/--host.

Behaviour that depends on the HTTP stack (a body cut off mid-stream, a stalled client) is tested
over raw sockets against a live uvicorn server on 127.0.0.1."""

import json
import socket
import threading
import time

import httpx
import pytest

from fuzzing import assert_one_line_error, cli
from myllm.serve.app import create_app
from myllm.serve.limits import DEFAULT_MAX_BODY_MB, DEFAULT_REQUEST_TIMEOUT
from myllm.serve.server import ServerThread, load_for_serving
from serve_fixtures import make_served_run, one_thread  # noqa: F401  (autouse)

MODEL = "run"
LIMIT_MB = 0.05  # 50 kB: small enough to exceed cheaply
TIMEOUT = 0.6


def raw_http(url: str, parts: list[bytes], timeout: float = 10.0, pause: float = 0.0) -> tuple[int, dict, bytes]:
    """Send `parts` over one connection (stopping if the server closes it), then read one response:
    (status, headers, body); status 0 if the server closed without answering."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        for part in parts:
            try:
                s.sendall(part)
            except (BrokenPipeError, ConnectionResetError):
                break
            time.sleep(pause)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                return 0, {}, data
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.lower().split(": ", 1) for line in lines[1:])
        want = int(headers.get("content-length", "-1"))
        while len(body) < want or want < 0:
            chunk = s.recv(65536)
            if not chunk:
                break
            body += chunk
        return int(lines[0].split()[1]), headers, body


def request(path: str, body: bytes, headers: dict | None = None, method: str = "POST") -> bytes:
    head = {"host": "x", "content-type": "application/json", "content-length": str(len(body)),
            "connection": "close", **(headers or {})}
    lines = "".join(f"{k}: {v}\r\n" for k, v in head.items() if v is not None)
    return f"{method} {path} HTTP/1.1\r\n{lines}\r\n".encode() + body


def assert_openai_error(status: int, body: bytes, want: int) -> dict:
    assert status == want, (status, body[:300])
    err = json.loads(body)["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"], err
    return err


@pytest.fixture(scope="module")
def loaded(tiny_data, tmp_path_factory):
    model, tok, _ = load_for_serving(make_served_run(tiny_data, tmp_path_factory.mktemp("limits") / "run", 256))
    return model, tok


@pytest.fixture(scope="module")
def server(loaded):
    app = create_app(*loaded, MODEL, max_batch=4, max_body_mb=LIMIT_MB, request_timeout=TIMEOUT)
    with ServerThread(app, request_timeout=TIMEOUT) as url:
        yield url, app.state.service.engine


def idle(url: str) -> dict:
    h = httpx.get(url + "/health").json()
    assert h["active"] == 0 and h["waiting"] == 0 and h["free_slots"] == h["slots"], h
    return h


def chat(content: str = "hi", **kw) -> bytes:
    return json.dumps({"model": MODEL, "messages": [{"role": "user", "content": content}], "max_tokens": 2,
                       **kw}).encode()


def test_a_declared_oversize_body_gets_413_before_it_is_read(server):
    url = server[0]
    head = request("/v1/chat/completions", b"", {"content-length": str(10**9)})
    status, _, body = raw_http(url, [head])  # the gigabyte is never sent: the answer comes first
    err = assert_openai_error(status, body, 413)
    assert err["code"] == "request_too_large" and "--max-body-mb" in err["message"] and "1000 MB" in err["message"]
    big = chat("x" * int(LIMIT_MB * 1e6))
    r = httpx.post(url + "/v1/chat/completions", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"  # the client reads it
    idle(url)


def test_a_chunked_oversize_body_is_cut_off_while_streaming(server):
    url = server[0]
    head = request("/v1/chat/completions", b"", {"content-length": None, "transfer-encoding": "chunked"})
    piece = b"x" * 8192
    chunks = [b"%x\r\n%s\r\n" % (len(piece), piece)] * (int(LIMIT_MB * 1e6) // len(piece) + 3) + [b"0\r\n\r\n"]
    status, headers, body = raw_http(url, [head, *chunks])
    assert_openai_error(status, body, 413)

    def endless():  # a client that would send forever: the server must answer without reading it all
        yield b'{"model": "run", "prompt": "'
        while True:
            yield b"a" * 8192

    start = time.monotonic()
    with httpx.Client() as c:
        try:
            r = c.post(url + "/v1/completions", content=endless(), headers={"content-type": "application/json"},
                       timeout=10)
            assert r.status_code == 413
        except httpx.TransportError as e:  # the 413 went out, and the discarding ended TIMEOUT later
            assert not isinstance(e, httpx.TimeoutException), e
    assert time.monotonic() - start < TIMEOUT + 5
    idle(url)


def test_a_client_that_leaves_mid_body_holds_nothing(server):
    url = server[0]
    host, port = url.removeprefix("http://").split(":")
    for _ in range(3):
        with socket.create_connection((host, int(port))) as s:
            s.sendall(request("/v1/chat/completions", b"", {"content-length": "1000"}) + b'{"model": "ru')
    status, _, body = raw_http(url, [request("/v1/chat/completions", chat())])
    assert status == 200, body
    idle(url)


def test_a_body_within_the_limit_is_served(server):
    status, _, body = raw_http(server[0], [request("/v1/chat/completions", chat("hi " * 30))])
    assert status == 200 and json.loads(body)["usage"]["completion_tokens"] <= 2, body


def test_a_stalled_body_gets_408_and_holds_no_slot(server):
    url = server[0]
    part = request("/v1/chat/completions", b"", {"content-length": "500"}) + b'{"model": "run", '
    got = {}
    t = threading.Thread(target=lambda: got.update(r=raw_http(url, [part])))
    start = time.monotonic()
    t.start()
    time.sleep(TIMEOUT / 3)
    h = idle(url)  # while the client stalls: no slot taken, the loop answers
    assert h["status"] == "ok"
    t.join(10)
    status, _, body = got["r"]
    assert assert_openai_error(status, body, 408)["code"] == "request_timeout"
    assert TIMEOUT * 0.9 < time.monotonic() - start < TIMEOUT + 5


@pytest.mark.parametrize("sent", [b"", b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n"])
def test_stalled_headers_get_408(server, sent):
    start = time.monotonic()
    status, _, body = raw_http(server[0], [sent] if sent else [])
    assert assert_openai_error(status, body, 408)["code"] == "request_timeout"
    assert time.monotonic() - start < TIMEOUT + 5
    idle(server[0])


def test_a_slow_drip_body_is_timed_out_as_a_whole(server):
    body = chat("hi")
    parts = [request("/v1/chat/completions", b"", {"content-length": str(len(body))})]
    parts += [body[i:i + 1] for i in range(len(body))]  # one byte every 50 ms: each in time, the whole not
    status, _, got = raw_http(server[0], parts, pause=0.05)
    assert_openai_error(status, got, 408)


def test_keep_alive_then_a_stalled_request_line_gets_408(server):
    host, port = server[0].removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(request("/health", b"", {"connection": None, "content-type": None}, method="GET"))
        assert s.recv(65536).startswith(b"HTTP/1.1 200")
        s.sendall(b"GET /hea")  # a byte cancels uvicorn's keep-alive timer; the header deadline remains
        rest = b""
        while chunk := s.recv(65536):
            rest += chunk
    assert b"HTTP/1.1 408" in rest and rest.endswith(b"}") and b"request_timeout" in rest


@pytest.mark.parametrize("raw,want", [
    (b'{"model": "run", "prompt": "a", "temperature": NaN}', 400),
    (b'{"model": "run", "prompt": "a", "max_tokens": ' + b"9" * 5000 + b"}", 400),
    (b"[" * 20_000 + b"]" * 20_000, 400),
    (b'{"model": "run", "prompt": "a\\ud800b", "max_tokens": 1}', 200),  # tiktoken replaces the lone surrogate
    (b'{"model": "run", "prompt": "\xff\xfe"}', 400),
    (b"17", 400),
])
def test_pathological_json_is_an_openai_400(server, raw, want):
    status, _, body = raw_http(server[0], [request("/v1/completions", raw)])
    if want == 200:
        assert status == 200, body
    else:
        assert_openai_error(status, body, want)
    idle(server[0])


@pytest.mark.parametrize("params,want", [
    ({"temperature": 5e-324}, 200), ({"top_p": 5e-324}, 200), ({"top_p": 1e-45, "temperature": 1.0}, 200),
    ({"repetition_penalty": 1e-300}, 400), ({"top_k": 10**30}, 200),
])
def test_extreme_sampling_values_are_served_or_refused_never_a_500(server, params, want):
    # These were 500s: 5e-324 rounds to 0 in float32 (the sampler divided by it, or top-p dropped
    # every token); below 1e-5, temperature and top_p now mean greedy, as in vLLM.
    r = httpx.post(server[0] + "/v1/completions", json={"model": MODEL, "prompt": "a", "max_tokens": 2, **params})
    assert r.status_code == want, r.text
    idle(server[0])


def test_wrong_content_type_is_415_and_no_content_type_is_json(server):
    url = server[0]
    r = httpx.post(url + "/v1/chat/completions", content=chat(), headers={"content-type": "text/plain"})
    assert r.status_code == 415 and r.json()["error"]["code"] == "unsupported_media_type"
    status, _, _ = raw_http(url, [request("/v1/chat/completions", chat(), {"content-type": None})])
    assert status == 200


def test_bad_http_and_framework_errors_are_json(server, loaded):
    url = server[0]
    status, headers, body = raw_http(url, [b"GET / HTTP/1.1\r\nhost: x\r\ncontent-length: abc\r\n\r\n"])
    assert assert_openai_error(status, body, 400)["code"] == "invalid_http"
    r = httpx.get(url + "/v1/chat/completions")
    assert r.status_code == 405 and "error" in r.json()
    app = create_app(*loaded, MODEL, max_batch=1)

    async def typed(x: int) -> dict:
        return {"x": x}

    app.add_api_route("/typed/{x}", typed)
    svc = app.state.service
    svc.check_model = lambda name: 1 / 0  # a bug: still JSON, with status 500 and type server_error
    with ServerThread(app) as other:
        r = httpx.get(other + "/typed/abc")
        assert r.status_code == 400 and r.json()["error"]["param"] == "x"  # RequestValidationError -> 400
        r = httpx.post(other + "/v1/completions", content=b'{"model": "run", "prompt": "a"}')
        assert r.status_code == 500 and r.json()["error"]["type"] == "server_error"


def test_tokenization_runs_off_the_event_loop(server, loaded, monkeypatch):
    url, tok = server[0], loaded[1]
    real = tok.encode

    def slow(text):  # if this ran on the event loop, /health would wait for it
        time.sleep(1.5)
        return real(text)

    monkeypatch.setattr(tok, "encode", slow)
    got = {}
    began = time.perf_counter()
    t = threading.Thread(target=lambda: got.update(r=httpx.post(
        url + "/v1/completions", timeout=30, json={"model": MODEL, "prompt": "a", "max_tokens": 1})))
    t.start()
    time.sleep(0.3)
    lat = []
    while t.is_alive():
        start = time.perf_counter()
        assert httpx.get(url + "/health").status_code == 200
        lat.append(time.perf_counter() - start)
        time.sleep(0.05)
    t.join()
    assert got["r"].status_code == 200 and time.perf_counter() - began >= 1.5  # the slow encode really ran
    assert len(lat) >= 5 and max(lat) < 0.5, lat  # ... and /health answered all along


def test_health_answers_quickly_under_a_large_request(loaded):
    """A 10 MB request (limit raised to 16 MB) is received, parsed and refused off the loop; /health
    meanwhile stays fast. Measured figures: bench/serve_health_under_load.py."""
    app = create_app(*loaded, MODEL, max_batch=2, max_body_mb=16)
    big = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "the cat " * 1_250_000}]}).encode()
    with ServerThread(app) as url:
        got = {}
        t = threading.Thread(target=lambda: got.update(r=httpx.post(url + "/v1/chat/completions", content=big,
                                                                    timeout=60)))
        t.start()
        lat = []
        while t.is_alive() or not lat:
            start = time.perf_counter()
            assert httpx.get(url + "/health").status_code == 200
            lat.append(time.perf_counter() - start)
            time.sleep(0.01)
        t.join()
    assert got["r"].status_code == 400 and got["r"].json()["error"]["code"] == "context_length_exceeded"
    assert max(lat) < 1.0, lat


def test_parser_defaults_are_the_library_defaults():
    from myllm.cli import build_parser

    a = build_parser().parse_args(["serve", "run"])
    assert (a.max_body_mb, a.request_timeout) == (DEFAULT_MAX_BODY_MB, DEFAULT_REQUEST_TIMEOUT)


@pytest.mark.parametrize("flags,mentions", [
    (["--port", "-1"], "--port must be 1..65535"),
    (["--port", "70000"], "--port must be 1..65535"),
    (["--port", "abc"], "invalid int value"),
    (["--max-body-mb", "0"], "--max-body-mb"),
    (["--max-body-mb", "nan"], "--max-body-mb"),
    (["--request-timeout", "-5"], "--request-timeout"),
])
def test_bad_serve_flags_are_one_line_before_loading(flags, mentions, tmp_path, capsys):
    rc, err = cli(["serve", tmp_path / "no-such-run", *flags], capsys)  # the flag is checked first
    assert_one_line_error(rc, err, mentions=mentions)


def test_a_busy_port_or_bad_host_is_one_line(tiny_data, tmp_path, capsys):
    run = make_served_run(tiny_data, tmp_path / "run", 64)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        rc, err = cli(["serve", run, "--port", port], capsys)
        assert_one_line_error(rc, err, mentions=f"port {port}")
        assert "another server is using it" in err
    rc, err = cli(["serve", run, "--host", "no-such-host.invalid", "--port", "0"], capsys)
    assert_one_line_error(rc, err, mentions="--host 'no-such-host.invalid'")
    rc, err = cli(["serve", run, "--host", "192.0.2.1", "--port", "0"], capsys)  # TEST-NET: not this machine
    assert_one_line_error(rc, err, mentions="not on this machine")


def test_a_port_that_needs_root_is_one_line(monkeypatch):
    from myllm.errors import MyLLMError
    from myllm.serve.server import bind

    def refuse(self, address):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(socket.socket, "bind", refuse)  # the tests may run as root, where port 80 would bind
    with pytest.raises(MyLLMError, match="cannot listen on 127.0.0.1 port 80 .*ports below 1024 need root"):
        bind("127.0.0.1", 80)


def test_a_client_without_the_key_is_answered_401_before_its_body_is_read(loaded):
    app = create_app(*loaded, MODEL, api_key="s3cret", max_batch=2, max_body_mb=LIMIT_MB, request_timeout=5.0)
    with ServerThread(app, request_timeout=5.0) as url:
        head = request("/v1/chat/completions", b"", {"content-length": str(int(LIMIT_MB * 1e6) - 1)})
        start = time.perf_counter()
        status, _, body = raw_http(url, [head])  # the headers only: the body is never sent
        assert time.perf_counter() - start < 2.5  # answered at once, not after the 5 s body timeout
        assert assert_openai_error(status, body, 401)["code"] == "invalid_api_key"
