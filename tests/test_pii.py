"""PII redaction: what is redacted (exactly, once, with punctuation kept) and the hard negatives that are not."""

from __future__ import annotations

import random

import pytest

from myllm.config import CleanConfig
from myllm.data.pii import PLACEHOLDERS, _luhn_ok, redact_pii

CFG = CleanConfig()
E, P, IP, C = PLACEHOLDERS["email"], PLACEHOLDERS["phone"], PLACEHOLDERS["ip"], PLACEHOLDERS["card"]


def test_placeholders():
    assert PLACEHOLDERS == {"email": "<EMAIL>", "phone": "<PHONE>", "ip": "<IP_ADDRESS>", "card": "<CREDIT_CARD>"}


@pytest.mark.parametrize("text, expected, counts", [
    ("mail me at a.b@c.org.", f"mail me at {E}.", {"email": 1}),
    ("john.doe+news@mail.example.co.uk, x-y_z@sub-d.example.com;", f"{E}, {E};", {"email": 2}),
    ("(write to first.last@uni.edu)", f"(write to {E})", {"email": 1}),
    ("mailto:jane99@example.org?subject=hi", f"mailto:{E}?subject=hi", {"email": 1}),
    ("Call +44 20 7946 0958 or +1-202-555-0143.", f"Call {P} or {P}.", {"phone": 2}),
    ("(202) 555-0143, 202-555-0143, 202.555.0143, 1-800-555-0199", f"{P}, {P}, {P}, {P}", {"phone": 4}),
    ("UK 020 7946 0958, FR 01 23 45 67 89, DE 030-1234567", f"UK {P}, FR {P}, DE {P}", {"phone": 3}),
    ("+33 1 23 45 67 89 and +49 (0)30 1234567 and +12025550143", f"{P} and {P} and {P}", {"phone": 3}),
    ("(+44) 20 7946 0958 or +1 (202) 555-0143", f"{P} or {P}", {"phone": 2}),
    ("from 192.168.1.1, 10.0.0.255:8080 and 8.8.8.8.", f"from {IP}, {IP}:8080 and {IP}.", {"ip": 3}),
    ("net 10.0.0.0/8 via 255.255.255.255", f"net {IP}/8 via {IP}", {"ip": 2}),
    ("2001:db8::1, ::1, fe80::1ff:fe23:4567:890a.", f"{IP}, {IP}, {IP}.", {"ip": 3}),
    ("[2001:0db8:85a3:0000:0000:8a2e:0370:7334]:443", f"[{IP}]:443", {"ip": 1}),
    ("mapped ::ffff:192.0.2.1 here", f"mapped {IP} here", {"ip": 1}),
    ("visa 4111 1111 1111 1111, mc 5500-0000-0000-0004.", f"visa {C}, mc {C}.", {"card": 2}),
    ("amex 3782 822463 10005 or 4111111111111111", f"amex {C} or {C}", {"card": 2}),
    ("discover 6011111111111117 end", f"discover {C} end", {"card": 1}),
])
def test_redacts(text, expected, counts):
    assert redact_pii(text, CFG) == (expected, counts)


@pytest.mark.parametrize("text", [
    "user@localhost, me@jack, follow @handle and @john.smith on social media",
    "dates 2024-01-15, 15/01/2024, 15.01.2024 and 2024-01-15 10:30:00",
    "years 1984, 2023-2024, 1990 1995 2000 2005",
    "prices $1,299.99, 1 299,00 €, +150 points, -3.5%",
    "versions v1.2.3, 3.11.7, 10.0.19045.2965, v1.2.3.4, version 1.2.3.4, Version: 4.3.2.1",
    "ISBN 978-3-16-148410-0, 0-306-40615-2 and 9783161484100",
    "population 8,336,817 and order 2025550143 and local 555-0143",
    "under 9 digits: 030-1234, +49 30 123, 01 23 45 67, (020) 7946",
    "octets 256.1.1.1 and 1.2.3.4.5 and 999.999.999.999",
    "times 12:30 and 12:30:45, MAC 00:1A:2B:3C:4D:5E",
    "slices a[1::2] a[::2] a[::-1] x[10::20] and std::vector<int>",
    "a Luhn-failing 4111 1111 1111 1112 and timestamp 1700000000000",
    "sequence 0 1 2 3 4 5 6 7 8 9 and score 3-1",
    "chapter 12, page 3 of 10: (5) see 3.14 and 2.5",
])
def test_hard_negatives_unchanged(text):
    assert redact_pii(text, CFG) == (text, {})


