"""Quality filters: each one fires on a crafted document, not on ordinary prose, exactly at its threshold."""

from __future__ import annotations

import math
import random
from collections import Counter
from itertools import islice, product

import numpy as np
import pytest

from myllm.config import QualityConfig
from myllm.data import quality
from myllm.data.quality import BULLETS, quality_reason

DEFAULT = QualityConfig()
VOCAB = """
    time year people way day man thing woman life child world school state family student group country
    problem hand part place case week company system program question work government number night point
    home water room mother area money story fact month lot right study book eye job word business issue
    side kind head house service friend father power hour game line end member law car city community
    name president team minute idea kid body information back parent face others level office door
    health person art war history party result change morning reason research girl guy moment air
    teacher force education foot boy age policy everything process music market sense nation plan
    college interest death experience effect class control care field development role effort rate heart
    drug show leader light voice wife police mind price report decision son view relationship town road
    arm difference value building action model season society tax director position player record paper
    space ground form event official matter center couple site project activity star table need court
    oil situation cost industry figure street image phone data picture practice piece land product
    doctor wall patient worker news test movie north love support technology step baby computer type
    attention film tree source organization hair window evidence population garden river mountain forest
    island ocean valley village bridge castle harbor meadow orchard lantern candle whisper thunder
    silver golden gentle quiet brave clever honest humble proud quick slow bright dark warm cold early
    late simple strange ancient modern famous hidden narrow broad heavy sweet bitter rough smooth steady
    sudden walk run speak listen carry follow gather wander build paint write read sing dance travel
    remember forget believe wonder notice promise explain discover imagine prepare describe consider
    decide arrive return borrow deliver invite apple basket cloud desk engine feather glove hammer
    jacket kettle
""".split()


