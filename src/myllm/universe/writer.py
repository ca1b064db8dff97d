"""The book writer: the two verbs every chapter writes with, and the helpers built on them.

A chapter writer (chapters/) talks to the chooser (chooser.py) through two verbs only:
`emit(text)` for text that follows from what came before, and `choose(options, probs)` for a
random choice, which writes the chosen option into the book. Rules every writer keeps (they
are what make the text learnable by a small model and the entropy floor exact):

- Options at one choice point are whole rendered strings, pairwise prefix-free (the chooser
  asserts it). They carry their own trailing punctuation, so "rain" vs "rainy" never clash.
- Fixed text depends only on earlier choices that are still visible nearby: every paragraph
  names its people before a pronoun refers to them, and headings name their content.
- Facts are never random: a person's town, trade, pet, pet's name, food and friend come from
  the world. Random choices are things that can differ between books: days, weather,
  journeys, counts, phrasing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from myllm.universe.phrases import WHO, person_context
from myllm.universe.words import ANIMALS, EVENTS, GAMES, GOODS, MONTHS, SPOTS, TOPICS, TRADES, count, ordinal

Row = tuple[Any, str, float]  # (value returned, option written, weight)


class Writer:
    """Writes text about one world through a chooser: what chapters (chapters/) are made of.

    A book (books.py) is a deterministic function of the chooser's answers, which is what lets
    `recover_choices` replay it on a text. Helpers write one choice and return the chosen
    value. `pick(key, make)` builds a choice's options with `make(*key[1:])` once per key and
    caches them: the options are a pure function of the key, and the same option sets recur
    thousands of times, so building them would otherwise dominate the cost of writing. A key
    starts with a tag for its kind of choice ("w" a word, "turn" a line of a meeting, ...):
    equal keys share one option set, so a new kind of choice needs a new tag.
    """

    def __init__(self, world: Any) -> None:
        people = world.people
        by_name = {p.full: i for i, p in enumerate(people)}
        self.friend = [by_name[p.friend] for p in people]
        self.ctx = [person_context(p, people[self.friend[i]]) for i, p in enumerate(people)]
        self.n = len(people)
        self.towns = tuple(world.towns)
        self._cache: dict[tuple, tuple[tuple, tuple[str, ...], tuple[float, ...] | None]] = {}
        self.ch: Any = None  # the chooser of the book being written (set by books.write_book)

    # -- the two verbs, and helpers built on them ------------------------------------------
    def emit(self, text: str) -> None:
        self.ch.emit(text)

    def pick(self, key: tuple, make: Callable[..., Sequence[Row]]) -> Any:
        """Choose among the rows `make(*key[1:])` (weights need not sum to 1); return the value."""
        entry = self._cache.get(key)
        if entry is None:
            rows = make(*key[1:])
            weights = tuple(w for _, _, w in rows)
            entry = (tuple(v for v, _, _ in rows), tuple(o for _, o, _ in rows),
                     None if len(set(weights)) == 1 else weights)
            self._cache[key] = entry
        values, options, weights = entry
        return values[self.ch.choose(options, weights)]

    def word(self, words: tuple[str, ...], suffix: str = " ", exclude: Any = None) -> Any:
        """Choose uniformly among `words`, writing the word and `suffix`."""
        return self.pick(("w", words, suffix, exclude),
                         lambda words, suffix, exclude: [(w, w + suffix, 1.0) for w in words if w != exclude])

    def person(self, fmt: str = "{F}\n\n", exclude: tuple[int, ...] = ()) -> int:
        """Choose a person uniformly (except `exclude`), writing `fmt` rendered for them."""
        return self.pick(("p", fmt, exclude), lambda fmt, exclude: [
            (i, fmt.format(**c), 1.0) for i, c in enumerate(self.ctx) if i not in exclude])

    def number(self, lo: int, hi: int, noun: tuple[str, str] | None = None, suffix: str = " ") -> int:
        """Choose n uniformly in lo..hi, writing "n" (or "n nouns") and `suffix`."""
        return self.pick(("n", lo, hi, noun, suffix), lambda lo, hi, noun, suffix: [
            (n, (count(n, noun) if noun else str(n)) + suffix, 1.0) for n in range(lo, hi + 1)])

    def counted(self, lo: int, hi: int, nouns: tuple[tuple[str, str], ...], suffix: str) -> tuple[int, tuple]:
        """ "3 apples" + suffix: a count, then a noun in the matching number; returns both."""
        n = self.number(lo, hi)
        noun = self.pick(("counted", nouns, n == 1, suffix), lambda nouns, one, suffix: [
            (x, x[0 if one else 1] + suffix, 1.0) for x in nouns])
        return n, noun

    def coins(self, suffix: str = ".") -> int:
        return self.number(2, 99, ("coin", "coins"), suffix)

    def date(self, suffix: str = ", ") -> None:
        """ "the 3rd of May" + suffix."""
        self.pick(("day",), lambda: [(n, f"the {ordinal(n)} of ", 1.0) for n in range(1, 29)])
        self.word(MONTHS, suffix)

    def listing(self, nouns: tuple[tuple[str, str], ...], end: str) -> None:
        """1-4 distinct counted nouns ("3 apples", "3 apples and 1 egg", "3 apples, 1 egg and 5 plums"),
        then `end`. After ", " the list must go on; after " and " it must stop."""
        used: tuple[int, ...] = ()
        link = ""
        while True:
            n = self.number(1, 20)
            k = self.pick(("noun", nouns, n == 1, used), lambda nouns, one, used: [
                (k, x[0 if one else 1], 1.0) for k, x in enumerate(nouns) if k not in used])
            used = tuple(sorted(used + (k,)))
            if link == " and ":
                self.emit(end)
                return
            link = self.pick(("link", end, link, len(used) < 3), lambda end, link, room: (
                [(end, end, 2.0)] * (link != ", ") + [(" and ", " and ", 2.0)] + [(", ", ", ", 1.0)] * room))
            if link == end:
                return

    def who(self, i: int, suffix: str, none: float = 0.0) -> None:
        """", the potter" + suffix: a clause stating one random fact of person i (or, with weight
        `none`, only a space)."""
        self.pick(("who", i, suffix, none), lambda i, suffix, none: [
            (a, ", " + w.format(**self.ctx[i]) + suffix, 1.0 / len(WHO) / len(WHO[a])) for a in WHO for w in WHO[a]]
            + [(None, " ", none)] * (none > 0))

    def event(self, i: int) -> None:
        """One past-tense event of person i, written after its subject ("Mira ", "she ", "I ").

        These sentences carry most of the entropy: names, counts, lists, prices, places, all
        uniform choices that a small model learns quickly.
        """
        verb = self.word(EVENTS)
        if verb == "bought":
            self.listing(GOODS, " for ")
            self.coins(".")
        elif verb == "gave":
            self.person("{f} ", exclude=(i,))
            self.counted(1, 20, GOODS, ".")
        elif verb == "saw":
            self.listing(ANIMALS, " near the ")
            self.word(SPOTS, ".")
        elif verb == "walked":
            self.number(1, 30, ("mile", "miles"), " to ")
            self.word(self.towns, ".")
        elif verb == "read":
            self.number(10, 99, suffix=" pages of a book about ")
            self.word(TOPICS, ".")
        elif verb == "sold":  # what a person makes follows from their trade
            _, one, many = TRADES[self.ctx[i]["trade"]]
            self.number(1, 9, (one, many), " for ")
            self.coins(".")
        else:
            self.word(GAMES, " with ")
            self.person("{f} for ", exclude=(i,))
            self.number(1, 9, ("hour", "hours"), ".")

    def events(self, i: int, links: tuple[str, ...], end: str = "\n\n", least: int = 2) -> None:
        """`least` or more events of person i (the first subject already written), joined by `links`."""
        self.event(i)
        k = 1
        while self.pick(("links", i, links, end, k >= least), lambda i, links, end, may_end: (
                [(j, " " + t.format(**self.ctx[i]) + " ", 1.0) for j, t in enumerate(links)]
                + [(-1, end, len(links) / 2)] * may_end)) >= 0:
            self.event(i)
            k += 1