def test_card_before_phone():
    # Grouped like a phone-ish run, but Luhn-valid: one card placeholder, no phone pieces.
    assert redact_pii("pay 4111-1111-1111-1111 now", CFG) == (f"pay {C} now", {"card": 1})
    # A Luhn-failing 16-digit number is neither a card nor a phone.
    assert redact_pii("id 4111-1111-1111-1112 now", CFG) == ("id 4111-1111-1111-1112 now", {})


def test_flags_switch_types_off():
    text = "a@b.com +44 20 7946 0958 1.2.3.4 4111 1111 1111 1111"
    assert redact_pii(text, CFG) == (f"{E} {P} {IP} {C}", {"email": 1, "phone": 1, "ip": 1, "card": 1})
    off = CleanConfig(redact_email=False, redact_phone=False, redact_ip=False, redact_card=False)
    assert redact_pii(text, off) == (text, {})
    assert redact_pii(text, CleanConfig(redact_email=False)) == (f"a@b.com {P} {IP} {C}",
                                                                 {"phone": 1, "ip": 1, "card": 1})
    assert redact_pii(text, CleanConfig(redact_card=False)) == (f"{E} {P} {IP} 4111 1111 1111 1111",
                                                                {"email": 1, "phone": 1, "ip": 1})
    assert redact_pii(text, CleanConfig(redact_ip=False, redact_phone=False)) == (
        f"{E} +44 20 7946 0958 1.2.3.4 {C}", {"email": 1, "card": 1})


def test_mixed_document_counts_and_idempotence():
    text = ("Contact: jane.doe@example.com, bob@mail.example.org\n"
            "Phone (202) 555-0143; fax +1 202 555 0199.\n"
            "Server 203.0.113.7 and 2001:db8:0:1::42 logged card 5500 0000 0000 0004 on 2024-01-15.\n")
    expected = (f"Contact: {E}, {E}\nPhone {P}; fax {P}.\n"
                f"Server {IP} and {IP} logged card {C} on 2024-01-15.\n")
    out, counts = redact_pii(text, CFG)
    assert out == expected
    assert counts == {"email": 2, "phone": 2, "ip": 2, "card": 1}
    assert redact_pii(out, CFG) == (out, {})  # placeholders are never re-matched


def test_pii_at_text_edges_and_adjacent():
    assert redact_pii("1.2.3.4", CFG) == (IP, {"ip": 1})
    assert redact_pii("a@b.io", CFG) == (E, {"email": 1})
    assert redact_pii("202-555-0143", CFG) == (P, {"phone": 1})
    assert redact_pii("x@y.com,1.2.3.4;202-555-0143", CFG) == (f"{E},{IP};{P}", {"email": 1, "ip": 1, "phone": 1})
    assert redact_pii("", CFG) == ("", {})


def test_luhn():
    assert _luhn_ok("4111111111111111") and _luhn_ok("378282246310005") and _luhn_ok("79927398713")
    assert not _luhn_ok("4111111111111112") and not _luhn_ok("79927398710")


def test_random_prose_with_numbers_is_untouched():
    rng = random.Random(7)
    words = "the river town baker walked miles sheep in on and of a to with".split()
    numbers = ["13", "1984", "2023-2024", "3.5", "$1,299.99", "8,336,817", "page 12", "v2.0.1", "12:30"]
    text = " ".join(rng.choice(words) if rng.random() < 0.9 else rng.choice(numbers) for _ in range(5000))
    assert redact_pii(text, CFG) == (text, {})
