"""Chapter "Market Day for Mira Fenwick": shopping, then one or two small sums."""

from __future__ import annotations

from functools import partial

from myllm.universe.words import EVENING, FOOD, GOODS, count
from myllm.universe.writer import Row, Writer


def write(w: Writer) -> None:
    """Shopping, then one or two small sums."""
    i = w.person()
    c = w.ctx[i]
    w.emit("On ")
    w.date()
    w.emit(f"{c['F']} went to the market in {c['town']}. {c['S']} bought ")
    w.listing(GOODS, " for ")
    w.coins(".")
    w.emit(f"\n\n{c['f']} had ")
    _sums(w, i)
    # Either a second sum about someone else, or the closing line.
    j = w.pick(("more", i), lambda i: [(j, f"{cj['F']} had ", 0.5 / (w.n - 1))
                                       for j, cj in enumerate(w.ctx) if j != i]
               + [(-1, closing + " ", 0.25) for closing in EVENING[:2]])
    if j >= 0:
        _sums(w, j)
        w.word(EVENING[:2])
    w.emit(f"{c['f']} went home to {c['town']}.\n\n")


def _sums(w: Writer, i: int) -> None:
    """One-step arithmetic with operands 1..9: "had 3 plums. She ate 2 of them. Now ... has 1 plum."

    One step only: a small model learns the a+b and a-b tables quickly, running totals slowly.
    """
    c = w.ctx[i]
    n, noun = w.counted(1, 9, FOOD, ". ")
    op = w.pick(("op", i, n > 1), partial(_ops, w))
    if op in ("bought", "given"):
        n += w.number(1, 9, suffix=" more.")
    elif op == "ate":
        n -= w.number(1, n - 1, suffix=" of them.")
    else:
        n -= w.number(1, n - 1, suffix=f" to {c['friend_f']}.")
    w.emit(f" Now {c['f']} has {count(n, noun)}.\n\n")


def _ops(w: Writer, i: int, can_take: bool) -> list[Row]:
    """One change to a count: bought, ate, gave some to the best friend, or was given some."""
    c = w.ctx[i]
    rows = [("bought", f"{c['S']} bought ", 1.0)]
    if can_take:
        rows += [("ate", f"{c['S']} ate ", 1.0), ("gave", f"{c['S']} gave ", 1.0)]
    return rows + [("given", f"{cj['F']} gave {c['o']} ", 1.0 / (w.n - 1))
                   for j, cj in enumerate(w.ctx) if j != i]
