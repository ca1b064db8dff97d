"""`myllm chat`: a terminal chat with any stage's model, tokens streamed as they are sampled.

Commands typed at the prompt: `/reset` forgets the conversation (keeps the system prompt),
`/system TEXT` sets the system prompt and resets, `/quit` (or end of input) leaves, `/help`.
When the conversation no longer fits in the context with room for a reply, the oldest turns
are dropped (the system prompt stays).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from typing import TextIO

from myllm.chat import prompt_ids, stop_ids
from myllm.infer.engine import Decoder, SamplingParams, stream
from myllm.infer.text import TextStream
from myllm.model import Transformer
from myllm.tokenizer import Tokenizer

HELP = "commands: /reset (new conversation), /system TEXT (set the system prompt), /quit"


class ChatSession:
    def __init__(self, model: Transformer, tok: Tokenizer, params: SamplingParams, system: str = "",
                 compile: bool = False):
        self.model, self.tok, self.system = model, tok, system
        # One decoder for the whole chat: its cache is reused, and a compiled step compiles once.
        self.decoder = Decoder(model, compile=compile)
        self.params = SamplingParams(**{**params.__dict__, "stop_ids": stop_ids(tok)})
        self.turns: list[dict[str, str]] = []

    def messages(self) -> list[dict[str, str]]:
        return ([{"role": "system", "content": self.system}] if self.system else []) + self.turns

    def reset(self, system: str | None = None) -> None:
        if system is not None:
            self.system = system
        self.turns = []

    def _prompt(self) -> list[int]:
        room = self.model.cfg.context - self.params.max_new_tokens
        ids = prompt_ids(self.tok, self.messages())
        while len(ids) > room and len(self.turns) > 1:
            self.turns = self.turns[2:] if len(self.turns) > 2 else self.turns[-1:]  # drop the oldest exchange
            ids = prompt_ids(self.tok, self.messages())
        return ids[-room:] if room > 0 else ids[-1:]

    def reply(self, user: str) -> Iterator[str]:
        """Stream the assistant's reply to `user` as text pieces; the turn is kept in the history."""
        self.turns.append({"role": "user", "content": user})
        text = TextStream(self.tok, self.params.stop)  # whole characters only; cut at stop strings
        for token in stream(self.model, self._prompt(), self.params, self.decoder):
            if piece := text.push(token):
                yield piece
            if text.stopped:
                break
        if rest := text.flush():
            yield rest
        self.turns.append({"role": "assistant", "content": text.text})


def repl(session: ChatSession, read: Callable[[str], str] = input, out: TextIO = sys.stdout) -> None:
    """Read lines with `read` (raises EOFError at the end), write replies to `out` as they stream."""
    def say(text: str) -> None:
        out.write(text)
        out.flush()

    say(f"chatting with a {session.model.num_params():,}-parameter model; {HELP}\n")
    while True:
        try:
            text = read("you> ").strip()
        except EOFError:
            say("\n")
            return
        if not text:
            continue
        if text in ("/quit", "/exit"):
            return
        if text == "/help":
            say(HELP + "\n")
        elif text == "/reset":
            session.reset()
            say("(conversation reset)\n")
        elif text.startswith("/system"):
            session.reset(text[len("/system"):].strip())
            say(f"(system prompt: {session.system or 'none'}; conversation reset)\n")
        elif text.startswith("/"):
            say(f"unknown command {text.split()[0]}; {HELP}\n")
        else:
            say("bot> ")
            for piece in session.reply(text):
                say(piece)
            say("\n")
