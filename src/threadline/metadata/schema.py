"""Mutation fields of message metadata (conversations take theirs in conversationCreate/Update)."""

from __future__ import annotations

from typing import Annotated

import strawberry
from strawberry.scalars import JSON

from threadline.graphql.context import Info
from threadline.ids import Kind, decode_id
from threadline.metadata import service
from threadline.threads.service import path_ids
from threadline.threads.types import Message


@strawberry.type
class MetadataMutation:
    @strawberry.mutation(
        description="Replace a message's metadata ({} clears it): the author's, or the conversation owner's. At "
        "most 16 keys (each 1 to 64 characters) with string values of at most 512 characters; BAD_USER_INPUT "
        "naming the bound otherwise."
    )
    async def message_metadata_set(
        self,
        info: Info,
        id: Annotated[strawberry.ID, strawberry.argument(description="The message (`Message.id`).")],
        metadata: Annotated[JSON, strawberry.argument(description="The new metadata: an object of strings.")],
    ) -> Message:
        principal = await info.context.principal()
        row = await service.set_message_metadata(
            info.context.db, principal, decode_id(id, Kind.MESSAGE), metadata
        )
        (path,) = await path_ids(info.context.db, principal.tenant_id, [row])
        return Message.from_row(row, path)
