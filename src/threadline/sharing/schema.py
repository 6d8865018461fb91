"""Query and Mutation fields of share links. `sharedConversation` is the one field anonymous callers may ask
for besides the schema itself (graphql/limits.py lets it through); it still passes the limits and its own
per-token and per-address rate windows."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

import strawberry

from threadline.graphql.context import Info
from threadline.graphql.node import register
from threadline.graphql.pagination import (
    After,
    Connection,
    First,
    as_datetime,
    as_uuid,
    connection,
    decode_cursor,
    page_size,
)
from threadline.ids import Kind, decode_id
from threadline.ratelimits import addresses
from threadline.sharing import repository as repo
from threadline.sharing import service
from threadline.sharing.types import SharedConversation, ShareLink


async def _resolve_link(info: Info, value: uuid.UUID) -> ShareLink:
    principal = await info.context.principal()
    return ShareLink.from_row(await service.readable_link(info.context.db, principal, value))


register(Kind.SHARE_LINK, _resolve_link)


@strawberry.type
class ShareQuery:
    @strawberry.field(
        description="A conversation (or branch) shared by link, for anyone holding its token: no credentials "
        "needed. NOT_FOUND for a token that is unknown, revoked or expired, alike; RATE_LIMITED past the reads "
        "allowed per link and per client address (THREADLINE_SHARE_READS_PER_TOKEN, _PER_ADDRESS)."
    )
    async def shared_conversation(
        self,
        info: Info,
        token: Annotated[str, strawberry.argument(description="The link's token (`ShareLink.token`).")],
    ) -> SharedConversation:
        context = info.context
        shared = await service.open_link(
            context.db, context.settings, token, addresses.counted(context.request), count=True
        )
        return SharedConversation.of(shared)

    @strawberry.field(
        description="The share links the caller made, newest first (revoked and expired included)."
    )
    async def share_links(
        self,
        info: Info,
        conversation_id: Annotated[
            strawberry.ID | None,
            strawberry.argument(description="Only the links of this conversation; all of them when omitted."),
        ] = None,
        first: First = None,
        after: After = None,
    ) -> Connection[ShareLink]:
        principal = await info.context.principal()
        settings = info.context.settings
        db = info.context.db
        limit = page_size(first, settings.page_size_default, settings.page_size_max)
        conversation = decode_id(conversation_id, Kind.CONVERSATION) if conversation_id is not None else None
        position: tuple[datetime, uuid.UUID] | None = None
        if after:
            position = decode_cursor(after, (as_datetime, as_uuid))
        rows = await repo.links_of(
            db, principal.tenant_id, principal.user_id, conversation, position, limit + 1
        )

        async def total() -> int:
            return await repo.count_links_of(db, principal.tenant_id, principal.user_id, conversation)

        return connection(
            rows, limit, ShareLink.from_row, lambda r: (r["created_at"], r["id"]), total, after is not None
        )


@strawberry.type
class ShareMutation:
    @strawberry.mutation(
        description="Make a read-only link to a conversation or one branch of it (owner or tenant admin only). "
        "The answer holds the token once; only its hash is kept."
    )
    async def share_link_create(
        self,
        info: Info,
        conversation_id: Annotated[
            strawberry.ID, strawberry.argument(description="The conversation to share.")
        ],
        message_id: Annotated[
            strawberry.ID | None,
            strawberry.argument(
                description="Share only the branch ending at this message (its path from the thread's root); "
                "the whole conversation when omitted."
            ),
        ] = None,
        expires_at: Annotated[
            datetime | None,
            strawberry.argument(
                description="When the link stops opening (at most ten years ahead); never if omitted."
            ),
        ] = None,
        live: Annotated[
            bool,
            strawberry.argument(
                description="Show the conversation as it is when read (true) or as it is now (false, the default)."
            ),
        ] = False,
    ) -> ShareLink:
        principal = await info.context.principal()
        created = await service.create(
            info.context.db,
            principal,
            decode_id(conversation_id, Kind.CONVERSATION),
            decode_id(message_id, Kind.MESSAGE) if message_id is not None else None,
            expires_at,
            live,
        )
        return ShareLink.from_row(created.link, created.token)

    @strawberry.mutation(
        description="Revoke a share link (its maker, or who manages the conversation): it answers NOT_FOUND from "
        "then on. Revoking twice is harmless."
    )
    async def share_link_revoke(
        self,
        info: Info,
        id: Annotated[strawberry.ID, strawberry.argument(description="The link (`ShareLink.id`).")],
    ) -> ShareLink:
        principal = await info.context.principal()
        return ShareLink.from_row(
            await service.revoke(info.context.db, principal, decode_id(id, Kind.SHARE_LINK))
        )
