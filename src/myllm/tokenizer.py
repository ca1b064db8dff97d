"""Byte-level BPE with Hugging Face `tokenizers`: trained on the corpus, saved as `tokenizer.json`.

Why these choices:
- Byte-level (GPT-2 style, every one of the 256 bytes is in the base vocabulary): any Unicode
  string encodes, and `decode(encode(s)) == s` exactly, with no unknown token.
- Pre-tokenization is one regex (GPT-2's, with digits split one per token: a number's digits
  then always align the same way, which makes arithmetic learnable for a small model, as in
  Llama and nanochat), followed by the byte-level mapping. Because it is a single regex, the
  same vocabulary runs unchanged in `tiktoken`, which encodes ~2.5x faster than `tokenizers`
  on this CPU: `encode`/`encode_batch` (the shard writer's hot loop) use tiktoken and produce
  exactly the ids the HF file does (tested), while training and decoding use HF.
- The special tokens come first (ids 0..6), so `<|pad|>` is 0 and the chat tokens that
  post-training uses have the same ids in every vocabulary size.
- Special-token *strings* in user text are encoded as plain text (`encode_special_tokens`):
  a document or a chat message containing "<|assistant|>" cannot forge a control token. Code
  that builds a sequence (BOS per document, the chat template) inserts ids with `token_id()`.
- The file is the standard `tokenizer.json`, loadable by `tokenizers.Tokenizer.from_file` and by
  `transformers.PreTrainedTokenizerFast(tokenizer_file=...)`, so export copies it as is.
  `encode_special_tokens` is a runtime flag that the file does not store; `Tokenizer.load` sets it.

On a small corpus BPE runs out of pairs to merge and the vocabulary ends up smaller than
requested: `Tokenizer.vocab_size` is the true size, and the model's vocab_size must be >= it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from tokenizers import Regex, decoders, models, pre_tokenizers, trainers
from tokenizers import Tokenizer as HFTokenizer

from myllm.errors import MyLLMError
from myllm.io import atomic_write_text

SPECIAL_TOKENS = ["<|pad|>", "<|bos|>", "<|eos|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
MIN_VOCAB = 256 + len(SPECIAL_TOKENS)  # every byte plus the special tokens
MAX_VOCAB = 1 << 32  # shards store ids as uint16 or uint32
# GPT-2's pre-tokenizer pattern with `\p{N}+` replaced by `\p{N}`: one token per digit.
SPLIT_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet: the printable character that stands for each byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars)}


def _tiktoken_encoding(hf: HFTokenizer):
    """The same BPE as a tiktoken Encoding, or None if `hf` was not built with SPLIT_PATTERN.

    HF BPE gives merge i the id of its result, in training order, so the ids are tiktoken ranks.
    """
    spec = json.loads(hf.to_str())
    pre = spec.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", [])
    if len(steps) != 2 or steps[0].get("pattern", {}).get("Regex") != SPLIT_PATTERN:
        return None
    import tiktoken

    byte_of = _byte_decoder()
    special = {t: i for i, t in enumerate(SPECIAL_TOKENS)}
    ranks = {bytes(byte_of[c] for c in tok): i for tok, i in spec["model"]["vocab"].items() if tok not in special}
    return tiktoken.Encoding("myllm", pat_str=SPLIT_PATTERN, mergeable_ranks=ranks, special_tokens=special)


class Tokenizer:
    """A loaded tokenizer: plain-text encode, exact decode, and the special-token ids."""

    def __init__(self, hf: HFTokenizer, path: Path | None = None):
        got = [hf.token_to_id(t) for t in SPECIAL_TOKENS]
        if got != list(range(len(SPECIAL_TOKENS))):
            where = path or "this tokenizer"
            raise MyLLMError(
                f"{where} does not have MyLLM's special tokens {SPECIAL_TOKENS} at ids 0..6 (got {got}); "
                "train it with `myllm tokenizer`"
            )
        hf.encode_special_tokens = True
        self.hf, self.path = hf, path
        self.fast = _tiktoken_encoding(hf)
        self.pad_id, self.bos_id, self.eos_id = 0, 1, 2

    @classmethod
    def load(cls, path: str | Path) -> Tokenizer:
        """Load `tokenizer.json` (or a folder that holds one)."""
        path = Path(path)
        if path.is_dir():
            path = path / "tokenizer.json"
        if not path.is_file():
            raise MyLLMError(f"tokenizer {path} not found; run `myllm tokenizer` (or `myllm run`) first")
        try:
            hf = HFTokenizer.from_file(str(path))
        except Exception as e:  # the Rust side raises a plain Exception for a bad file
            raise MyLLMError(f"cannot read tokenizer {path} ({e}); delete it and run `myllm tokenizer` again") from None
        return cls(hf, path)

    def save(self, path: str | Path) -> None:
        """Write `tokenizer.json` atomically."""
        atomic_write_text(path, self.hf.to_str(pretty=True))

    def digest(self) -> str:
        """A fingerprint of the vocabulary and rules (not of the file's bytes): what shards record they came from."""
        return hashlib.sha256(self.hf.to_str().encode()).hexdigest()

    @property
    def vocab_size(self) -> int:
        return self.hf.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, without BOS/EOS; special-token strings are plain text."""
        if self.fast is not None:
            return self.fast.encode_ordinary(text)
        return self.hf.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str], threads: int = 0) -> list[list[int]]:
        """`encode` for many texts at once, in `threads` threads (0 = one per CPU core)."""
        if self.fast is not None:
            return self.fast.encode_ordinary_batch(list(texts), num_threads=threads or os.cpu_count() or 1)
        return [e.ids for e in self.hf.encode_batch_fast(list(texts), add_special_tokens=False)]

    def decode(self, ids: Iterable[int], skip_special: bool = False) -> str:
        """Text of `ids`. Special tokens appear as their strings unless `skip_special`."""
        ids = ids.tolist() if hasattr(ids, "tolist") else [int(i) for i in ids]
        return self.hf.decode(ids, skip_special_tokens=skip_special)

    def token_id(self, name: str) -> int:
        """Id of a token, e.g. `token_id("<|user|>")`; the short form `"user"` works for special tokens."""
        tok = name if name.startswith("<|") or f"<|{name}|>" not in SPECIAL_TOKENS else f"<|{name}|>"
        i = self.hf.token_to_id(tok)
        if i is None:
            raise MyLLMError(f"token {name!r} is not in the vocabulary; special tokens: {', '.join(SPECIAL_TOKENS)}")
        return i

    def id_to_token(self, token_id: int) -> str:
        """The vocabulary entry (byte-level form, e.g. 'Ġthe' for ' the')."""
        tok = self.hf.id_to_token(int(token_id))
        if tok is None:
            raise MyLLMError(f"token id {token_id} is outside the vocabulary (size {self.vocab_size})")
        return tok

    def __repr__(self) -> str:
        return f"Tokenizer(vocab_size={self.vocab_size}, path={self.path})"


def _batches(texts: Iterable[str], size: int = 1000) -> Iterator[list[str]]:
    batch: list[str] = []
    for t in texts:
        batch.append(t)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def train_tokenizer(texts: Iterable[str], vocab_size: int, path: str | Path) -> Tokenizer:
    """Train byte-level BPE on `texts` (streamed), save it to `path` atomically, return it.

    The result may have fewer than `vocab_size` entries when the texts are too small to
    support that many merges (merges need a pair seen at least twice).
    """
    if not MIN_VOCAB <= vocab_size <= MAX_VOCAB:
        raise MyLLMError(
            f"model.vocab_size = {vocab_size}: a byte-level tokenizer needs between {MIN_VOCAB} "
            f"(256 bytes + {len(SPECIAL_TOKENS)} special tokens) and {MAX_VOCAB}; pick e.g. 4096"
        )
    hf = HFTokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    seen = [0]  # characters trained on

    def counted() -> Iterator[list[str]]:
        for batch in _batches(texts):
            seen[0] += sum(map(len, batch))
            yield batch

    hf.train_from_iterator(counted(), trainer)
    if not seen[0]:  # bytes and special tokens only: every later number would be moot
        raise MyLLMError("no text to train the tokenizer on (the train split is empty); give the corpus more "
                         "documents, or lower data.val_fraction and data.test_fraction")
    tok = Tokenizer(hf, Path(path))
    tok.save(path)
    return tok
