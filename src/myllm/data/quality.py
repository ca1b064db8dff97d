"""Document quality filters: cheap heuristics that drop boilerplate, lists, spam and gibberish.

Why: web and scraped corpora are full of text that is not prose (navigation menus, tag clouds,
keyword spam, tables of numbers, truncated previews). Gopher (Rae et al. 2021, appendix A) and
C4 (Raffel et al. 2020) showed that a handful of word/line statistics remove most of it at
almost no cost in good text; this module implements the Gopher quality and repetition rules
with thresholds from `QualityConfig`:

- min_words / max_words: too short to be a document, or implausibly long.
- mean_word_length outside [min, max]: symbol soup or run-together tokens.
- symbol_word_ratio: ('#' + '...' + '…') per word, i.e. hashtag spam and truncated teasers.
- ellipsis_lines: the fraction of non-empty lines ending in '...' or '…' (previews, link lists).
- bullet_lines: the fraction of non-empty lines starting with a bullet (menus, lists).
- duplicate_lines: the fraction of non-empty lines equal (after stripping) to an earlier line.
- alpha_words: the fraction of words with at least one letter (tables, code, numbers).
- top_2gram: characters covered by the most frequent word 2-gram (counted once per occurrence)
  over all word characters; a 2-gram that occurs only once is no repetition and counts 0.
- duplicate_5gram: characters of the words covered by word 5-grams that occur more than once
  (each word counted once, all occurrences included) over all word characters.

Words are `text.split()`; "word characters" are the characters of the words (no whitespace).
Checks run cheapest first, in the order above, and the first failing one is reported. With
`min_words = 0` an empty document has no words to measure and passes the ratio filters.

Speed: the n-gram checks dominate. Each word is hashed once (Python's cached str hash), n-gram
hashes are combined from those in numpy, and sorting them finds repeats; the exact words are
then compared only at the few positions the hashes point to, so results never depend on a hash.
"""

from __future__ import annotations

from collections import Counter
from itertools import filterfalse

import numpy as np

from myllm.config import QualityConfig

BULLETS = ("•", "‣", "◦", "⁃", "-", "*", "–")
ELLIPSES = ("...", "…")
_M = 0x9E3779B97F4A7C15  # an odd 64-bit multiplier that combines word hashes into n-gram hashes
_MUL, _MUL2 = np.uint64(_M), np.uint64(_M * _M % 2**64)


def _positions(hashes: np.ndarray, values: np.ndarray) -> list[int]:
    """Positions whose hash is one of `values` (sorted, non-empty); np.isin is slower on short arrays."""
    nearest = values[np.minimum(np.searchsorted(values, hashes), len(values) - 1)]
    return np.flatnonzero(nearest == hashes).tolist()


def _top_2gram_chars(words: list[str], hashes2: np.ndarray) -> int:
    """Characters in all occurrences of the most frequent 2-gram (the longest of tied ones); 0 if none repeats.

    2-gram hashes find the most frequent 2-gram(s); the exact 2-grams at their positions confirm
    the count. Only if a hash collision inflated it (in practice never) is every 2-gram counted.
    """
    ordered = np.sort(hashes2)
    bounds = np.flatnonzero(np.concatenate(([True], ordered[1:] != ordered[:-1], [True])))  # runs of equal hashes
    lengths = bounds[1:] - bounds[:-1]
    top = int(lengths.max())
    if top < 2:
        return 0
    exact = Counter((words[i], words[i + 1]) for i in _positions(hashes2, ordered[bounds[:-1][lengths == top]]))
    if max(exact.values()) < top:
        exact = Counter(zip(words, words[1:]))
        top = max(exact.values())
    return max(len(a) + len(b) for (a, b), c in exact.items() if c == top) * top if top > 1 else 0


def _duplicate_5gram_chars(words: list[str], hashes5: np.ndarray) -> int:
    """Characters of the words covered by any word 5-gram that occurs more than once.

    5-gram hashes flag the positions whose hash repeats (in prose, few or none); the exact 5-grams
    at those positions decide, so a hash collision costs time, never correctness.
    """
    ordered = np.sort(hashes5)
    repeated = ordered[1:][ordered[1:] == ordered[:-1]]
    if not repeated.size:
        return 0
    flagged = _positions(hashes5, repeated)
    grams = [tuple(words[i:i + 5]) for i in flagged]
    exact = Counter(grams)
    covered = {i + k for i, gram in zip(flagged, grams) if exact[gram] > 1 for k in range(5)}
    return sum(len(words[i]) for i in covered)


def quality_reason(text: str, cfg: QualityConfig, word_hashes: np.ndarray | None = None) -> str | None:
    """None if the document passes every filter, else the name of the first filter it fails.

    `word_hashes` may pass hashes the caller already has (MinHash's, of the lower-cased words): any
    hash works where equal words hash equal, because repeats are confirmed on the words themselves.
    They are used only if they line up with `text.split()` (one per word).
    """
    if not cfg.enabled:
        return None
    words = text.split()
    n_words = len(words)
    if n_words < cfg.min_words:
        return "min_words"
    if n_words > cfg.max_words:
        return "max_words"
    if n_words == 0:
        return None
    n_chars = len("".join(words))
    if not cfg.min_mean_word_length <= n_chars / n_words <= cfg.max_mean_word_length:
        return "mean_word_length"
    n_symbols = text.count("#") + text.count("...") + text.count("…")
    if n_symbols / n_words > cfg.max_symbol_word_ratio:
        return "symbol_word_ratio"

    lines = list(filter(None, map(str.strip, text.splitlines())))  # non-empty (there is a word)
    n_lines = len(lines)
    if sum(1 for line in lines if line.endswith(ELLIPSES)) / n_lines > cfg.max_ellipsis_line_fraction:
        return "ellipsis_lines"
    if sum(1 for line in lines if line.startswith(BULLETS)) / n_lines > cfg.max_bullet_line_fraction:
        return "bullet_lines"
    if (n_lines - len(set(lines))) / n_lines > cfg.max_duplicate_line_fraction:
        return "duplicate_lines"

    # A letter is what str.isalpha says; most words are all letters, which str.isalpha decides in C,
    # and only if the others could make the document fail are they searched for a letter.
    not_all_letters = list(filterfalse(str.isalpha, words))
    if 1 - len(not_all_letters) / n_words < cfg.min_alpha_word_fraction:
        no_letter = sum(1 for word in not_all_letters if not any(map(str.isalpha, word)))
        if 1 - no_letter / n_words < cfg.min_alpha_word_fraction:
            return "alpha_words"
    if n_words < 2:
        return None
    # 64-bit n-gram hashes from word hashes (arithmetic wraps around modulo 2**64); exact checks follow.
    if word_hashes is None or len(word_hashes) != n_words:
        word_hashes = np.fromiter(map(hash, words), dtype=np.int64, count=n_words).view(np.uint64)
    hashes2 = word_hashes[:-1] * _MUL + word_hashes[1:]
    if _top_2gram_chars(words, hashes2) / n_chars > cfg.max_top_2gram_fraction:
        return "top_2gram"
    if n_words >= 6:
        hashes4 = hashes2[:-2] * _MUL2 + hashes2[2:]
        hashes5 = hashes4[:-1] * _MUL + word_hashes[4:]
        if _duplicate_5gram_chars(words, hashes5) / n_chars > cfg.max_duplicate_5gram_fraction:
            return "duplicate_5gram"
    return None
