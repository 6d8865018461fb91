"""Query and Mutation fields of messages and threads, and of client-streamed assistant messages."""

from __future__ import annotations

import uuid
from typing import Annotated

import asyncpg
import strawberry

from threadline.errors import bad_input, not_found
from threadline.graphql.context import Info
from threadline.graphql.node import register
from threadline.idempotency.schema import run_once
from threadline.idempotency.types import ClientMutationId
from threadline.ids import Kind, decode_id
from threadline.metadata import rules as metadata_rules
from threadline.parts.types import part_of_input
from threadline.runs import output
from threadline.threads import branch_service, resolvers, service, tree_service
from threadline.threads import repository as repo
from threadline.threads.service import MessageDraft, path_ids
from threadline.threads.types import Message, MessageInput, Thread, ThreadTree, UsageInput

RootId = Annotated[
    strawberry.ID,
    strawberry.argument(description="The id of the thread's root message (`Message.rootId`, `Thread.root`)."),
]
NewMessage = Annotated[
    MessageInput, strawberry.argument(description="The message: content, role, model, usage.")
]


def _draft(input: MessageInput) -> MessageDraft:
    return MessageDraft(
        content=input.content,
        role=input.role.value,
        model=input.model,
        prompt_tokens=input.usage.prompt_tokens if input.usage else None,
        completion_tokens=input.usage.completion_tokens if input.usage else None,
        metadata=metadata_rules.validated(input.metadata, "input.metadata"),
        parts=[part_of_input(p) for p in input.parts] if input.parts is not None else None,
    )


async def _current(info: Info, message_id: uuid.UUID) -> Message:
    """A message as it is now (the answer to a retried threadStart or messageReply)."""
    principal = await info.context.principal()
    row = await service.readable_message(info.context.db, principal, message_id)
    (path,) = await path_ids(info.context.db, principal.tenant_id, [row])
    return Message.from_row(row, path)


async def _with_path(info: Info, row: asyncpg.Record) -> Message:
    principal = await info.context.principal()
    (path,) = await path_ids(info.context.db, principal.tenant_id, [row])
    return Message.from_row(row, path)


@strawberry.type
class ThreadQuery:
    @strawberry.field(
        description="A thread (or, given a non-root id, the subtree under that message) as a depth-first "
        "snapshot with ancestry hints. `maxDepth` limits levels below the starting node; `fromId` starts "
        "at a descendant. Costs a constant number of SQL statements whatever the size of the tree."
    )
    async def thread_tree(
        self,
        info: Info,
        root_id: Annotated[
            strawberry.ID,
            strawberry.argument(
                description="Where the snapshot starts: a thread's root message, or any message for its subtree."
            ),
        ],
        max_depth: Annotated[
            int | None,
            strawberry.argument(
                description="Levels below the starting message to include (0: that message alone); all when omitted. "
                "Not negative."
            ),
        ] = None,
        from_id: Annotated[
            strawberry.ID | None,
            strawberry.argument(
                description="Start at this descendant of `rootId` instead (its ancestry is still reported)."
            ),
        ] = None,
    ) -> ThreadTree:
        principal = await info.context.principal()
        if max_depth is not None and max_depth < 0:
            raise bad_input("`maxDepth` must not be negative", argument="maxDepth")
        start = decode_id(root_id, Kind.MESSAGE)
        descendant = decode_id(from_id, Kind.MESSAGE) if from_id is not None else None
        read = await tree_service.thread_tree(info.context.db, principal, start, max_depth, descendant)
        return await resolvers.thread_tree(info, read)

    @strawberry.field(description="A message the caller may read.")
    async def message(
        self, info: Info, id: Annotated[strawberry.ID, strawberry.argument(description="The message's id.")]
    ) -> Message | None:
        principal = await info.context.principal()
        row = await service.readable_message(info.context.db, principal, decode_id(id, Kind.MESSAGE))
        (path,) = await path_ids(info.context.db, principal.tenant_id, [row])
        return Message.from_row(row, path)

    @strawberry.field(description="A thread by its root message id, with the caller's unread count.")
    async def thread(self, info: Info, root_id: RootId) -> Thread | None:
        principal = await info.context.principal()
        db = info.context.db
        root = await service.readable_message(db, principal, decode_id(root_id, Kind.MESSAGE))
        row = await repo.thread_with_root(db, principal.tenant_id, root["root_id"], principal.user_id)
        if row is None:
            raise not_found("Thread")
        return Thread.from_row(row)


