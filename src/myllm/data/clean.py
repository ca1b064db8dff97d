"""Rule-based cleaning of one document: `clean_text(text, cfg)` -> (clean text, {rule: count}).

Each rule repairs one kind of damage found in real text collections; each can be switched off in
`CleanConfig`. Why they exist:

- fix_encoding: text decoded with the wrong codec ("Ã©tÃ©" for "été", "â€œ" for a curly quote) teaches
  the model garbage spellings. ftfy repairs it at ~1 MB/s, so it only sees lines with a mojibake
  signature: a UTF-8 lead byte read as Latin-1/cp1252 followed by as many continuation bytes as it
  announces, U+FFFD, or a C1 control (cp1252 smart quotes read as Latin-1). "café", "Ça va" have none.
- strip_control: NUL, escape codes and C1 controls are invisible noise. Tab and newline stay; vertical
  tab and form feed become newlines (a form feed first marks a page break for the line rules).
- normalize_whitespace: odd Unicode spaces -> " "; zero-width space, word joiner, BOM and soft hyphen
  go (ZWJ/ZWNJ stay: they are spelling in Persian and Indic scripts and join emoji); per line, trailing
  blanks go and inner runs of spaces become one, leading indentation stays (code, poetry); 3+ newlines
  become 2, so paragraph breaks survive; blank lines at the start and end go.
- normalize_punctuation: curly/low-9 quotes and primes -> ' and ", hyphen/minus variants and the en
  dash -> "-", the horizontal bar -> the em dash; guillemets and the ellipsis stay. One form per mark,
  so no vocabulary goes to typographic variants.
- unicode_nfc: composed and decomposed accents become the same code points (after every rule that
  deletes characters, so no deletion leaves a composable pair behind).
- page_numbers: PDF and OCR text is interrupted by page furniture. A line that is only "Page 3",
  "page 3 of 10", "p. iv", "3 / 10", "- 3 -", "— 12 —" or "[3]" goes. A bare "3" or "xii" might be a
  heading or a table cell: it goes only if it stands alone (blank line, page break or document edge on
  both sides) and the document has at least two such lines; a lone "1984" or a column of numbers stays.
- headers_footers: running heads. Pages are the runs of lines between form feeds and page-number lines;
  with fewer than `header_min_repeats` pages nothing goes, so repeated dialogue in unpaged text is safe.
  A running head is a line among the first or last two non-blank lines of at least `header_min_repeats`
  pages (not counting heads already found), of at most 80 characters, with a letter, not ending like a
  sentence (. ! ? …): repeated body text and "* * *" stay. At the top of the first page it is the
  document's title and is kept once.

Dropping a line can expose another (a head removed leaves a number between blank lines), so the line
rules repeat until nothing changes; with the rule order this makes cleaning idempotent.
Speed: one regex scan finds every character the character rules act on, and only rules with work to do
run; str.replace is many times faster than str.translate on mostly-ASCII text.
"""

from __future__ import annotations

import re
import unicodedata
from collections import defaultdict
from collections.abc import Iterable

import ftfy

from myllm.config import CleanConfig

