"""The built-in universe: a seeded world, ~100 books about it, and their exact entropy.

The default corpus is generated, never downloaded (DESIGN.md, "The built-in universe"). A world
of towns and people is fixed by a seed; books are random stories about that world. Because the
generator makes every random decision itself, it knows the probability of each book exactly,
so each split has a known *source entropy* in bits per byte: the floor that no language model
can beat. A training run is judged against that floor, not against a guess.

Why the floor is exact, not an estimate. All randomness in a book goes through a `Chooser`:
`choose(options, probs)` writes the chosen option into the text and adds -log2 p to the
book's bits; `emit(text)` writes text that follows from what came before. The writer is a
deterministic function of the sequence of choices, and at every choice the option strings are
pairwise prefix-free (checked at run time). Two different choice sequences therefore give
different texts: they agree up to the first differing choice, where each text continues with a
different option and neither option is a prefix of the other. So P(text) = P(choices), and
`bits` is exactly -log2 P(text). `recover_choices` proves it on any text: it replays the writer
in "parse mode", where each choice must be matched by exactly one option, and the whole text
must be consumed.

Why the text is learnable by a small model with a short context: every character is either a
recorded choice or follows from world facts and nearby text (see universe_text.py for the
rules the chapter writers keep). The prose itself lives in universe_text.py.

Run `python -m myllm.universe` to print the floors, sizes and timings.
"""

from __future__ import annotations

import math
import random
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from myllm import universe_text as T

ATTRIBUTES: tuple[str, ...] = T.ATTRIBUTES  # town, trade, pet, pet_name, food, friend
N_TOWNS = 14
N_PEOPLE = 64  # 32 women, 32 men; must be even (friendship is a perfect matching)
MEAN_CHAPTERS = 67.0  # tuned so that 100 books are ~2.5 MB


# --- The world ----------------------------------------------------------------------------
@dataclass
class Person:
    """One inhabitant. The attributes in ATTRIBUTES are the facts the books teach."""

    first: str
    last: str
    gender: str  # "female" | "male" (pronouns)
    town: str
    trade: str
    pet: str  # species
    pet_name: str
    food: str  # favourite food
    friend: str  # full name of the best friend (symmetric)

    @property
    def full(self) -> str:
        return f"{self.first} {self.last}"

    def fact(self, attribute: str) -> str:
        """The value of one attribute, as the books write it ("Oakridge", "Tom Ashby")."""
        if attribute not in ATTRIBUTES:
            raise KeyError(f"unknown attribute {attribute!r}; choose from {ATTRIBUTES}")
        return getattr(self, attribute)

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass
class World:
    """Towns and people; a pure function of `seed` (see `build_world`)."""

    seed: int
    towns: list[str]
    people: list[Person]
    _index: dict[str, Person] = field(default_factory=dict, init=False, repr=False, compare=False)

    def person(self, name: str) -> Person:
        """Look a person up by full name or first name (both are unique)."""
        if not self._index:
            self._index = {k: p for p in self.people for k in (p.full, p.first)}
        return self._index[name]

    def to_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "towns": list(self.towns), "people": [p.to_dict() for p in self.people]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> World:
        return cls(seed=d["seed"], towns=list(d["towns"]), people=[Person(**p) for p in d["people"]])


def build_world(seed: int = 1234) -> World:
    """Draw towns, people and their facts from the word pools with `random.Random(seed)`.

    The world is not part of the entropy: it is fixed, and the books are the random process.
    Towns get residents round-robin (4-5 each) so every town is someone's home; friends are a
    random perfect matching, so "X's best friend is Y" and "Y's best friend is X" both hold.
    """
    rng = random.Random(seed)
    towns = rng.sample(T.TOWN_NAMES, N_TOWNS)
    half = N_PEOPLE // 2
    firsts = [(n, "female") for n in rng.sample(T.FEMALE_NAMES, half)]
    firsts += [(n, "male") for n in rng.sample(T.MALE_NAMES, half)]
    rng.shuffle(firsts)
    lasts = rng.sample(T.SURNAMES, N_PEOPLE)
    pet_names = rng.sample(T.PET_NAMES, N_PEOPLE)
    people = [
        Person(first=f, last=lasts[k], gender=g, town=towns[k % N_TOWNS], trade=rng.choice(list(T.TRADES)),
               pet=rng.choice(list(T.SPECIES)), pet_name=pet_names[k], food=rng.choice(T.FOODS), friend="")
        for k, (f, g) in enumerate(firsts)
    ]
    order = list(range(N_PEOPLE))
    rng.shuffle(order)
    for a, b in zip(order[::2], order[1::2]):
        people[a].friend, people[b].friend = people[b].full, people[a].full
    return World(seed=seed, towns=towns, people=people)


