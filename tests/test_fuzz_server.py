"""Fuzz the live server (issue 16): bad requests built from classes by a seeded generator.

For every input, over raw sockets to a real uvicorn server: the answer is a 4xx (never a 5xx,
never plain text) whose body is an OpenAI-style error, or, where a mutation happened to leave the
request valid, a 200. Afterwards every engine slot is free and nothing is waiting."""

import json

import httpx
import pytest

from fuzzing import SEEDS, rng_for
from myllm.serve.app import create_app
from myllm.serve.server import ServerThread, load_for_serving
from serve_fixtures import make_served_run, one_thread  # noqa: F401  (autouse)
from test_serve_limits import raw_http, request

MODEL = "run"
LIMIT = 50_000  # bytes
TIMEOUT = 0.4
PER_CLASS = 12


def base(rng) -> dict:
    if rng.random() < 0.5:
        return {"model": MODEL, "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 2}
    return {"model": MODEL, "prompt": "the cat", "max_tokens": 2}


def path_of(body: dict) -> str:
    return "/v1/chat/completions" if "messages" in body else "/v1/completions"


def post(body: dict, raw: bytes | None = None, **headers) -> list[bytes]:
    return [request(path_of(body), json.dumps(body).encode() if raw is None else raw, headers)]


WRONG = ["text", "", 1, -1, 0, 1.5, -0.5, True, False, None, [], {}, [1, "a"], {"a": 1}, 10**30, -(10**30),
         1e308, "x" * 2000, [[[]]], "\u0000", "\ud800"]
FIELDS = ["model", "max_tokens", "max_completion_tokens", "temperature", "top_p", "top_k", "n", "seed", "stop",
          "stream", "stream_options", "frequency_penalty", "presence_penalty", "repetition_penalty", "user",
          "logprobs", "echo", "best_of", "suffix", "messages", "prompt", "messages.0", "messages.0.role",
          "messages.0.content", "stream_options.include_usage"]
OUT_OF_RANGE = {  # field -> values just or far outside what protocol.py accepts
    "max_tokens": lambda r: r.choice([0, -r.randint(1, 10**6), 10 ** r.randint(3, 80)]),
    "max_completion_tokens": lambda r: r.choice([0, -1, 10 ** r.randint(3, 80)]),
    "temperature": lambda r: r.choice([-r.random() - 1e-9, 2 + r.random() + 1e-9, 1e308, -1e308]),
    "top_p": lambda r: r.choice([0, 0.0, -r.random(), 1 + r.random() + 1e-9]),
    "top_k": lambda r: -r.randint(1, 10**9),
    "n": lambda r: r.choice([0, -r.randint(1, 100), r.randint(17, 10**6)]),
    "seed": lambda r: r.choice([2**63 + r.randint(0, 10**6), -(2**63) - r.randint(1, 10**6), 10**40]),
    "frequency_penalty": lambda r: r.choice([2 + r.random() + 1e-9, -2 - r.random() - 1e-9]),
    "presence_penalty": lambda r: r.choice([2 + r.random() + 1e-9, -2 - r.random() - 1e-9]),
    "repetition_penalty": lambda r: r.choice([0, -r.random(), 10 + r.random() + 1e-9]),
    "stop": lambda r: ["s"] * r.randint(5, 50),
    "best_of": lambda r: r.randint(2, 100),
}


EXTREME = {  # in range, or just out, where the arithmetic is fragile (5e-324 rounds to 0 in float32)
    "temperature": [5e-324, 1e-310, 1e-45, 1e-6, 1e-5, 0.0, 2.0, 2.0000001],
    "top_p": [5e-324, 1e-45, 1e-6, 1e-5, 1.0, 0.5],
    "top_k": [0, 1, 2**63, 10**30],
    "repetition_penalty": [1e-300, 0.0099, 0.01, 10.0, 10.000001],
    "frequency_penalty": [-2.0, 2.0, -2.0000001],
    "presence_penalty": [-2.0, 2.0, 2.0000001],
    "seed": [0, 2**63 - 1 - 16, 2**63 - 16, -(2**63), -(2**63) - 1],
    "n": [1, 16],
}


def set_field(body: dict, dotted: str, value) -> None:
    *parents, last = dotted.split(".")
    node = body
    for p in parents:
        node = node[int(p)] if isinstance(node, list) else node.setdefault(p, {})
        if not isinstance(node, (dict, list)):
            return
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value


def malformed_json(rng) -> list[bytes]:
    body = base(rng)
    raw = bytearray(json.dumps(body).encode())
    op = rng.randrange(5)
    if op == 0:
        raw = raw[: rng.randrange(len(raw))]
    elif op == 1:
        raw[rng.randrange(len(raw))] = rng.randrange(256)
    elif op == 2:
        at = rng.randrange(len(raw))
        raw[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
    elif op == 3:
        raw = raw.replace(b'"the', rng.choice([b'"\xff\xfe', b'"\xc3', b'"\xed\xa0\x80', b"the"]))
        raw = raw.replace(b'"hello', rng.choice([b'"\xff\xfe', b'"\xc3', b'"\xed\xa0\x80', b"hello"]))
    else:
        raw = bytearray(rng.randrange(256) for _ in range(rng.randint(0, 200)))
    return post(body, bytes(raw))


def wrong_types(rng) -> list[bytes]:
    body = base(rng)
    fields = [f for f in FIELDS if not f.startswith("messages" if "prompt" in body else "prompt")]
    for _ in range(rng.randint(1, 3)):
        set_field(body, rng.choice(fields), rng.choice(WRONG))
    if body.get("stream") is True:
        body["max_tokens"] = 2
    return post(body)


def out_of_range(rng) -> list[bytes]:
    body = base(rng)
    name = rng.choice(sorted(OUT_OF_RANGE))
    body[name] = OUT_OF_RANGE[name](rng)
    return post(body)


def extreme_values(rng) -> list[bytes]:
    body = base(rng)
    for name in rng.sample(sorted(EXTREME), rng.randint(1, 4)):
        body[name] = rng.choice(EXTREME[name])
    return post(body)


def deep_nesting(rng) -> list[bytes]:
    body, depth = base(rng), rng.randint(900, 12_000)
    opener, closer = rng.choice([(b"[", b"]"), (b'{"a":', b"}")])
    deep = opener * depth + b"1" + closer * depth
    if rng.random() < 0.5:
        return post(body, deep)
    field = rng.choice(["messages", "prompt", "stop", "temperature", "unknown_field"])
    raw = json.dumps({**body, field: "__DEEP__"}).encode().replace(b'"__DEEP__"', deep)
    return post(body, raw)


def non_object(rng) -> list[bytes]:
    value = rng.choice([[], [1, 2], [base(rng)], 17, -3.5, "text", None, True, 10**100])
    return post(base(rng), json.dumps(value).encode())


def oversize(rng) -> list[bytes]:
    body, op = base(rng), rng.randrange(3)
    if op == 0:  # a Content-Length over the limit; the body is never sent
        return post(body, b"", **{"content-length": str(rng.randint(LIMIT + 1, 10**12))})
    big = json.dumps({**body, "user": "u" * rng.randint(LIMIT, 3 * LIMIT)}).encode()
    if op == 1:
        return post(body, big)
    head = request(path_of(body), b"", {"content-length": None, "transfer-encoding": "chunked"})
    step = rng.randint(1000, 20_000)
    chunks = [b"%x\r\n%s\r\n" % (len(big[i:i + step]), big[i:i + step]) for i in range(0, len(big), step)]
    return [head, *chunks, b"0\r\n\r\n"]


def truncated(rng) -> list[bytes]:
    body = base(rng)
    raw = json.dumps(body).encode()
    sent = raw[: rng.randrange(len(raw))]
    return post(body, sent, **{"content-length": str(len(raw))})  # then stalls: 408 after TIMEOUT


def bad_headers(rng) -> list[bytes]:
    body = base(rng)
    raw = json.dumps(body).encode()
    op = rng.randrange(6)
    if op == 0:
        kind = rng.choice(["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                           "application/xml", "".join(rng.choice("abc/;=") for _ in range(10))])
        return post(body, raw, **{"content-type": kind})
    if op == 1:  # Content-Length says less than is sent: the rest looks like a next request
        return post(body, raw, **{"content-length": str(rng.randrange(len(raw)))})
    if op == 2:
        return post(body, raw, **{"content-length": rng.choice(["abc", "-1", "1e3", "0x10", " "])})
    if op == 3:
        return [request(path_of(body), raw).replace(b"content-type", b"content-length: 1\r\ncontent-type", 1)]
    if op == 4:
        return post(body, raw, **{"x-big": "h" * rng.randint(300_000, 600_000)})  # over h11 and asyncio buffers
    return [request(path_of(body), raw).replace(b"host: x", rng.choice([b"host x", b"h\x00st: x", b": x"]))]


def bad_paths_methods(rng) -> list[bytes]:
    op = rng.randrange(4)
    if op == 0:
        path = rng.choice(["/v1/x", "/v2/chat/completions", "/v1/chat", "/%00", "/%ff", "/v1/chat/completions/",
                           "/" + "".join(rng.choice("abc/%09._-") for _ in range(rng.randint(1, 40)))])
        return [request(path, b"", method=rng.choice(["GET", "POST"]))]
    if op == 1:
        name = "".join(rng.choice("abcdefgh-_.%20") for _ in range(rng.randint(1, 30)))
        return [request("/v1/models/" + name, b"", method="GET")]
    if op == 2:
        path = rng.choice(["/v1/chat/completions", "/v1/completions", "/health", "/v1/models", "/"])
        method = rng.choice(["PUT", "DELETE", "PATCH", "OPTIONS"] + (["GET"] * path.endswith("completions")))
        return [request(path, json.dumps(base(rng)).encode(), method=method)]
    return [request("/health", b"", method=rng.choice(["G@T", "GET GET", "\x7f"]))]


CLASSES = [malformed_json, wrong_types, out_of_range, extreme_values, deep_nesting, non_object, oversize, truncated,
           bad_headers, bad_paths_methods]
MAY_SUCCEED = {"malformed_json", "wrong_types", "extreme_values"}  # a valid request may remain: 200 is right
SLOW = {"truncated": 3}  # each waits for the timeout


@pytest.fixture(scope="module")
def server(tiny_data, tmp_path_factory):
    model, tok, _ = load_for_serving(make_served_run(tiny_data, tmp_path_factory.mktemp("fuzz") / "run", 64))
    app = create_app(model, tok, MODEL, max_batch=4, max_body_mb=LIMIT / 1e6, request_timeout=TIMEOUT)
    with ServerThread(app, request_timeout=TIMEOUT) as url:
        yield url


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("make", CLASSES, ids=[c.__name__ for c in CLASSES])
def test_bad_requests_get_4xx_openai_errors_and_free_every_slot(server, make, seed):
    rng = rng_for(seed, make.__name__)
    for _ in range(SLOW.get(make.__name__, PER_CLASS)):
        parts = make(rng)
        status, headers, body = raw_http(server, parts)
        if status == 200 and make.__name__ in MAY_SUCCEED:
            continue
        assert 400 <= status < 500, (make.__name__, parts[0][:200], status, body[:300])
        assert headers.get("content-type") == "application/json", (parts[0][:200], headers)
        err = json.loads(body)["error"]
        assert set(err) == {"message", "type", "param", "code"} and err["message"], err
        assert err["type"] == "invalid_request_error", err
    h = httpx.get(server + "/health").json()
    assert h["active"] == 0 and h["waiting"] == 0 and h["free_slots"] == h["slots"] == 4, h
