"""From token ids to text pieces as they stream: whole characters only, and stop strings.

Two things make streaming text harder than streaming ids:

- A byte-level BPE token can end in the middle of a multi-byte UTF-8 character; decoding it
  alone gives U+FFFD. A piece is released only once the text decodes without a trailing one.
- A stop string ("\\n\\n", "Q:") can span several tokens, and nothing of it may reach the
  client. So the longest tail of the text that could still grow into a stop string is held
  back until the next token decides it; at the end of generation, `flush` releases it.

`TextStream` does both; the server and `stream_text` use it, so every path cuts stop strings the
same way (the text ends just before the first stop string; the stop string is not returned).
"""

from __future__ import annotations

from collections.abc import Iterator

from myllm.infer.engine import Decoder, SamplingParams, stream
from myllm.model import Transformer
from myllm.tokenizer import Tokenizer


class TextStream:
    def __init__(self, tok: Tokenizer, stop: tuple[str, ...] = (), skip_special: bool = False):
        self.tok, self.stop, self.skip_special = tok, tuple(s for s in stop if s), skip_special
        self.ids: list[int] = []
        self.text = ""  # everything decoded so far (up to the stop string, once one is found)
        self.sent = 0  # characters of `text` already released
        self.stopped = False

    def _held(self, text: str) -> int:
        """Length of the longest suffix of `text` that is a proper prefix of a stop string."""
        best = 0
        for s in self.stop:
            for k in range(min(len(s) - 1, len(text)), best, -1):
                if text.endswith(s[:k]):
                    best = k
                    break
        return best

    def push(self, token: int) -> str:
        """Add one token; return the text that is now safe to send ("" if none). Sets `stopped`."""
        if self.stopped:
            return ""
        self.ids.append(token)
        text = self.tok.decode(self.ids, skip_special=self.skip_special)
        if text.endswith("\ufffd"):
            return ""  # wait for the rest of a multi-byte character
        cut = min((i for i in (text.find(s, max(self.sent - len(s), 0)) for s in self.stop) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped, self.text = True, text[:cut]
        else:
            self.text = text
        safe = len(self.text) if self.stopped else len(self.text) - self._held(self.text)
        piece = self.text[self.sent : safe] if safe > self.sent else ""
        self.sent = max(self.sent, safe)
        return piece

    def flush(self) -> str:
        """At the end of generation: whatever was held back (a partial stop string is just text)."""
        piece = self.text[self.sent :]
        self.sent = len(self.text)
        return piece


def stream_text(model: Transformer, tok: Tokenizer, prompt: list[int], params: SamplingParams,
                decoder: Decoder | None = None) -> Iterator[str]:
    """Text pieces of a completion, ending before the first of `params.stop` (if any)."""
    out = TextStream(tok, params.stop)
    for token in stream(model, prompt, params, decoder):
        piece = out.push(token)
        if piece:
            yield piece
        if out.stopped:
            return
    if rest := out.flush():
        yield rest
