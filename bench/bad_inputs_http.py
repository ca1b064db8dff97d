"""Odd HTTP for bench/bad_inputs.py: valid-looking requests of odd meaning, odd auth, odd paths and
odd transport, over raw sockets to a live server on run A (with an API key). Never a 5xx, never a
silent close on a complete request, and every slot free at the end."""

from __future__ import annotations

import json
import socket
import threading

KEY = "k3y"


def raw(url: str, data: bytes, timeout: float = 20.0, read_all: bool = True) -> tuple[object, bytes]:
    host, port = url.removeprefix("http://").split(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout) as s:
            s.sendall(data)
            got = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                got += chunk
                if not read_all and b"\r\n\r\n" in got:
                    break
    except TimeoutError:
        return "hang", b""
    except (ConnectionResetError, BrokenPipeError):
        return 0, b""
    if not got:
        return 0, b""
    try:
        return int(got.split(b" ", 2)[1]), got
    except (IndexError, ValueError):
        return "garbled", got


def req(path: str, body: bytes | dict | None, method: str = "POST", auth: str | None = f"Bearer {KEY}",
        headers: dict | None = None) -> bytes:
    if isinstance(body, dict):
        body = json.dumps(body).encode()
    body = body or b""
    head = {"host": "x", "content-type": "application/json", "content-length": str(len(body)), "connection": "close",
            "authorization": auth, **(headers or {})}
    lines = "".join(f"{k}: {v}\r\n" for k, v in head.items() if v is not None)
    return f"{method} {path} HTTP/1.1\r\n{lines}\r\n".encode("utf-8", "surrogateescape") + body