def prose_words(n_words: int = 200, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [rng.choice(VOCAB) for _ in range(n_words)]


def as_lines(words: list[str], per_line: int = 20) -> list[str]:
    """Sentences of `per_line` words, one per line, capitalised and ending in a period."""
    chunks = [words[i:i + per_line] for i in range(0, len(words), per_line)]
    return [" ".join([c[0].capitalize(), *c[1:]]) + "." for c in chunks]


def prose(n_words: int = 200, seed: int = 0) -> str:
    return "\n".join(as_lines(prose_words(n_words, seed)))


def distinct_words(n: int, length: int = 4, skip: int = 0) -> list[str]:
    """`n` different letter-only words of one length (consonant-vowel patterns)."""
    pattern = ["bcdfghjklmnprstvwz" if i % 2 == 0 else "aeiou" for i in range(length)]
    return list(islice(("".join(p) for p in product(*pattern)), skip, skip + n))


def with_repeats(unit: list[str], times: int, total: int, skip: int = 1000) -> list[str]:
    """`unit` repeated `times`, evenly spaced among different 4-letter filler words, `total` words in all."""
    fillers = iter(distinct_words(total, 4, skip=skip))
    block = total // times
    words: list[str] = []
    for _ in range(times):
        words += unit + [next(fillers) for _ in range(block - len(unit))]
    return words + [next(fillers) for _ in range(total - len(words))]


def only(**thresholds) -> QualityConfig:
    """A config whose filters all pass anything, except the thresholds given."""
    cfg = QualityConfig(min_words=0, max_words=10**9, min_mean_word_length=0.0, max_mean_word_length=math.inf,
                        max_symbol_word_ratio=math.inf, max_ellipsis_line_fraction=1.0,
                        max_bullet_line_fraction=1.0, max_duplicate_line_fraction=1.0,
                        max_top_2gram_fraction=math.inf, max_duplicate_5gram_fraction=math.inf,
                        min_alpha_word_fraction=0.0)
    for key, value in thresholds.items():
        setattr(cfg, key, value)
    return cfg


def ref_top_2gram(words: list[str]) -> float:
    """Gopher's top 2-gram character fraction, computed the slow, obvious way."""
    counts = Counter(zip(words, words[1:]))
    top = max(counts.values(), default=0)
    if top < 2:
        return 0.0
    return max(len(a) + len(b) for (a, b), c in counts.items() if c == top) * top / sum(map(len, words))


def ref_duplicate_5gram(words: list[str]) -> float:
    grams = [tuple(words[i:i + 5]) for i in range(len(words) - 4)]
    counts = Counter(grams)
    covered = {i + k for i, gram in enumerate(grams) if counts[gram] > 1 for k in range(5)}
    return sum(len(words[i]) for i in covered) / sum(map(len, words))


def test_vocab_and_prose_pass_every_filter():
    assert len(VOCAB) == len(set(VOCAB)) == 300
    for seed in range(20):
        text = prose(200, seed)
        assert len(text.split()) == 200 and text.count("\n") == 9
        assert quality_reason(text, DEFAULT) is None


def test_disabled_passes_everything():
    off = QualityConfig(enabled=False)
    for text in ["", "x", "# # # # #", "\n".join(["• same line ..."] * 100)]:
        assert quality_reason(text, off) is None
        assert quality_reason(text, DEFAULT) is not None


def test_word_count_bounds():
    assert quality_reason(prose(49), DEFAULT) == "min_words"
    assert quality_reason(prose(50), DEFAULT) is None
    assert quality_reason("", DEFAULT) == "min_words"
    assert quality_reason("", QualityConfig(min_words=0)) is None
    cfg = QualityConfig(max_words=100)
    assert quality_reason(prose(100), cfg) is None
    assert quality_reason(prose(101), cfg) == "max_words"


def test_mean_word_length_bounds():
    assert quality_reason(" ".join(distinct_words(60, 3)), DEFAULT) is None  # exactly 3.0
    assert quality_reason(" ".join(distinct_words(59, 3) + ["ab"]), DEFAULT) == "mean_word_length"
    assert quality_reason(" ".join(distinct_words(60, 10)), DEFAULT) is None  # exactly 10.0
    assert quality_reason(" ".join(distinct_words(59, 10) + distinct_words(1, 11)), DEFAULT) == "mean_word_length"


@pytest.mark.parametrize("n_symbols, expected", [(20, None), (21, "symbol_word_ratio")])
def test_symbol_word_ratio(n_symbols, expected):
    words = prose_words(200)
    marks = ["#{}", "{}...", "{}…"]  # hashtags and mid-line ellipses, never at a line end
    for k in range(n_symbols):
        i = 20 * (k % 10) + 1 + k // 10
        words[i] = marks[k % 3].format(words[i])
    assert quality_reason("\n".join(as_lines(words)), DEFAULT) == expected


@pytest.mark.parametrize("n_lines, expected", [(3, None), (4, "ellipsis_lines")])
def test_ellipsis_lines(n_lines, expected):
    lines = as_lines(prose_words(200))
    for k in range(n_lines):
        lines[2 * k] = lines[2 * k][:-1] + ("..." if k % 2 else " …")
    assert quality_reason("\n".join(lines), DEFAULT) == expected


@pytest.mark.parametrize("n_lines, expected", [(9, None), (10, "bullet_lines")])
def test_bullet_lines(n_lines, expected):
    lines = as_lines(prose_words(200))
    for k in range(n_lines):
        bullet = BULLETS[k % len(BULLETS)]
        lines[k] = f"  {bullet} {lines[k]}" if k % 2 else bullet + lines[k]
    assert quality_reason("\n\n".join(lines), DEFAULT) == expected


@pytest.mark.parametrize("n_prose, expected", [(6, None), (5, "duplicate_lines")])
def test_duplicate_lines(n_prose, expected):
    lines = as_lines(prose_words(20 * n_prose)) + ["Thanks."] * (10 - n_prose)  # 10 non-empty lines
    text = "\n  \n".join(lines)  # blank and whitespace-only lines do not count
    assert quality_reason(text, DEFAULT) == expected


@pytest.mark.parametrize("n_numbers, expected", [(40, None), (41, "alpha_words")])
def test_alpha_words(n_numbers, expected):
    words = prose_words(200)
    for k in range(n_numbers):
        words[4 * k + 1] = str(1000 + k)
    assert quality_reason("\n".join(as_lines(words)), DEFAULT) == expected


def test_alpha_words_letters_are_str_isalpha():
    letters = ["don't", "naïve", "e.g.", "Straße", "日本語", "x2", "(see", "A."]
    no_letters = ["123", "--", "$5", "3.14", "_", "—", "42%", "½"]
    text = " ".join(letters + no_letters)
    assert quality_reason(text, only(min_alpha_word_fraction=0.5)) is None
    assert quality_reason(text, only(min_alpha_word_fraction=0.5 + 1e-9)) == "alpha_words"


@pytest.mark.parametrize("times, expected", [(10, None), (11, "top_2gram")])
def test_top_2gram(times, expected):
    words = with_repeats(["zzzz", "yyyy"], times, 100)  # 8 of 400 word characters per occurrence
    assert ref_top_2gram(words) == pytest.approx(0.02 * times)
    assert quality_reason(" ".join(words), DEFAULT) == expected


def test_top_2gram_takes_the_longest_of_tied_2grams():
    words = with_repeats(["zzzzzz", "yyyyyy"], 3, 50) + with_repeats(["zz", "yy"], 3, 50, skip=2000)
    counts = Counter(zip(words, words[1:]))
    assert counts[("zzzzzz", "yyyyyy")] == counts[("zz", "yy")] == max(counts.values()) == 3
    fraction = ref_top_2gram(words)
    assert fraction == 12 * 3 / sum(map(len, words))
    assert quality_reason(" ".join(words), only(max_top_2gram_fraction=fraction)) is None
    assert quality_reason(" ".join(words), only(max_top_2gram_fraction=fraction - 1e-9)) == "top_2gram"


@pytest.mark.parametrize("times, expected", [(3, None), (4, "duplicate_5gram")])
def test_duplicate_5gram(times, expected):
    words = with_repeats(distinct_words(5, 4, skip=5000), times, 100)
    assert ref_duplicate_5gram(words) == pytest.approx(0.05 * times)
    assert quality_reason(" ".join(words), DEFAULT) == expected


def test_duplicate_5gram_counts_each_word_once_and_every_occurrence():
    words = with_repeats(distinct_words(6, 4, skip=5000), 2, 100)  # two overlapping 5-grams, twice each
    assert ref_duplicate_5gram(words) == pytest.approx(12 * 4 / 400)
    assert quality_reason(" ".join(words), only(max_duplicate_5gram_fraction=0.12)) is None
    assert quality_reason(" ".join(words), only(max_duplicate_5gram_fraction=0.1199)) == "duplicate_5gram"


def random_repetitive_texts(n: int = 60) -> list[list[str]]:
    rng = random.Random(3)
    vocab = ["a", "bb", "ccc", "dddd", "e", "ffffff"]
    return [[rng.choice(vocab[:rng.randint(1, 6)]) for _ in range(rng.randint(2, 80))] for _ in range(n)]


def check_ngram_fractions_exact(texts: list[list[str]]) -> None:
    for words in texts:
        text = " ".join(words)
        top, dup = ref_top_2gram(words), ref_duplicate_5gram(words)
        assert quality_reason(text, only(max_top_2gram_fraction=top, max_duplicate_5gram_fraction=dup)) is None
        if top > 0:
            assert quality_reason(text, only(max_top_2gram_fraction=top - 1e-9)) == "top_2gram"
        if dup > 0:
            assert quality_reason(text, only(max_duplicate_5gram_fraction=dup - 1e-9)) == "duplicate_5gram"


def test_ngram_fractions_match_reference():
    texts = random_repetitive_texts() + [prose_words(300, seed) for seed in range(10)]
    assert sum(ref_duplicate_5gram(w) > 0 for w in texts) > 20  # the cases exercise repeats
    check_ngram_fractions_exact(texts)


def test_ngram_fractions_exact_despite_hash_collisions(monkeypatch):
    # With a zero multiplier an n-gram's hash is its last word's: collisions everywhere, results unchanged.
    monkeypatch.setattr(quality, "_MUL", np.uint64(0))
    monkeypatch.setattr(quality, "_MUL2", np.uint64(0))
    check_ngram_fractions_exact(random_repetitive_texts() + [prose_words(300, seed) for seed in range(5)])


def test_first_failing_filter_in_order_is_reported():
    assert quality_reason("• menu item\n" * 10, DEFAULT) == "min_words"
    lines = ["• " + line for line in as_lines(prose_words(200))]
    assert quality_reason("\n".join(lines + lines), DEFAULT) == "bullet_lines"  # also duplicate_lines
    words = with_repeats(["zzzz", "yyyy", "xxxx", "wwww", "vvvv"], 12, 100)  # top_2gram and duplicate_5gram
    assert quality_reason(" ".join(words), DEFAULT) == "top_2gram"


def test_caller_word_hashes_give_the_same_verdicts():
    """Prepare passes MinHash's crc32 word hashes in; any equal-words-equal-hashes function must agree."""
    from myllm.data.dedup import MinHasher

    rng = random.Random(11)
    words = [w for i in range(60) for w in (f"word{i}", f"Word{i}")]  # case variants: one crc32, two words
    verdicts = Counter()
    for _ in range(300):
        text = " ".join(rng.choice(words[: rng.choice([8, 120])]) for _ in range(rng.randint(50, 120)))
        if rng.random() < 0.5:
            text = text + " " + text[: rng.randint(10, len(text))]  # repeated n-grams
        if rng.random() < 0.2:
            text = "word1 Word2 " * rng.randint(5, 30) + text  # a dominant 2-gram
        cfg = QualityConfig()
        verdict = quality_reason(text, cfg)
        assert quality_reason(text, cfg, MinHasher.word_hashes(text)) == verdict
        verdicts[verdict] += 1
    assert {None, "top_2gram", "duplicate_5gram"} <= set(verdicts)  # the n-gram checks were exercised
