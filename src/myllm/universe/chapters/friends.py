"""Chapter "Best Friends: Mira Fenwick and Tom Ashby": a day together, a few words, the day after."""

from __future__ import annotations

from myllm.universe.words import ACTIVITIES, CHEERS, FRIENDS, THEN
from myllm.universe.writer import Writer


def write(w: Writer) -> None:
    """Best friends: the friendship, a day together with their pets, a few words, and a day after."""
    i = w.person("{F} and {friend}\n\n")
    j = w.friend[i]
    c, d = w.ctx[i], w.ctx[j]
    w.pick(("friends", i), lambda i: [(k, t.format(a=w.ctx[i], b=w.ctx[w.friend[i]]), 1.0)
                                      for k, t in enumerate(FRIENDS)])
    w.emit(" On ")
    w.date()
    w.emit(f"{c['f']} and {d['f']} ")
    w.word(ACTIVITIES, ".")
    w.emit(f" {c['f']} brought {c['p']} {c['pet']} {c['pet_name']}, and {d['f']} brought "
              f"{d['p']} {d['pet']} {d['pet_name']}.\n\"")
    w.word(CHEERS, ", ")
    w.emit(f'{d["f"]}!" said {c["f"]}.\n"')
    w.word(CHEERS, ", ")
    w.emit(f'{c["f"]}!" said {d["f"]}.\n\nThe next day, {d["f"]} ')
    w.events(j, THEN)
