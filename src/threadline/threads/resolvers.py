"""Resolver bodies of thread reads that build more than one type: `threadTree`'s answer (charged before its
messages are built) and the Conversation fields that page threads and messages."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from operator import itemgetter

import asyncpg

from threadline.auth.loaders import prefetch_users
from threadline.errors import bad_input
from threadline.graphql import budget
from threadline.graphql.context import Info
from threadline.graphql.pagination import (
    Connection,
    as_datetime,
    as_int,
    as_uuid,
    connection,
    decode_cursor,
    page_size,
)
from threadline.graphql.ready import asks_for
from threadline.threads import loaders
from threadline.threads import repository as repo
from threadline.threads.tree_service import TreeRows
from threadline.threads.types import Message, Thread, ThreadTree, tree_messages_in_slices

# Where a connection's selection holds its items (the twins of their fields answer from prefetched users).
_NODES = (("edges", "node"), ("nodes",))


async def thread_tree(info: Info, read: TreeRows) -> ThreadTree:
    """`threadTree`'s answer: the rows are charged to the operation's output budget before any message is
    built (a path list per node is what makes deep chains expensive), and big trees are built in slices with
    the event loop handed to other requests in between."""
    await charge_tree_rows(info, read.rows)
    nodes = await tree_messages_in_slices(read.rows, read.top_path)
    return ThreadTree(root=nodes[0], nodes=nodes, total_count=len(nodes))


async def charge_tree_rows(info: Info, rows: Sequence[asyncpg.Record]) -> None:
    """Charges the operation's output budget for `repo.TREE_COLUMNS` rows about to become messages (their values
    read by position, in C: ~10,000 rows for a large thread)."""
    if rows and budget.current() is not None:
        content = sum(map(len, map(_CONTENT, rows)))
        if budget.charge_messages(info, len(rows), content, sum(map(_DEPTH, rows)) + len(rows)):
            await budget.hand_over()


_CONTENT = itemgetter(repo.TREE_FIELDS.index("content"))
_DEPTH = itemgetter(repo.TREE_FIELDS.index("depth"))


async def conversation_threads(
    info: Info, conversation_id: uuid.UUID, first: int | None, after: str | None
) -> Connection[Thread]:
    settings = info.context.settings
    limit = page_size(first, settings.page_size_default, settings.page_size_max)
    cursor = decode_cursor(after, (as_datetime, as_uuid)) if after else None
    rows = await loaders.thread_page(info, conversation_id, limit + 1, cursor)
    if any(asks_for(info, *path, "root", "author") for path in _NODES):
        await prefetch_users(info, (row["author_id"] for row in rows[:limit]))
    return connection(
        rows,
        limit,
        Thread.from_row,
        lambda r: (r["thread_last_activity_at"], r["thread_id"]),
        lambda: loaders.thread_count(info, conversation_id),
        has_previous=cursor is not None,
    )


async def conversation_messages(
    info: Info,
    conversation_id: uuid.UUID,
    first: int | None,
    after: str | None,
    limit: int | None,
    offset: int | None,
) -> Connection[Message]:
    settings = info.context.settings
    if (limit is not None or offset is not None) and (first is not None or after is not None):
        raise bad_input("Use either first/after or limit/offset, not both", argument="limit")
    if offset is not None and offset < 0:
        raise bad_input("`offset` must not be negative", argument="offset")
    after_seq: int | None = None
    if limit is not None or offset is not None:
        size = page_size(limit, settings.messages_page_default, settings.page_size_max, argument="limit")
        previous = bool(offset)
    else:
        size = page_size(first, settings.messages_page_default, settings.page_size_max)
        after_seq = decode_cursor(after, (as_int,))[0] if after else None
        previous = after_seq is not None
    pairs = await loaders.message_page(info, conversation_id, size + 1, after_seq, offset)
    if any(asks_for(info, *path, "author") for path in _NODES):
        await prefetch_users(info, (row["author_id"] for row, _ in pairs[:size]))
    return connection(
        pairs,
        size,
        lambda pair: Message.from_row(*pair),
        lambda pair: (pair[0]["seq"],),
        lambda: loaders.message_count(info, conversation_id),
        has_previous=previous,
    )
