"""The kinds of chapter a book is made of: one module per kind, and the table that picks them.

Every chapter begins with a "Chapter: " line that the book writes (books.py); the chapter's
`write(w)` continues it with the rest of the heading, which names what the chapter is about
("About Mira Fenwick"), and then the chapter's text.
"""

from __future__ import annotations

from collections.abc import Callable

from myllm.universe.chapters import about, friends, journey, letter, market, meeting, news, pet, who_is_who, work
from myllm.universe.writer import Writer

# Chapter kinds: heading text after "Chapter: " (before the person's name), weight, and writer. "Who Is
# Who" and "News" weigh most: they state facts most densely per token, and facts are what a small model
# learns last (measured with a ~6M-parameter model), so a short training run needs them often.
KINDS: tuple[tuple[str, float, Callable[[Writer], None]], ...] = (
    ("About ", 2, about.write), ("The Journey of ", 1, journey.write), ("A Meeting of ", 2, meeting.write),
    ("Market Day for ", 1, market.write), ("A Day at Work for ", 0.5, work.write),
    ("Best Friends: ", 0.5, friends.write), ("The Pet of ", 0.5, pet.write), ("A Letter from ", 2, letter.write),
    ("News from ", 4, news.write), ("Who Is Who\n\n", 10, who_is_who.write),
)


def write_chapter(w: Writer) -> None:
    """A chapter of a random kind; its heading names what it is about."""
    write = w.pick(("kind",), lambda: [(write, heading, float(weight)) for heading, weight, write in KINDS])
    write(w)
