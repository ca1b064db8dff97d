"""The built-in universe: a consistent world, learnable books, and an exact entropy floor."""

from __future__ import annotations

import json
import random
import re
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from myllm import universe as U
from myllm.universe import words
from myllm.universe.phrases import ANSWER_WRAPS, FACTS, SAY, full_form, person_context

SEED = 1234


@pytest.fixture(scope="module")
def world() -> U.World:
    return U.build_world(SEED)


@pytest.fixture(scope="module")
def timed_books(world):
    U.books._WRITERS.clear()  # time a cold start: option caches are built inside the measurement
    t0 = time.process_time()
    books = U.generate_books(world, SEED)
    return books, time.process_time() - t0


@pytest.fixture(scope="module")
def books(timed_books):
    return timed_books[0]


@pytest.fixture(scope="module")
def train_text(books):
    return "\n".join(b.text for b in books if b.split == "train")


# --- the world ----------------------------------------------------------------------------
def test_world_is_deterministic_and_complete(world):
    assert U.build_world(SEED).to_dict() == world.to_dict()
    assert U.build_world(SEED + 1).to_dict() != world.to_dict()
    people = world.people
    assert len(people) == 64 and len(world.towns) >= 12 and len(set(world.towns)) == len(world.towns)
    for field in ("first", "last", "full", "pet_name"):
        assert len({getattr(p, field) for p in people}) == 64, field
    assert {p.gender for p in people} == {"female", "male"}
    for p in people:
        assert p.town in world.towns and p.trade in words.TRADES and p.pet in words.SPECIES and p.food in words.FOODS
        assert [p.fact(a) for a in U.ATTRIBUTES] == [p.town, p.trade, p.pet, p.pet_name, p.food, p.friend]
    assert all(any(p.town == t for p in people) for t in world.towns)  # every town is someone's home
    with pytest.raises(KeyError):
        people[0].fact("age")


def test_friendship_is_a_perfect_matching(world):
    for p in world.people:
        friend = world.person(p.friend)
        assert friend is not p and friend.friend == p.full
    assert world.person(world.people[5].first) is world.people[5]


def test_names_are_single_ascii_words_and_prefix_free(world):
    names = [n for p in world.people for n in (p.first, p.last, p.pet_name)] + list(world.towns)
    assert all(re.fullmatch(r"[A-Z][a-z]+", n) for n in names)
    assert len(set(names)) == len(names)
    pool = sorted(words.FEMALE_NAMES + words.MALE_NAMES + words.SURNAMES + words.TOWN_NAMES + words.PET_NAMES)
    assert not [(a, b) for a, b in zip(pool, pool[1:]) if b.startswith(a)]


def test_world_round_trips_through_json(world):
    again = U.World.from_dict(json.loads(json.dumps(world.to_dict())))
    assert again.to_dict() == world.to_dict()
    assert again.person(world.people[0].full).friend == world.people[0].friend


# --- the books ----------------------------------------------------------------------------
def test_books_shape_and_splits(books):
    assert [b.index for b in books] == list(range(100))
    assert [sum(b.split == s for b in books) for s in ("train", "val", "test")] == [90, 5, 5]
    total = sum(len(b.text.encode()) for b in books)
    assert 2_000_000 < total < 3_000_000
    sizes = [len(b.text) for b in books]
    assert min(sizes) > 8_000 and max(sizes) < 80_000
    for b in books:
        assert b.text.isascii()
        assert b.title == b.text.split("\n", 1)[0] and re.fullmatch(r"[A-Z][A-Za-z ]+", b.title)
        assert b.text.startswith(b.title + "\n\nChapter: ") and b.text.endswith("\n\nThe End.\n")
        assert "  " not in b.text and " \n" not in b.text and "\n\n\n" not in b.text
        assert b.bits > 0 and len(b.choices) > 1000


def test_headings_and_paragraphs_carry_no_hidden_state(books):
    """No chapter numbers, and no paragraph opens with a pronoun (every paragraph names its people)."""
    text = "\n".join(b.text for b in books)
    headings = re.findall(r"^Chapter: (.*)$", text, flags=re.M)
    assert len(headings) > 3000 and not any(re.search(r"\d", h) for h in headings)
    paragraphs = [p for p in text.split("\n\n") if p]
    assert not [p for p in paragraphs if re.match(r"(She|He|Her|His|They|It)\b(?! was a )", p)]


