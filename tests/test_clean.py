"""Cleaning rules: each on and off, counts, hard negatives, the running-head example, idempotence."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from myllm.config import CleanConfig
from myllm.data.clean import clean_text

RULES = ["fix_encoding", "unicode_nfc", "normalize_punctuation", "normalize_whitespace", "strip_control",
         "remove_page_numbers", "remove_headers_footers"]
HEAD = "THE CAT SAT ON THE MAT"


def only(*rules: str, **kw) -> CleanConfig:
    return CleanConfig(**{r: r in rules for r in RULES}, **kw)


def key(rule: str) -> str:
    return rule.removeprefix("remove_")


def seed_pages(n: int = 6) -> str:
    return "".join(f"Chapter 1\n{HEAD}\n\nPage {p}\n\nThe cat sat on the mat.\n" for p in range(3, 3 + n))


def test_defaults_are_all_on():
    cfg = CleanConfig()
    assert all(getattr(cfg, r) for r in RULES)
    assert cfg.header_min_repeats == 3


# rule, input, output with only that rule on, its count, a piece of the input that survives with the rule off
CASES = [
    ("fix_encoding", "Ã©tÃ© Ã  Paris", "été à Paris", 1, "Ã©tÃ©"),
    ("unicode_nfc", "cafe\u0301", "café", 1, "e\u0301"),
    ("normalize_punctuation", "\u201cHi\u201d \u2018x\u2019 a\u2013b \u2212 3\u20104 \u2015 \u00abok\u00bb \u2026",
     "\"Hi\" 'x' a-b - 3-4 \u2014 \u00abok\u00bb \u2026", 1, "\u201cHi\u201d"),
    ("normalize_whitespace", "\n\na\u00a0b\u200bc  d\u3000e \n\n\n\nf\t\n\n", "a bc d e\n\nf", 1, "a\u00a0b"),
    ("strip_control", "a\x00b\x1b[0mc\x9bd\te\vf", "ab[0mcd\te\nf", 1, "a\x00b"),
    ("remove_page_numbers", "Text one.\n\nPage 3\n\nText two.", "Text one.\n\n\nText two.", 1, "Page 3"),
    ("remove_headers_footers", seed_pages(), None, 10, f"mat.\nChapter 1\n{HEAD}"),
]


@pytest.mark.parametrize("rule,text,expected,count,survivor", CASES, ids=[c[0] for c in CASES])
def test_each_rule_on_and_off(rule, text, expected, count, survivor):
    out, counts = clean_text(text, only(rule))
    if expected is not None:
        assert out == expected
    assert counts == {key(rule): count}
    off, counts_off = clean_text(text, CleanConfig(**{rule: False}))
    assert survivor in off and key(rule) not in counts_off


def test_all_rules_off_changes_nothing_but_newlines_and_surrogates():
    text = "Ã©tÃ©\u201c\u00a0x\x00\fPage 3\r\nline\rend \ud800  \n\n\n"
    out, counts = clean_text(text, only())
    assert out == "Ã©tÃ©\u201c\u00a0x\x00\fPage 3\nline\nend \ufffd  \n\n\n" and counts == {}


def test_clean_text_is_untouched_and_counts_nothing():
    text = "A plain paragraph with café, naïve Zürich and Ça va.\n\n    indented code line\n\nThe end - really."
    assert clean_text(text, CleanConfig()) == (text, {})


def test_mojibake_quotes_and_c1_controls():
    assert clean_text("\u00e2\u20ac\u0153quoted\u00e2\u20ac\x9d", only("fix_encoding"))[0] == "\u201cquoted\u201d"
    assert clean_text("\u00e2\u20ac\u0153quoted\u00e2\u20ac\x9d", CleanConfig())[0] == '"quoted"'
    assert clean_text("The \x93smart\x94 one", CleanConfig())[0] == 'The "smart" one'  # cp1252 read as Latin-1
    assert clean_text("ok\n\nÃ©tÃ©\nfine", CleanConfig()) == ("ok\n\nété\nfine", {"fix_encoding": 1})


def test_whitespace_keeps_indentation_tabs_and_paragraphs():
    text = "def f():\n    return  1   \n\tx\ty\n\n\n\n\nNext  paragraph.\u2029After"
    expected = "def f():\n    return 1\n\tx\ty\n\nNext paragraph.\n\nAfter"
    assert clean_text(text, only("normalize_whitespace")) == (expected, {"normalize_whitespace": 1})


def test_form_feed_and_vertical_tab_become_newlines():
    assert clean_text("one\ftwo\vthree", only("strip_control")) == ("one\ntwo\nthree", {"strip_control": 1})


@pytest.mark.parametrize("number", ["Page 3", "page 3 of 10", "PAGE 7", "- 3 -", "\u2014 12 \u2014", "[3]",
                                    "3 / 10", "p. 3", "Page iv", "pg 12"])
def test_explicit_page_numbers_go(number):
    out, counts = clean_text(f"Alpha text.\n{number}\nBeta text.", CleanConfig())
    assert out == "Alpha text.\nBeta text." and counts == {"page_numbers": 1}


@pytest.mark.parametrize("number", ["3", "42", "xii", "iv"])
def test_bare_page_numbers_go_when_alone_and_repeated(number):
    text = f"Alpha text.\n\n{number}\n\nBeta text.\n\n{number}\n\fGamma."
    assert clean_text(text, CleanConfig()) == ("Alpha text.\n\nBeta text.\n\nGamma.",
                                               {"page_numbers": 2, "strip_control": 1, "normalize_whitespace": 1})


@pytest.mark.parametrize("text", [
    "I bought 3 apples.\n3 apples\nIn 1984 we moved.",  # numbers inside prose
    "Steps:\n\n1. Preheat the oven\n2. Mix\n3. Bake",  # a numbered list
    "Chapter One\n\n1984\n\nIt was cold.",  # one lone year: a heading, not a page number
    "Scores:\n12\n15\n17\n\nDone.",  # a column of numbers
    "Roman numerals:\nI\nII\nIII\n\nx marks the spot.",
])
def test_numbers_in_text_stay(text):
    assert clean_text(text, CleanConfig()) == (text, {})


def test_seed_running_heads_and_page_numbers():
    out, counts = clean_text(seed_pages(6), CleanConfig())
    body = "\n\n".join(["The cat sat on the mat."] * 6)
    assert out == f"Chapter 1\n{HEAD}\n\n{body}"  # the first page's head is kept once, as the title
    assert counts == {"page_numbers": 6, "headers_footers": 10, "normalize_whitespace": 1}


def test_form_feed_pages_with_heads_and_footers():
    pages = [f"{HEAD}\nBody of page {p} starts here,\nand goes on.\n\nACME Corp confidential\n\n{p}\n"
             for p in range(5)]
    out, counts = clean_text("\f".join(pages), CleanConfig())
    assert out.count(HEAD) == 1 and "ACME" not in out and "\n4\n" not in out
    assert out.count("and goes on.") == 5 and "\n\n\n" not in out
    assert counts["headers_footers"] == 4 + 5 and counts["page_numbers"] == 5


def test_repeated_dialogue_and_scene_breaks_stay():
    dialogue = "\n".join(['"Will you come?"', "Yes.", '"Now?"', "Yes.", '"Really?"', "Yes."] * 3)
    assert clean_text(dialogue, CleanConfig()) == (dialogue, {})
    paged = "\f".join(f"Yes.\n* * *\nText of page {p} here.\n* * *\nYes." for p in range(5))
    assert clean_text(paged, CleanConfig())[0] == paged.replace("\f", "\n")


def test_running_heads_need_min_repeats_pages():
    text = "\f".join(f"{HEAD}\nBody of page {p}.\n" for p in range(3))
    assert clean_text(text, CleanConfig(header_min_repeats=4))[0].count(HEAD) == 3
    out, counts = clean_text(text, CleanConfig(header_min_repeats=3))
    assert out.count(HEAD) == 1 and counts["headers_footers"] == 2


LINES = ["", " ", "3", "12", "xii", "Page 4", "- 5 -", HEAD, "Chapter 1", "Yes.", "* * *", "The cat sat on the mat.",
         "  indented  text  ", "\f", "\fPage 9", "Ã©tÃ©", "â€œhiâ€\x9d", "a\u00a0b\u200bc", "\u201cq\u201d\u2013",
         "e\u0301", "A\u0303\u00a9", "Ã\x00©", "x\x00\x1b\t", "\r", "\u2028", "\ud800"]
configs = st.builds(CleanConfig, **{r: st.booleans() for r in RULES}, header_min_repeats=st.integers(2, 4))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(LINES), max_size=40), configs)
def test_idempotent_on_page_like_documents(lines, cfg):
    once = clean_text("\n".join(lines), cfg)[0]
    assert clean_text(once, cfg) == (once, {})


@settings(max_examples=300, deadline=None)
@given(st.text(st.characters(exclude_categories=()), max_size=200) | st.text("ab1 .\n\t\f\r\x00\x9dÃ©â€œ\u0303\xa0"),
       configs)
def test_idempotent_on_any_text(text, cfg):
    once = clean_text(text, cfg)[0]
    assert clean_text(once, cfg) == (once, {})
