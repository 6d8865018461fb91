"""Builds bench/pii_labelled.jsonl: the labelled set the PII detectors are scored on (bench/pii_score.py).

Two parts, both written as text with inline labels `[[KIND|value]]`:
- HAND: strings written by hand, including the hard ones (numbers spoken in words, emails written with
  " at ", phone numbers with no separators) that the detectors are expected to miss, and false-positive
  traps (order numbers, version strings, timestamps, UUIDs, hashes, prices, coordinates);
- generated: sentences from templates filled with values from seeded random generators (valid Luhn cards
  and mod-97 IBANs, and invalid ones as traps).

Run: .venv/bin/python bench/pii_dataset.py  (rewrites bench/pii_labelled.jsonl; deterministic).
"""

from __future__ import annotations

import json
import random
import re
import string
import uuid
from pathlib import Path

OUT = Path(__file__).with_name("pii_labelled.jsonl")
LABEL = re.compile(r"\[\[([A-Z_]+)\|(.*?)\]\]")

HAND = [
    # emails
    "Reach me at [[EMAIL|maria.gonzalez@example.org]] if the build breaks.",
    "cc [[EMAIL|ops+alerts@corp.example.co.uk]] and [[EMAIL|j_smith99@mail.example.net]]",
    "My address is [[EMAIL|o'brien@example.ie]] (with the apostrophe).",
    "write to [[EMAIL|john at example dot com]]",
    "Email: [[EMAIL|ANNA.K@EXAMPLE.COM]]",
    "<[[EMAIL|noreply@github.com]]> sent the notification",
    "The npm package is @types/node@20.11.5, not an email.",
    "Clone git@github.com:org/repo.git with your key.",
    "Use the decorator @app.route('/x') in Flask.",
    "Twitter handle @threadline_dev is not an address.",
    "user@localhost cannot receive mail from outside",
    "pip install requests==2.31.0 then import it",
    # phones
    "Call me on [[PHONE|+44 20 7946 0958]] after 5pm.",
    "US office: [[PHONE|(415) 555-0132]], fax [[PHONE|415-555-0199]].",
    "Mobile [[PHONE|+33 6 12 34 56 78]] or WhatsApp [[PHONE|+491701234567]].",
    "ring [[PHONE|0207 946 0000]] tomorrow",
    "My number is [[PHONE|five five five, one two three four]].",
    "Call [[PHONE|555.123.4567]] for support.",
    "phone: [[PHONE|5551234567]]",
    "Tel. [[PHONE|+1-202-555-0173]]",
    "Order 1234567890 shipped yesterday.",
    "Invoice no. 2023-004512 is overdue.",
    "Ticket #48213 was closed as duplicate.",
    "Tracking number 9400 1000 0000 0000 0000 00 for the parcel.",
    "The meeting is on 2024-03-15 at 14:30.",
    "Timestamp 2023-11-02T08:15:30Z in the log.",
    "Population grew from 1,234,567 to 2,345,678.",
    "ISBN 978-3-16-148410-0 is the second edition.",
    "Range 100-200-300 in the config.",
    # cards
    "Charge [[CARD|4111 1111 1111 1111]] for the renewal.",
    "Card number [[CARD|5500-0000-0000-0004]] expired.",
    "Amex [[CARD|3782 822463 10005]] is on file.",
    "Test with [[CARD|4242424242424242]] in staging.",
    "The card 4111 1111 1111 1112 was declined (typo, fails Luhn).",
    "Serial 1234 5678 9012 3456 on the router sticker.",
    "[[CARD|four one one one, one one one one, one one one one, one one one one]]",
    # IBANs
    "Wire it to [[IBAN|GB82 WEST 1234 5698 7654 32]] please.",
    "IBAN: [[IBAN|DE89370400440532013000]]",
    "Pay [[IBAN|FR14 2004 1010 0505 0001 3M02 606]] by Friday.",
    "IBAN GB82 WEST 1234 5698 7654 33 (bad check digits).",
    "Reference code AB12 CDEF 3456 7890 is internal.",
    # IPs
    "The server at [[IP_ADDRESS|192.168.10.25]] is down.",
    "Blocked [[IP_ADDRESS|203.0.113.77]] after 40 failed logins.",
    "Listen on [[IP_ADDRESS|2001:db8::8a2e:370:7334]] port 443.",
    "Loopback is [[IP_ADDRESS|::1]] or [[IP_ADDRESS|127.0.0.1]].",
    "Upgrade to version 1.2.3.4 before Monday.",
    "Chrome 120.0.6099.109 fixed it.",
    "Windows build 10.0.19045.3803 is installed.",
    "MAC 00:1A:2B:3C:4D:5E belongs to the printer.",
    "The clock read 10:30:45 when it failed.",
    "Coordinates 48.8584, 2.2945 are the tower.",
    "Section 3.2.1.4 of the spec covers it.",
    "Address 999.999.999.999 is not valid.",
    # secrets
    "export AWS_ACCESS_KEY_ID=[[SECRET|AKIAIOSFODNN7EXAMPLE]]",
    "My token is [[SECRET|ghp_R3aLlyL0ngT0k3nV4lu3F0rT3st1ngAbCdEf]] do not share",
    "OPENAI_API_KEY=[[SECRET|sk-proj-Ab3dE5gH7jK9mN1pQ3sT5vX7zB9cD1fG3hJ5]]",
    "stripe: [[SECRET|sk_live_51HxYzAbCdEfGhIjKlMnOpQr]]",
    "password = [[SECRET|Tr0ub4dor&3xKq9]]",
    "api_key: [[SECRET|Zx8kQ2mP9vL4nR7tY1wE5uI3]]",
    "Authorization: Bearer [[SECRET|eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U]]",
    "commit 9fceb02d0ae598e95dc970b74767f19372d61af8 fixed the leak",
    "sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "request id 550e8400-e29b-41d4-a716-446655440000 failed",
    "The variable thisIsAVeryLongCamelCaseIdentifierName is unused.",
    "See https://example.com/docs/getting-started/installation-guide for more.",
    "base64 of hello is aGVsbG8=",
    "slack webhook token [[SECRET|xoxb-2048-4096-abcdefghijklmnopqrstuvwx]]",
    "Google key [[SECRET|AIzaSyA1b2C3d4E5f6G7h8I9j0KlMnOpQrStUvW]] in the app",
]

