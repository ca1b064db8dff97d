"""Chapter "The Pet of Mira Fenwick": what the pet's species does, and a treat."""

from __future__ import annotations

from myllm.universe.phrases import FACTS
from myllm.universe.words import FOOD, MOODS, SPECIES, WEATHER, WEEKDAYS
from myllm.universe.writer import Writer


def write(w: Writer) -> None:
    """A pet's day: what its species does, and a treat."""
    i = w.person()
    c = w.ctx[i]
    w.pick(("pet", i), lambda i: [(t, t.format(**w.ctx[i]), 1.0)
                                  for t, form in FACTS["pet"] if form != "pron"])
    w.pick(("pet_name", i), lambda i: [(t, " " + t.format(**w.ctx[i]), 1.0) for t, _ in FACTS["pet_name"]])
    w.emit(" One ")
    w.word(WEATHER)
    w.word(WEEKDAYS, ", ")
    w.emit(f"{c['pet_name']} ")
    acts = SPECIES[c["pet"]]
    done = w.word(acts, ".")
    w.emit(f" Then {c['pet_name']} ")
    w.word(acts, ".", exclude=done)
    w.emit(f" {c['f']} gave {c['pet_name']} ")
    w.counted(1, 9, FOOD, ".")
    w.emit(f" {c['f']} was ")
    w.word(MOODS, ".\n\n")
