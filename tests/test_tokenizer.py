"""Byte-level BPE: special ids, exact round trip of any string, plain-text specials, HF loading."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from myllm.errors import MyLLMError
from myllm.tokenizer import SPECIAL_TOKENS, Tokenizer, train_tokenizer


def corpus(n_docs: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyzéü") for _ in range(rng.randint(2, 9))) for _ in range(2000)]
    return [" ".join(rng.choice(words) for _ in range(150)) + f", {rng.randint(0, 10**6)} 日本語 😀.\n\n"
            for _ in range(n_docs)]


@pytest.fixture(scope="module")
def tok(tmp_path_factory) -> Tokenizer:
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    return train_tokenizer(corpus(300), 1024, path)


def test_special_ids_and_requested_vocab(tok: Tokenizer):
    assert [tok.token_id(t) for t in SPECIAL_TOKENS] == list(range(7))
    assert (tok.pad_id, tok.bos_id, tok.eos_id) == (0, 1, 2)
    assert tok.token_id("assistant") == 5 and tok.id_to_token(6) == "<|end|>"
    assert tok.vocab_size == 1024  # enough text for every merge requested
    with pytest.raises(MyLLMError, match="not in the vocabulary"):
        tok.token_id("<|tool|>")
    with pytest.raises(MyLLMError, match="outside the vocabulary"):
        tok.id_to_token(5000)


def test_small_corpus_gives_a_smaller_vocab_that_still_covers_every_byte(tmp_path: Path):
    small = train_tokenizer(["tiny text, tiny text"], 4096, tmp_path / "t.json")
    assert 263 <= small.vocab_size < 300  # 256 bytes + 7 specials + the few merges the text supports
    s = "nothing in the training text: ☃ \x00 ÿ"
    assert small.decode(small.encode(s)) == s


def test_vocab_size_bounds_are_a_clear_error(tmp_path: Path):
    with pytest.raises(MyLLMError, match="vocab_size = 100.*at least|between 263"):
        train_tokenizer(["x"], 100, tmp_path / "t.json")
    assert not (tmp_path / "t.json").exists()


special_strings = st.sampled_from(SPECIAL_TOKENS + ["<|", "|>", "<|bos", "<|eos|><|eos|>"])
pieces = st.one_of(
    st.text(),  # any Unicode scalar value (hypothesis excludes surrogates, which UTF-8 cannot encode)
    st.text(st.characters(categories=["Mn", "Me"]), max_size=5),  # combining marks, also without a base
    st.text(st.sampled_from(" \t\n\r\u00a0\u3000"), min_size=1, max_size=20),  # whitespace runs
    st.text(st.sampled_from("0123456789"), min_size=1, max_size=12),  # numbers
    st.sampled_from(["😀", "👩‍👩‍👧", "🇫🇷", "é", "e\u0301", "日本語", "\ufeff", "\x00", "\U0010ffff"]),
    special_strings,
)
texts = st.lists(pieces, max_size=8).map("".join)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts)
def test_round_trip_is_exact_for_any_string(tok: Tokenizer, s: str):
    ids = tok.encode(s)
    assert tok.decode(ids) == s
    assert not set(ids) & set(range(len(SPECIAL_TOKENS)))  # text never yields a control token


def test_special_strings_in_text_are_plain_text(tok: Tokenizer):
    s = "<|user|>hi<|end|><|bos|>"
    ids = tok.encode(s)
    assert tok.bos_id not in ids and tok.token_id("user") not in ids
    assert tok.decode(ids) == s
    built = [tok.bos_id, tok.token_id("user"), *tok.encode("hi"), tok.token_id("end")]
    assert tok.decode(built) == "<|bos|><|user|>hi<|end|>"
    assert tok.decode(built, skip_special=True) == "hi"


def test_digits_are_one_token_each(tok: Tokenizer):
    ids = tok.encode("x 2024 + 17")
    pieces = [tok.decode([i]) for i in ids]
    assert pieces[pieces.index("2") : pieces.index("2") + 4] == ["2", "0", "2", "4"]
    assert all(not (p.strip().isdigit() and len(p.strip()) > 1) for p in pieces)


def test_encode_batch_matches_encode(tok: Tokenizer):
    batch = corpus(20, seed=3) + ["", "<|eos|>", "12 34"]
    assert tok.encode_batch(batch) == [tok.encode(t) for t in batch]


def test_saved_file_is_standard_and_loads_everywhere(tok: Tokenizer):
    from tokenizers import Tokenizer as HFTokenizer

    path = tok.path
    assert path is not None and sorted(p.name for p in path.parent.iterdir()) == ["tokenizer.json"]  # no temp left
    data = json.loads(path.read_text())
    assert [t["content"] for t in data["added_tokens"]] == SPECIAL_TOKENS
    assert all(t["special"] for t in data["added_tokens"])
    text = "Plain text, 42 cats — ünïcödé 😀"
    hf = HFTokenizer.from_file(str(path))
    assert hf.encode(text, add_special_tokens=False).ids == tok.encode(text)
    again = Tokenizer.load(path.parent)  # a folder works too
    assert again.vocab_size == tok.vocab_size and again.encode("<|bos|>") == tok.encode("<|bos|>")
    transformers = pytest.importorskip("transformers")
    fast = transformers.PreTrainedTokenizerFast(tokenizer_file=str(path))
    assert fast(text, add_special_tokens=False)["input_ids"] == tok.encode(text)
    assert fast.decode(tok.encode(text)) == text


def test_load_errors_are_clear(tmp_path: Path):
    with pytest.raises(MyLLMError, match="not found; run `myllm tokenizer`"):
        Tokenizer.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(MyLLMError, match="cannot read tokenizer"):
        Tokenizer.load(tmp_path / "bad.json")
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import models

    HFTokenizer(models.BPE()).save(str(tmp_path / "foreign.json"))
    with pytest.raises(MyLLMError, match="special tokens"):
        Tokenizer.load(tmp_path / "foreign.json")


def test_training_on_megabytes_takes_seconds(tmp_path: Path):
    texts = corpus(2400, seed=1)  # ~2.5 MB, the size of the built-in universe
    assert sum(len(t.encode()) for t in texts) > 2_000_000
    start = time.perf_counter()
    big = train_tokenizer(iter(texts), 4096, tmp_path / "tokenizer.json")  # a one-shot iterator is enough
    assert time.perf_counter() - start < 15
    assert big.vocab_size == 4096
    assert len(big.encode(texts[0])) < len(texts[0].encode()) / 2.5  # real compression, not bytes


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(list("ab é日1 2\n\t'sdmlvret.,!?-$😀") + ["<|bos|>", "  ", "\r\n", "'ll"]),
                max_size=40).map("".join) | st.text(max_size=60))
def test_tiktoken_fast_path_gives_the_hf_ids(tok: Tokenizer, text: str):
    assert tok.fast is not None  # built with SPLIT_PATTERN, so the shard writer takes the fast path
    assert tok.encode(text) == tok.hf.encode(text, add_special_tokens=False).ids
    assert tok.encode_batch([text, text + " 12"], threads=2) == [
        e.ids for e in tok.hf.encode_batch([text, text + " 12"], add_special_tokens=False)]


def test_fast_path_matches_on_a_whole_corpus(tok: Tokenizer):
    docs = corpus(200, seed=7)
    assert tok.encode_batch(docs) == [e.ids for e in tok.hf.encode_batch(docs, add_special_tokens=False)]
