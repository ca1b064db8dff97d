"""Exact and near-duplicate detection over a whole corpus: MinHash signatures and LSH banding.

Why: duplicated text is memorized instead of learned, wastes compute, and a training document
that near-copies a validation document makes the evaluation measure recall (Lee et al. 2022,
"Deduplicating Training Data Makes Language Models Better"). The method is the one used for
The Pile, RefinedWeb and FineWeb:

- A document is the set of its word 5-grams ("shingles", lower-cased, whitespace-split).
  Two documents are near-duplicates when the Jaccard similarity of their sets is >= threshold.
- A MinHash signature (num_perm minimums of random hash functions over the shingles) estimates
  Jaccard: the fraction of equal signature entries. Each document costs num_perm * 4 bytes, so
  the corpus-wide search runs over small numpy arrays, never over the text.
- LSH banding: the signature is cut into `bands` bands of `rows` entries; documents that agree on
  a whole band become candidates. With the default 32 bands x 4 rows a pair at Jaccard 0.8 is a
  candidate with probability 1 - (1 - 0.8^4)^32 > 0.9999999.
- Candidates are confirmed when their estimated Jaccard is >= threshold - 2 standard errors of
  the estimate at the threshold (0.729 for 0.8 and 128 permutations), so a true pair at the
  threshold is confirmed ~98% of the time; pairs far below it (distinct documents, Jaccard
  near 0) essentially never are.

Exact duplicates (same cleaned text) are grouped by a 64-bit hash of the text.
"""

from __future__ import annotations

import hashlib
import math
import zlib

import numpy as np

_SHIFT32 = np.uint64(32)
_SHINGLE_MULT = np.uint64(0x9E3779B97F4A7C15)  # odd 64-bit constant (golden ratio)
_BLOCK = 4096  # shingles hashed per block: bounds the (block x num_perm) temporary to a few MB


