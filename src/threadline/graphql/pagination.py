"""The one pagination helper: Relay connections over keyset cursors."""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, Generic, TypeVar

import orjson
import strawberry

from threadline.errors import bad_input

T = TypeVar("T")

# The `first`/`after` arguments of every connection, described once (defaults that differ say so themselves).
PAGE_SIZE_LIMIT = "at most 100 (THREADLINE_PAGE_SIZE_MAX); more is BAD_USER_INPUT naming the limit"
AFTER_DESCRIPTION = (
    "Continue after this cursor: `pageInfo.endCursor` (or an edge's `cursor`) of a previous page of the same "
    "list, with the same other arguments. Omit for the first page. Cursors are opaque; a malformed one is "
    "BAD_USER_INPUT."
)
First = Annotated[
    int | None,
    strawberry.argument(description=f"How many items to return: 20 by default, {PAGE_SIZE_LIMIT}."),
]
After = Annotated[str | None, strawberry.argument(description=AFTER_DESCRIPTION)]


@strawberry.type(description="Relay page information.")
class PageInfo:
    has_next_page: bool = strawberry.field(
        description="Whether more items follow this page: ask again with `after: endCursor` to get them."
    )
    has_previous_page: bool = strawberry.field(
        description="Whether items precede this page: true when it was asked for with `after` (or, for a "
        "conversation's `messages`, with an `offset` above 0). Pages go forward only (`first`/`after`)."
    )
    start_cursor: str | None = strawberry.field(
        description="The cursor of the first item of this page; null when the page is empty."
    )
    end_cursor: str | None = strawberry.field(
        description="The cursor of the last item of this page, to pass as `after` for the next page; null when "
        "the page is empty. Opaque: do not parse or build cursors."
    )


@strawberry.type(description="An item of a connection and its cursor.")
class Edge(Generic[T]):
    cursor: str = strawberry.field(
        description="Opaque position of this item, to pass as `after` to continue after it."
    )
    node: T = strawberry.field(description="The item at this position of the list.")


@strawberry.type(description="A page of a list that can grow (Relay connection).")
class Connection(Generic[T]):
    edges: list[Edge[T]] = strawberry.field(
        description="The items of this page, in order, each with its cursor."
    )
    page_info: PageInfo = strawberry.field(
        description="Whether more items follow, and the cursors to get them."
    )
    count_total: strawberry.Private[Callable[[], Awaitable[int]]]

    @strawberry.field(description="The items of this page, without cursors.")
    def nodes(self) -> list[T]:
        return [edge.node for edge in self.edges]

    @strawberry.field(description="How many items the whole list holds (one extra query, only if asked).")
    async def total_count(self) -> int:
        return await self.count_total()


def page_size(first: int | None, default: int, cap: int, argument: str = "first") -> int:
    if first is None:
        return default
    if first < 0:
        raise bad_input(f"`{argument}` must not be negative", argument=argument)
    if first > cap:
        raise bad_input(f"`{argument}` is limited to {cap} (asked for {first})", argument=argument, limit=cap)
    return first


def encode_cursor(values: Sequence[Any]) -> str:
    """The values as a JSON array in URL-safe base64 without padding; a datetime as its `isoformat()` (orjson
    writes the same text natively, checked over random instants, offsets and naive values by
    tests/test_pagination_cursor.py), a UUID as its hex. A page encodes one cursor per item: no wrapper calls."""
    raw = orjson.dumps([v.hex if isinstance(v, uuid.UUID) else v for v in values])
    return binascii.b2a_base64(raw, newline=False).translate(_URLSAFE).rstrip(b"=").decode()


_URLSAFE = bytes.maketrans(b"+/", b"-_")


def decode_cursor(
    cursor: str, shape: Sequence[Callable[[Any], Any]], argument: str = "after"
) -> tuple[Any, ...]:
    """Decode a cursor made by `encode_cursor`; `shape` converts each value back (BAD_USER_INPUT if off)."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        values = orjson.loads(base64.urlsafe_b64decode(padded.encode()))
        if not isinstance(values, list) or len(values) != len(shape):
            raise ValueError("wrong arity")
        return tuple(convert(v) for convert, v in zip(shape, values, strict=True))
    except (ValueError, TypeError, OverflowError, binascii.Error, orjson.JSONDecodeError) as exc:
        raise bad_input(f"Malformed cursor in `{argument}`", argument=argument) from exc


def as_datetime(value: Any) -> datetime:
    if not isinstance(value, str):
        raise ValueError("not a timestamp")
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError("timestamp without a time zone")
    return parsed.astimezone(UTC)  # OverflowError when the instant is outside datetime's range


def as_uuid(value: Any) -> uuid.UUID:
    if not isinstance(value, str):
        raise ValueError("not a uuid")
    return uuid.UUID(hex=value)


def as_int(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not -(2**63) <= value < 2**63:
        raise ValueError("not a 64-bit int")
    return value


def as_int32(value: Any) -> int:
    """A cursor's value compared with a 32-bit column (a pin's position): larger ones are the client's error, not
    the database driver's."""
    if not isinstance(value, int) or isinstance(value, bool) or not -(2**31) <= value < 2**31:
        raise ValueError("not a 32-bit int")
    return value


def connection(
    rows: Sequence[Any],
    limit: int,
    to_node: Callable[[Any], T],
    cursor_of: Callable[[Any], Sequence[Any]],
    count_total: Callable[[], Awaitable[int]],
    has_previous: bool,
) -> Connection[T]:
    """Build a connection from `limit + 1` fetched rows (the extra row only tells there is a next page)."""
    page = rows[:limit]
    edges = [Edge(cursor=encode_cursor(cursor_of(r)), node=to_node(r)) for r in page]
    return Connection(
        edges=edges,
        page_info=PageInfo(
            has_next_page=len(rows) > limit,
            has_previous_page=has_previous,
            start_cursor=edges[0].cursor if edges else None,
            end_cursor=edges[-1].cursor if edges else None,
        ),
        count_total=count_total,
    )