@strawberry.type
class ThreadMutation:
    @strawberry.mutation(
        description="Start a thread: a new root message in a conversation the caller may write to."
    )
    async def thread_start(
        self,
        info: Info,
        conversation_id: Annotated[
            strawberry.ID,
            strawberry.argument(description="The conversation to start the thread in (`Conversation.id`)."),
        ],
        input: NewMessage,
        client_mutation_id: ClientMutationId = None,
    ) -> Message:
        principal = await info.context.principal()
        settings = info.context.settings
        done = await run_once(
            info,
            client_mutation_id,
            {"conversationId": conversation_id, "input": input},
            lambda db: service.start_thread(
                db, settings, principal, decode_id(conversation_id, Kind.CONVERSATION), _draft(input)
            ),
            lambda row: [row["id"]],
        )
        if done.value is None:
            return await _current(info, done.ids[0])
        return Message.from_row(done.value, [done.value["id"]])

    @strawberry.mutation(description="Reply to any message (several replies to one message make branches).")
    async def message_reply(
        self,
        info: Info,
        parent_id: Annotated[
            strawberry.ID,
            strawberry.argument(
                description="The message replied to; replies nest at most 1000 levels deep (THREADLINE_THREAD_MAX_DEPTH)."
            ),
        ],
        input: NewMessage,
        client_mutation_id: ClientMutationId = None,
    ) -> Message:
        principal = await info.context.principal()
        settings = info.context.settings
        done = await run_once(
            info,
            client_mutation_id,
            {"parentId": parent_id, "input": input},
            lambda db: service.reply(
                db, settings, principal, decode_id(parent_id, Kind.MESSAGE), _draft(input)
            ),
            lambda written: [written[0]["id"]],
        )
        if done.value is None:
            return await _current(info, done.ids[0])
        row, path = done.value
        return Message.from_row(row, path)

    @strawberry.mutation(
        description="Edit your own message; the previous version is kept in `edits`. With `asBranch: true` "
        "(edit-and-resend) the message stays as it is and a new sibling with the new text is returned instead."
    )
    async def message_edit(
        self,
        info: Info,
        id: Annotated[strawberry.ID, strawberry.argument(description="The message to edit (yours).")],
        content: Annotated[
            str,
            strawberry.argument(
                description="The new text: non-empty, at most 1 MiB (THREADLINE_MESSAGE_MAX_BYTES)."
            ),
        ],
        as_branch: Annotated[
            bool,
            strawberry.argument(
                description="Instead of rewriting the message, add a new reply to its parent with the new text "
                "(same role and model), so the earlier version and the answers under it stay reachable as a "
                "sibling branch; you are moved onto the new message (`Thread.currentLeaf`). BAD_USER_INPUT for "
                "a thread's root, which has no parent."
            ),
        ] = False,
    ) -> Message:
        principal = await info.context.principal()
        message_id = decode_id(id, Kind.MESSAGE)
        settings = info.context.settings
        if as_branch:
            row, path = await branch_service.edit_as_branch(
                info.context.db, settings, principal, message_id, content
            )
        else:
            row, path = await service.edit(info.context.db, settings, principal, message_id, content)
        return Message.from_row(row, path)

    @strawberry.mutation(
        description="Delete a message (author, or the conversation's owner): its content is removed, the node "
        "stays as a tombstone so replies remain reachable."
    )
    async def message_delete(
        self,
        info: Info,
        id: Annotated[strawberry.ID, strawberry.argument(description="The message to delete.")],
    ) -> Message:
        principal = await info.context.principal()
        row, path = await service.delete(info.context.db, principal, decode_id(id, Kind.MESSAGE))
        return Message.from_row(row, path)

    @strawberry.mutation(
        description="Choose the branch you are on in a thread: `messageId` becomes your `Thread.currentLeaf` and "
        "`currentPath` ends at it (yours alone: others keep theirs). Reading the thread is enough. Announced to "
        "your own streams as `branch.current`. BAD_USER_INPUT for a message outside the thread."
    )
    async def thread_set_current(
        self,
        info: Info,
        root_id: RootId,
        message_id: Annotated[
            strawberry.ID,
            strawberry.argument(description="Any message of the thread (usually a leaf) to be on."),
        ],
    ) -> Thread:
        principal = await info.context.principal()
        db = info.context.db
        root = decode_id(root_id, Kind.MESSAGE)
        await branch_service.set_current(db, principal, root, decode_id(message_id, Kind.MESSAGE))
        row = await repo.thread_with_root(db, principal.tenant_id, root, principal.user_id)
        assert row is not None
        return Thread.from_row(row)

    @strawberry.mutation(description="Mark a thread read up to its latest message, for the caller.")
    async def thread_mark_read(self, info: Info, root_id: RootId) -> Thread:
        principal = await info.context.principal()
        row = await service.mark_read(info.context.db, principal, decode_id(root_id, Kind.MESSAGE))
        return Thread.from_row(row)