class MinHasher:
    """MinHash signatures of word shingles with `num_perm` hash functions h(x) = (a*x + b) mod 2^32.

    x is the top 32 bits of a 64-bit shingle hash (the well-mixed bits of a multiplicative hash);
    each odd `a` makes h a permutation of the 32-bit values. 32-bit arithmetic runs twice as fast
    as 64-bit in numpy, and the planted-duplicate bench (bench/data.py) checks that recall and
    precision hold with it.
    """

    def __init__(self, num_perm: int = 128, shingle_words: int = 5, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.a = (rng.integers(0, 2**32, num_perm, dtype=np.uint64) | np.uint64(1)).astype(np.uint32)
        self.b = rng.integers(0, 2**32, num_perm, dtype=np.uint64).astype(np.uint32)
        self.num_perm, self.shingle_words = num_perm, shingle_words

    @staticmethod
    def word_hashes(text: str) -> np.ndarray:
        """crc32 of each lower-cased, whitespace-separated word, as uint64 (stable across processes)."""
        return np.fromiter(map(zlib.crc32, text.lower().encode("utf-8").split()), dtype=np.uint64)

    def shingles(self, text: str, words: np.ndarray | None = None) -> np.ndarray:
        """32-bit hashes of the text's word k-grams (one shingle of all words if there are fewer than k);
        `words` may pass the text's `word_hashes` when the caller has them."""
        words = self.word_hashes(text) if words is None else words
        k = min(self.shingle_words, len(words))
        if k == 0:
            return words.astype(np.uint32)
        out = words[: len(words) - k + 1] * _SHINGLE_MULT
        with np.errstate(over="ignore"):
            for j in range(1, k):
                out = (out + words[j : len(words) - k + 1 + j]) * _SHINGLE_MULT
        return (out >> _SHIFT32).astype(np.uint32)

    def signature(self, text: str, words: np.ndarray | None = None) -> np.ndarray:
        """uint32[num_perm]; an empty text gets all 0xFFFFFFFF (equal only to other empty texts)."""
        sig = np.full(self.num_perm, 0xFFFFFFFF, dtype=np.uint32)
        shingles = self.shingles(text, words)
        with np.errstate(over="ignore"):
            for start in range(0, len(shingles), _BLOCK):  # a bounded (block x num_perm) temporary
                hashed = np.multiply.outer(shingles[start : start + _BLOCK], self.a)
                hashed += self.b
                np.minimum(sig, hashed.min(axis=0), out=sig)
        return sig


def text_key(text: str) -> int:
    """64-bit key of a cleaned text for exact dedup (blake2b, so equal keys mean equal texts in practice)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


def confirm_threshold(threshold: float, num_perm: int) -> float:
    """Estimated Jaccard at which an LSH candidate is confirmed: threshold - 2 standard errors."""
    return threshold - 2 * math.sqrt(threshold * (1 - threshold) / num_perm)


def _same_key_pairs(keys: np.ndarray) -> np.ndarray:
    """(i, j) pairs, i < j, linking each document to the first document with the same key."""
    order = np.argsort(keys, kind="stable")
    k = keys[order]
    starts = np.r_[True, k[1:] != k[:-1]]
    first = order[np.maximum.accumulate(np.where(starts, np.arange(len(k)), 0))]
    return np.stack([first[~starts], order[~starts]], axis=1)


def near_duplicate_pairs(signatures: np.ndarray, bands: int, threshold: float,
                         skip: np.ndarray | None = None) -> np.ndarray:
    """Confirmed near-duplicate pairs (i, j), i < j, among the rows of `signatures` (n x num_perm).

    Rows marked in `skip` take part in no pair. `signatures` may be a memmap: one band (n x rows
    values) and the candidate pairs' rows are read at a time, never the whole array.
    """
    n, num_perm = signatures.shape
    rows = num_perm // bands
    if n < 2:
        return np.empty((0, 2), dtype=np.int64)
    mult = np.random.default_rng(12345).integers(1, 2**63, rows, dtype=np.uint64) | np.uint64(1)
    found = []
    with np.errstate(over="ignore"):
        for band in range(bands):
            cols = np.asarray(signatures[:, band * rows : (band + 1) * rows], dtype=np.uint64)
            keys = (cols * mult).sum(axis=1)
            if skip is not None and skip.any():  # unique keys: a skipped row joins no bucket
                keys[skip] = np.iinfo(np.uint64).max - np.arange(int(skip.sum()), dtype=np.uint64)
            found.append(_same_key_pairs(keys))
    pairs = np.unique(np.concatenate(found), axis=0)
    keep = np.zeros(len(pairs), dtype=bool)
    cut = confirm_threshold(threshold, num_perm)
    for start in range(0, len(pairs), 65536):  # bounded memory: 64k pairs x num_perm at a time
        p = pairs[start : start + 65536]
        similarity = (np.asarray(signatures[p[:, 0]]) == np.asarray(signatures[p[:, 1]])).mean(axis=1)
        keep[start : start + 65536] = similarity >= cut
    return pairs[keep]


def exact_duplicate_pairs(keys: np.ndarray) -> np.ndarray:
    """(i, j) pairs of documents with equal text keys."""
    return _same_key_pairs(np.asarray(keys)) if len(keys) > 1 else np.empty((0, 2), dtype=np.int64)


KEEP, EXACT, NEAR, CONTAMINATED = 0, 1, 2, 3
REASONS = {EXACT: "exact_duplicate", NEAR: "near_duplicate", CONTAMINATED: "decontaminated"}


def _clusters(pairs: np.ndarray) -> dict[int, list[int]]:
    """Connected components (size >= 2) of the graph whose edges are `pairs`, members in order.
    Only documents that appear in a pair take memory."""
    parent = {int(i): int(i) for i in np.unique(pairs)}

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in pairs.tolist():
        ri, rj = root(i), root(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    groups: dict[int, list[int]] = {}
    for i in sorted(parent):
        groups.setdefault(root(i), []).append(i)
    return groups


def plan_drops(keys: np.ndarray, signatures: np.ndarray | None, held_out: np.ndarray, *, exact: bool, near: bool,
               decontaminate: bool, bands: int, threshold: float) -> np.ndarray:
    """For each document, KEEP or the reason it is dropped (EXACT, NEAR, CONTAMINATED).

    In each group of duplicates one document is kept: the first held-out (val/test) one if the
    group has any, else the first. Training documents in a group with a held-out document are
    CONTAMINATED (when `decontaminate`). A pass that is off (`exact` or `near` False) still finds its
    groups, but then only decontaminates: train keeps its own copies, held-out text still leaves it.
    """
    held_out = np.asarray(held_out, dtype=bool)
    reason = np.zeros(len(keys), dtype=np.int8)

    def resolve(pairs: np.ndarray, duplicate: int, dedupe: bool) -> None:
        for members in _clusters(pairs).values():
            tainted = decontaminate and any(held_out[m] for m in members)
            keeper = next((m for m in members if held_out[m]), members[0])
            for m in members:
                if m == keeper or reason[m] != KEEP:
                    continue
                if tainted and not held_out[m]:
                    reason[m] = CONTAMINATED
                elif dedupe:
                    reason[m] = duplicate

    if exact or decontaminate:
        resolve(exact_duplicate_pairs(keys), EXACT, exact)
    if (near or decontaminate) and signatures is not None:
        # Documents already dropped take no part; they stay in the (memory-mapped) array, uncopied.
        resolve(near_duplicate_pairs(signatures, bands, threshold, skip=reason != KEEP), NEAR, near)
    return reason
