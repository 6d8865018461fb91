"""Request-wide loaders of thread data (graphql/loaders.py): the pages of threads and messages a list of
conversations asks for, their counts, chunks and edits, and a whole thread for nested `replies`.

Rows come back as stored; `threads/types.py` builds the GraphQL objects, so this module never imports it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import asyncpg

from threadline.db import Executor
from threadline.graphql import budget
from threadline.graphql.context import Info
from threadline.graphql.loaders import counting_loader, grouped_loader, single_loader
from threadline.threads import repository as repo
from threadline.threads.service import path_ids

M = TypeVar("M")


async def _messages_with_paths(
    info: Info, ids: list[uuid.UUID]
) -> list[tuple[asyncpg.Record, list[uuid.UUID]]]:
    principal = await info.context.principal()
    rows = await repo.messages_by_ids(info.context.db, principal.tenant_id, ids)
    paths = await path_ids(info.context.db, principal.tenant_id, rows)
    return list(zip(rows, paths, strict=True))


async def message_with_path(
    info: Info, message_id: uuid.UUID
) -> tuple[asyncpg.Record, list[uuid.UUID]] | None:
    """A hot message by id and its ancestor path, for every such message of a response in two statements
    (bookmarks, fork provenance). The caller has checked the conversation; None when it is not there."""
    loader = single_loader(
        info,
        "message_with_path",
        lambda ids: _messages_with_paths(info, ids),
        key=lambda pair: pair[0]["id"],
    )
    return await loader.load(message_id)


async def thread_page(
    info: Info, conversation_id: uuid.UUID, limit: int, cursor: tuple[Any, ...] | None
) -> list[asyncpg.Record]:
    """`limit` threads of a conversation (with root and unread count) after `cursor`: a list of
    conversations asking for the same page costs one statement."""
    principal = await info.context.principal()
    db = info.context.db
    loader = grouped_loader(
        info,
        f"threads:{limit}:{cursor}",
        lambda ids: repo.threads_pages(db, principal.tenant_id, ids, principal.user_id, limit, cursor),
        key=lambda row: row["conversation_id"],
    )
    return await loader.load(conversation_id)


async def _per_conversation_count(
    info: Info,
    name: str,
    fetch: Callable[[Executor, uuid.UUID, list[uuid.UUID]], Awaitable[list[asyncpg.Record]]],
    conversation_id: uuid.UUID,
) -> int:
    """A count per conversation from `fetch`'s grouped rows (`conversation_id`, `n`), one statement for all."""
    principal = await info.context.principal()
    db = info.context.db
    loader = counting_loader(
        info,
        name,
        lambda ids: fetch(db, principal.tenant_id, ids),
        key=lambda row: row["conversation_id"],
        count=lambda row: int(row["n"]),
    )
    return await loader.load(conversation_id)


async def thread_count(info: Info, conversation_id: uuid.UUID) -> int:
    return await _per_conversation_count(info, "thread-counts", repo.count_threads, conversation_id)


async def message_page(
    info: Info, conversation_id: uuid.UUID, limit: int, after_seq: int | None, offset: int | None
) -> list[tuple[asyncpg.Record, list[uuid.UUID]]]:
    """`limit` messages of a conversation in order, each with its ancestor ids (one more statement for
    every page's ancestors together)."""
    principal = await info.context.principal()
    db = info.context.db

    async def fetch(ids: list[uuid.UUID]) -> list[tuple[asyncpg.Record, list[uuid.UUID]]]:
        tenant = principal.tenant_id
        rows = await repo.messages_pages(db, tenant, ids, limit=limit, after_seq=after_seq, offset=offset)
        return list(zip(rows, await path_ids(db, principal.tenant_id, rows), strict=True))

    loader = grouped_loader(
        info, f"messages:{limit}:{after_seq}:{offset}", fetch, key=lambda pair: pair[0]["conversation_id"]
    )
    return await loader.load(conversation_id)


