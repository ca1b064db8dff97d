"""The OpenAI-compatible HTTP API (FastAPI) over the continuous-batching engine.

One `BatchEngine` thread owns the model; every request submits its sequences to it and reads
their tokens back through an asyncio queue, so concurrent requests decode together in one
batch instead of waiting for each other. Text is cut at stop strings by `TextStream`, the same
code the library uses. If a streaming client goes away, the response generator is closed, its
sequences are cancelled and their KV-cache slots are freed at the engine's next step.

Routes: `/v1/models`, `/v1/completions`, `/v1/chat/completions` (JSON or SSE chunks ending in
`data: [DONE]`), `/health`, and the chat page at `/`.

Bounded work: `limits.BodyLimit` caps each body's size and the time to send it before any route
runs; the CPU-heavy part of a request (JSON decoding, validation, the chat template and
tokenization) runs in a worker thread, so a large request never stalls the event loop (and
/health, and every other client's stream) while it is prepared. Every error, whatever the
input, is OpenAI-style JSON with a 4xx status; only a bug in the server gives a (JSON) 500.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from html import escape
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from myllm.chat import prompt_ids, stop_ids
from myllm.errors import brief
from myllm.infer.batch import BatchEngine
from myllm.infer.engine import SAMPLING_EPS, SamplingParams
from myllm.infer.text import TextStream
from myllm.model import Transformer
from myllm.serve.limits import DEFAULT_MAX_BODY_MB, DEFAULT_REQUEST_TIMEOUT, BodyLimit
from myllm.serve.protocol import APIError, ChatRequest, Common, CompletionRequest, parse
from myllm.tokenizer import Tokenizer

COMPLETIONS_DEFAULT_MAX_TOKENS = 16  # OpenAI's default for /v1/completions; chat defaults to the room left


class Service:
    """What the routes share: the engine, the tokenizer and the served model's name."""

    def __init__(self, model: Transformer, tok: Tokenizer, model_id: str, max_batch: int = 32):
        self.tok, self.model_id, self.context = tok, model_id, model.cfg.context
        self.engine = BatchEngine(model, max_batch=max_batch)
        self.created = int(time.time())
        # No token covers more bytes than the longest vocabulary entry (UTF-8 of a byte-level
        # token's characters over-counts its bytes, which only makes the bound below looser).
        self.max_token_bytes = max(len(t.encode("utf-8")) for t in tok.hf.get_vocab())

    def model_card(self) -> dict:
        """The served model's entry in /v1/models."""
        return {"id": self.model_id, "object": "model", "created": self.created, "owned_by": "myllm",
                "context_length": self.context}

    def check_model(self, name: str) -> None:
        if name != self.model_id:
            raise APIError(404, f"The model '{name}' does not exist; this server serves '{self.model_id}' "
                                "(see /v1/models)", "model", "model_not_found")

    def check_text_length(self, texts: list[str], param: str) -> None:
        """Refuse, before tokenizing, text that cannot fit the context whatever its tokens
        (measured: tokenizing a 10 MB prompt took 0.78 s of CPU, only for it to be refused)."""
        size = sum(len(t.encode("utf-8", "surrogatepass")) for t in texts)
        at_least = -(-size // self.max_token_bytes)
        if at_least > self.context:
            raise APIError(400, f"This model's maximum context length is {self.context} tokens, but the prompt has "
                                f"at least {at_least} tokens ({size} bytes of text); shorten it", param,
                           "context_length_exceeded")

    def encode(self, text: str) -> list[int]:
        try:
            return self.tok.encode(text)
        except UnicodeEncodeError:  # a lone surrogate ("\ud800" in the JSON) that the tokenizer refuses
            raise APIError(400, "the text contains a lone UTF-16 surrogate, which is not a character; "
                                "send valid Unicode") from None

    def sampling(self, req: Common, prompt_len: int, stops: tuple[int, ...], default_max: int,
                 prompt_param: str) -> list[SamplingParams]:
        """Per-choice sampling parameters, after checking lengths against the context."""
        req.unsupported()
        room = self.context - prompt_len
        if room <= 0:
            raise APIError(400, f"This model's maximum context length is {self.context} tokens, but the prompt has "
                                f"{prompt_len} tokens; shorten it", prompt_param, "context_length_exceeded")
        max_tokens = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
        if max_tokens is not None and max_tokens <= 0:
            raise APIError(400, f"'max_tokens' must be at least 1, got {max_tokens}", "max_tokens")
        if max_tokens is not None and max_tokens > room:
            raise APIError(400, f"This model's maximum context length is {self.context} tokens; you requested "
                                f"{prompt_len + max_tokens} ({prompt_len} in the prompt, {max_tokens} in the "
                                f"completion); lower max_tokens to at most {room}", "max_tokens",
                           "context_length_exceeded")
        temperature = 1.0 if req.temperature is None else req.temperature
        top_p = 1.0 if req.top_p is None else req.top_p
        if temperature < SAMPLING_EPS or top_p < SAMPLING_EPS:
            temperature = 0.0  # both limits are greedy; and 5e-324 made the sampler divide by zero (a 500)
        base = dict(max_new_tokens=max_tokens if max_tokens is not None else min(default_max, room),
                    temperature=temperature, top_p=top_p, top_k=req.top_k or 0, stop_ids=stops,
                    frequency_penalty=req.frequency_penalty or 0.0, presence_penalty=req.presence_penalty or 0.0,
                    repetition_penalty=req.repetition_penalty or 1.0, stop=req.stops())
        # n choices of one seeded request differ from each other yet reproduce as a whole.
        return [SamplingParams(**base, seed=None if req.seed is None else req.seed + i) for i in range(req.n or 1)]

    async def run(self, prompt: list[int], plist: list[SamplingParams],
                  counts: list[int]) -> AsyncIterator[tuple[int, str, str | None]]:
        """(choice, text piece, finish reason or None) as tokens arrive; `counts` gets tokens per choice."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[int, int | None]] = asyncio.Queue()
        # Special tokens (<|assistant|> from a confused model) are not text: skipped, as vLLM does.
        streams = [TextStream(self.tok, p.stop, skip_special=True) for p in plist]
        seqs = []
        try:
            for i, p in enumerate(plist):
                seqs.append(self.engine.submit(prompt, p, lambda s, t, i=i: loop.call_soon_threadsafe(
                    queue.put_nowait, (i, t))))
            open_ = set(range(len(plist)))
            while open_:
                # Take everything queued: when the engine is ahead of this connection, its tokens go
                # out as one chunk per choice instead of one event per token.
                items = [await queue.get()]
                while not queue.empty():
                    items.append(queue.get_nowait())
                ready: dict[int, list] = {}  # choice -> [text, finish reason]
                for i, t in items:
                    if i not in open_:
                        continue
                    ts, acc = streams[i], ready.setdefault(i, ["", None])
                    if t is None:
                        open_.discard(i)
                        if seqs[i].finish_reason == "error":
                            raise APIError(500, f"generation failed: {seqs[i].error}", type="server_error")
                        acc[0] += ts.flush()
                        acc[1] = "length" if seqs[i].finish_reason == "length" else "stop"
                    else:
                        acc[0] += ts.push(t)
                        if ts.stopped:  # a stop string: this choice is complete, free its slot now
                            open_.discard(i)
                            self.engine.cancel(seqs[i])
                            acc[1] = "stop"
                    counts[i] = len(ts.ids)
                for i, (piece, reason) in ready.items():
                    if piece or reason:
                        yield i, piece, reason
        finally:  # also on client disconnect (the generator is closed): no slot outlives its request
            for s in seqs:
                if not s.done:
                    self.engine.cancel(s)


def _sse(obj: Any) -> str:
    return f"data: {json.dumps(obj)}\n\n"


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (JSON numbers are finite)")


MAX_JSON_DEPTH = 64  # OpenAI requests nest a few levels (tool schemas a dozen or so); deeper is refused


def json_depth(value: Any) -> int:
    """How deeply lists and objects nest in `value` (iterative: any depth is measured, none recursed)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def decode_json(raw: bytes) -> Any:
    """The decoded body, or a 400 for anything that is not standard JSON or nests past MAX_JSON_DEPTH (run it
    off the event loop). The depth is checked on its own: how deep json.loads gets before a RecursionError
    depends on the interpreter's recursion limit, which libraries (torch.compile) raise."""
    try:
        body = json.loads(raw, parse_constant=_no_constant)
        if json_depth(body) > MAX_JSON_DEPTH:
            raise RecursionError
        return body
    except RecursionError:
        raise APIError(400, "the JSON body is nested too deeply to parse; send a flat request object") from None
    except ValueError as e:  # invalid JSON or UTF-8, NaN/Infinity, an integer of over 4,300 digits
        raise APIError(400, f"could not parse the JSON body of the request ({brief(e)}); send valid JSON") \
            from None


async def _raw_body(request: Request) -> bytes:
    """The body (already read whole by BodyLimit), if its Content-Type says JSON or says nothing.

    Refusing other types keeps a page on another site from posting a form (text/plain or
    form-encoded: no CORS preflight) to this server; curl users send
    `-H 'Content-Type: application/json'`. (A body with no type at all is still read: FastAPI's
    rule, and what raw clients send; `--api-key` is the guard against other pages.)"""
    given = request.headers.get("content-type")
    media = (given or "").split(";")[0].strip().lower()
    if given is not None and media != "application/json" and not media.endswith("+json"):
        raise APIError(415, f"the request body must be JSON (Content-Type: application/json), got Content-Type "
                            f"'{given[:80]}'", code="unsupported_media_type")
    return await request.body()


def create_app(model: Transformer, tok: Tokenizer, model_id: str, api_key: str | None = None,
               max_batch: int = 32, max_body_mb: float = DEFAULT_MAX_BODY_MB,
               request_timeout: float = DEFAULT_REQUEST_TIMEOUT) -> FastAPI:
    """The app: the routes below over one `Service` (in `app.state.service`), errors in OpenAI's
    shape, bodies bounded by `max_body_mb` and `request_timeout` seconds, and with `api_key` a
    bearer-key check on every /v1 route."""
    svc = Service(model, tok, model_id, max_batch)
    app = FastAPI(title="MyLLM", lifespan=_lifespan, docs_url=None, redoc_url=None)
    app.router.redirect_slashes = False  # "/v1/models/" is a 404, not a 307 to follow
    app.state.service = svc
    app.add_exception_handler(APIError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _server_error)

    app.add_api_route("/health", health, methods=["GET"])
    app.add_api_route("/", page, methods=["GET"], response_class=HTMLResponse)
    app.add_api_route("/v1/models", models, methods=["GET"])
    app.add_api_route("/v1/models/{name}", one_model, methods=["GET"])
    app.add_api_route("/v1/chat/completions", chat_completions, methods=["POST"])
    app.add_api_route("/v1/completions", completions, methods=["POST"])
    app.add_middleware(BodyLimit, max_bytes=int(max_body_mb * 1e6), timeout=request_timeout,
                       api_key=api_key)  # outermost: the key, then the body, before any route
    return app


@asynccontextmanager
async def _lifespan(app: FastAPI):
    """The engine's thread runs while the app does."""
    app.state.service.engine.start()
    yield
    app.state.service.engine.stop()


async def _api_error(request: Request, e: APIError) -> JSONResponse:
    return JSONResponse(e.body(), status_code=e.status)


async def _http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
    return JSONResponse(APIError(e.status_code, f"{request.method} {request.url.path}: {e.detail}").body(),
                        status_code=e.status_code)


async def _validation_error(request: Request, e: RequestValidationError) -> JSONResponse:
    err = (e.errors() or [{}])[0]
    param = ".".join(str(p) for p in err.get("loc", ())[1:]) or None
    return JSONResponse(APIError(400, f"'{param}': {err.get('msg')}" if param else str(err.get("msg")),
                                 param).body(), status_code=400)


async def _server_error(request: Request, e: Exception) -> JSONResponse:
    """A bug, not the client's fault: still JSON, so OpenAI clients report it as an APIError."""
    return JSONResponse(APIError(500, f"internal server error ({type(e).__name__}); see the server's log",
                                 type="server_error").body(), status_code=500)


# The route handlers, registered by create_app; each reads its app's Service from app.state.


async def health(request: Request) -> dict:
    svc: Service = request.app.state.service
    return {"status": "ok", "model": svc.model_id, **svc.engine.load()}


async def page(request: Request) -> HTMLResponse:
    html = resources.files("myllm.serve").joinpath("page.html").read_text(encoding="utf-8")
    return HTMLResponse(html.replace("{{MODEL}}", escape(request.app.state.service.model_id)))


async def models(request: Request) -> dict:
    return {"object": "list", "data": [request.app.state.service.model_card()]}


async def one_model(name: str, request: Request) -> dict:
    svc: Service = request.app.state.service
    svc.check_model(name)
    return svc.model_card()


def _prepare_chat(svc: Service, raw: bytes) -> tuple[ChatRequest, list[int], list[SamplingParams]]:
    req: ChatRequest = parse(ChatRequest, decode_json(raw))
    svc.check_model(req.model)
    messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()}
                for m in req.messages]
    svc.check_text_length([m["content"] for m in messages], "messages")
    try:
        prompt = prompt_ids(svc.tok, messages)
    except UnicodeEncodeError:
        raise APIError(400, "a message contains a lone UTF-16 surrogate, which is not a character; send valid "
                            "Unicode", "messages") from None
    return req, prompt, svc.sampling(req, len(prompt), stop_ids(svc.tok), svc.context, "messages")