FIRST = ["anna", "ben", "chloe", "dev", "emma", "farid", "greta", "hiro", "ines", "jonas", "kofi", "lena"]
LAST = ["smith", "mueller", "rossi", "kim", "dubois", "novak", "silva", "ohara", "berg", "ng"]
DOMAINS = ["example.com", "mail.example.org", "corp.example.net", "uni.example.edu", "example.co.uk"]


def email(r: random.Random) -> str:
    sep = r.choice([".", "_", "", "-"])
    local = r.choice(FIRST) + sep + r.choice(LAST) + (str(r.randint(1, 99)) if r.random() < 0.3 else "")
    return f"{local}@{r.choice(DOMAINS)}"


def phone(r: random.Random) -> str:
    kind = r.randrange(5)
    if kind == 0:
        return f"+1 {r.randint(201, 989)} {r.randint(200, 999)} {r.randint(0, 9999):04d}"
    if kind == 1:
        return f"({r.randint(201, 989)}) {r.randint(200, 999)}-{r.randint(0, 9999):04d}"
    if kind == 2:
        return f"+44 {r.randint(20, 79)} {r.randint(1000, 9999)} {r.randint(1000, 9999)}"
    if kind == 3:
        return f"+49 {r.randint(150, 179)} {r.randint(1000000, 9999999)}"
    return f"{r.randint(201, 989)}-{r.randint(200, 999)}-{r.randint(0, 9999):04d}"


def _luhn_complete(prefix: str, length: int, r: random.Random) -> str:
    body = prefix + "".join(str(r.randint(0, 9)) for _ in range(length - len(prefix) - 1))
    for check in "0123456789":
        digits = body + check
        total = 0
        for i, ch in enumerate(reversed(digits)):
            d = int(ch) * (2 if i % 2 else 1)
            total += d - 9 if d > 9 else d
        if total % 10 == 0:
            return digits
    raise AssertionError


def card(r: random.Random, valid: bool = True) -> str:
    prefix, length = r.choice([("4", 16), ("51", 16), ("55", 16), ("37", 15), ("6011", 16)])
    digits = _luhn_complete(prefix, length, r)
    if not valid:
        digits = digits[:-1] + str((int(digits[-1]) + 1) % 10)
    if length == 15:
        return f"{digits[:4]} {digits[4:10]} {digits[10:]}"
    sep = r.choice([" ", "-", ""])
    return sep.join(digits[i : i + 4] for i in range(0, 16, 4))


def iban(r: random.Random, valid: bool = True) -> str:
    country, bban_len = r.choice([("DE", 18), ("GB", 18), ("FR", 23), ("NL", 14), ("ES", 20)])
    if country in ("GB", "NL"):
        bban = "".join(r.choice(string.ascii_uppercase) for _ in range(4)) + "".join(
            str(r.randint(0, 9)) for _ in range(bban_len - 4)
        )
    else:
        bban = "".join(str(r.randint(0, 9)) for _ in range(bban_len))
    number = int("".join(str(int(c, 36)) for c in bban + country + "00"))
    check = 98 - number % 97
    if not valid:
        check = check % 97 + 1 if check < 97 else 2
    compact = f"{country}{check:02d}{bban}"
    if r.random() < 0.5:
        return " ".join(compact[i : i + 4] for i in range(0, len(compact), 4))
    return compact


def ipv4(r: random.Random) -> str:
    return ".".join(str(r.randint(1, 254)) for _ in range(4))