def bodies(rng) -> list[tuple[str, bytes]]:
    chat, comp = "/v1/chat/completions", "/v1/completions"
    u = {"role": "user", "content": "hi"}
    b = [(comp, {"model": "run", "prompt": p, "max_tokens": 2}) for p in
         rng.sample([[1, 2, 3], [-1], [10**9], [[1, 2]], [], [True], [1.5], ["a", "b"], [""], ["x"] * 500,
                     "x" * 3000, [0] * 200, [[]]], 8)]
    b += [(chat, {"model": "run", "messages": m, "max_tokens": 2}) for m in rng.sample(
        [[{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
         [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x"}}]}],
         [{"role": "user", "content": []}], [{"role": "user", "content": None}], [{"role": "tool", "content": "x"}],
         [{"role": "developer", "content": "x"}, u], [{"role": "user", "content": "hi", "name": "\u00e9" * 50}],
         [{"role": "assistant", "content": None, "tool_calls": [{"id": "1"}]}, u], [u] * 300,
         [{"role": "user", "content": "\x00\ud800"}]], 7)]
    extra = [{"logit_bias": {"1": 100}}, {"logit_bias": {"99999": -100}}, {"logit_bias": {"x": 1}},
             {"logprobs": True, "top_logprobs": 5}, {"top_logprobs": 1000}, {"response_format": {"type": "json_object"}},
             {"tools": [{"type": "function", "function": {"name": "f"}}]}, {"n": 2, "stream": True},
             {"stream": False, "stream_options": {"include_usage": True}}, {"max_tokens": 60, "stop": ["", ""]},
             {"stream": True, "stop": ["\x00"], "max_tokens": 5}, {"model": "run/../run"}, {"model": ""},
             {"max_tokens": 63, "messages": [{"role": "user", "content": "word " * 400}]}]
    b += [(chat, {"model": "run", "messages": [u], "max_tokens": 2, **e}) for e in rng.sample(extra, 10)]
    return b


def odd_requests(rng, work, tally) -> None:
    from myllm.serve.app import create_app
    from myllm.serve.server import ServerThread, load_for_serving

    run = work.fresh()
    model, tok, _ = load_for_serving(run)
    app = create_app(model, tok, "run", api_key=KEY, max_batch=2, max_body_mb=0.5, request_timeout=1.0)
    with ServerThread(app, request_timeout=1.0) as url:
        cases = [(f"POST {p} {json.dumps(body)[:150]}", req(p, body), True) for p, body in bodies(rng)]
        ok = {"model": "run", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
        chat = "/v1/chat/completions"
        for auth in rng.sample([None, "Bearer", "Bearer wrong", f"bearer {KEY}", f"Bearer {KEY} ", "Bearer \u00e9",
                                "Bearer " + "k" * 8000, "Basic aGk6aGk=", f"Bearer  {KEY}", "Bearer \udcff"], 7):
            cases.append((f"POST {chat} authorization={auth!r:.60}", req(chat, ok, auth=auth), True))
        for path, method in rng.sample([("/v1/models/%00", "GET"), ("/v1/models/run%2F..", "GET"),
                                        ("/v1/models/" + "r" * 4000, "GET"), ("/health?x=1&x=2", "GET"),
                                        (chat + "?stream=true", "POST"), ("/health", "HEAD"), ("/v1/models", "OPTIONS"),
                                        ("//v1/models", "GET"), ("/v1/../health", "GET"), ("/v1/models", "DELETE"),
                                        ("/v1/chat/completions/", "POST"), ("/%ff%fe", "GET")], 9):
            cases.append((f"{method} {path[:80]}", req(path, ok if method == "POST" else None, method), True))
        body = json.dumps(ok).encode()
        transport = {
            "chunked body": req(chat, None, headers={"content-length": None, "transfer-encoding": "chunked"})
            + f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n",
            "expect 100-continue": req(chat, ok, headers={"expect": "100-continue"}),
            "gzip garbage": req(chat, b"\x1f\x8b" + body, headers={"content-encoding": "gzip"}),
            "utf-16 body": req(chat, json.dumps(ok).encode("utf-16"), headers={"content-type": "application/json; "
                                                                                           "charset=utf-16"}),
            "BOM body": req(chat, b"\xef\xbb\xbf" + body), "text/plain": req(chat, ok, headers={"content-type": "text/plain"}),
            "no content-type": req(chat, ok, headers={"content-type": None}),
            "CL and TE both": req(chat, None, headers={"transfer-encoding": "chunked"}) + b"0\r\n\r\n" + body,
            "two pipelined": req(chat, ok, headers={"connection": "keep-alive"}) + req(chat, ok),
            "non-ascii header": req(chat, ok, headers={"x-name": "\u00e9\u6f22"}),
            "content-length negative": req(chat, ok, headers={"content-length": "-5"}),
        }
        for name in rng.sample(sorted(transport), len(transport)):
            cases.append((f"transport: {name}", transport[name], name != "CL and TE both"))
        for what, data, complete in cases:
            status, got = raw(url, data)
            tally.add("HTTP semantics", _kind(status, got, complete), what,
                      f"status {status}: {got[-200:]!r}")
        _concurrent(url, ok, tally)


def _kind(status, got: bytes, complete: bool) -> str:
    if status == "hang":
        return "hang"
    if status == 0 or status == "garbled":
        return "other" if complete else "clean"
    if status >= 500:
        return "5xx"
    return "ok(rc0)" if status < 400 else "clean"


def _concurrent(url: str, ok: dict, tally) -> None:
    """More streams than slots, half of them dropped after their first bytes; then every slot is free."""
    body = {**ok, "max_tokens": 30, "stream": True}
    results = []

    def one(i: int) -> None:
        results.append(raw(url, req("/v1/chat/completions", body), read_all=i % 2 == 0))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for status, got in results:
        tally.add("HTTP semantics", _kind(status, got, True), "8 concurrent streams, half dropped (max_batch 2)",
                  f"status {status}")
    import time

    for _ in range(50):  # the dropped streams free their slots once the server notices
        status, got = raw(url, req("/health", None, "GET"))
        health = json.loads(got.partition(b"\r\n\r\n")[2] or b"{}")
        if health.get("active") == 0 and health.get("free_slots") == health.get("slots"):
            break
        time.sleep(0.2)
    tally.add("HTTP semantics", "ok(rc0)" if health.get("active") == 0 and health.get("waiting") == 0 else "other",
              "GET /health after the streams", f"{health}")