@strawberry.type
class MessageStreamMutation:
    """Client-streamed ASSISTANT messages (a run streams its own through runs/output.py too)."""

    @strawberry.mutation(
        description="Append streamed output to an ASSISTANT message you wrote (for clients that stream a model "
        "themselves): stored as the next chunk and published as `message.delta`. CONFLICT once it is finished "
        "or while a run writes it."
    )
    async def message_append(
        self,
        info: Info,
        id: Annotated[
            strawberry.ID,
            strawberry.argument(description="The unfinished ASSISTANT message you are streaming."),
        ],
        delta: Annotated[
            str,
            strawberry.argument(
                description="Text to add at the end; the whole message stays within 1 MiB (THREADLINE_MESSAGE_MAX_BYTES)."
            ),
        ],
    ) -> Message:
        principal = await info.context.principal()
        row = await output.client_append(
            info.context.db, info.context.settings, principal, decode_id(id, Kind.MESSAGE), delta
        )
        return await _with_path(info, row)

    @strawberry.mutation(
        description="Finish an ASSISTANT message you streamed: records `usage` (added to the conversation's "
        "tokenCount) and publishes `message.done`. Nothing can be appended afterwards."
    )
    async def message_finish(
        self,
        info: Info,
        id: Annotated[strawberry.ID, strawberry.argument(description="The ASSISTANT message you streamed.")],
        usage: Annotated[
            UsageInput | None, strawberry.argument(description="Its token usage, if the model reported it.")
        ] = None,
    ) -> Message:
        principal = await info.context.principal()
        final = (
            output.Usage(usage.prompt_tokens or 0, usage.completion_tokens or 0)
            if usage is not None
            else None
        )
        row = await output.client_finish(info.context.db, principal, decode_id(id, Kind.MESSAGE), final)
        return await _with_path(info, row)


async def _message_node(info: Info, message_id: uuid.UUID) -> Message:
    principal = await info.context.principal()
    row = await service.readable_message(info.context.db, principal, message_id)
    (path,) = await path_ids(info.context.db, principal.tenant_id, [row])
    return Message.from_row(row, path)


async def _thread_node(info: Info, root_id: uuid.UUID) -> Thread | None:
    principal = await info.context.principal()
    await service.readable_message(info.context.db, principal, root_id)
    row = await repo.thread_with_root(info.context.db, principal.tenant_id, root_id, principal.user_id)
    return Thread.from_row(row) if row else None


register(Kind.MESSAGE, _message_node)
register(Kind.THREAD, _thread_node)