def test_generation_is_deterministic_fast_and_sized_by_mean_chapters(world, timed_books):
    books, seconds = timed_books
    assert seconds < 3.0, f"generating 100 books took {seconds:.2f} s of CPU"
    again = U.generate_books(world, SEED, n_books=3)
    assert [b.text for b in again] == [b.text for b in books[:3]]
    assert [b.bits for b in again] == [b.bits for b in books[:3]]
    assert U.generate_books(world, SEED + 1, n_books=1)[0].text != books[0].text
    short = U.generate_books(world, SEED, n_books=10, mean_chapters=10)
    assert sum(len(b.text) for b in short) < 0.3 * sum(len(b.text) for b in books[:10])


# --- exactness ----------------------------------------------------------------------------
def test_every_book_is_recovered_exactly(world, books):
    """Parsing each text back gives the very choices that wrote it, and the same bits."""
    for b in books:
        assert U.recover_choices(world, b.text) == b.choices
        assert U.text_bits(world, b.text) == b.bits


def test_recovery_rejects_texts_the_writer_cannot_produce(world, books):
    text = books[0].text
    p = world.people[0]
    fact = f"{p.full} lives in {p.town}."
    wrong_town = next(t for t in world.towns if t != p.town)
    i = next(k for k, b in enumerate(books) if fact in b.text)
    with pytest.raises(U.ParseError):  # a false fact: that text has probability 0
        U.recover_choices(world, books[i].text.replace(fact, f"{p.full} lives in {wrong_town}."))
    with pytest.raises(U.ParseError):
        U.recover_choices(world, text + "More.")
    with pytest.raises(U.ParseError):
        U.recover_choices(world, text[:-1])
    with pytest.raises(U.ParseError):
        U.recover_choices(world, text.replace("Chapter: ", "Chapter 1: ", 1))


def test_choose_rejects_options_that_are_not_prefix_free():
    ch = U.Chooser(rng=random.Random(0))
    for bad in (["Ann ", "Ann b"], ["Ann", "Anna"], ["x", "x"], ["", "a"]):
        with pytest.raises(ValueError, match="prefix-free"):
            ch.choose(bad)
    with pytest.raises(ValueError):
        ch.choose(["a", "b"], [1.0, 0.0])
    assert ch.choose(["Ann ", "Anna "]) in (0, 1) and ch.bits == 1.0


def test_chooser_bits_are_exact_minus_log2_probabilities():
    ch = U.Chooser(rng=random.Random(1))
    picks = [ch.choose(["a.", "b.", "c."], [1, 1, 2]) for _ in range(200)]
    expected = sum({0: 2.0, 1: 2.0, 2: 1.0}[i] for i in picks)
    assert ch.bits == pytest.approx(expected, abs=1e-9)
    assert 0.4 < picks.count(2) / len(picks) < 0.6  # weights are honoured when sampling
    parsed = U.Chooser(text=ch.text)
    assert [parsed.choose(["a.", "b.", "c."], [1, 1, 2]) for _ in range(200)] == picks
    parsed.finish()
    assert parsed.bits == ch.bits


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(world_seed=st.integers(0, 10**6), book_seed=st.integers(0, 10**6), mean=st.floats(1, 6))
def test_any_seed_gives_self_consistent_books(world_seed, book_seed, mean):
    world = U.build_world(world_seed)
    for b in U.generate_books(world, book_seed, n_books=3, mean_chapters=mean):
        assert U.recover_choices(world, b.text, mean_chapters=mean) == b.choices
        assert U.text_bits(world, b.text, mean_chapters=mean) == b.bits
        assert b.text.endswith("The End.\n")


