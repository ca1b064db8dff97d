"""Chapter "News from Oakridge": a gathering, and one event each of the people who came."""

from __future__ import annotations

from myllm.universe.words import GATHERINGS
from myllm.universe.writer import Writer


def write(w: Writer) -> None:
    """Town news: a gathering, then one event each of people named in full (often with a fact)."""
    town = w.word(w.towns, "\n\nOn ")
    w.date()
    w.emit("there was a ")
    w.word(GATHERINGS, f" in {town}. More than ")
    w.number(10, 99, suffix=" people came.")
    while True:
        j = w.person(" {F}")
        w.who(j, ", ", none=0.5)
        w.event(j)
        if w.ch.choose((" There,", "\n\n"), (2.0, 1.0)) == 1:
            return
