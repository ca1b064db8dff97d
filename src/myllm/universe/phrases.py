"""How the books state facts: the paraphrases of each attribute, in the third and first person.

The world says what is true (world.py); these tables say how the books write it. The writer
uses them to write the books; probes.py and tasks.py use the same tables, so a probe or a task
asks for a fact in exactly the words the books taught it.
"""

from __future__ import annotations

from typing import Any

# Third-person paraphrases of each attribute: (template, form). Form "full" uses the full
# name, "first" the first name, "pron" only a pronoun (allowed after the paragraph named the
# person). The first "full" template of each attribute is the CLOZE form used by the probes:
# the value comes last, so "Mira Fenwick lives in" -> " Oakridge".
FACTS: dict[str, tuple[tuple[str, str], ...]] = {
    "town": (("{F} lives in {town}.", "full"), ("{f} has a house in {town}.", "first"),
             ("{f}'s home is in {town}.", "first"), ("{S} lives in the town of {town}.", "pron"),
             ("{P} home is in {town}.", "pron")),
    "trade": (("{F} works as a {trade}.", "full"), ("{f} is a {trade}.", "first"),
              ("By trade, {f} is a {trade}.", "first"), ("{S} is a {trade}.", "pron")),
    "pet": (("{F} has a pet {pet}.", "full"), ("{f} keeps a {pet}.", "first"),
            ("{f} has a {pet} at home.", "first"), ("{S} keeps a {pet}.", "pron")),
    "pet_name": (("{F}'s pet is called {pet_name}.", "full"), ("{f}'s {pet} is named {pet_name}.", "first"),
                 ("{f} calls {p} {pet} {pet_name}.", "first"), ("{P} {pet} is called {pet_name}.", "pron")),
    "food": (("{F} likes to eat {food}.", "full"), ("{f}'s favourite food is {food}.", "first"),
             ("{f} loves {food} more than anything.", "first"), ("{P} favourite food is {food}.", "pron")),
    "friend": (("{F}'s best friend is {friend}.", "full"), ("{f} and {friend_f} are best friends.", "first"),
               ("{P} best friend is {friend}.", "pron"), ("{S} is best friends with {friend}.", "pron")),
}
ATTRIBUTES = tuple(FACTS)
CLOZE = {a: FACTS[a][0][0].rsplit(" {", 1)[0] for a in ATTRIBUTES}  # "{F} lives in"
# First-person answers in dialogue, and the questions that ask for them.
SAY = {
    "town": ("I live in {town}", "My home is in {town}", "I have a house in {town}"),
    "trade": ("I am a {trade}", "I work as a {trade}"),
    "pet": ("I have a {pet}", "I keep a {pet}"),
    "pet_name": ("My {pet} is called {pet_name}", "My {pet}'s name is {pet_name}"),
    "food": ("I love {food}", "My favourite food is {food}", "I like to eat {food}"),
    "friend": ("My best friend is {friend}", "{friend} is my best friend"),
}
SAY_TO_FRIEND = ("You are my best friend, {g}", "{g}, you are my best friend")
ASK = {
    "town": ("Where do you live, {f}?", "Which town is your home, {f}?"),
    "trade": ("What is your trade, {f}?", "What work do you do, {f}?"),
    "pet": ("Do you have a pet, {f}?", "What pet do you keep, {f}?"),
    "pet_name": ("What is your pet called, {f}?", "What is the name of your pet, {f}?"),
    "food": ("What is your favourite food, {f}?", "What do you like to eat, {f}?"),
    "friend": ("Who is your best friend, {f}?", "Tell me, {f}, who is your best friend?"),
}
ANSWER_WRAPS = ('"{X}," said {f}.', '{f} said, "{X}."', '"{X}," {f} replied.')
QUESTION_WRAPS = ('"{Q}" asked {g}.', '{g} asked, "{Q}"')
# Clauses that state a fact in passing: "Tom Ashby, the potter, bought ..." / "met Tom Ashby, who loves figs."
WHO = {
    "town": ("who lives in {town}",), "trade": ("who is a {trade}", "the {trade}"), "pet": ("who keeps a {pet}",),
    "pet_name": ("whose {pet} is called {pet_name}",), "food": ("who loves {food}",),
    "friend": ("whose best friend is {friend}", "the best friend of {friend}"),
}


def person_context(person: Any, friend: Any) -> dict[str, str]:
    """Every string a template may need about one person (pronouns included)."""
    she = person.gender == "female"
    return dict(F=person.full, f=person.first, S="She" if she else "He", s="she" if she else "he",
                P="Her" if she else "His", p="her" if she else "his", o="her" if she else "him",
                town=person.town, trade=person.trade, pet=person.pet, pet_name=person.pet_name, food=person.food,
                friend=friend.full, friend_f=friend.first)


def full_form(template: str) -> str:
    """A first-name template with full names instead: "{f} and {friend_f} are ..." -> "{F} and {friend} are ..."."""
    return template.replace("{f}", "{F}").replace("{friend_f}", "{friend}")

