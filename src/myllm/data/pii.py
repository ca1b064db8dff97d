"""PII redaction: e-mail addresses, phone numbers, IP addresses and card numbers -> typed placeholders.

Why: web and document corpora carry personal contact data that a language model can memorise
and regurgitate. Like the BigScience ROOTS (Laurencon et al. 2022) and Dolma (Soldaini et al.
2024) pipelines we replace what regular expressions find reliably by a typed placeholder
(`<EMAIL>`, ...), which keeps the sentence shape ("write to <EMAIL>.") without the data.

Precision matters as much as recall: a redactor that eats dates, prices, years, version strings
and ISBNs damages far more text than it protects. Hence the decisions below:

- e-mail: `local@domain.tld` with a letters-only TLD of 2+ characters. `user@localhost` (no TLD)
  and `@handles` (no local part) are left alone: neither is a routable personal address.
- card: 13-19 digits, contiguous or grouped 4-4-4-4(-1..3) / 4-6-5 / 4-6-4 with one separator
  (space or hyphen), starting with a major-network digit 2-6, and passing the Luhn check. Plain
  13-digit millisecond timestamps (start with 1) and ISBN-13s (start with 97) are thus never cards.
- ip: IPv4 with octets 0-255 that is not part of a longer dotted number and not preceded by a
  version word ("v1.2.3.4", "version 1.2.3.4" stay). IPv6 is validated by `ipaddress`; a
  compressed form needs three groups or a group of 3+ hex digits (or is `::1`), so Python
  slices (`a[1::2]`), C++ scopes, times (12:30:45) and MAC addresses are not IPs.
- phone: only *formatted* numbers with 9-15 digits: international (+44 20 7946 0958), North
  American ((202) 555-0143, 202-555-0143, 202.555.0143, 1-800-555-0199) and European national
  forms with a trunk 0 (020 7946 0958, 01 23 45 67 89, 030-1234567). A bare 10-digit run such
  as 2025550143 is an ID as often as a phone and is not redacted; nor are 7-digit local numbers.

Passes run in the order e-mail, IPv6, IPv4, card, phone (cards before phones, so a card is never
half-redacted as a phone); placeholders contain no digit, ":" or "@", so no pass re-matches one.
Speed (ordinary prose: over 100 MB/s on one core): e-mails are searched from their "@" only,
IPv6 only after a cheap ":x:" gate, and IPv4/card/phone patterns only inside the rare digit
clusters that could hold one, so the whole text is scanned by a few fast character-class regexes.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable

from myllm.config import CleanConfig

PLACEHOLDERS = {"email": "<EMAIL>", "phone": "<PHONE>", "ip": "<IP_ADDRESS>", "card": "<CREDIT_CARD>"}

# E-mail: found from its "@" (a literal prefix the regex engine jumps to), then the local part
# is matched backwards from there (at most 64 characters, the RFC 5321 limit).
_EMAIL_DOMAIN = re.compile(r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}(?![\w-])")
_EMAIL_LOCAL = re.compile(r"(?<![\w.%+-])[\w%+-]+(?:\.[\w%+-]+)*\Z")  # no leading, trailing or double dot
_IPV6_GATE = re.compile(r":[0-9A-Fa-f]{0,4}:")
_IPV6 = re.compile(
    r"[0-9A-Fa-f:](?<![\w:.].)(?=(?<=:)[0-9A-Fa-f]{0,4}:|[0-9A-Fa-f]{0,3}:[0-9A-Fa-f]{0,4}:)"  # 2 colons early
    r"[0-9A-Fa-f:]{2,38}(?:\d{1,3}(?:\.\d{1,3}){3})?(?![\w:]|\.\w)"  # optional IPv4 tail (::ffff:1.2.3.4)
)
# IPv4, cards and phones are 4+ digits joined by at most 3 of " ().+-" at a time, so each lies inside
# one such maximal run ("cluster"); the passes below run on clusters only, never on the whole text.
_CLUSTER = re.compile(r"[0-9(+](?:[ ().+-]{0,3}[0-9]){3,}\)?")
_IPV4 = re.compile(r"(?<![\w.])\d{1,3}(?:\.\d{1,3}){3}(?!\w|\.\d)")  # octets <= 255: checked after
_CARD = re.compile(
    r"(?<![\w.,+-])[2-6](?:\d{12,18}"
    r"|\d{3}([ -])\d{4}\1\d{4}\1\d{4}(?:\1\d{1,3})?"  # 4-4-4-4, optionally a 5th group (17-19 digits)
    r"|\d{3}([ -])\d{6}\2\d{4,5})"  # 4-6-5 (Amex), 4-6-4 (Diners)
    r"(?!\w|[.,-]\d)"
)
_PHONE = re.compile(
    r"(?<![\w+.,-])(?:"
    r"\(?\+[1-9]\d{0,2}\)?(?:[ .-]?(?:\(\d{1,4}\)|\d{1,4})){2,6}"  # international: +CC, 2-6 groups
    r"|(?:1[ .-])?(?:\(\d{3}\)[ .-]?\d{3}[ .-]|\d{3}([ .-])\d{3}\1)\d{4}"  # North American 3-3-4
    r"|\(?0\d{1,4}\)?([ .-])\d{2,8}(?:\2\d{2,8}){0,3}"  # European national, trunk 0
    r")(?!\w|[.,-]\d)"
)
_VERSION_BEFORE = re.compile(r"(?:\bv|\bversion|\bver\.?|\brelease|\bbuild)[\s:]*\Z", re.IGNORECASE)
_CONTEXT = 12  # characters kept before a cluster: lookbehinds and "version " see them


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _after_version_word(m: re.Match[str]) -> bool:
    return bool(_VERSION_BEFORE.search(m.string, max(0, m.start() - 10), m.start()))


def _is_ipv4(m: re.Match[str]) -> bool:
    return all(int(octet) <= 255 for octet in m.group().split(".")) and not _after_version_word(m)


def _is_ipv6(m: re.Match[str]) -> bool:
    s = m.group()
    try:
        ipaddress.IPv6Address(s)
    except ValueError:
        return False
    if "::" not in s or s == "::1":
        return True
    groups = [g for g in s.split(":") if g]  # compressed: not a slice like 1::2 or 10::20
    return len(groups) >= 3 or max(map(len, groups), default=0) >= 3


def _is_card(m: re.Match[str]) -> bool:
    return _luhn_ok(m.group().replace(" ", "").replace("-", ""))


def _is_phone(m: re.Match[str]) -> bool:
    n_digits = sum(c.isdigit() for c in m.group())
    return 9 <= n_digits <= 15 and not _after_version_word(m)


Accept = Callable[[re.Match[str]], bool]


def _sub(text: str, kind: str, pattern: re.Pattern[str], accept: Accept, counts: dict[str, int], pos: int = 0) -> str:
    """`pattern.sub` from `pos` on (lookbehinds still see the text before it), keeping rejected matches."""
    pieces, last = [], 0
    for m in pattern.finditer(text, pos):
        if accept(m):
            pieces += [text[last:m.start()], PLACEHOLDERS[kind]]
            last = m.end()
    if not pieces:
        return text
    counts[kind] = counts.get(kind, 0) + len(pieces) // 2
    pieces.append(text[last:])
    return "".join(pieces)


def _redact_emails(text: str, counts: dict[str, int]) -> str:
    pieces, last = [], 0
    for m in _EMAIL_DOMAIN.finditer(text):
        local = _EMAIL_LOCAL.search(text, max(last, m.start() - 64), m.start())
        if local:
            pieces += [text[last:local.start()], PLACEHOLDERS["email"]]
            last = m.end()
    if not pieces:
        return text
    counts["email"] = len(pieces) // 2
    pieces.append(text[last:])
    return "".join(pieces)


def redact_pii(text: str, cfg: CleanConfig) -> tuple[str, dict[str, int]]:
    """Replace e-mail addresses, phone numbers, IPv4/IPv6 addresses and Luhn-valid card numbers
    by typed placeholders; return the text and the count per type (only types found)."""
    counts: dict[str, int] = {}
    if cfg.redact_email and "@" in text:
        text = _redact_emails(text, counts)
    if cfg.redact_ip and (gate := _IPV6_GATE.search(text)):
        text = _sub(text, "ip", _IPV6, _is_ipv6, counts, max(0, gate.start() - 4))
    passes = [(kind, pattern, accept) for kind, pattern, accept, on in (
        ("ip", _IPV4, _is_ipv4, cfg.redact_ip), ("card", _CARD, _is_card, cfg.redact_card),
        ("phone", _PHONE, _is_phone, cfg.redact_phone)) if on]
    if not passes:
        return text, counts
    pieces, last = [], 0
    for c in _CLUSTER.finditer(text):
        # The cluster with context around it: matches lie inside the cluster, so edits stay there.
        lo = max(0, c.start() - _CONTEXT)
        window = text[lo:c.end() + 2]
        for kind, pattern, accept in passes:
            window = _sub(window, kind, pattern, accept, counts, c.start() - lo)
        tail = min(len(text), c.end() + 2) - c.end()
        pieces += [text[last:c.start()], window[c.start() - lo:len(window) - tail]]
        last = c.end()
    if pieces:
        pieces.append(text[last:])
        text = "".join(pieces)
    return text, counts