# --- Exact probability bookkeeping --------------------------------------------------------
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


# --- Books --------------------------------------------------------------------------------
@dataclass
class Book:
    """One generated book, with the exact information content of its text."""

    index: int
    split: str  # "train" | "val" | "test"
    title: str
    text: str
    bits: float  # -log2 P(text) = -sum log2 p over all its choices
    choices: list[int]


_WRITERS: list[tuple[World, T.Writer]] = []  # a few recent worlds' writers (their option caches)


def _writer(world: World) -> T.Writer:
    for w, writer in _WRITERS:
        if w is world:
            return writer
    writer = T.Writer(world)
    _WRITERS[:] = [(world, writer)] + _WRITERS[:3]
    return writer


def _chapter_law(mean_chapters: float) -> tuple[int, int, float]:
    """(fewest, most, p_end): books have 3/4 to 3/2 of the mean chapters; in between, each
    chapter end is followed by "The End." with fixed probability.

    The bounds keep book sizes in a narrow band; the constant end probability (memoryless)
    keeps the ending as predictable from the text alone as anything random can be.
    """
    if mean_chapters < 1:
        raise ValueError(f"mean_chapters = {mean_chapters} must be >= 1")
    lo = max(1, round(0.75 * mean_chapters))
    return lo, max(lo, round(1.5 * mean_chapters)), 1.0 / (mean_chapters - lo + 1)


def _write(world: World, chooser: Chooser, mean_chapters: float) -> Chooser:
    _writer(world).write_book(chooser, *_chapter_law(mean_chapters))
    chooser.finish()
    return chooser


def book_splits(seed: int, n_books: int) -> list[str]:
    """90/5/5 train/val/test by book, from a shuffle seeded by `seed` (val/test >= 1 if n >= 3)."""
    order = list(range(n_books))
    random.Random(f"myllm-universe-splits:{seed}").shuffle(order)
    n_eval = max(1, round(0.05 * n_books)) if n_books >= 3 else 0
    split = ["train"] * n_books
    for k in order[:n_eval]:
        split[k] = "val"
    for k in order[n_eval: 2 * n_eval]:
        split[k] = "test"
    return split


def generate_books(world: World, seed: int = 1234, n_books: int = 100,
                   mean_chapters: float = MEAN_CHAPTERS) -> list[Book]:
    """Write `n_books` books about `world`; book i depends only on (seed, i, mean_chapters)."""
    splits = book_splits(seed, n_books)
    books = []
    for i in range(n_books):
        ch = _write(world, Chooser(rng=random.Random(f"myllm-universe-book:{seed}:{i}")), mean_chapters)
        text = ch.text
        books.append(Book(i, splits[i], text.split("\n", 1)[0], text, ch.bits, ch.choices))
    return books


def recover_choices(world: World, text: str, mean_chapters: float = MEAN_CHAPTERS) -> list[int]:
    """Replay the writer on `text` and return the choices that produce it (ParseError if none)."""
    return _write(world, Chooser(text=text), mean_chapters).choices


def text_bits(world: World, text: str, mean_chapters: float = MEAN_CHAPTERS) -> float:
    """Exactly -log2 P(text) under the book process (ParseError if P(text) = 0)."""
    return _write(world, Chooser(text=text), mean_chapters).bits


def entropy_floor(books: list[Book]) -> dict[str, dict[str, float]]:
    """Per split: documents, UTF-8 bytes, bits, and the floor in bits per byte."""
    out: dict[str, dict[str, float]] = {}
    for b in books:
        s = out.setdefault(b.split, {"documents": 0, "bytes": 0, "bits": 0.0})
        s["documents"] += 1
        s["bytes"] += len(b.text.encode("utf-8"))
        s["bits"] += b.bits
    for s in out.values():
        s["bpb"] = s["bits"] / s["bytes"]
    return out


# --- Facts and probes ---------------------------------------------------------------------
@dataclass(frozen=True)
class Probe:
    """A cloze question: the model should continue `prompt` with `answer` (which starts with a space)."""

    prompt: str
    answer: str
    person: str
    attribute: str


def _context(world: World, person: Person) -> dict[str, str]:
    return T.person_context(person, world.person(person.friend))


