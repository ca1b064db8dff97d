"""The built-in universe: a seeded world, ~100 books about it, and their exact entropy.

The default corpus is generated, never downloaded (DESIGN.md, "The built-in universe"). A world
of towns and people is fixed by a seed; books are random stories about that world. Because the
generator makes every random decision itself, it knows the probability of each book exactly,
so each split has a known *source entropy* in bits per byte: the floor that no language model
can beat. A training run is judged against that floor, not against a guess. Why the floor is
exact, not an estimate, is explained in chooser.py.

Why the text is learnable by a small model with a short context: every character is either a
recorded choice or follows from world facts and nearby text (writer.py lists the rules the
chapter writers keep).

Where things are, from the bottom up:

- words.py, phrases.py: the vocabulary, and how the books state each fact;
- world.py: towns and people (`build_world`, `World.to_dict` / `from_dict`);
- chooser.py: every random choice of a book and its exact cost in bits;
- writer.py: the verbs and helpers the chapters write with; chapters/: one module per kind
  of chapter ("Market Day for ..." is chapters/market.py), and the table that picks them;
- books.py: book assembly, splits, `recover_choices`, `entropy_floor`;
- probes.py: knowledge probes and fact counts; tasks.py: SFT, DPO and GRPO data.

This package exports the API the rest of myllm uses; post-training data is
`from myllm.universe import tasks`. Run `python -m myllm.universe` to print the floors, sizes
and timings.
"""

from myllm.universe.books import (
    MEAN_CHAPTERS,
    Book,
    book_splits,
    entropy_floor,
    generate_books,
    recover_choices,
    text_bits,
)
from myllm.universe.chooser import Chooser, ParseError
from myllm.universe.probes import (
    Probe,
    fact_book_counts,
    fact_clauses,
    fact_mentions,
    fact_sentences,
    knowledge_probes,
)
from myllm.universe.world import ATTRIBUTES, N_PEOPLE, N_TOWNS, Person, World, build_world

__all__ = [
    "ATTRIBUTES", "MEAN_CHAPTERS", "N_PEOPLE", "N_TOWNS", "Book", "Chooser", "ParseError", "Person", "Probe", "World",
    "book_splits", "build_world", "entropy_floor", "fact_book_counts", "fact_clauses", "fact_mentions",
    "fact_sentences", "generate_books", "knowledge_probes", "recover_choices", "text_bits",
]