_CONTROL_MAP = {chr(c): "" for c in [*range(0x00, 0x09), *range(0x0E, 0x20), *range(0x7F, 0xA0)]} | {"\v": "\n"}
_SPACE_MAP = (
    dict.fromkeys(["\u00a0", "\u1680", *map(chr, range(0x2000, 0x200B)), "\u202f", "\u205f", "\u3000"], " ")
    | dict.fromkeys("\u200b\u2060\ufeff\u00ad", "")  # zero-width space, word joiner, BOM, soft hyphen
    | {"\u2028": "\n", "\u2029": "\n\n"}  # line and paragraph separators
)
_PUNCTUATION_MAP = (
    dict.fromkeys("\u2018\u2019\u201a\u201b\u2032\u2035", "'")  # ‘ ’ ‚ ‛ ′ ‵
    | dict.fromkeys("\u201c\u201d\u201e\u201f\u2033\u2036", '"')  # “ ” „ ‟ ″ ‶
    | dict.fromkeys("\u2010\u2011\u2012\u2013\u2212", "-")  # hyphen, non-breaking hyphen, figure dash, en dash, minus
    | {"\u2015": "\u2014"}  # horizontal bar -> em dash
)
# Mojibake: a UTF-8 lead byte seen as Latin-1 (Â..ß, à..ï, ð..ô) followed by as many continuation bytes as it
# announces, each seen as Latin-1 (U+0080-U+00BF) or as cp1252 (€ ‚ ƒ „ … † ‡ ˆ ‰ Š ‹ Œ Ž ‘ ’ “ ” • – — ˜ ™ š › œ ž Ÿ).
_CONT = "[\u0080-\u00bf€‚ƒ„…†‡ˆ‰Š‹ŒŽ‘’“”•–—˜™š›œžŸ]"
_MOJIBAKE = re.compile(  # starts with one character class, so the regex engine skips ahead fast
    f"[\u00c2-\u00f4\ufffd\u0080-\u009f](?:(?<=[\u00c2-\u00df]){_CONT}|(?<=[\u00e0-\u00ef]){_CONT}{{2}}"
    f"|(?<=[\u00f0-\u00f4]){_CONT}{{3}}|(?<=[\ufffd\u0080-\u009f]))"
)
_MOJIBAKE_START = frozenset(map(chr, [*range(0xC2, 0xF5), 0xFFFD, *range(0x80, 0xA0)]))
_LINE_BREAKS = "\n\f\v\u2028\u2029"  # what ends a line now or after a later rule
_LINE_BREAK = re.compile(f"[{_LINE_BREAKS}]")
_SURROGATES = re.compile("[\ud800-\udfff]")  # from JSON escapes like "\ud800"; cannot be written as UTF-8
_SPECIAL = re.compile(  # every character some character rule acts on
    "[" + re.escape("".join(sorted({*_CONTROL_MAP, *_SPACE_MAP, *_PUNCTUATION_MAP, *_MOJIBAKE_START})))
    + "\ud800-\udfff]"
)

_SP = r"[^\S\n]*"
_NUM = r"[0-9]{1,4}"
_ROMAN = r"(?=[ivx])x{0,3}(?:ix|iv|v?i{0,3})"  # i .. xxxix: front-matter page numbers
_DASH = "[-\u2010-\u2015\u2212]"
_PAGE_NUMBER = re.compile(  # fullmatch against one line
    rf"{_SP}(?:(?P<strong>(?i:page|pg\.?|p\.){_SP}(?:{_NUM}|(?i:{_ROMAN}))(?:{_SP}(?i:of|/){_SP}{_NUM})?"
    rf"|{_NUM}{_SP}(?i:of|/){_SP}{_NUM}|{_DASH}{_SP}(?:{_NUM}|{_ROMAN}){_SP}{_DASH}|\[{_SP}{_NUM}{_SP}\])"
    rf"|{_NUM}|{_ROMAN}){_SP}"  # a bare number: only with more evidence, see _page_numbers
)
_PAGE_NUMBER_LINE = re.compile(rf"\n{_PAGE_NUMBER.pattern}(?=\n|\Z)")  # after the first line; "\n" scans fast
_EDGE = 2  # running heads are among the first or last this many non-blank lines of a page
_LETTER = re.compile(r"[^\W\d_]")
_SENTENCE_END = re.compile(r"""[.!?…]["'”’)\]]*$""")
_SPACES = re.compile(" {2,}")
_BLANK_LINES = re.compile(r"\n{3,}")