# --- the floor ----------------------------------------------------------------------------
def test_entropy_floor_per_split(books):
    floor = U.entropy_floor(books)
    assert set(floor) == {"train", "val", "test"}
    for split, s in floor.items():
        docs = [b for b in books if b.split == split]
        assert s["documents"] == len(docs)
        assert s["bytes"] == sum(len(b.text.encode("utf-8")) for b in docs)
        assert s["bits"] == pytest.approx(sum(b.bits for b in docs))
        assert s["bpb"] == pytest.approx(s["bits"] / s["bytes"])
        assert 0.2 < s["bpb"] < 0.6, (split, s["bpb"])
    assert abs(floor["val"]["bpb"] - floor["train"]["bpb"]) < 0.02
    assert abs(floor["test"]["bpb"] - floor["train"]["bpb"]) < 0.02


# --- facts and probes ---------------------------------------------------------------------
def test_knowledge_probes_are_stated_verbatim_and_unambiguously(world, books, train_text):
    probes = U.knowledge_probes(world)
    assert len(probes) == 384 and len({p.prompt for p in probes}) == 384
    assert {p.attribute for p in probes} == set(U.ATTRIBUTES)
    everything = "\n".join(b.text for b in books)
    for p in probes:
        assert p.answer == " " + world.person(p.person).fact(p.attribute)
        assert p.prompt + p.answer + "." in train_text
        # Wherever the prompt occurs it starts a sentence and is followed by exactly the answer.
        starts = [m.start() for m in re.finditer(re.escape(p.prompt), everything)]
        assert all(everything.startswith(p.prompt + p.answer, k) for k in starts), p
        assert all(everything[k - 1] in " \n" and everything[k - 2] in ".\n\"" for k in starts), p


def test_every_fact_is_repeated_across_many_train_books(world, books):
    counts = U.fact_book_counts(world, books)
    assert len(counts) == 384
    assert min(counts.values()) >= 15, min(counts.items(), key=lambda kv: kv[1])
    cloze = [sum(p.prompt + p.answer + "." in b.text for b in books if b.split == "train")
             for p in U.knowledge_probes(world)]
    assert min(cloze) >= 6 and sum(cloze) / len(cloze) > 15


def test_every_fact_appears_in_three_paraphrases_and_in_the_first_person(world, train_text):
    """Third person (full name, first name, pronoun) and first person (dialogue, or a signed letter)."""
    sentences = set(U.probes._SENTENCE.split(train_text))
    letters = {(m[1], s) for m in re.finditer(r"Chapter: A Letter from (\w+ \w+)\n\nDear \w+,\n(.*)", train_text)
               for s in U.probes._SENTENCE.split(m[2])}
    dialogue = 0
    for p in world.people:
        c = person_context(p, world.person(p.friend))
        for a in U.ATTRIBUTES:
            third = [t.format(**c) for t, _ in FACTS[a]] + [full_form(t).format(**c) for t, _ in FACTS[a]]
            assert len({s for s in third if s in sentences}) >= 3, (p.full, a)
            said = any(w.format(X=s.format(**c), f=p.first) in sentences for s in SAY[a] for w in ANSWER_WRAPS)
            written = any((p.full, s.format(**c) + ".") in letters for s in SAY[a])
            assert said or written, (p.full, a)
            dialogue += said
    assert dialogue > 0.75 * 384


def test_arithmetic_is_right(books):
    text = "\n".join(b.text for b in books)
    stories = re.findall(r"\b([A-Z]\w+)(?: [A-Z]\w+)? had (\d+) \w+\. [^.]*? (\d+) (more|of them|to \w+)\. "
                         r"Now \1 has (\d+) ", text)
    assert len(stories) > 300
    kinds = set()
    for _, a, b, kind, r in stories:
        kinds.add(kind.split()[0])
        assert 1 <= int(a) <= 9 and 1 <= int(b) <= 9
        assert int(r) == (int(a) + int(b) if kind == "more" else int(a) - int(b)) >= 1
    assert kinds == {"more", "of", "to"}
    work = re.findall(r"In the morning, (\w+) ([a-z ]+?) (\d+) [^.]*\. In the afternoon, \w+ \2 (\d+) more\. "
                      r"That day, \1 \2 (\d+) ", text)
    assert len(work) > 50 and all(int(a) + int(b) == int(r) for _, _, a, b, r in work)
