"""Bounds on what one client can make the server hold: body size, and time to send a request.

- `BodyLimit` (ASGI middleware, outermost in the app) reads each request's body whole before
  any route sees it. A `Content-Length` above the limit is answered 413 at once, without
  reading the body; a body without one (chunked) is counted as it arrives and cut off with 413
  the moment it passes the limit; the rest is read and thrown away (bounded by the timeout
  below), so the client can read the 413 rather than a connection reset. A body that is not
  complete within `timeout` seconds of the headers (a stalled or slow-drip client) gets 408
  and the connection closes. Only a complete body within the limit is ever parsed.
- `H11Protocol` (uvicorn's h11 protocol, extended) covers the part before the app runs. uvicorn
  0.55 has no header timeout: its `timeout_keep_alive` is armed only after a response, and any
  byte received cancels it, so a client that connects and sends half a request line holds its
  connection forever. Here a connection that has not sent complete request headers within
  `timeout` seconds (of connecting, or of its previous response) gets 408 and is closed. Such a
  client never reaches the app, so it holds no engine slot; the event loop only waits on it.
  (Open connections are not counted or capped: uvicorn's `limit_concurrency` would do that.)
  Unparseable HTTP (a bad request line, a bad Content-Length, headers over h11's 16 KiB) gets
  uvicorn's 400, but as OpenAI-style JSON instead of plain text, and a lingering close. The
  server therefore always speaks h11 (uvicorn's "auto" would pick httptools if installed).

The defaults (2 MB, 30 s) are documented in docs/serving.md: 2 MB is far more than any prompt
that fits a myllm model's context (a 1,024-token context is a few KB of text), with room for
long multi-turn chats, and 30 s lets a slow link send it.
"""

from __future__ import annotations

import asyncio
import hmac
import json

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol as _UvicornH11

from myllm.serve.protocol import APIError

DEFAULT_MAX_BODY_MB = 2.0
DEFAULT_REQUEST_TIMEOUT = 30.0


def error_bytes(status: int, message: str, code: str) -> bytes:
    return json.dumps(APIError(status, message, code=code).body()).encode()


async def send_error(send, status: int, message: str, code: str, close: bool = True) -> None:
    """An OpenAI-style JSON error. With `close`, the connection closes after it; without, uvicorn
    reads and discards the rest of the body (see `H11Protocol`), so that a client still sending
    it gets to read this answer instead of a connection reset."""
    body = error_bytes(status, message, code)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status,
                "headers": headers + [(b"connection", b"close")] * close})
    await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass


def _mb(n: int) -> str:
    return f"{n / 1e6:g} MB"


class BodyLimit:
    """Check the API key, then read each request body whole, within `max_bytes` and `timeout` seconds, before
    the app sees it: a client without the key gets its 401 before any of its body is read or buffered."""

    def __init__(self, app, max_bytes: int, timeout: float, api_key: str | None = None):
        self.app, self.max_bytes, self.timeout, self.api_key = app, max_bytes, timeout, api_key

    def _authorized(self, scope) -> bool:
        if not self.api_key or not scope["path"].startswith("/v1"):
            return True
        given = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
        return hmac.compare_digest(given, f"Bearer {self.api_key}".encode())

    def _too_large(self, size: str) -> str:
        return (f"the request body is {size}, over this server's limit of {_mb(self.max_bytes)}; send a "
                "smaller request (or start the server with a larger `myllm serve --max-body-mb`)")

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if not self._authorized(scope):
            return await send_error(send, 401, "Incorrect or missing API key: send 'Authorization: Bearer KEY' with "
                                               "the key given to `myllm serve --api-key`", "invalid_api_key",
                                    close=False)
        declared = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:  # h11 checked the format
            return await send_error(send, 413, self._too_large(_mb(int(declared))), "request_too_large", close=False)
        try:
            body = await asyncio.wait_for(self._read(receive), self.timeout)  # (asyncio.timeout is 3.11+)
        except asyncio.TimeoutError:
            return await send_error(send, 408, f"the request body did not arrive within {self.timeout:g} s; send "
                                               "it whole (or start the server with a larger "
                                               "`myllm serve --request-timeout`)", "request_timeout")
        except _TooLarge:
            return await send_error(send, 413, self._too_large(f"over {_mb(self.max_bytes)}"), "request_too_large",
                                    close=False)
        if body is None:  # the client went away before sending all of it: nobody to answer
            return
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: the disconnect a streaming response listens for

        await self.app(scope, replay, send)

    async def _read(self, receive) -> bytes | None:
        chunks, total = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > self.max_bytes:
                raise _TooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


class H11Protocol(_UvicornH11):
    """uvicorn's h11 protocol with a deadline on the client and JSON errors for unparseable HTTP.

    Whenever the server waits on the client with no request of its own under way (from the
    connection's start, and from each response on), the client has `timeout` seconds to finish
    sending what it was sending (the discarded rest of a body answered 413) and to send the next
    request's headers. Then it gets 408 (or, mid-body, just the close)."""

    timeout = DEFAULT_REQUEST_TIMEOUT  # set per server by `protocol_with_timeout`
    _timer = None
    _lingering = False

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._arm()

    def _arm(self) -> None:
        self._disarm()
        self._timer = self.loop.call_later(self.timeout, self._timed_out)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _timed_out(self) -> None:
        self._timer = None
        if self.transport.is_closing() or self.conn.our_state is h11.SEND_RESPONSE:
            return  # a request is with the app: its body has BodyLimit's deadline
        if self.conn.their_state is h11.IDLE:
            # No request has begun, so h11 has nothing to answer; write the response bytes directly.
            body = error_bytes(408, f"the request headers did not arrive within {self.timeout:g} s",
                               "request_timeout")
            self.transport.write(b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                                 b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
        self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            return  # the rest of an unparseable request: read only so that closing does not reset
        super().data_received(data)
        if self.conn.our_state is h11.SEND_RESPONSE:  # complete request headers arrived: the app has it
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.our_state is not h11.SEND_RESPONSE:
            self._arm()

    def connection_lost(self, exc) -> None:
        self._disarm()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        body = error_bytes(400, f"the request is not valid HTTP/1.1 ({msg.rstrip('.')}); check the request "
                                "line, the headers and Content-Length", "invalid_http")
        event = h11.Response(status_code=400, reason=b"Bad Request",
                             headers=[(b"content-type", b"application/json"), (b"connection", b"close")])
        self.transport.write(self.conn.send(event))
        self.transport.write(self.conn.send(h11.Data(data=body)))
        self.transport.write(self.conn.send(h11.EndOfMessage()))
        # Closing now, with the client's bytes unread, would send a TCP reset that can destroy this
        # answer before the client reads it. Instead: end our side (FIN after the answer), discard
        # what still comes, and close when the client does or at the deadline (nginx's "lingering close").
        self.transport.write_eof()
        self._lingering = True
        self.flow.resume_reading()
        self._arm()


def protocol_with_timeout(seconds: float) -> type[H11Protocol]:
    """The protocol class for one server (uvicorn instantiates it per connection)."""
    return type("H11Protocol", (H11Protocol,), {"timeout": seconds})
