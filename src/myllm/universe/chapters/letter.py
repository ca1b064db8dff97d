"""Chapter "A Letter from Mira Fenwick": four facts in the first person, then what the writer did."""

from __future__ import annotations

from myllm.universe.phrases import ATTRIBUTES, SAY
from myllm.universe.words import LETTER_WHEN, SIGNOFFS, THEN_I
from myllm.universe.writer import Writer


def write(w: Writer) -> None:
    """A letter in the first person: four facts as "I live in ...", then "I bought ..."."""
    i = w.person()
    w.emit("Dear ")
    w.person("{f},\n", exclude=(i,))
    left: tuple[str, ...] = ATTRIBUTES
    lead = ""
    for _ in range(4):
        a = w.pick(("say", i, left, lead), lambda i, left, lead: [
            (a, lead + s.format(**w.ctx[i]) + ".", 1.0 / len(left) / len(SAY[a])) for a in left for s in SAY[a]])
        left, lead = tuple(x for x in left if x != a), " "
    w.word(LETTER_WHEN, " I ")
    w.events(i, THEN_I, end="\n")
    w.word(SIGNOFFS, "\n")
    w.emit(w.ctx[i]["F"] + "\n\n")
