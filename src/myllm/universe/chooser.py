"""Exact probability bookkeeping: every random choice of a book, and what it costs in bits.

Why the floor is exact, not an estimate. All randomness in a book goes through a `Chooser`:
`choose(options, probs)` writes the chosen option into the text and adds -log2 p to the
book's bits; `emit(text)` writes text that follows from what came before. The writer is a
deterministic function of the sequence of choices, and at every choice the option strings are
pairwise prefix-free (checked at run time). Two different choice sequences therefore give
different texts: they agree up to the first differing choice, where each text continues with a
different option and neither option is a prefix of the other. So P(text) = P(choices), and
`bits` is exactly -log2 P(text). `books.recover_choices` proves it on any text: it replays the
writer in "parse mode", where each choice must be matched by exactly one option, and the whole
text must be consumed.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence


class ParseError(ValueError):
    """A text that the book writer could not have produced (raised by `recover_choices`)."""


_PREFIX_FREE: set[tuple[str, ...]] = set()  # option tuples already checked


def check_prefix_free(options: tuple[str, ...]) -> None:
    """Raise ValueError unless no option is a prefix of another (duplicates and "" included).

    After sorting, a string that is a prefix of another is also a prefix of its successor, so
    checking neighbours is enough.
    """
    s = sorted(options)
    for a, b in zip(s, s[1:]):
        if b.startswith(a):
            raise ValueError(f"choice options are not prefix-free: {a!r} is a prefix of {b!r}")


class Chooser:
    """Every random choice of one book, its probability, and the text it writes.

    Generate mode (`rng=`): `choose` samples an option. Parse mode (`text=`): `choose` finds the
    one option that the text continues with. Both record the choice index and add -log2 p.
    """

    def __init__(self, rng: random.Random | None = None, text: str | None = None) -> None:
        if (rng is None) == (text is None):
            raise ValueError("give exactly one of rng (generate) or text (parse)")
        self._rng, self._text, self._pos, self._out = rng, text, 0, []
        self.choices: list[int] = []
        self.bits = 0.0

    def emit(self, text: str) -> None:
        """Write text that is a deterministic function of earlier choices (costs 0 bits)."""
        if self._text is None:
            self._out.append(text)
        elif self._text.startswith(text, self._pos):
            self._pos += len(text)
        else:
            raise ParseError(f"at char {self._pos}: expected {text!r}, found {self._text[self._pos:][:60]!r}")

    def choose(self, options: Sequence[str], probs: Sequence[float] | None = None) -> int:
        """Pick one of `options` (weights `probs`, uniform if None), write it, return its index."""
        options = options if type(options) is tuple else tuple(options)
        if options not in _PREFIX_FREE:
            if not options:
                raise ValueError("choose() needs at least one option")
            check_prefix_free(options)
            if len(_PREFIX_FREE) > 1_000_000:  # many worlds in one process (tests): stay bounded
                _PREFIX_FREE.clear()
            _PREFIX_FREE.add(options)
        k = len(options)
        if probs is not None and (len(probs) != k or min(probs) <= 0):
            raise ValueError(f"probs must be {k} positive weights, got {probs!r}")
        if self._text is None:
            if probs is None:
                i = self._rng.randrange(k)
            else:
                r, i = self._rng.random() * sum(probs), 0
                while i < k - 1 and r >= probs[i]:
                    r -= probs[i]
                    i += 1
            self._out.append(options[i])
        else:
            hits = [j for j, o in enumerate(options) if self._text.startswith(o, self._pos)]
            if len(hits) != 1:
                found = self._text[self._pos:][:60]
                raise ParseError(f"at char {self._pos}: {len(hits)} of {k} options match {found!r}")
            i = hits[0]
            self._pos += len(options[i])
        self.bits += math.log2(k) if probs is None else -math.log2(probs[i] / sum(probs))
        self.choices.append(i)
        return i

    @property
    def text(self) -> str:
        return "".join(self._out) if self._text is None else self._text[: self._pos]

    def finish(self) -> None:
        """In parse mode, insist that the whole text was explained."""
        if self._text is not None and self._pos != len(self._text):
            raise ParseError(f"text continues after the book ended at char {self._pos}: "
                             f"{self._text[self._pos:][:60]!r}")
