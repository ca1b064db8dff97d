"""`python -m myllm.universe [SEED [MEAN_CHAPTERS]]`: sizes, timings, floors, fact counts."""

from __future__ import annotations

import sys
import time

from myllm.universe.books import MEAN_CHAPTERS, entropy_floor, generate_books, recover_choices
from myllm.universe.probes import fact_book_counts, knowledge_probes
from myllm.universe.world import build_world


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
