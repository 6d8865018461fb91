"""Mutations for presence and typing."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import strawberry

from threadline.graphql.context import Info
from threadline.graphql.describe import describe_values
from threadline.ids import Kind, decode_id
from threadline.presence import service


@strawberry.enum(description="A user's presence.")
class PresenceStatus(StrEnum):
    ONLINE = "ONLINE"
    AWAY = "AWAY"
    OFFLINE = "OFFLINE"


describe_values(
    PresenceStatus,
    {
        "ONLINE": "Active now (the default of `presenceHeartbeat`).",
        "AWAY": "Connected but idle, as the client reports it.",
        "OFFLINE": "Gone: said so, or silent for longer than the presence timeout (60 s by default).",
    },
)


@strawberry.type
class PresenceMutation:
    @strawberry.mutation(
        description="Report the caller alive (default ONLINE). Status changes are announced as "
        "`presence.update`; silence longer than the presence timeout turns the caller OFFLINE."
    )
    async def presence_heartbeat(
        self,
        info: Info,
        status: Annotated[
            PresenceStatus | None,
            strawberry.argument(
                description="What to report: ONLINE by default, AWAY when idle, OFFLINE when leaving."
            ),
        ] = PresenceStatus.ONLINE,
    ) -> bool:
        principal = await info.context.principal()
        await service.heartbeat(
            info.context.db, principal.tenant_id, principal.user_id, (status or PresenceStatus.ONLINE).value
        )
        return True

    @strawberry.mutation(
        description="Start (renew) or stop the caller's typing indicator in a conversation, optionally in one "
        "thread. It expires after a few seconds without renewal (`typing.update` isTyping=false)."
    )
    async def typing_set(
        self,
        info: Info,
        conversation_id: Annotated[
            strawberry.ID, strawberry.argument(description="The conversation typed in (`Conversation.id`).")
        ],
        is_typing: Annotated[
            bool,
            strawberry.argument(
                description="true starts or renews the indicator (it lapses after 5 s without renewal); false stops it."
            ),
        ],
        root_id: Annotated[
            strawberry.ID | None,
            strawberry.argument(
                description="The root message of the thread typed in; omitted: the conversation as a whole."
            ),
        ] = None,
    ) -> bool:
        principal = await info.context.principal()
        return await service.set_typing(
            info.context.db,
            info.context.settings,
            principal,
            decode_id(conversation_id, Kind.CONVERSATION),
            decode_id(root_id, Kind.MESSAGE) if root_id else None,
            is_typing,
        )
