"""Books about a world: how a book is assembled from chapters, and the exact bits of its text.

A book is a title, then chapters (chapters/) until "The End."; every random decision goes
through a `Chooser` (chooser.py), so each book's `bits` is exactly -log2 P(text), and each
split's bits per byte is its *source entropy*: the floor that no language model can beat.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from myllm.universe.chapters import write_chapter
from myllm.universe.chooser import Chooser
from myllm.universe.words import TITLES
from myllm.universe.world import World
from myllm.universe.writer import Writer

MEAN_CHAPTERS = 67.0  # tuned so that 100 books are ~2.5 MB


@dataclass
class Book:
    """One generated book, with the exact information content of its text."""

    index: int
    split: str  # "train" | "val" | "test"
    title: str
    text: str
    bits: float  # -log2 P(text) = -sum log2 p over all its choices
    choices: list[int]


_WRITERS: list[tuple[World, Writer]] = []  # a few recent worlds' writers (their option caches)


def _writer(world: World) -> Writer:
    for w, writer in _WRITERS:
        if w is world:
            return writer
    writer = Writer(world)
    _WRITERS[:] = [(world, writer)] + _WRITERS[:3]
    return writer


def write_book(writer: Writer, chooser: Chooser, fewest: int, most: int, p_end: float) -> None:
    """Title, then `fewest` to `most` chapters: in between, each chapter end chooses to go on or end."""
    writer.ch = chooser
    writer.word(TITLES, "")
    writer.word(writer.towns, "\n\nChapter: ")
    for n in range(1, most + 1):
        write_chapter(writer)
        if n == most or (n >= fewest and p_end >= 1.0):
            writer.emit("The End.\n")
            return
        if n < fewest:
            writer.emit("Chapter: ")
        elif chooser.choose(("Chapter: ", "The End.\n"), (1.0 - p_end, p_end)) == 1:
            return


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
    write_book(_writer(world), chooser, *_chapter_law(mean_chapters))
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
