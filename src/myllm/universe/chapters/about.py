"""Chapter "About Mira Fenwick": all six facts of one person, then a day in their life."""

from __future__ import annotations

from functools import partial

from myllm.universe.phrases import ATTRIBUTES, FACTS
from myllm.universe.words import THEN
from myllm.universe.writer import Row, Writer


def write(w: Writer) -> None:
    """An introduction: all six facts, then a day in the person's life."""
    i = w.person()
    _facts(w, i)
    w.emit("\n\nOn ")
    w.date()
    w.emit(w.ctx[i]["f"] + " ")
    w.events(i, THEN)


def _facts(w: Writer, i: int) -> None:
    """All six facts of person i, in random order and random paraphrase.

    Until a sentence has named the person, only name-bearing forms are allowed.
    """
    left: tuple[str, ...] = ATTRIBUTES
    lead = ""
    while left:
        a = w.pick(("facts", i, left, lead), partial(_fact_rows, w))
        left, lead = tuple(x for x in left if x != a), " "


def _fact_rows(w: Writer, i: int, left: tuple[str, ...], lead: str) -> list[Row]:
    c = w.ctx[i]
    rows = []
    for a in left:
        forms = [t for t, form in FACTS[a] if lead or form != "pron"]
        rows += [(a, lead + t.format(**c), 1.0 / (len(left) * len(forms))) for t in forms]
    return rows
