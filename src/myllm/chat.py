"""The chat format: one template, defined here, used by training, generation, export and the server.

A conversation is a list of OpenAI-style messages, `{"role": "system"|"user"|"assistant",
"content": "..."}`. It renders to tokens as

    <|bos|> <|system|>You are ...<|end|> <|user|>Where does ...?<|end|> <|assistant|>... lives in ...<|end|>

(no spaces between the pieces; the content is encoded as plain text, so a message that
contains the string "<|assistant|>" cannot forge a control token). To ask for a reply, the
prompt ends with `<|assistant|>` and generation stops at `<|end|>`.

Training learns from the assistant's tokens only: `render` returns, with the ids, a mask that
is true on every assistant turn's content and on its closing `<|end|>` (so the model learns
when to stop), and false on everything else, including the `<|assistant|>` header, which the
prompt supplies. `check_mask` re-derives that mask from the ids alone and refuses a batch whose
mask disagrees with the template.

`CHAT_TEMPLATE` is the same format in Jinja, the language Hugging Face tokenizers store their
template in; it is saved to `tokenizer/tokenizer_config.json` so that `transformers`,
llama.cpp and OpenAI-style servers render exactly what training saw (a test checks that the
two agree, token for token).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from myllm.errors import MyLLMError
from myllm.io import atomic_write_text
from myllm.tokenizer import Tokenizer

ROLES = ("system", "user", "assistant")

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>' + message['content'] + '<|end|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)


@dataclass
class Rendered:
    ids: list[int]
    mask: list[bool]  # True on tokens the model is trained to produce (assistant content + <|end|>)


def render(tok: Tokenizer, messages: list[dict[str, str]], add_generation_prompt: bool = False) -> Rendered:
    """Token ids of a conversation and its assistant mask (see the module docstring)."""
    end = tok.token_id("<|end|>")
    ids, mask = [tok.bos_id], [False]
    for m in messages:
        role = m["role"]
        body = tok.encode(m["content"]) + [end]
        ids += [tok.token_id(f"<|{role}|>")] + body
        mask += [False] + [role == "assistant"] * len(body)
    if add_generation_prompt:
        ids.append(tok.token_id("<|assistant|>"))
        mask.append(False)
    return Rendered(ids, mask)


def prompt_ids(tok: Tokenizer, messages: list[dict[str, str]]) -> list[int]:
    """The ids that ask the model for the next assistant turn."""
    return render(tok, messages, add_generation_prompt=True).ids


def stop_ids(tok: Tokenizer) -> tuple[int, ...]:
    """Generation of a reply ends at <|end|> (or, from a confused model, at any other turn marker)."""
    return tuple(tok.token_id(t) for t in ("<|end|>", "<|bos|>", "<|eos|>", "<|user|>", "<|system|>"))


def check_mask(tok: Tokenizer, ids: list[int], mask: list[bool]) -> None:
    """Raise unless `mask` is exactly the template's assistant mask for `ids`.

    The mask must be true from the token after each `<|assistant|>` through its `<|end|>`, and
    false everywhere else. A mask built by other code (a user's pre-tokenized data, a bug in a
    collator) that trains on a prompt, or skips a reply, is caught here before it trains.
    """
    if len(ids) != len(mask):
        raise MyLLMError(f"assistant mask has {len(mask)} entries for {len(ids)} tokens")
    header = {tok.token_id(f"<|{r}|>"): r for r in ROLES}
    end = tok.token_id("<|end|>")
    inside = False
    for i, (t, m) in enumerate(zip(ids, mask)):
        want = inside
        if t in header:
            want, inside = False, header[t] == "assistant"
        elif t == end:
            inside = False
        if m != want:
            raise MyLLMError(
                f"the assistant mask disagrees with the chat template at token {i} ({tok.decode([t])!r}): "
                f"mask {m}, template {want}; build masks with myllm.chat.render"
            )


def save_template(tok_dir: Path) -> None:
    """`tokenizer_config.json` beside `tokenizer.json`: the chat template and special tokens, for HF loaders."""
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<|bos|>", "eos_token": "<|end|>", "pad_token": "<|pad|>",
        "chat_template": CHAT_TEMPLATE,
        "add_bos_token": False, "clean_up_tokenization_spaces": False, "model_max_length": 1 << 30,
    }
    atomic_write_text(Path(tok_dir) / "tokenizer_config.json", json.dumps(config, indent=2) + "\n")


# --- Reading chat data --------------------------------------------------------------------
def read_jsonl(path: Path, expected: str = "one JSON object per line") -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, record) for each non-blank line. A missing file or a folder, bytes that are not
    UTF-8, a line that is not JSON or not an object: one error naming file:line and `expected`."""
    path = Path(path)
    if path.is_dir():
        raise MyLLMError(f"data file {path} is a folder; pass a JSONL file ({expected})")
    if not path.is_file():
        raise MyLLMError(f"data file {path} not found; pass a JSONL file ({expected})")
    try:
        f = open(path, "rb")  # bytes, decoded line by line, so a bad byte is reported with its line
    except OSError as e:
        raise MyLLMError(f"cannot read data file {path}: {e.strerror}") from None
    with f:
        for n, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8-sig" if n == 1 else "utf-8")  # a BOM at the start is fine
            except UnicodeDecodeError:
                raise MyLLMError(f"{path}:{n}: not UTF-8 text; save the file as UTF-8 ({expected})") from None
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except (ValueError, RecursionError) as e:  # ValueError: JSONDecodeError, or a 5000-digit number
                reason = e.msg if isinstance(e, json.JSONDecodeError) else "nested too deep or too large"
                raise MyLLMError(f"{path}:{n}: not valid JSON ({reason}); expected {expected}") from None
            if not isinstance(record, dict):
                raise MyLLMError(f"{path}:{n}: expected a JSON object ({expected}), got {type(record).__name__}")
            yield n, record


def check_messages(messages: Any, where: str) -> list[dict[str, str]]:
    """Validate one `messages` list; returns it with only role/content kept."""
    if not isinstance(messages, list) or not messages:
        raise MyLLMError(f"{where}: \"messages\" must be a non-empty list of {{role, content}} objects")
    out = []
    for k, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise MyLLMError(
                f"{where}: message {k} must be {{\"role\": one of {'/'.join(ROLES)}, \"content\": a string}}, "
                f"got {json.dumps(m)[:80]}"
            )
        out.append({"role": m["role"], "content": m["content"]})
    return out


def as_messages(prompt: Any, where: str) -> list[dict[str, str]]:
    """A prompt given as a string (one user turn) or as a messages list."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return check_messages(prompt, where)
