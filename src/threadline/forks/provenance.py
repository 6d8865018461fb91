"""Reads of a conversation's provenance for the GraphQL layer: the source and forks the viewer may read.

Rows only; `conversations.types` builds the objects (so this module never imports it)."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from threadline.forks import repository as repo
from threadline.graphql.context import Info
from threadline.graphql.loaders import counting_loader, grouped_loader, single_loader
from threadline.threads import loaders as thread_loaders
from threadline.threads import repository as threads
from threadline.threads.service import path_ids


async def readable_source(info: Info, conversation_id: uuid.UUID) -> asyncpg.Record | None:
    """The source conversation if the viewer may read it: provenance is shown only to those who may read
    both (the viewer reads the fork already). One statement for every fork of a response."""
    principal = await info.context.principal()
    db = info.context.db
    loader = single_loader(
        info,
        "forks:readable-sources",
        lambda ids: repo.readable_conversations(db, principal, ids),
        key=lambda row: row["id"],
    )
    return await loader.load(conversation_id)


async def source_message(
    info: Info, conversation_id: uuid.UUID, message_id: uuid.UUID
) -> tuple[asyncpg.Record, list[uuid.UUID]] | None:
    """The message forked at, with its path ids, while it is still in the (readable) source: one loader for
    every fork of a response; a message not found hot is looked up alone (a cold source comes back)."""
    found = await thread_loaders.message_with_path(info, message_id)
    if found is None:
        principal = await info.context.principal()
        db = info.context.db
        row = await threads.message(db, principal.tenant_id, message_id)
        if row is None:
            return None
        found = row, (await path_ids(db, principal.tenant_id, [row]))[0]
    if found[0]["conversation_id"] != conversation_id:
        return None
    return found


async def forks_page(
    info: Info, source_id: uuid.UUID, limit: int, after: tuple[Any, uuid.UUID] | None
) -> list[asyncpg.Record]:
    """The readable forks of a source: one statement for every conversation of a response asking for the same
    page (the loader's name carries the page size and cursor its fetch closes over)."""
    principal = await info.context.principal()
    db = info.context.db
    loader = grouped_loader(
        info,
        f"forks:{limit}:{after!r}",
        lambda ids: repo.forks_pages(db, principal, ids, limit, after),
        key=lambda row: row["forked_from_conversation_id"],
    )
    return await loader.load(source_id)


async def count_forks(info: Info, source_id: uuid.UUID) -> int:
    principal = await info.context.principal()
    db = info.context.db
    loader = counting_loader(
        info,
        "forks:count",
        lambda ids: repo.fork_counts(db, principal, ids),
        key=lambda row: row["source_id"],
        count=lambda row: int(row["count"]),
    )
    return await loader.load(source_id)
