"""Mutation fields of forks."""

from __future__ import annotations

from typing import Annotated

import strawberry

from threadline.conversations import service as conversations
from threadline.conversations.types import Conversation
from threadline.forks import service
from threadline.forks.types import ConversationForkMode
from threadline.graphql.context import Info
from threadline.idempotency.schema import run_once
from threadline.idempotency.types import ClientMutationId
from threadline.ids import Kind, decode_id


@strawberry.type
class ForkMutation:
    @strawberry.mutation(
        description="Copy part of a thread into a new conversation owned by the caller (who must be able to read "
        "the message): the branch to the message and what is under it, the path alone, or the whole thread. "
        "Copies keep roles, content, authors, timestamps, models, usage (not counted again: `Usage.imported`) "
        "and metadata; runs, edit history and streamed chunks are not copied. The copy has its provenance in "
        "`forkedFrom`. More than THREADLINE_FORK_MAX_MESSAGES messages is BAD_USER_INPUT (`limit`)."
    )
    async def conversation_fork(
        self,
        info: Info,
        message_id: Annotated[
            strawberry.ID, strawberry.argument(description="The message to fork at (`Message.id`).")
        ],
        mode: Annotated[
            ConversationForkMode,
            strawberry.argument(description="What to copy: BRANCH (default), PATH_ONLY or THREAD."),
        ] = ConversationForkMode.BRANCH,
        title: Annotated[
            str | None,
            strawberry.argument(
                description="The new conversation's title (1 to 500 characters); the source's when omitted."
            ),
        ] = None,
        client_mutation_id: ClientMutationId = None,
    ) -> Conversation:
        principal = await info.context.principal()
        settings = info.context.settings
        done = await run_once(
            info,
            client_mutation_id,
            {"messageId": message_id, "mode": mode, "title": title},
            lambda db: service.fork(
                db, settings, principal, decode_id(message_id, Kind.MESSAGE), mode.value, title
            ),
            lambda forked: [forked[0]["id"]],
        )
        if done.value is None:  # a retry: the fork the first call made
            return Conversation.from_row(await conversations.get(info.context.db, principal, done.ids[0]))
        return Conversation.from_row(done.value[0])
