"""Cursors keep their bytes: `encode_cursor` writes datetimes with orjson's native encoder instead of
`isoformat()` (a page encodes one cursor per item), so the two must give the same text for every value a
keyset can hold, and cursors handed out before stay valid and equal."""

from __future__ import annotations

import base64
import random
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
from asyncpg.pgproto import pgproto

from threadline.graphql.pagination import as_datetime, as_uuid, decode_cursor, encode_cursor


def reference(values: tuple[Any, ...]) -> str:
    """The encoding as it was: isoformat() for datetimes, hex for UUIDs, then orjson and URL-safe base64."""
    plain = [
        v.isoformat() if isinstance(v, datetime) else v.hex if isinstance(v, uuid.UUID) else v for v in values
    ]
    return base64.urlsafe_b64encode(orjson.dumps(plain)).rstrip(b"=").decode()


def random_instant(rng: random.Random) -> datetime:
    zone = rng.choice(
        [
            UTC,
            timezone(timedelta(hours=rng.randint(-12, 14), minutes=rng.choice([0, 30, 45]))),
            None,  # naive: no offset in either text
        ]
    )
    return datetime(
        rng.randint(1, 9999),
        rng.randint(1, 12),
        rng.randint(1, 28),
        rng.randint(0, 23),
        rng.randint(0, 59),
        rng.randint(0, 59),
        rng.choice([0, rng.randint(0, 999_999), 1, 999_999]),  # whole seconds print no fraction
        tzinfo=zone,
    )


def test_cursors_are_the_reference_encoding_byte_for_byte() -> None:
    rng = random.Random(20261205)
    for _ in range(20_000):
        identifier = uuid.UUID(int=rng.getrandbits(128))
        if rng.random() < 0.5:  # what asyncpg returns: its own UUID subclass, which orjson refuses
            identifier = pgproto.UUID(identifier.bytes)
        values = (rng.randint(-(2**40), 2**40), random_instant(rng), identifier, None, "s\u00e9q")
        assert encode_cursor(values) == reference(values)


def test_a_cursor_decodes_to_its_values() -> None:
    instant = datetime(2026, 12, 5, 12, 30, 1, 250, tzinfo=UTC)
    identifier = pgproto.UUID(uuid.uuid4().bytes)
    cursor = encode_cursor((instant, identifier))
    assert "=" not in cursor and "+" not in cursor and "/" not in cursor
    assert decode_cursor(cursor, (as_datetime, as_uuid)) == (instant, uuid.UUID(str(identifier)))