def clean_text(text: str, cfg: CleanConfig) -> tuple[str, dict[str, int]]:
    """Apply the cleaning rules enabled in cfg; return the cleaned text and what changed.

    Counts: lines removed for "page_numbers" and "headers_footers", 1 for any other rule that changed
    the document; rules that changed nothing are absent. Newlines always become "\\n" and lone
    surrogates U+FFFD, whatever the config.
    """
    counts: dict[str, int] = {}
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _character_rules(text, cfg, counts)
    for _ in range(5):  # usually one round; another only after lines were dropped or page breaks went
        text, changed = _line_rules(text, cfg, counts)
        if cfg.strip_control and "\f" in text:
            text, changed, counts["strip_control"] = text.replace("\f", "\n"), True, 1
        if not changed:
            break
    if cfg.normalize_whitespace:
        new = _BLANK_LINES.sub("\n\n", text) if "\n\n\n" in text else text
        text = _note(counts, "normalize_whitespace", text, new.strip("\n"))
    return text, counts


def _note(counts: dict[str, int], rule: str, old: str, new: str) -> str:
    if new != old:
        counts[rule] = 1
    return new


def _replace(text: str, present: set[str], table: dict[str, str]) -> str:
    for ch in [c for c in present if c in table]:
        text = text.replace(ch, table[ch])
    return text


def _character_rules(text: str, cfg: CleanConfig, counts: dict[str, int]) -> str:
    present = set(_SPECIAL.findall(text))
    if any("\ud800" <= c <= "\udfff" for c in present):
        text = _SURROGATES.sub("\ufffd", text)
        present = set(_SPECIAL.findall(text))
    for _ in range(5):  # usually once; again only if the rules after ftfy changed a line it may now fix
        if cfg.fix_encoding and not present.isdisjoint(_MOJIBAKE_START):
            fixed = _fix_encoding(text)
            if fixed != text:
                text, present, counts["fix_encoding"] = fixed, set(_SPECIAL.findall(fixed)), 1
        start, composed = text, False
        if cfg.strip_control:
            text = _note(counts, "strip_control", text, _replace(text, present, _CONTROL_MAP))
        if cfg.normalize_whitespace:
            text = _note(counts, "normalize_whitespace", text, _tidy_lines(_replace(text, present, _SPACE_MAP)))
        if cfg.normalize_punctuation:
            text = _note(counts, "normalize_punctuation", text, _replace(text, present, _PUNCTUATION_MAP))
        if cfg.unicode_nfc and not text.isascii():
            nfc = unicodedata.normalize("NFC", text)
            composed = nfc != text
            text = _note(counts, "unicode_nfc", text, nfc)
        # Mojibake needs a lead character: one present before, or one NFC just composed ("A\u0303" -> "Ã").
        if text == start or not cfg.fix_encoding or (present.isdisjoint(_MOJIBAKE_START) and not composed):
            break
        if not _MOJIBAKE.search(text):  # the rules after ftfy left no signature for it to look at again
            break
        present = set(_SPECIAL.findall(text))
    return text


def _fix_encoding(text: str) -> str:
    """ftfy on just the lines with a mojibake signature; it repeats its own fixes until they change nothing."""
    parts, done = [], 0
    for m in _MOJIBAKE.finditer(text):
        if m.start() < done:
            continue  # in a line fixed already
        start = max(text.rfind(c, done, m.start()) for c in _LINE_BREAKS) + 1
        end = _LINE_BREAK.search(text, m.end())
        end = end.start() if end else len(text)
        parts += [text[done:start], ftfy.fix_encoding(text[start:end])]
        done = end
    return "".join(parts) + text[done:] if parts else text


def _tidy_lines(text: str) -> str:
    """Per line (form feeds end lines too): no trailing spaces or tabs, inner runs of spaces -> one."""
    feed = "\f" in text
    if not ("\t" in text or "\n " in text or (feed and "\f " in text) or text.startswith(" ")):
        while "  " in text:  # no tabs, no indentation: every run of spaces is inside or at the end of a line
            text = text.replace("  ", " ")
        text = text.replace(" \n", "\n").removesuffix(" ")
        return text.replace(" \f", "\f") if feed else text
    pages = []
    for page in text.split("\f"):
        lines = page.split("\n")
        for i, line in enumerate(lines):
            if "  " in line or line.endswith((" ", "\t")):
                body = line.strip(" \t")
                indent = line[: len(line) - len(line.lstrip(" \t"))] if body else ""
                lines[i] = indent + _SPACES.sub(" ", body)
        pages.append("\n".join(lines))
    return "\f".join(pages)


