"""Facts and probes: what a trained model should know about the world, and where the books say it.

A probe is a cloze question in the books' own words ("Mira Fenwick lives in" -> " Oakridge");
the fact counts say how often the training books state each fact in a form that names the person.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from myllm.universe.books import Book
from myllm.universe.phrases import ANSWER_WRAPS, ATTRIBUTES, CLOZE, FACTS, SAY, WHO, full_form, person_context
from myllm.universe.world import Person, World


@dataclass(frozen=True)
class Probe:
    """A cloze question: the model should continue `prompt` with `answer` (which starts with a space)."""

    prompt: str
    answer: str
    person: str
    attribute: str


def _context(world: World, person: Person) -> dict[str, str]:
    return person_context(person, world.person(person.friend))


def knowledge_probes(world: World) -> list[Probe]:
    """One probe per (person, attribute): "Mira Fenwick lives in" -> " Oakridge".

    The prompt is the start of the cloze sentence that the books use, and in the books it is
    always followed by exactly the answer.
    """
    probes = []
    for p in world.people:
        c = _context(world, p)
        for a in ATTRIBUTES:
            probes.append(Probe(CLOZE[a].format(**c), " " + p.fact(a), p.full, a))
    return probes


def fact_sentences(world: World, person: Person, attribute: str) -> list[str]:
    """Whole sentences of the books that state this fact and name the person.

    Pronoun-only forms ("She lives in Oakridge.") are left out: alone they name nobody.
    """
    c = _context(world, person)
    forms = [t for t, form in FACTS[attribute] if form != "pron"]
    forms += [full_form(t) for t in forms if t.startswith("{f}")]  # the "Who Is Who" variants
    out = [t.format(**c) for t in forms]
    out += [w.format(X=s.format(**c), f=c["f"]) for s in SAY[attribute] for w in ANSWER_WRAPS]
    return out


def fact_clauses(world: World, person: Person, attribute: str) -> list[str]:
    """Clauses that state the fact in passing: "Mira Fenwick, who lives in Oakridge"."""
    c = _context(world, person)
    return [f"{c['F']}, {w.format(**c)}" for w in WHO[attribute]]


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
