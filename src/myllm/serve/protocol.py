"""The OpenAI request shapes the server accepts, and its OpenAI-shaped errors.

Requests are validated strictly (pydantic strict mode: "0.5" is not a number, true is not an
integer), unknown fields are ignored as OpenAI clients send many, and every failure becomes
one `APIError`, which the app renders as OpenAI does:
`{"error": {"message", "type", "param", "code"}}` with a 4xx status.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

MAX_N = 16  # choices per request; each takes a KV-cache slot
MAX_STOP = 4
_TYPE_TAGS = {"str", "int", "float", "bool", "list", "dict"}  # stop strings per request (OpenAI's limit)


class APIError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 type: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class TextPart(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    type: Literal["text"]
    text: str


class Message(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    role: Literal["system", "user", "assistant", "developer"]
    content: str | list[TextPart]

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class StreamOptions(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    include_usage: bool = False


class Common(BaseModel):
    """Fields both endpoints share. None means "the default"."""

    model_config = ConfigDict(strict=True, extra="ignore")
    model: str
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=0)
    n: int | None = Field(None, ge=1, le=MAX_N)
    seed: int | None = Field(None, ge=-(2**63), le=2**63 - 1 - MAX_N)  # int64, as OpenAI; choice i uses seed + i
    stop: str | list[str] | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    # Positive logits are divided by it: below 0.01 they can overflow float32 (1e-300 was a 500).
    repetition_penalty: float | None = Field(None, ge=0.01, le=10)
    user: str | None = None
    # Accepted so that clients which send them get a clear 400 rather than silently nothing:
    logprobs: bool | int | None = None
    echo: bool | None = None
    best_of: int | None = None
    suffix: str | None = None

    def unsupported(self) -> None:
        """Refuse options this server would otherwise ignore (their absence would be a silent lie)."""
        for name in ("logprobs", "echo", "suffix"):
            if getattr(self, name):
                raise APIError(400, f"'{name}' is not supported by this server; leave it out", name)
        if self.best_of is not None and self.best_of > 1:
            raise APIError(400, "'best_of' > 1 is not supported by this server; use 'n'", "best_of")

    def stops(self) -> tuple[str, ...]:
        stops = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())
        if len(stops) > MAX_STOP:
            raise APIError(400, f"'stop' takes at most {MAX_STOP} strings, got {len(stops)}", "stop")
        return tuple(s for s in stops if s)


class ChatRequest(Common):
    messages: list[Message] = Field(min_length=1)


class CompletionRequest(Common):
    prompt: str | list[str]

    def prompt_text(self) -> str:
        if isinstance(self.prompt, str):
            return self.prompt
        if len(self.prompt) != 1:
            raise APIError(400, "'prompt' must be one string (a list of several prompts is not supported; "
                                "send one request per prompt)", "prompt")
        return self.prompt[0]


def parse(cls: type[BaseModel], body: Any) -> Any:
    """Validate a decoded JSON body; the first problem becomes a 400 naming its field."""
    if not isinstance(body, dict):
        raise APIError(400, f"the request body must be a JSON object, got {type(body).__name__}")
    try:
        return cls.model_validate(body)
    except ValidationError as e:
        err = e.errors()[0]
        # Drop union-member tags ("str", "list[TextPart]") from the location: OpenAI names fields only.
        parts = [str(p) for p in err["loc"] if isinstance(p, int) or (p.isidentifier() and p not in _TYPE_TAGS)]
        param = ".".join(parts) or None
        raise APIError(400, f"'{param}': {err['msg']}" if param else err["msg"], param) from None