async def message_count(info: Info, conversation_id: uuid.UUID) -> int:
    return await _per_conversation_count(info, "message-counts", repo.count_messages, conversation_id)


async def _texts_per_message(
    info: Info,
    name: str,
    fetch: Callable[[Executor, uuid.UUID, list[uuid.UUID]], Awaitable[list[asyncpg.Record]]],
    message_id: uuid.UUID,
    overhead: int,
) -> list[asyncpg.Record]:
    """A message's rows of text from `fetch` (one statement for every message asked), charged to the
    operation's response bytes: each row's content plus `overhead` for its other fields."""
    principal = await info.context.principal()
    db = info.context.db
    loader = grouped_loader(
        info, name, lambda ids: fetch(db, principal.tenant_id, ids), key=lambda r: r["message_id"]
    )
    rows = await loader.load(message_id)
    budget.charge_bytes(sum(len(r["content"]) + overhead for r in rows))
    return rows


async def chunks(info: Info, message_id: uuid.UUID) -> list[asyncpg.Record]:
    """A message's streamed chunks in order, charged to the operation's response bytes."""
    return await _texts_per_message(info, "chunks", repo.chunks_of, message_id, overhead=80)


async def edits(info: Info, message_id: uuid.UUID) -> list[asyncpg.Record]:
    """A message's earlier versions, oldest first, charged to the operation's response bytes."""
    return await _texts_per_message(info, "edits", repo.edits_of, message_id, overhead=60)


async def parts(info: Info, message_id: uuid.UUID) -> list[dict[str, Any]] | None:
    """A message's stored content parts (None for a plain-text one), one statement for every message asked,
    charged to the operation's response bytes."""
    principal = await info.context.principal()
    db = info.context.db
    loader = grouped_loader(
        info, "parts", lambda ids: repo.parts_of(db, principal.tenant_id, ids), key=lambda r: r["message_id"]
    )
    rows = await loader.load(message_id)
    if not rows:
        return None
    stored: list[dict[str, Any]] = rows[0]["parts"]
    budget.charge_bytes(sum(len(str(v)) + 40 for p in stored for v in p.values()))
    return stored


async def thread_children(
    info: Info,
    root_id: uuid.UUID,
    build: Callable[[Sequence[asyncpg.Record], list[uuid.UUID]], Awaitable[list[M]]],
) -> dict[uuid.UUID, list[M]]:
    """The whole thread as `await build(rows, [root_id])` made it, grouped by parent id: loaded once per operation
    whatever the nesting of `replies` asked for (one statement per thread)."""
    key = ("thread-children", root_id)
    cache = info.context.cache
    pending = cache.get(key)
    if pending is None:
        pending = asyncio.ensure_future(_children(info, root_id, build))
        cache[key] = pending
    return await pending  # type: ignore[no-any-return]


def loaded_thread_children(info: Info, root_id: uuid.UUID) -> dict[uuid.UUID, list[Any]] | None:
    """The thread `thread_children` loaded in this operation, if it is loaded already (else None)."""
    pending = info.context.cache.get(("thread-children", root_id))
    if pending is None or not pending.done() or pending.cancelled() or pending.exception() is not None:
        return None
    return pending.result()  # type: ignore[no-any-return]


async def _children(
    info: Info,
    root_id: uuid.UUID,
    build: Callable[[Sequence[asyncpg.Record], list[uuid.UUID]], Awaitable[list[M]]],
) -> dict[uuid.UUID, list[M]]:
    principal = await info.context.principal()
    rows = await repo.subtree(info.context.db, principal.tenant_id, root_id, b"", None)
    children: dict[uuid.UUID, list[M]] = {}
    for row, message in zip(rows, await build(rows, [root_id]), strict=True):
        if row["parent_id"] is not None:
            children.setdefault(row["parent_id"], []).append(message)
    return children