def _line_rules(text: str, cfg: CleanConfig, counts: dict[str, int]) -> tuple[str, bool]:
    """Drop page-number lines and running heads; say whether any line was dropped."""
    if not (cfg.remove_page_numbers or cfg.remove_headers_footers):
        return text, False
    first_line = text[:41].partition("\n")[0]
    if "\f" not in text and not (_PAGE_NUMBER.fullmatch(first_line) or _PAGE_NUMBER_LINE.search(text)):
        return text, False  # no page structure: the common case costs one regex scan
    lines = text.replace("\f", "\n\f\n").split("\n")  # each page break is a line of its own: "\f"
    numbers = _page_numbers(lines)
    heads = _running_heads(lines, numbers, cfg.header_min_repeats) if cfg.remove_headers_footers else set()
    drop = heads | (numbers if cfg.remove_page_numbers else set())
    if not drop:
        return text, False
    for rule, found in (("page_numbers", drop - heads), ("headers_footers", heads)):
        if found:
            counts[rule] = counts.get(rule, 0) + len(found)
    pages, page = [], []
    for i, line in enumerate(lines):
        if line == "\f":
            pages.append("\n".join(page))
            page = []
        elif i not in drop:
            page.append(line)
    pages.append("\n".join(page))
    return "\f".join(pages), True


def _page_numbers(lines: list[str]) -> set[int]:
    """Indices of page-number lines: explicit ones always, bare numbers only alone and at least twice."""
    explicit, bare = set(), []
    last = len(lines) - 1
    for i, line in enumerate(lines):
        m = len(line) <= 40 and _PAGE_NUMBER.fullmatch(line)  # page-number lines are short
        if not m:
            continue
        if m["strong"]:
            explicit.add(i)
        elif (i == 0 or not lines[i - 1].strip()) and (i == last or not lines[i + 1].strip()):
            bare.append(i)  # "\f".strip() == "": a page break isolates a line like a blank one
    return explicit | set(bare) if len(bare) >= 2 else explicit


def _running_heads(lines: list[str], numbers: set[int], min_repeats: int) -> set[int]:
    """Indices of running-head lines: short non-sentences at the edges of at least min_repeats pages."""
    pages, page = [], []
    for i, line in enumerate(lines):
        if line == "\f" or i in numbers:
            pages.append(page)
            page = []
        elif line.strip():
            page.append(i)
    pages = [p for p in [*pages, page] if p]
    if len(pages) < min_repeats:
        return set()
    keys: dict[int, str | None] = {}

    def key(i: int) -> str | None:  # the line's text if it could be a running head
        if i not in keys:
            k = lines[i].strip()
            keys[i] = k if len(k) <= 80 and _LETTER.search(k) and not _SENTENCE_END.search(k) else None
        return keys[i]

    def edge(run: Iterable[int]) -> list[int]:  # from one end of a page through its _EDGE-th line that is no head
        out, plain = [], 0
        for i in run:
            if plain == _EDGE:
                break
            out.append(i)
            plain += key(i) not in heads
        return out

    heads: set[str | None] = set()
    while True:  # a head found makes the line after it an edge line: look again until nothing is new
        found_on = defaultdict(set)  # candidate -> pages that have it at an edge
        for p, page in enumerate(pages):
            for i in edge(page) + edge(reversed(page)):
                found_on[key(i)].add(p)
        new = {k for k, ps in found_on.items() if k and len(ps) >= min_repeats} - heads
        if not new:
            break
        heads |= new
    title = set(edge(pages[0]))  # the top of the first page is the document's title: kept
    return {i for p in pages for i in edge(p) + edge(reversed(p)) if key(i) in heads and i not in title}
