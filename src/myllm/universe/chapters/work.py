"""Chapter "A Day at Work for Mira Fenwick": the trade, what was made, the sum, and a sale."""

from __future__ import annotations

from myllm.universe.phrases import FACTS
from myllm.universe.words import PET_IDLE, TRADES, count
from myllm.universe.writer import Writer


def write(w: Writer) -> None:
    """A working day: the trade, what was made in the morning and afternoon, the sum, a sale."""
    i = w.person()
    c = w.ctx[i]
    w.pick(("trade", i), lambda i: [(t, t.format(**w.ctx[i]), 1.0)
                                    for t, form in FACTS["trade"] if form != "pron"])
    verb, one, many = TRADES[c["trade"]]
    w.emit(f" {c['S']} works hard in {c['town']}. In the morning, {c['f']} {verb} ")
    a = w.number(1, 9, (one, many), ".")
    w.emit(f" In the afternoon, {c['s']} {verb} ")
    b = w.number(1, 9, suffix=" more.")
    w.emit(f" That day, {c['f']} {verb} {count(a + b, (one, many))} in all. {c['S']} sold them to ")
    w.person("{F} for ", exclude=(i,))
    w.coins(".")
    w.emit(f"\n\n{c['pet_name']} the {c['pet']} ")
    w.word(PET_IDLE, ".\n\n")
