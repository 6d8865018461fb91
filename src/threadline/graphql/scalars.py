"""The DateTime scalar for inputs: always time-zone aware, and only instants the database driver can send.

Strawberry's stock DateTime passes naive values through (they cannot be compared with aware ones) and
offsets that move the instant past year 9999 or before year 1 in UTC (`9999-12-31T23:59:59-05:00`),
which fail only when asyncpg encodes them. Here a naive value means UTC, and an instant out of range is
refused like any other malformed DateTime: BAD_USER_INPUT. Name, accepted formats and output are the stock
ones.

Each of our scalars says in the schema what it holds and links its specification (`@specifiedBy`), so code
generators can map it to a type instead of `unknown`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import UTC, date, datetime

from strawberry.exceptions import StrawberryInputCoercionError
from strawberry.scalars import JSON as JSONValue
from strawberry.schema.types.base_scalars import DateDefinition, DateTimeDefinition
from strawberry.schema.types.scalar import DEFAULT_SCALAR_REGISTRY
from strawberry.types.scalar import ScalarDefinition


def parse_datetime(value: object) -> datetime:
    parse_stock = DateTimeDefinition.parse_value
    assert parse_stock is not None
    parsed = parse_stock(value)  # a coercion error (BAD_USER_INPUT) for anything but an ISO 8601 string
    assert isinstance(parsed, datetime)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        parsed.astimezone(UTC)
    except OverflowError:
        raise StrawberryInputCoercionError(
            f'Value cannot represent a DateTime: "{value}". The instant is outside years 1 to 9999 in UTC.'
        ) from None
    return parsed


DateTime = dataclasses.replace(
    DateTimeDefinition,
    parse_value=parse_datetime,
    implementation=None,
    description="An instant, as an RFC 3339 date-time with a time offset, e.g. `2026-12-04T17:51:06.940+00:00`. "
    "Stored times are sent in UTC (`+00:00`), with microseconds when not zero. Accepted with any offset; "
    "without one it means UTC.",
    specified_by_url="https://scalars.graphql.org/andimarek/date-time",
)
Date = dataclasses.replace(
    DateDefinition,
    implementation=None,
    description="A calendar day, as an RFC 3339 full-date `YYYY-MM-DD` (days in insights are UTC days).",
    specified_by_url="https://scalars.graphql.org/andimarek/local-date",
)
JSON = dataclasses.replace(
    DEFAULT_SCALAR_REGISTRY[JSONValue],
    implementation=None,
    description="Any JSON value (RFC 8259): an object, array, string, number, boolean or null, sent as is.",
    specified_by_url="https://www.rfc-editor.org/rfc/rfc8259",
)

SCALAR_OVERRIDES: Mapping[object, ScalarDefinition] = {datetime: DateTime, date: Date, JSONValue: JSON}
