"""The world of the built-in universe: towns and people, and the facts the books teach about them."""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from typing import Any

from myllm.universe.phrases import ATTRIBUTES  # town, trade, pet, pet_name, food, friend
from myllm.universe.words import FEMALE_NAMES, FOODS, MALE_NAMES, PET_NAMES, SPECIES, SURNAMES, TOWN_NAMES, TRADES

N_TOWNS = 14
N_PEOPLE = 64  # 32 women, 32 men; must be even (friendship is a perfect matching)


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
    towns = rng.sample(TOWN_NAMES, N_TOWNS)
    half = N_PEOPLE // 2
    firsts = [(n, "female") for n in rng.sample(FEMALE_NAMES, half)]
    firsts += [(n, "male") for n in rng.sample(MALE_NAMES, half)]
    rng.shuffle(firsts)
    lasts = rng.sample(SURNAMES, N_PEOPLE)
    pet_names = rng.sample(PET_NAMES, N_PEOPLE)
    people = [
        Person(first=f, last=lasts[k], gender=g, town=towns[k % N_TOWNS], trade=rng.choice(list(TRADES)),
               pet=rng.choice(list(SPECIES)), pet_name=pet_names[k], food=rng.choice(FOODS), friend="")
        for k, (f, g) in enumerate(firsts)
    ]
    order = list(range(N_PEOPLE))
    rng.shuffle(order)
    for a, b in zip(order[::2], order[1::2]):
        people[a].friend, people[b].friend = people[b].full, people[a].full
    return World(seed=seed, towns=towns, people=people)
