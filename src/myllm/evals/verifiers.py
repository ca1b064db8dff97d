"""Verifiers: functions `(response, answer) -> reward in [0, 1]` that score a reply without a judge.

GRPO trains on their rewards and evaluation counts their hits, so both use the same code.
A record names its verifier (`"verifier": "number"`); `register` adds a new one.

- `number`: the last number in the reply equals the answer ("... 7 - 2 = 5. Mira has 5 plums." -> 5).
- `exact`: the reply, stripped and without a final period, equals the answer (case-insensitive).
- `contains`: the answer appears in the reply as whole words.
- `format`: the reply is one plain sentence (the concise style); the answer is ignored.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from myllm.errors import MyLLMError

Verifier = Callable[[str, str], float]
VERIFIERS: dict[str, Verifier] = {}
NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def register(name: str) -> Callable[[Verifier], Verifier]:
    def add(fn: Verifier) -> Verifier:
        VERIFIERS[name] = fn
        return fn
    return add


@register("number")
def final_number(response: str, answer: str) -> float:
    found = NUMBER.findall(response.replace(",", ""))
    return float(bool(found) and float(found[-1]) == float(answer))


@register("exact")
def exact(response: str, answer: str) -> float:
    def norm(s: str) -> str:
        return s.strip().rstrip(".").strip().lower()
    return float(norm(response) == norm(answer))


@register("contains")
def contains(response: str, answer: str) -> float:
    return float(re.search(rf"(?<!\w){re.escape(answer)}(?!\w)", response) is not None)


@register("format")
def one_sentence(response: str, answer: str = "") -> float:
    """One sentence: text with no sentence end inside, ending in '.', '!' or '?'."""
    return float(re.fullmatch(r"[^.!?\n]+[.!?]", response.strip()) is not None)


def get_verifier(name: str) -> Verifier:
    if name not in VERIFIERS:
        raise MyLLMError(f"unknown verifier {name!r}; choose from {', '.join(sorted(VERIFIERS))} "
                         "or add one with myllm.evals.verifiers.register")
    return VERIFIERS[name]