def knowledge_probes(world: World) -> list[Probe]:
    """One probe per (person, attribute): "Mira Fenwick lives in" -> " Oakridge".

    The prompt is the start of the cloze sentence that the books use, and in the books it is
    always followed by exactly the answer.
    """
    probes = []
    for p in world.people:
        c = _context(world, p)
        for a in ATTRIBUTES:
            probes.append(Probe(T.CLOZE[a].format(**c), " " + p.fact(a), p.full, a))
    return probes


def fact_sentences(world: World, person: Person, attribute: str) -> list[str]:
    """Whole sentences of the books that state this fact and name the person.

    Pronoun-only forms ("She lives in Oakridge.") are left out: alone they name nobody.
    """
    c = _context(world, person)
    forms = [t for t, form in T.FACTS[attribute] if form != "pron"]
    forms += [T.full_form(t) for t in forms if t.startswith("{f}")]  # the "Who Is Who" variants
    out = [t.format(**c) for t in forms]
    out += [w.format(X=s.format(**c), f=c["f"]) for s in T.SAY[attribute] for w in T.ANSWER_WRAPS]
    return out


def fact_clauses(world: World, person: Person, attribute: str) -> list[str]:
    """Clauses that state the fact in passing: "Mira Fenwick, who lives in Oakridge"."""
    c = _context(world, person)
    return [f"{c['F']}, {w.format(**c)}" for w in T.WHO[attribute]]


_SENTENCE = re.compile(r'\n+|(?<=[.!?])\s+|(?<=[.!?]")\s+')
_CLAUSE = re.compile(r"[A-Z][a-z]+ [A-Z][a-z]+, (?:who|whose|the) [^,.]*")


def fact_mentions(world: World, text: str) -> dict[tuple[str, str], int]:
    """How often `text` states each (person, attribute) fact in a form that names the person."""
    return _mentions(_fact_table(world), world, text)


def _mentions(table: dict[str, tuple[str, str]], world: World, text: str) -> dict[tuple[str, str], int]:
    counts = {(p.full, a): 0 for p in world.people for a in ATTRIBUTES}
    for unit in _SENTENCE.split(text) + _CLAUSE.findall(text):
        key = table.get(unit)
        if key is not None:
            counts[key] += 1
    return counts


def _fact_table(world: World) -> dict[str, tuple[str, str]]:
    return {s: (p.full, a) for p in world.people for a in ATTRIBUTES
            for s in fact_sentences(world, p, a) + fact_clauses(world, p, a)}


def fact_book_counts(world: World, books: list[Book], split: str = "train") -> dict[tuple[str, str], int]:
    """For each (person, attribute): in how many books of `split` the fact is stated (see fact_mentions)."""
    table = _fact_table(world)
    counts = {(p.full, a): 0 for p in world.people for a in ATTRIBUTES}
    for b in books:
        if b.split == split:
            for key, n in _mentions(table, world, b.text).items():
                counts[key] += n > 0
    return counts


def main(argv: list[str] | None = None) -> None:
    """`python -m myllm.universe [SEED [MEAN_CHAPTERS]]`: sizes, timings, floors, fact counts."""
    args = sys.argv[1:] if argv is None else argv
    seed = int(args[0]) if args else 1234
    mean_chapters = float(args[1]) if len(args) > 1 else MEAN_CHAPTERS
    t0 = time.perf_counter()
    world = build_world(seed)
    books = generate_books(world, seed, mean_chapters=mean_chapters)
    t1 = time.perf_counter()
    for b in books:
        assert recover_choices(world, b.text, mean_chapters) == b.choices
    t2 = time.perf_counter()
    total = sum(len(b.text.encode()) for b in books)
    sizes = sorted(len(b.text.encode()) for b in books)
    print(f"{len(books)} books, {total:,} bytes (min {sizes[0]:,}, median {sizes[len(sizes) // 2]:,}, "
          f"max {sizes[-1]:,}); generated in {t1 - t0:.2f} s, recovered in {t2 - t1:.2f} s")
    for split, s in sorted(entropy_floor(books).items()):
        print(f"  {split:5s} {s['documents']:3d} books {s['bytes']:>10,} bytes  floor {s['bpb']:.4f} bits/byte")
    counts = fact_book_counts(world, books)
    cloze = [sum(p.prompt + p.answer + "." in b.text for b in books if b.split == "train")
             for p in knowledge_probes(world)]
    print(f"  facts: every fact is stated in >= {min(counts.values())} train books "
          f"(cloze form: >= {min(cloze)}, mean {sum(cloze) / len(cloze):.1f})")


if __name__ == "__main__":
    main()