def _prepare_completion(svc: Service, raw: bytes) -> tuple[CompletionRequest, list[int], list[SamplingParams]]:
    tok = svc.tok
    req: CompletionRequest = parse(CompletionRequest, decode_json(raw))
    svc.check_model(req.model)
    text = req.prompt_text()
    svc.check_text_length([text], "prompt")
    prompt = [tok.bos_id] + svc.encode(text)
    return req, prompt, svc.sampling(req, len(prompt), (tok.bos_id, tok.eos_id), COMPLETIONS_DEFAULT_MAX_TOKENS,
                                     "prompt")


async def chat_completions(request: Request) -> Response:
    svc: Service = request.app.state.service
    req, prompt, plist = await asyncio.to_thread(_prepare_chat, svc, await _raw_body(request))
    return await _respond(svc, req, prompt, plist, chat=True)


async def completions(request: Request) -> Response:
    svc: Service = request.app.state.service
    req, prompt, plist = await asyncio.to_thread(_prepare_completion, svc, await _raw_body(request))
    return await _respond(svc, req, prompt, plist, chat=False)


async def _respond(svc: Service, req: Common, prompt: list[int], plist: list[SamplingParams], chat: bool) -> Response:
    """The completion as one JSON object, or with `stream` as SSE chunks ending in `data: [DONE]`."""
    rid = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}"
    head = {"id": rid, "created": int(time.time()), "model": svc.model_id}
    counts = [0] * len(plist)

    def usage() -> dict:
        return {"prompt_tokens": len(prompt), "completion_tokens": sum(counts),
                "total_tokens": len(prompt) + sum(counts)}

    if not req.stream:
        texts, reasons = [""] * len(plist), [None] * len(plist)
        async for i, piece, reason in svc.run(prompt, plist, counts):
            texts[i] += piece
            reasons[i] = reason or reasons[i]
        if chat:
            choices = [{"index": i, "message": {"role": "assistant", "content": t}, "logprobs": None,
                        "finish_reason": r} for i, (t, r) in enumerate(zip(texts, reasons))]
        else:
            choices = [{"index": i, "text": t, "logprobs": None, "finish_reason": r}
                       for i, (t, r) in enumerate(zip(texts, reasons))]
        obj = "chat.completion" if chat else "text_completion"
        return JSONResponse({**head, "object": obj, "choices": choices, "usage": usage()})

    obj = "chat.completion.chunk" if chat else "text_completion"

    def chunk(i: int, piece: str | None, reason: str | None, role: bool = False) -> dict:
        if chat:
            delta = {"role": "assistant", "content": ""} if role else ({"content": piece} if piece else {})
            choice = {"index": i, "delta": delta, "logprobs": None, "finish_reason": reason}
        else:
            choice = {"index": i, "text": piece or "", "logprobs": None, "finish_reason": reason}
        return {**head, "object": obj, "choices": [choice]}

    async def events() -> AsyncIterator[str]:
        if chat:
            for i in range(len(plist)):
                yield _sse(chunk(i, None, None, role=True))
        try:
            async for i, piece, reason in svc.run(prompt, plist, counts):
                if piece:
                    yield _sse(chunk(i, piece, None))
                if reason:
                    yield _sse(chunk(i, None, reason))
        except APIError as e:
            yield _sse(e.body())
            return
        if req.stream_options is not None and req.stream_options.include_usage:
            yield _sse({**head, "object": obj, "choices": [], "usage": usage()})
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
