"""GraphQL types of share links: the link its maker manages, and the conversation a reader sees."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar

import asyncpg
import strawberry

from threadline.graphql import budget
from threadline.graphql.context import Info
from threadline.graphql.node import Node
from threadline.graphql.pagination import (
    After,
    Connection,
    First,
    as_int,
    connection,
    decode_cursor,
    page_size,
)
from threadline.ids import Kind, encode_id
from threadline.sharing import service
from threadline.threads.types import MessageRole

SHARE_PATH = "/share/"
T = TypeVar("T")


@strawberry.type(
    description="A read-only link to a conversation or one branch of it, readable without credentials."
)
class ShareLink(Node):
    conversation_id: strawberry.ID = strawberry.field(description="The conversation shared.")
    message_id: strawberry.ID | None = strawberry.field(
        description="The branch shared: the path from its thread's root down to this message (and, for a live "
        "link, the replies below it). Null: the whole conversation."
    )
    live: bool = strawberry.field(
        description="True: readers see the conversation as it is now. False: as it was when shared (messages "
        "written later stay hidden; edits and deletions show, as deleted means gone)."
    )
    token: str | None = strawberry.field(
        description="The secret that opens the link: only in `shareLinkCreate`'s answer, never again (only its "
        "hash is kept). Pass it to `sharedConversation(token:)` or open `url`."
    )
    url: str | None = strawberry.field(
        description="The page of the link on this server (`/share/<token>`), only with `token`."
    )
    created_at: datetime = strawberry.field(description="When it was made.")
    expires_at: datetime | None = strawberry.field(description="When it stops opening; null: never.")
    revoked_at: datetime | None = strawberry.field(description="When it was revoked; null: not revoked.")
    view_count: int = strawberry.field(
        description="How many times it was read (each `sharedConversation` answer and each page load)."
    )
    last_viewed_at: datetime | None = strawberry.field(description="When it was last opened.")

    @classmethod
    def from_row(cls, row: asyncpg.Record, token: str | None = None) -> ShareLink:
        return cls(
            id=strawberry.ID(encode_id(Kind.SHARE_LINK, row["id"])),
            conversation_id=strawberry.ID(encode_id(Kind.CONVERSATION, row["conversation_id"])),
            message_id=strawberry.ID(encode_id(Kind.MESSAGE, row["message_id"]))
            if row["message_id"]
            else None,
            live=row["live"],
            token=token,
            url=SHARE_PATH + token if token else None,
            created_at=row["created_at"],
            expires_at=row["expires_at"],
            revoked_at=row["revoked_at"],
            view_count=row["view_count"],
            last_viewed_at=row["last_viewed_at"],
        )


@strawberry.type(description="A message as a share link shows it: its text and role, never who wrote it.")
class SharedMessage:
    id: strawberry.ID = strawberry.field(description="The message's id (fetching it needs access to it).")
    parent_id: strawberry.ID | None = strawberry.field(
        description="The message it replies to; null for a root."
    )
    depth: int = strawberry.field(description="0 for a thread's root, its parent's depth + 1 otherwise.")
    role: MessageRole = strawberry.field(description="USER, ASSISTANT, SYSTEM or TOOL.")
    content: str = strawberry.field(description="Its text; empty once deleted.")
    is_deleted: bool = strawberry.field(description="True when the message was deleted after sharing.")
    model: str | None = strawberry.field(description="The model that wrote it, if any.")
    created_at: datetime = strawberry.field(description="When it was written.")
    edited_at: datetime | None = strawberry.field(description="When it was last edited.")

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> SharedMessage:
        deleted = row["deleted_at"] is not None
        return cls(
            id=strawberry.ID(encode_id(Kind.MESSAGE, row["id"])),
            parent_id=strawberry.ID(encode_id(Kind.MESSAGE, row["parent_id"])) if row["parent_id"] else None,
            depth=row["depth"],
            role=MessageRole(row["role"]),
            content="" if deleted else row["content"],
            is_deleted=deleted,
            model=row["model"],
            created_at=row["created_at"],
            edited_at=row["edited_at"],
        )


@strawberry.type(description="What a share link shows: a conversation's title and the messages shared.")
class SharedConversation:
    title: str = strawberry.field(description="The conversation's title.")
    live: bool = strawberry.field(description="Whether later messages show (see `ShareLink.live`).")
    shared_at: datetime = strawberry.field(description="When the link was made.")
    expires_at: datetime | None = strawberry.field(description="When the link stops opening; null: never.")
    shared: strawberry.Private[service.Shared]
    # What this read of the link has fetched, by what was asked: one read is counted once against the link's rate
    # windows, so its aliases of `messages` must not each count and read the share again (30 counts of a large
    # conversation per read, for anyone holding a link).
    fetched: strawberry.Private[dict[tuple[Any, ...], asyncio.Future[Any]]]

    def _once(self, key: tuple[Any, ...], fetch: Callable[[], Awaitable[T]]) -> Awaitable[T]:
        found = self.fetched.get(key)
        if found is None:
            found = self.fetched[key] = asyncio.ensure_future(fetch())
        return found

    @strawberry.field(
        description="The messages shared, oldest first (each with its `parentId` and `depth`, to draw the tree)."
    )
    async def messages(
        self, info: Info, first: First = None, after: After = None
    ) -> Connection[SharedMessage]:
        settings = info.context.settings
        db = info.context.db
        limit = page_size(first, settings.page_size_default, settings.page_size_max)
        after_seq = decode_cursor(after, (as_int,))[0] if after else 0
        rows = await self._once(
            ("page", after_seq, limit), lambda: service.messages_page(db, self.shared, after_seq, limit + 1)
        )
        budget.charge_messages(info, len(rows[:limit]), sum(len(r["content"]) for r in rows[:limit]), 0)

        async def total() -> int:
            return await self._once(("count",), lambda: service.count_messages(db, self.shared))

        return connection(
            rows, limit, SharedMessage.from_row, lambda r: (r["seq"],), total, after is not None
        )

    @classmethod
    def of(cls, shared: service.Shared) -> SharedConversation:
        link = shared.link
        return cls(
            title=shared.title,
            live=link["live"],
            shared_at=link["created_at"],
            expires_at=link["expires_at"],
            shared=shared,
            fetched={},
        )
