"""Request-wide loaders of organise data (graphql/loaders.py): the conversation counts of every folder in a
response, and every bookmarked message, each in one statement. Rows come back as stored."""

from __future__ import annotations

import uuid

import asyncpg

from threadline.graphql.context import Info
from threadline.graphql.loaders import counting_loader, grouped_loader, single_loader
from threadline.organise import mark_repository as mark_repo
from threadline.organise import repository as repo
from threadline.threads import loaders as thread_loaders


async def folder_conversation_count(info: Info, folder_id: uuid.UUID) -> int:
    principal = await info.context.principal()
    db = info.context.db
    loader = counting_loader(
        info,
        "folder_conversation_count",
        lambda ids: repo.folder_conversation_counts(db, principal, ids),
        key=lambda row: row["folder_id"],
        count=lambda row: int(row["count"]),
    )
    return await loader.load(folder_id)


async def bookmarked_message(
    info: Info, message_id: uuid.UUID
) -> tuple[asyncpg.Record, list[uuid.UUID]] | None:
    """A bookmark's message and its ancestor path (the bookmark list already checked the conversation)."""
    return await thread_loaders.message_with_path(info, message_id)


async def conversation_folders(info: Info, conversation_id: uuid.UUID) -> asyncpg.Record | None:
    """The caller's folder of a conversation, for every conversation of a response at once."""
    principal = await info.context.principal()
    db = info.context.db
    loader = single_loader(
        info,
        "conversation_folder",
        lambda ids: repo.folders_of_conversations(db, principal.tenant_id, principal.user_id, ids),
        key=lambda row: row["conversation_id"],
    )
    return await loader.load(conversation_id)


async def pin_position(info: Info, conversation_id: uuid.UUID) -> int | None:
    principal = await info.context.principal()
    db = info.context.db
    loader = single_loader(
        info,
        "pin_position",
        lambda ids: mark_repo.pin_positions(db, principal.tenant_id, principal.user_id, ids),
        key=lambda row: row["conversation_id"],
    )
    row = await loader.load(conversation_id)
    return int(row["position"]) if row is not None else None


async def folder_tree(info: Info) -> list[asyncpg.Record]:
    """Every folder of the caller, read once per request however many levels of `children` a query asks
    for (the tree is bounded by THREADLINE_FOLDERS_MAX)."""
    principal = await info.context.principal()
    db = info.context.db
    loader = grouped_loader(
        info,
        "folder_tree",
        lambda users: repo.folders_of(db, principal.tenant_id, users[0]),
        key=lambda row: row["user_id"],
    )
    return await loader.load(principal.user_id)
