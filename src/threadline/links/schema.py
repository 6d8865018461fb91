"""Mutation fields of links between conversations (the lists are `Conversation.links` and `.backlinks`)."""

from __future__ import annotations

import uuid
from typing import Annotated

import strawberry

from threadline.conversations import service as conversations
from threadline.conversations.types import Conversation
from threadline.graphql.context import Info
from threadline.graphql.node import register
from threadline.ids import Kind, decode_id
from threadline.links import service
from threadline.links.service import LinkKind
from threadline.links.types import ConversationLink, LinkKindEnum


@strawberry.type
class LinkMutation:
    @strawberry.mutation(
        description="Link one conversation to another. The caller must be able to read both (NOT_FOUND "
        "otherwise, as for a conversation that does not exist) and to write to `fromId` (FORBIDDEN for a "
        "VIEWER). Linking the same pair with the same kind again returns the existing link. At most 200 links "
        "from one conversation (THREADLINE_LINKS_MAX); a conversation linking to itself is BAD_USER_INPUT."
    )
    async def conversation_link(
        self,
        info: Info,
        from_id: Annotated[
            strawberry.ID, strawberry.argument(description="The conversation the link starts from.")
        ],
        to_id: Annotated[strawberry.ID, strawberry.argument(description="The conversation it points to.")],
        kind: Annotated[
            LinkKindEnum,  # type: ignore[valid-type]
            strawberry.argument(description="What the link says: RELATED, CONTINUES, CITES or DUPLICATE."),
        ],
    ) -> ConversationLink:
        principal = await info.context.principal()
        db = info.context.db
        row = await service.link(
            db,
            info.context.settings,
            principal,
            decode_id(from_id, Kind.CONVERSATION),
            decode_id(to_id, Kind.CONVERSATION),
            LinkKind(kind),
        )
        target = await conversations.get(db, principal, row["to_id"])
        return ConversationLink.from_row(row, Conversation.from_row(target))

    @strawberry.mutation(
        description="Remove a link (whoever may write to the conversation it starts from). NOT_FOUND unless the "
        "caller may read both ends."
    )
    async def conversation_unlink(
        self,
        info: Info,
        id: Annotated[strawberry.ID, strawberry.argument(description="The link (`ConversationLink.id`).")],
    ) -> bool:
        principal = await info.context.principal()
        return await service.unlink(info.context.db, principal, decode_id(id, Kind.CONVERSATION_LINK))


async def _link_node(info: Info, link_id: uuid.UUID) -> ConversationLink:
    principal = await info.context.principal()
    db = info.context.db
    row = await service.readable_link(db, principal, link_id)
    target = await conversations.get(db, principal, row["to_id"])
    return ConversationLink.from_row(row, Conversation.from_row(target))


register(Kind.CONVERSATION_LINK, _link_node)
