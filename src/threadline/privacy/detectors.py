"""Offline PII detectors: patterns, each confirmed by a validation (a checksum, a range, a known prefix, the
shape around it), so that order numbers, version strings, timestamps and UUIDs are not taken for PII.

`detect(text)` returns non-overlapping detections in text order. Every pattern is linear (no nested
quantifiers over the same characters), and the text scanned is bounded by the caller (a message's size
limit), so the cost is linear in the content. Measured on the labelled set in bench/pii_labelled.jsonl
(bench/pii_score.py; figures in bench/RESULTS.md).
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections import Counter
from dataclasses import dataclass
from enum import StrEnum


class PiiKind(StrEnum):
    EMAIL = "EMAIL"
    PHONE = "PHONE"
    CARD = "CARD"
    IBAN = "IBAN"
    IP_ADDRESS = "IP_ADDRESS"
    SECRET = "SECRET"


@dataclass(frozen=True, slots=True)
class Detection:
    kind: PiiKind
    start: int  # character offsets in the text, end exclusive
    end: int


# --- emails -----------------------------------------------------------------------------------------------

_EMAIL = re.compile(
    r"(?<![\w.%+-])[A-Za-z0-9](?:[A-Za-z0-9._%+-]{0,62}[A-Za-z0-9_%+-])?"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![\w-])"
)


_EMAIL_WINDOWS = 16


def _emails(text: str) -> list[Detection]:
    """With a few "@", the pattern is tried only around each (a local part is at most 64 characters, a domain
    253), not at every position of the text; with many, one linear pass (windows around thousands of "@" would
    overlap: a text of "a@a@..." would cost a window per character)."""
    if text.count("@") > _EMAIL_WINDOWS:
        return [
            Detection(PiiKind.EMAIL, m.start(), m.end())
            for m in _EMAIL.finditer(text)
            if ".." not in m.group().split("@", 1)[0]
        ]
    found = []
    start = 0
    at = text.find("@")
    while at != -1:
        m = _EMAIL.search(text, max(start, at - 64), at + 256)
        if m is None:
            at = text.find("@", at + 1)
            continue
        if ".." not in m.group().split("@", 1)[0]:
            found.append(Detection(PiiKind.EMAIL, m.start(), m.end()))
        start = m.end()
        at = text.find("@", start)
    return found


# --- payment cards (Luhn) -----------------------------------------------------------------------------------

_CARD = re.compile(r"(?<![\w.-])(?:\d[ -]?){12,18}\d(?![\w]|[.-]\d)")


def luhn_valid(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _card_brand_ok(digits: str) -> bool:
    n = len(digits)
    two, four = int(digits[:2]), int(digits[:4])
    if digits[0] == "4":
        return n in (13, 16, 19)  # Visa
    if 51 <= two <= 55 or 2221 <= four <= 2720:
        return n == 16  # Mastercard
    if two in (34, 37):
        return n == 15  # American Express
    if four == 6011 or two == 65 or 644 <= int(digits[:3]) <= 649:
        return 16 <= n <= 19  # Discover
    if 3528 <= four <= 3589:
        return 16 <= n <= 19  # JCB
    if two in (36, 38, 39) or 300 <= int(digits[:3]) <= 305:
        return 14 <= n <= 19  # Diners Club
    if two in (50, 56, 57, 58, 63, 67) or digits[:2] == "62":
        return 12 <= n <= 19  # Maestro, UnionPay
    return False


def _cards(text: str) -> list[Detection]:
    found = []
    for m in _CARD.finditer(text):
        raw = m.group()
        separators = {c for c in raw if not c.isdigit()}
        if len(separators) > 1:
            continue
        if separators and not _card_grouping(raw, separators.pop()):
            continue
        digits = "".join(c for c in raw if c.isdigit())
        if 13 <= len(digits) <= 19 and _card_brand_ok(digits) and luhn_valid(digits):
            found.append(Detection(PiiKind.CARD, m.start(), m.end()))
    return found


def _card_grouping(raw: str, sep: str) -> bool:
    groups = [len(g) for g in raw.split(sep)]
    return groups in ([4, 4, 4, 4], [4, 6, 5], [4, 6, 4], [4, 4, 4, 4, 3], [4, 4, 4, 3], [4, 4, 4, 1])


# --- IBAN (mod-97) ------------------------------------------------------------------------------------------

# Lengths by country (ISO 13616 registry).
_IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29,
    "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28, "EE": 20, "EG": 29,
    "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28,
    "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20,
    "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19,
    "MR": 27, "MT": 31, "MU": 30, "NL": 18, "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29,
    "RO": 24, "RS": 22, "SA": 24, "SC": 31, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}  # fmt: skip
_IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?(?![A-Za-z0-9])")


def iban_valid(compact: str) -> bool:
    if _IBAN_LENGTHS.get(compact[:2]) != len(compact):
        return False
    rearranged = compact[4:] + compact[:4]
    number = "".join(str(int(c, 36)) for c in rearranged)
    return int(number) % 97 == 1


def _ibans(text: str) -> list[Detection]:
    found = []
    for m in _IBAN.finditer(text):
        raw = m.group()
        compact = raw.replace(" ", "")
        if iban_valid(compact):
            found.append(Detection(PiiKind.IBAN, m.start(), m.end()))
            continue
        # The optional tail may have swallowed a following short word: try the longest valid prefix.
        for end in range(len(raw) - 1, 15, -1):
            if (
                raw[end - 1] != " "
                and (end == len(raw) or raw[end] == " ")
                and iban_valid(raw[:end].replace(" ", ""))
            ):
                found.append(Detection(PiiKind.IBAN, m.start(), m.start() + end))
                break
    return found


# --- IP addresses -------------------------------------------------------------------------------------------

_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w]|\.\d)")
_IPV6 = re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?:%\w+)?(?![\w:])")
# Words that make a dotted quad a version, not an address.
_VERSION_CONTEXT = re.compile(r"(?:\bv|version|release|build|firmware|sdk|python|node|java|chrome)\s*$", re.I)


def _ips(text: str) -> list[Detection]:
    found = []
    for m in _IPV4.finditer(text):
        parts = m.group().split(".")
        if any(int(p) > 255 or (len(p) > 1 and p[0] == "0") for p in parts):
            continue
        if _VERSION_CONTEXT.search(text[max(0, m.start() - 12) : m.start()]):
            continue
        found.append(Detection(PiiKind.IP_ADDRESS, m.start(), m.end()))
    for m in _IPV6.finditer(text):
        raw = m.group().split("%", 1)[0]
        if raw.count(":") < 2 or not any(c.isalpha() for c in raw) and "::" not in raw:
            continue  # 10:30:00 (a time) has no hex letter and no "::"
        try:
            address = ipaddress.IPv6Address(raw)
        except ValueError:
            continue
        if address.is_unspecified:
            continue
        found.append(Detection(PiiKind.IP_ADDRESS, m.start(), m.end()))
    return found


# --- secrets: known prefixes, then entropy ------------------------------------------------------------------

_KNOWN_SECRETS = re.compile(
    r"(?<![\w-])(?:"
    r"AKIA[0-9A-Z]{16}"  # AWS access key id
    r"|ASIA[0-9A-Z]{16}"
    r"|gh[pousr]_[A-Za-z0-9]{36,255}"  # GitHub tokens
    r"|github_pat_[A-Za-z0-9_]{60,255}"
    r"|glpat-[A-Za-z0-9_-]{20,}"  # GitLab
    r"|xox[abposr]-[A-Za-z0-9-]{10,250}"  # Slack
    r"|(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{16,247}"  # Stripe secret / restricted keys
    r"|sk-ant-[A-Za-z0-9_-]{20,}"  # Anthropic
    r"|sk-(?:proj-)?[A-Za-z0-9_-]{20,}"  # OpenAI
    r"|AIza[0-9A-Za-z_-]{35}"  # Google API key
    r"|tl_[A-Za-z0-9_-]{40,}"  # Threadline API key
    r"|SG\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}"  # SendGrid
    r"|npm_[A-Za-z0-9]{36}"
    r"|eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"  # a JWT
    r"|-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----[\s\S]{0,8000}?-----END (?:[A-Z]+ )?PRIVATE KEY-----"
    r")(?![\w-])"
)
_TOKEN = re.compile(r"(?<![\w+/.-])[A-Za-z0-9+/_-]{16,200}={0,2}(?![\w+/=-])")
_SECRET_CONTEXT = re.compile(
    r"(?:secret|token|api[_ -]?key|apikey|passw(?:or)?d|pwd|credential|private[_ -]?key|auth|bearer)"
    r"[\"']?\s*(?:[:=]|is|was)?\s*[\"']?\s*$",
    re.I,
)


def shannon_entropy(value: str) -> float:
    counts = Counter(value)
    n = len(value)
    return -sum(c / n * math.log2(c / n) for c in counts.values())


def _looks_random(token: str, with_context: bool) -> bool:
    classes = sum(
        (any(c.islower() for c in token), any(c.isupper() for c in token), any(c.isdigit() for c in token))
    )
    entropy = shannon_entropy(token)
    if with_context:
        return len(token) >= 16 and classes >= 2 and entropy >= 3.3
    # Without a keyword before it: long, all three classes, and close to random (UUIDs and hashes are hex: one
    # letter case, ~4 bits per character at most; words and camelCase identifiers have no digits or fall below).
    digits = sum(c.isdigit() for c in token)
    return len(token) >= 24 and classes == 3 and digits >= 2 and entropy >= 4.2


def _secrets(text: str) -> list[Detection]:
    found = [Detection(PiiKind.SECRET, m.start(), m.end()) for m in _KNOWN_SECRETS.finditer(text)]
    for m in _TOKEN.finditer(text):
        token = m.group().rstrip("=")
        context = bool(_SECRET_CONTEXT.search(text[max(0, m.start() - 24) : m.start()]))
        if _looks_random(token, context):
            found.append(Detection(PiiKind.SECRET, m.start(), m.end()))
    return found


# --- phone numbers ------------------------------------------------------------------------------------------

_PHONE = re.compile(
    r"(?<![\w+#/.:-])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]\d{1,8}){1,5}(?![\w]|[.:/-]\d)"
    r"|(?<![\w+#/.:-])\+?\d{7,15}(?![\w]|[.:/-]\d)"
)
_PHONE_CONTEXT = re.compile(
    r"(?:phone|tel|mobile|cell|call|text|whatsapp|fax|ring|sms|number)\W{0,3}\s*$", re.I
)
_NOT_PHONE_CONTEXT = re.compile(
    r"(?:order|invoice|ticket|ref|reference|case|id|no|tracking|account|acct|po|sku|serial|version|isbn|build)"
    r"\W{0,3}\s*$",
    re.I,
)
_DATE_LIKE = re.compile(
    r"^(?:19|20)\d\d[ .-](?:0?[1-9]|1[0-2])[ .-](?:0?[1-9]|[12]\d|3[01])\b|^\d{1,2}[.-]\d{1,2}[.-]\d{2,4}$"
)


def _phones(text: str) -> list[Detection]:
    found = []
    for m in _PHONE.finditer(text):
        raw = m.group()
        digits = sum(c.isdigit() for c in raw)
        before = text[max(0, m.start() - 20) : m.start()]
        if _DATE_LIKE.match(raw) or (not raw.startswith("+") and _NOT_PHONE_CONTEXT.search(before)):
            continue
        if raw.startswith("+"):
            groups = raw[1:].split()
            ok = 8 <= digits <= 15 and (len(groups) == 1 or all(len(g) <= 8 for g in groups))
        elif raw.isdigit():
            ok = 7 <= digits <= 13 and bool(_PHONE_CONTEXT.search(before))  # a bare run only after "phone:"
        else:
            seps = {c for c in raw if c in " .-"}
            if "." in seps and len(seps) == 1 and raw.count(".") >= 3:
                continue  # a dotted quad or a version, not a number
            groups = re.split(r"[ .()-]+", raw.strip("()"))
            grouped = len(groups) >= 2 and all(2 <= len(g) <= 5 for g in groups[1:])
            ok = 10 <= digits <= 13 and (grouped or "(" in raw)
            if not ok and 7 <= digits <= 13:
                ok = bool(_PHONE_CONTEXT.search(before))
        if ok:
            found.append(Detection(PiiKind.PHONE, m.start(), m.end()))
    return found


# --- all together -------------------------------------------------------------------------------------------

# Cheap tests that a detector can find nothing (most messages hold no PII at all): one C-level scan each,
# instead of every detector's pattern being tried at every position (~4x faster on plain prose).
_DIGIT = re.compile(r"\d")
_DOTTED_DIGITS = re.compile(r"\d\.\d")


def _may_hold_secret(text: str) -> bool:
    # Every known prefix and every random token is at least 15 characters without a space.
    return max(map(len, text.split()), default=0) >= 15 or "-----BEGIN" in text


def _may_hold_ip(text: str) -> bool:
    return _DOTTED_DIGITS.search(text) is not None or text.count(":") >= 2


# When two detections overlap, the earlier kind here wins (a card number is also a run of digit groups).
_ORDER = (
    (_secrets, _may_hold_secret),
    (_emails, lambda text: "@" in text),
    (_ibans, None),
    (_cards, None),
    (_ips, _may_hold_ip),
    (_phones, None),
)


def detect(text: str) -> list[Detection]:
    """Every detection in `text`, in order, none overlapping another."""
    taken: list[Detection] = []
    occupied: bytearray | None = None  # 1 for each character already in a detection: linear in the text
    digits = _DIGIT.search(text) is not None
    for detector, may_find in _ORDER:
        # IBANs, cards and phone numbers hold digits; so does every IPv4 address.
        if may_find is None and not digits or may_find is not None and not may_find(text):
            continue
        for d in detector(text):
            if occupied is None:
                occupied = bytearray(len(text))
            elif occupied.find(1, d.start, d.end) != -1:
                continue
            occupied[d.start : d.end] = b"\x01" * (d.end - d.start)
            taken.append(d)
    taken.sort(key=lambda d: d.start)
    return taken
