"""Resolver bodies shared by the thread types and the Conversation fields that list threads."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg
import strawberry

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
from threadline.ids import Kind, encode_id
from threadline.threads import repository as repo
from threadline.threads.types import (
    Message,
    MessageChunk,
    MessageEdit,
    Thread,
)


def tree_messages(rows: Sequence[asyncpg.Record], top_path: list[uuid.UUID]) -> list[Message]:
    """Messages of a depth-first list of `repo.TREE_COLUMNS` rows, with path ids computed by a stack (no
    queries). `top_path` is the ancestor ids of the first row, ending with its own id.

    Rows are unpacked by position (~10,000 rows per large thread: named lookups were a third of the time).
    """
    if not rows:
        return []
    if tuple(rows[0].keys()) != repo.TREE_FIELDS:
        raise AssertionError("tree rows must have repo.TREE_COLUMNS")
    base_depth = rows[0]["depth"]
    # Encoded ids on the stack: each id is encoded once, not once per descendant.
    stack: list[strawberry.ID] = [strawberry.ID(encode_id(Kind.MESSAGE, p)) for p in top_path[:-1]]
    offset = len(top_path) - 1 - base_depth
    conversation_id = strawberry.ID(encode_id(Kind.CONVERSATION, rows[0]["conversation_id"]))
    build = Message.stored
    out = []
    for (
        message_id, _, root_id, _, depth, child_count, role, content,
        author_id, model, prompt_tokens, completion_tokens, created_at, edited_at, deleted_at, usage_imported,
    ) in rows:  # fmt: skip
        del stack[offset + depth :]
        stack.append(encode_id(Kind.MESSAGE, message_id))  # type: ignore[arg-type]  # an ID is a str
        path = stack.copy()
        out.append(
            build(
                path, path[-1], path[-2] if len(path) > 1 else None, path[0], conversation_id,
                message_id, root_id, author_id, depth, child_count, role, content, model,
                prompt_tokens, completion_tokens, created_at, edited_at, deleted_at, usage_imported,
            )  # fmt: skip
        )
    return out


async def _thread_children(info: Info, root_id: uuid.UUID) -> dict[uuid.UUID, list[Message]]:
    """The whole thread grouped by parent, loaded once per request whatever the nesting asked for."""
    key = ("thread-children", root_id)
    cache = info.context.cache
    pending = cache.get(key)
    if pending is None:
        pending = asyncio.ensure_future(_load_children(info, root_id))
        cache[key] = pending
    return await pending  # type: ignore[no-any-return]


async def _load_children(info: Info, root_id: uuid.UUID) -> dict[uuid.UUID, list[Message]]:
    principal = await info.context.principal()
    rows = await repo.subtree(info.context.db, principal.tenant_id, root_id, b"", None)
    children: dict[uuid.UUID, list[Message]] = {}
    for row, message in zip(rows, tree_messages(rows, [root_id]), strict=True):
        if row["parent_id"] is not None:
            children.setdefault(row["parent_id"], []).append(message)
    return children


async def replies_of(info: Info, message: Message) -> list[Message]:
    if message.child_count == 0:
        return []
    children = await _thread_children(info, message.root_uuid)
    # Depth-first order puts each parent's children in sibling (oldest first) order already.
    replies = children.get(message.uuid, [])
    if replies and budget.current() is not None:
        await budget.charge_messages(
            info, len(replies), sum(len(m.content) for m in replies), sum(len(m.path) for m in replies)
        )
    return replies


async def charge_tree_rows(info: Info, rows: Sequence[asyncpg.Record]) -> None:
    """Charges the operation's output budget for `repo.TREE_COLUMNS` rows about to become messages (before
    they are built: a path list per node is what makes deep chains expensive)."""
    if rows and budget.current() is not None:
        content = sum(len(r["content"]) for r in rows)
        await budget.charge_messages(info, len(rows), content, sum(r["depth"] + 1 for r in rows))


def _per_conversation(info: Info, name: str, fetch: Any) -> Any:
    """A request-wide DataLoader of rows per conversation id: a list of conversations asking for the same
    page of threads (or messages) costs one statement, not one per conversation."""

    def factory() -> Any:
        from strawberry.dataloader import DataLoader

        async def load(ids: list[uuid.UUID]) -> list[list[Any]]:
            grouped: dict[uuid.UUID, list[Any]] = {i: [] for i in ids}
            for row in await fetch(list(ids)):
                grouped[row["conversation_id"]].append(row)
            return [grouped[i] for i in ids]

        return DataLoader(load_fn=load)

    return info.context.loader(name, factory)


def _counts(info: Info, name: str, fetch: Any) -> Any:
    def factory() -> Any:
        from strawberry.dataloader import DataLoader

        async def load(ids: list[uuid.UUID]) -> list[int]:
            counts = {r["conversation_id"]: int(r["n"]) for r in await fetch(list(ids))}
            return [counts.get(i, 0) for i in ids]

        return DataLoader(load_fn=load)

    return info.context.loader(name, factory)


async def conversation_threads(
    info: Info, conversation_id: uuid.UUID, first: int | None, after: str | None
) -> Connection[Thread]:
    principal = await info.context.principal()
    settings = info.context.settings
    db = info.context.db
    limit = page_size(first, settings.page_size_default, settings.page_size_max)
    cursor = decode_cursor(after, (as_datetime, as_uuid)) if after else None
    pages = _per_conversation(
        info,
        f"threads:{limit}:{cursor}",
        lambda ids: repo.threads_pages(db, principal.tenant_id, ids, principal.user_id, limit + 1, cursor),
    )
    counts = _counts(info, "thread-counts", lambda ids: repo.count_threads(db, principal.tenant_id, ids))
    return connection(
        await pages.load(conversation_id),
        limit,
        Thread.from_row,
        lambda r: (r["thread_last_activity_at"], r["thread_id"]),
        lambda: counts.load(conversation_id),
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
    from threadline.threads.service import path_ids

    principal = await info.context.principal()
    settings = info.context.settings
    db = info.context.db
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

    async def fetch(ids: list[uuid.UUID]) -> list[_WithPath]:
        rows = await repo.messages_pages(
            db, principal.tenant_id, ids, limit=size + 1, after_seq=after_seq, offset=offset
        )
        paths = await path_ids(db, principal.tenant_id, rows)  # one statement for every page's ancestors
        return [_WithPath(row, path) for row, path in zip(rows, paths, strict=True)]

    pages = _per_conversation(info, f"messages:{size}:{after_seq}:{offset}", fetch)
    counts = _counts(info, "message-counts", lambda ids: repo.count_messages(db, principal.tenant_id, ids))
    return connection(
        await pages.load(conversation_id),
        size,
        lambda r: Message.from_row(r.row, r.path),
        lambda r: (r.row["seq"],),
        lambda: counts.load(conversation_id),
        has_previous=previous,
    )


class _WithPath:
    """A message row and its ancestor ids; indexable like the row for grouping by conversation."""

    __slots__ = ("path", "row")

    def __init__(self, row: asyncpg.Record, path: list[uuid.UUID]) -> None:
        self.row = row
        self.path = path

    def __getitem__(self, key: str) -> Any:
        return self.row[key]


def _batched(info: Info, name: str, fetch: Any, build: Any) -> Any:
    def factory() -> Any:
        from strawberry.dataloader import DataLoader

        async def load(ids: list[uuid.UUID]) -> list[list[Any]]:
            principal = await info.context.principal()
            grouped: dict[uuid.UUID, list[Any]] = {i: [] for i in ids}
            for row in await fetch(info.context.db, principal.tenant_id, list(ids)):
                grouped[row["message_id"]].append(build(row))
            return [grouped[i] for i in ids]

        return DataLoader(load_fn=load)

    return info.context.loader(name, factory)


async def chunks_of(info: Info, message_id: uuid.UUID) -> list[MessageChunk]:
    loader = _batched(
        info,
        "chunks",
        repo.chunks_of,
        lambda r: MessageChunk(index=r["index"], content=r["content"], created_at=r["created_at"]),
    )
    chunks: list[MessageChunk] = await loader.load(message_id)
    budget.charge_bytes(sum(len(c.content) + 80 for c in chunks))
    return chunks


async def edits_of(info: Info, message_id: uuid.UUID) -> list[MessageEdit]:
    loader = _batched(
        info, "edits", repo.edits_of, lambda r: MessageEdit(content=r["content"], edited_at=r["edited_at"])
    )
    edits: list[MessageEdit] = await loader.load(message_id)
    budget.charge_bytes(sum(len(e.content) + 60 for e in edits))
    return edits
