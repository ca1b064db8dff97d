"""Chapter "The Journey of Mira Fenwick": to another town and back, and what happened there."""

from __future__ import annotations

from myllm.universe.words import (
    ANIMALS,
    BUILDINGS,
    EVENING,
    FOOD,
    GOES,
    GOODS,
    MOODS,
    OPENINGS,
    ROAD,
    SPOTS,
    THEN,
    TIMES,
    TRANSPORT,
    VISITS,
    WEATHER,
    WEEKDAYS,
)
from myllm.universe.writer import Writer


def write(w: Writer) -> None:
    """From home to another town and back, with the pet; what happened there."""
    i = w.person()
    c = w.ctx[i]
    t = w.word(OPENINGS)
    w.word(WEATHER)
    w.word(WEEKDAYS)
    w.word(TIMES, ", " if t == "On a" else ". ")
    w.emit(f"{c['F']} left {c['town']} with {c['p']} {c['pet']} {c['pet_name']}. ")
    w.pick(("went", i), lambda i: [(v, f"{w.ctx[i]['S']} {v} ", 1.0) for v in GOES])
    dest = w.word(w.towns, " ", exclude=c["town"])
    w.word(TRANSPORT, ".")
    w.emit(" The road was ")
    road = w.word(ROAD, " and ")
    w.word(ROAD, ", and the trip took ", exclude=road)
    w.number(1, 9, ("hour", "hours"), ".")
    w.emit(f"\n\nIn {dest}, {c['f']} ")
    met = (i,)
    while True:
        verb = w.word(VISITS)
        if verb == "bought":
            w.listing(GOODS, " for ")
            w.coins(".")
        elif verb == "met":
            j = w.person("{F}", exclude=met)
            met = tuple(sorted(met + (j,)))
            w.who(j, ".")
        elif verb == "saw":
            w.listing(ANIMALS, " near the ")
            w.word(SPOTS, ".")
        elif verb == "visited the":
            w.word(BUILDINGS, ".")
        else:
            w.counted(1, 9, FOOD, " for lunch.")
        if w.pick(("visit", i), lambda i: [(j, " " + t.format(**w.ctx[i]) + " ", 1.0)
                                           for j, t in enumerate(THEN)] + [(-1, "\n\n", 2.0)]) < 0:
            break
    w.word(EVENING)
    w.emit(f"{c['f']} went home to {c['town']} ")
    w.word(TRANSPORT, ".")
    w.emit(f" {c['pet_name']} was ")
    w.word(MOODS, ".\n\n")
