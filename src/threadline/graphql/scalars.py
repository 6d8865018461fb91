"""The DateTime scalar for inputs: always time-zone aware, and only instants the database driver can send.

Strawberry's stock DateTime passes naive values through (they cannot be compared with aware ones) and
offsets that move the instant past year 9999 or before year 1 in UTC (`9999-12-31T23:59:59-05:00`),
which fail only when asyncpg encodes them. Here a naive value means UTC, and an instant out of range is
refused like any other malformed DateTime: BAD_USER_INPUT. Name, description, accepted formats and
output are the stock ones, so the printed schema does not change.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import UTC, datetime

from strawberry.exceptions import StrawberryInputCoercionError
from strawberry.schema.types.base_scalars import DateTimeDefinition
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


DateTime = dataclasses.replace(DateTimeDefinition, parse_value=parse_datetime, implementation=None)

SCALAR_OVERRIDES: Mapping[object, ScalarDefinition] = {datetime: DateTime}
