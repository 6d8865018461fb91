"""The PII detectors on their own (issue 20 item 2): validations, traps, masking, and hostile texts."""

from __future__ import annotations

import pytest

from threadline.privacy.detectors import PiiKind, detect, iban_valid, luhn_valid
from threadline.privacy.masking import mask


def kinds(text: str) -> list[tuple[str, str]]:
    return [(d.kind.value, text[d.start : d.end]) for d in detect(text)]


def test_checksums() -> None:
    assert luhn_valid("4111111111111111") and not luhn_valid("4111111111111112")
    assert iban_valid("GB82WEST12345698765432") and not iban_valid("GB82WEST12345698765433")
    assert not iban_valid("XX82WEST12345698765432")  # no such country


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mail anna.k+x@mail.example.co.uk now", [("EMAIL", "anna.k+x@mail.example.co.uk")]),
        (
            "call +44 20 7946 0958 or (415) 555-0132",
            [("PHONE", "+44 20 7946 0958"), ("PHONE", "(415) 555-0132")],
        ),
        ("card 4111-1111-1111-1111.", [("CARD", "4111-1111-1111-1111")]),
        ("IBAN DE89 3704 0044 0532 0130 00 ok", [("IBAN", "DE89 3704 0044 0532 0130 00")]),
        (
            "from 203.0.113.77 and 2001:db8::1",
            [("IP_ADDRESS", "203.0.113.77"), ("IP_ADDRESS", "2001:db8::1")],
        ),
        ("key AKIAIOSFODNN7EXAMPLE", [("SECRET", "AKIAIOSFODNN7EXAMPLE")]),
        ("password: Zx8kQ2mP9vL4nR7tY1", [("SECRET", "Zx8kQ2mP9vL4nR7tY1")]),
    ],
)
def test_each_kind_is_found_with_its_span(text: str, expected: list[tuple[str, str]]) -> None:
    assert kinds(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "Order #1234567890 shipped",
        "upgrade to v2.14.3 then 10.0.19045.3803",
        "version 1.2.3.4 is out",
        "at 2024-03-15 14:30:00 UTC",
        "job 550e8400-e29b-41d4-a716-446655440000 failed",
        "commit 9fceb02d0ae598e95dc970b74767f19372d61af8",
        "card 4111 1111 1111 1112 fails Luhn",
        "IBAN GB82 WEST 1234 5698 7654 33 has bad check digits",
        "the variable thisIsAVeryLongCamelCaseIdentifierName",
        "MAC 00:1A:2B:3C:4D:5E and 10:30:45",
        "total $12,345.67",
    ],
)
def test_false_positive_traps_are_left_alone(text: str) -> None:
    assert detect(text) == []


def test_mask_replaces_each_detection_and_reports_the_placeholders() -> None:
    masked, spans = mask("a@example.com, 4111111111111111!")
    assert masked == "[EMAIL], [CARD]!"
    assert [(s.kind, masked[s.start : s.end]) for s in spans] == [
        (PiiKind.EMAIL, "[EMAIL]"),
        (PiiKind.CARD, "[CARD]"),
    ]


@pytest.mark.parametrize(
    ("unit", "per_detection"),
    [
        ("a@", 0),
        ("x@y.co ", 1),
        ("12 ", 6),  # "12 12 12 12 12 12": six groups of a national number
        ("+12345678 ", 1),
        ("1.2.3.4 ", 1),
        ("fe80::1 ", 1),
        ("4111111111111111 ", 1),
        ("aB3dE5gH7jK9mN1pQ3sT5vX7 ", 1),
        ("-----BEGIN PRIVATE KEY-----", 0),
        ("1-", 0),
    ],
)
def test_hostile_texts_cost_time_linear_in_their_size(unit: str, per_detection: int) -> None:
    """A quarter of the default message limit made of one repeated shape: every detection is found, without the
    pairwise overlap checks that made 100,000 detections take minutes."""
    repeats = (256 * 1024) // len(unit)
    detected = detect(unit * repeats)
    assert len(detected) == (repeats // per_detection if per_detection else 0)
    assert all(a.end <= b.start for a, b in zip(detected, detected[1:], strict=False))