def ipv6(r: random.Random) -> str:
    groups = [f"{r.randint(0, 0xFFFF):x}" for _ in range(8)]
    if r.random() < 0.5:
        return "2001:db8::" + ":".join(groups[:3])
    return ":".join(groups)


def secret(r: random.Random) -> str:
    alnum = string.ascii_letters + string.digits
    kind = r.randrange(5)
    if kind == 0:
        return "AKIA" + "".join(r.choice(string.ascii_uppercase + string.digits) for _ in range(16))
    if kind == 1:
        return "ghp_" + "".join(r.choice(alnum) for _ in range(36))
    if kind == 2:
        return "sk-" + "".join(r.choice(alnum) for _ in range(40))
    if kind == 3:
        return (
            "xoxb-"
            + "-".join("".join(r.choice(string.digits) for _ in range(12)) for _ in range(2))
            + "-"
            + "".join(r.choice(alnum) for _ in range(24))
        )
    return "".join(r.choice(alnum) for _ in range(32))


GENERATORS = {
    "EMAIL": email,
    "PHONE": phone,
    "CARD": card,
    "IBAN": iban,
    "IP_ADDRESS": ipv4,
    "SECRET": secret,
}

TEMPLATES = {
    "EMAIL": [
        "Please send the report to {}.",
        "{} asked about the refund.",
        "Contact: {}",
        "forwarding to {} now",
    ],
    "PHONE": [
        "You can call {} any time.",
        "Phone: {}",
        "reach the desk on {} or by chat",
        "Her number is {}.",
    ],
    "CARD": ["Pay with card {} please.", "The customer's card {} was charged twice.", "card: {}"],
    "IBAN": ["Transfer to IBAN {} before the 5th.", "Account {} belongs to the supplier.", "IBAN {}"],
    "IP_ADDRESS": ["Requests came from {}.", "ssh admin@{} failed", "whitelist {} in the firewall"],
    "SECRET": ["The key {} leaked in the logs.", "token={}", "use this credential: {}"],
}


def traps(r: random.Random) -> list[str]:
    """Strings with no PII at all, shaped like PII."""
    out = []
    for _ in range(14):
        out.append(f"Order #{r.randint(10**8, 10**10)} was refunded.")
        out.append(
            f"Upgrade from v{r.randint(1, 9)}.{r.randint(0, 20)}.{r.randint(0, 40)} to the next release."
        )
        out.append(
            f"Logged at 20{r.randint(10, 29)}-{r.randint(1, 12):02d}-{r.randint(1, 28):02d} "
            f"{r.randint(0, 23):02d}:{r.randint(0, 59):02d}:{r.randint(0, 59):02d} UTC."
        )
        out.append(f"Job {uuid.UUID(int=r.getrandbits(128))} finished.")
        out.append(f"The total was ${r.randint(1, 99999):,}.{r.randint(0, 99):02d} including tax.")
        out.append(f"Card {card(r, valid=False)} is a typo and fails the checksum.")
        out.append(f"IBAN {iban(r, valid=False)} has wrong check digits.")
        out.append(
            f"Release {r.randint(1, 30)}.{r.randint(0, 9)}.{r.randint(0, 9)}.{r.randint(100, 9999)} is out."
        )
        out.append(f"commit {r.getrandbits(160):040x} reverted it")
        out.append(f"Invoice INV-{r.randint(2019, 2026)}-{r.randint(1, 99999):05d} is due.")
    return out


def build() -> list[dict[str, object]]:
    r = random.Random(20)
    marked = list(HAND)
    for kind, templates in TEMPLATES.items():
        for i in range(30 if kind != "IP_ADDRESS" else 20):
            value = GENERATORS[kind](r) if not (kind == "IP_ADDRESS" and i % 4 == 3) else ipv6(r)
            marked.append(r.choice(templates).format(f"[[{kind}|{value}]]"))
    for _ in range(25):  # two kinds in one string
        a, b = r.sample(sorted(GENERATORS), 2)
        marked.append(f"From [[{a}|{GENERATORS[a](r)}]] with reference [[{b}|{GENERATORS[b](r)}]] attached.")
    marked.extend(traps(r))
    return [parse(m) for m in marked]


def parse(marked: str) -> dict[str, object]:
    text, spans, at = [], [], 0
    length = 0
    for m in LABEL.finditer(marked):
        plain = marked[at : m.start()]
        text.append(plain)
        length += len(plain)
        spans.append({"kind": m.group(1), "start": length, "end": length + len(m.group(2))})
        text.append(m.group(2))
        length += len(m.group(2))
        at = m.end()
    text.append(marked[at:])
    return {"text": "".join(text), "pii": spans}


if __name__ == "__main__":
    rows = build()
    OUT.write_text("".join(json.dumps(row) + "\n" for row in rows))
    traps_count = sum(1 for row in rows if not row["pii"])
    print(f"{len(rows)} strings ({traps_count} without PII) written to {OUT}")
