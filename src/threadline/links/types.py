"""GraphQL types of links between conversations."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any

import asyncpg
import strawberry

from threadline.auth.types import User, load_user
from threadline.graphql.context import Info
from threadline.graphql.describe import describe_values
from threadline.graphql.node import Node
from threadline.graphql.pagination import Connection, as_datetime, as_uuid, connection, decode_cursor
from threadline.graphql.pagination import page_size as checked_page_size
from threadline.ids import Kind, encode_id
from threadline.links import loaders
from threadline.links.service import LinkKind

LinkKindEnum = strawberry.enum(
    LinkKind, name="LinkKind", description="What a link between two conversations says."
)
describe_values(
    LinkKindEnum,
    {
        "RELATED": "The two conversations are about related things.",
        "CONTINUES": "The link's source continues the target (a follow-up of an earlier conversation).",
        "CITES": "The link's source cites or relies on the target.",
        "DUPLICATE": "The link's source duplicates the target.",
    },
)


@strawberry.type(
    description="A link from one conversation to another. Visible to whoever may read both ends; links to or "
    "from a conversation the caller cannot read are left out of every list."
)
class ConversationLink(Node):
    kind: LinkKindEnum = strawberry.field(description="What the link says.")  # type: ignore[valid-type]
    created_at: datetime = strawberry.field(description="When the link was made.")
    from_id: strawberry.ID = strawberry.field(description="The conversation the link starts from.")
    to_id: strawberry.ID = strawberry.field(description="The conversation the link points to.")
    # The other end, built by the caller (conversations/types.py builds Conversations; this module may not
    # import it, which imports this one).
    other: strawberry.Private[Any]
    creator_uuid: strawberry.Private[uuid.UUID | None]

    @strawberry.field(
        description="The conversation at the other end: the target in `links`, the source in `backlinks`, the "
        "target in `conversationLink`'s answer."
    )
    def conversation(
        self,
    ) -> Annotated[Conversation, strawberry.lazy("threadline.conversations.types")] | None:  # type: ignore[name-defined]  # noqa: F821
        return self.other

    @strawberry.field(description="Who made the link (null once that user is erased).")
    async def created_by(self, info: Info) -> User | None:
        return await load_user(info, self.creator_uuid)

    @classmethod
    def from_row(cls, row: asyncpg.Record, other: Any) -> ConversationLink:
        """From a `LINK_AND_OTHER` row (`links.repository`) or a plain link row, with the other end."""
        joined = "link_id" in row.keys()
        return cls(
            id=strawberry.ID(encode_id(Kind.CONVERSATION_LINK, row["link_id" if joined else "id"])),
            kind=LinkKind(row["link_kind" if joined else "kind"]),
            created_at=row["linked_at" if joined else "created_at"],
            from_id=strawberry.ID(encode_id(Kind.CONVERSATION, row["from_id"])),
            to_id=strawberry.ID(encode_id(Kind.CONVERSATION, row["to_id"])),
            other=other,
            creator_uuid=row["link_created_by" if joined else "created_by"],
        )


async def link_connection(
    info: Info,
    conversation_id: uuid.UUID,
    first: int | None,
    after: str | None,
    *,
    backwards: bool,
    to_conversation: Callable[[asyncpg.Record], Any],
) -> Connection[ConversationLink]:
    """A page of a conversation's links (or backlinks), each with the conversation at its other end (built by
    `to_conversation` from the same row)."""
    settings = info.context.settings
    limit = checked_page_size(first, settings.page_size_default, settings.page_size_max)
    cursor = decode_cursor(after, (as_datetime, as_uuid)) if after else None
    rows = await loaders.links(
        info,
        conversation_id,
        backwards=backwards,
        limit=limit + 1,
        after=cursor,
    )
    return connection(
        rows,
        limit,
        lambda r: ConversationLink.from_row(r, to_conversation(r)),
        lambda r: (r["linked_at"], r["link_id"]),
        lambda: loaders.link_count(info, conversation_id, backwards=backwards),
        has_previous=cursor is not None,
    )
