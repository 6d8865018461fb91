"""GraphQL types of messages, threads and thread trees."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Sequence
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any
from uuid import UUID

import asyncpg
import strawberry
from strawberry.scalars import JSON

from threadline.auth.types import User, load_user, loaded_user
from threadline.errors import bad_input
from threadline.feedback.types import FeedbackSummary, MessageFeedback
from threadline.graphql import budget
from threadline.graphql.context import Info
from threadline.graphql.describe import describe_values
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
from threadline.graphql.ready import when_ready
from threadline.ids import Kind, decode_id, encode_id
from threadline.parts import model as message_parts
from threadline.parts.types import MessagePart, MessagePartInput, part_object
from threadline.privacy import loaders as privacy_loaders
from threadline.privacy import reading
from threadline.privacy.types import PiiDetection
from threadline.privacy.writing import mask_parts
from threadline.threads import branch_loaders, loaders
from threadline.threads import repository as repo
from threadline.threads.paths import segments, sibling_rank


@strawberry.enum(description="Who speaks in a message.")
class MessageRole(StrEnum):
    USER = "USER"
    ASSISTANT = "ASSISTANT"
    SYSTEM = "SYSTEM"
    TOOL = "TOOL"


describe_values(
    MessageRole,
    {
        "USER": "Written by a person (or a client on their behalf).",
        "ASSISTANT": "Written by a model, usually by a run (`Message.run`).",
        "SYSTEM": "Instructions for the model, not shown as conversation by most clients.",
        "TOOL": "The output of a tool the model called.",
    },
)


_ROLES = {role.value: role for role in MessageRole}


@strawberry.type(description="Token usage.")
class Usage:
    prompt_tokens: int = strawberry.field(description="Tokens in the prompt.")
    completion_tokens: int = strawberry.field(description="Tokens generated.")
    total_tokens: int = strawberry.field(description="promptTokens + completionTokens.")
    imported: bool = strawberry.field(
        default=False,
        description="True when the usage was read from an imported file (self-reported, not measured by "
        "Threadline) or belongs to a fork's copy of a message (`conversationFork`: its source spent it): it is "
        "shown but not counted in the conversation's tokenCount nor in usage insights.",
    )

    @classmethod
    def of(cls, prompt: int | None, completion: int | None, imported: bool = False) -> Usage | None:
        if prompt is None and completion is None:
            return None
        total = (prompt or 0) + (completion or 0)
        return cls(
            prompt_tokens=prompt or 0,
            completion_tokens=completion or 0,
            total_tokens=total,
            imported=imported,
        )


@strawberry.type(description="An earlier version of an edited message.")
class MessageEdit:
    content: str = strawberry.field(description="The content before the edit.")
    edited_at: datetime = strawberry.field(description="When it was replaced.")


@strawberry.type(description="A piece of streamed output, in order.")
class MessageChunk:
    index: int = strawberry.field(description="Position in the stream, from 0.")
    content: str = strawberry.field(description="The text of this chunk.")
    created_at: datetime = strawberry.field(description="When it arrived.")


@strawberry.type(description="A message: a node of a thread tree.")
class Message(Node):
    conversation_id: strawberry.ID = strawberry.field(description="The conversation it belongs to.")
    root_id: strawberry.ID = strawberry.field(description="Its thread's root message (itself for a root).")
    parent_id: strawberry.ID | None = strawberry.field(
        description="The message it replies to; null for a root."
    )
    depth: int = strawberry.field(description="0 for a root, parent's depth + 1 otherwise.")
    path: list[strawberry.ID] = strawberry.field(
        description="Ancestor ids from the root, ending with this id."
    )
    child_count: int = strawberry.field(
        description="Replies directly under this message (branches), deleted ones included."
    )
    role: MessageRole = strawberry.field(description="USER, ASSISTANT, SYSTEM or TOOL.")
    content: str = strawberry.field(description="Text; empty for a deleted message (tombstone).")
    model: str | None = strawberry.field(description="Model that produced it, if any.")
    usage: Usage | None = strawberry.field(description="Token usage, if recorded.")
    created_at: datetime = strawberry.field(description="When it was written.")
    edited_at: datetime | None = strawberry.field(description="When it was last edited.")
    deleted_at: datetime | None = strawberry.field(description="When it was deleted (tombstoned).")
    is_deleted: bool = strawberry.field(description="True for a tombstone: content removed, node kept.")
    uuid: strawberry.Private[UUID]
    root_uuid: strawberry.Private[UUID]
    author_uuid: strawberry.Private[UUID | None]
    # Set when this caller reads the content masked (privacy.reading): the placeholders' spans.
    masked_pii: strawberry.Private[list[dict[str, Any]] | None] = None

    @strawberry.field(description="Who wrote it (null after erasure).")
    @when_ready(lambda self, context: loaded_user(context, self.author_uuid))
    async def author(self, info: Info) -> User | None:
        return await load_user(info, self.author_uuid)

    @strawberry.field(
        description="Direct replies, oldest first. Any nesting depth is served from one load of the thread."
    )
    def replies(self, info: Info) -> list[Message]:
        return _replies(self, info)  # type: ignore[return-value]  # a list, or an awaitable graphql-core awaits

    @strawberry.field(
        description="Its position among the replies to its parent, oldest first, from 0 (0 for a root). With "
        '`siblingCount` a client shows "< 2/3 >" (siblingIndex + 1 of siblingCount).'
    )
    async def sibling_index(self, info: Info) -> int:
        found = await branch_loaders.sibling_info(info, self.uuid)
        return sibling_rank(bytes(found["path"])) if found is not None else 0

    @strawberry.field(
        description="How many replies its parent has, this one included (deleted ones too: they stay as "
        "tombstones); 1 for a root."
    )
    async def sibling_count(self, info: Info) -> int:
        return await _sibling_count(self, info)

    @strawberry.field(
        description="The other replies to the same parent (this one left out), oldest first, a page at a time "
        "(a parent may have thousands): regenerated answers and edited branches. Empty for a root."
    )
    async def siblings(self, info: Info, first: First = None, after: After = None) -> Connection[Message]:
        return await _siblings(self, info, first, after)

    @strawberry.field(
        description="The content in parts, in order: text, images, files, tool calls and results, reasoning. "
        "A plain-text message has one text part (none when deleted); `content` is the parts' plain text."
    )
    async def parts(self, info: Info) -> list[MessagePart]:
        if self.deleted_at is not None:
            return []
        stored = await loaders.parts(info, self.uuid)
        reader = reading.active()
        if stored is not None and reader is not None and reader.masks(self.author_uuid):
            stored = mask_parts(stored)
        return [part_object(p) for p in message_parts.parts_or_text(stored, self.content)]

    @strawberry.field(
        description="Key/value strings of the client's own (`messageMetadataSet`, or `metadata` when posted); {} "
        "when none."
    )
    async def metadata(self, info: Info) -> JSON:
        from threadline.metadata.loaders import message_metadata

        return JSON(await message_metadata(info, self.uuid))

    @strawberry.field(description="The viewer's own feedback on it (`messageFeedbackSet`), or null.")
    async def feedback(self, info: Info) -> MessageFeedback | None:
        from threadline.feedback.loaders import viewer_feedback

        row = await viewer_feedback(info, self.uuid)
        return MessageFeedback.from_row(row) if row is not None else None

    @strawberry.field(description="How its readers rated it: counts of UP and DOWN (`messageFeedbackSet`).")
    async def feedback_summary(self, info: Info) -> FeedbackSummary:
        from threadline.feedback.loaders import summary

        up, down = await summary(info, self.uuid)
        return FeedbackSummary(up=up, down=down)

    @strawberry.field(
        description="Messages nearest to this one by meaning (embeddings), nearest first, from conversations the "
        "viewer may read that are not deleted. Empty without an embeddings provider, for a deleted message, and "
        "until the indexer has embedded this message."
    )
    async def similar(
        self,
        info: Info,
        first: Annotated[
            int | None,
            strawberry.argument(description="How many: 10 by default, at most 50 (more is BAD_USER_INPUT)."),
        ] = None,
    ) -> list[Message]:
        from threadline.embeddings.service import SIMILAR_FIRST_DEFAULT, SIMILAR_FIRST_MAX, similar_messages
        from threadline.threads.service import path_ids

        limit = page_size(first, SIMILAR_FIRST_DEFAULT, SIMILAR_FIRST_MAX)
        principal = await info.context.principal()
        embeddings = getattr(info.context.services, "embeddings", None)
        rows = await similar_messages(info.context.db, principal, embeddings, self.uuid, limit)
        budget.charge_messages(info, len(rows), sum(len(r["content"]) for r in rows), 0)
        paths = await path_ids(info.context.db, principal.tenant_id, rows)
        return [Message.from_row(r, p) for r, p in zip(rows, paths, strict=True)]

    @strawberry.field(description="Streamed output pieces in order (assistant messages).")
    async def chunks(self, info: Info) -> list[MessageChunk]:
        reader = reading.active()
        return [
            MessageChunk(
                index=r["index"],
                content=reader.content(self.author_uuid, r["content"]) if reader else r["content"],
                created_at=r["created_at"],
            )
            for r in await loaders.chunks(info, self.uuid)
        ]

    @strawberry.field(
        description="Earlier versions, oldest first (empty if never edited; cleared on delete)."
    )
    async def edits(self, info: Info) -> list[MessageEdit]:
        rows = await loaders.edits(info, self.uuid)
        reader = reading.active()
        return [
            MessageEdit(
                content=reader.content(self.author_uuid, r["content"]) if reader else r["content"],
                edited_at=r["edited_at"],
            )
            for r in rows
        ]

    @strawberry.field(
        description="PII found in `content` under the tenant's policy (`piiPolicy`): kind and span of each; empty "
        "when nothing was found. The detections stored with the content, or (for content written before the "
        "policy and not backfilled yet) found now; null when the policy is OFF and none were stored. A caller "
        "reading masked content (MASK_ON_READ) gets the placeholders' spans."
    )
    async def pii(self, info: Info) -> list[PiiDetection] | None:
        if self.masked_pii is not None:
            return [PiiDetection.of(d) for d in self.masked_pii]
        found = await privacy_loaders.detections(info, self.uuid, self.content)
        return None if found is None else [PiiDetection.of(d) for d in found]

    @classmethod
    def from_row(cls, row: asyncpg.Record, path: list[UUID]) -> Message:
        parent = row["parent_id"]
        return cls.stored(
            path=[strawberry.ID(encode_id(Kind.MESSAGE, p)) for p in path],
            own_id=strawberry.ID(encode_id(Kind.MESSAGE, row["id"])),
            parent_id=strawberry.ID(encode_id(Kind.MESSAGE, parent)) if parent else None,
            root_id=strawberry.ID(encode_id(Kind.MESSAGE, row["root_id"])),
            conversation_id=strawberry.ID(encode_id(Kind.CONVERSATION, row["conversation_id"])),
            message_uuid=row["id"],
            root_uuid=row["root_id"],
            author_uuid=row["author_id"],
            depth=row["depth"],
            child_count=row["child_count"],
            role=row["role"],
            content=row["content"],
            model=row["model"],
            prompt_tokens=row["prompt_tokens"],
            completion_tokens=row["completion_tokens"],
            created_at=row["created_at"],
            edited_at=row["edited_at"],
            deleted_at=row["deleted_at"],
            usage_imported=row.get("usage_imported") or False,
            stored_pii=row.get("pii"),
        )

    @classmethod
    def stored(
        cls,
        path: list[strawberry.ID],
        own_id: strawberry.ID,
        parent_id: strawberry.ID | None,
        root_id: strawberry.ID,
        conversation_id: strawberry.ID,
        message_uuid: UUID,
        root_uuid: UUID,
        author_uuid: UUID | None,
        depth: int,
        child_count: int,
        role: str,
        content: str,
        model: str | None,
        prompt_tokens: int | None,
        completion_tokens: int | None,
        created_at: datetime,
        edited_at: datetime | None,
        deleted_at: datetime | None,
        usage_imported: bool = False,
        stored_pii: Any = None,
    ) -> Message:
        """A message from its stored values, ids already encoded (tree reads encode each id once, and pass
        the arguments by position: ~10,000 calls per large thread).

        Under MASK_ON_READ a caller who is neither the author nor an admin gets the content masked here, the one
        place every returned Message is built (privacy.reading)."""
        masked_pii = None
        reader = reading.active()
        if reader is not None and content and reader.masks(author_uuid):
            content, masked_pii = reading.masked_with_spans(content, stored_pii)
        return cls(
            id=own_id,
            uuid=message_uuid,
            root_uuid=root_uuid,
            author_uuid=author_uuid,
            conversation_id=conversation_id,
            root_id=root_id,
            parent_id=parent_id,
            depth=depth,
            path=path,
            child_count=child_count,
            role=_ROLES.get(role) or MessageRole(role),
            content=content,
            model=model,
            usage=Usage.of(prompt_tokens, completion_tokens, usage_imported),
            created_at=created_at,
            edited_at=edited_at,
            deleted_at=deleted_at,
            is_deleted=deleted_at is not None,
            masked_pii=masked_pii,
        )


async def _sibling_count(message: Message, info: Info) -> int:
    found = await branch_loaders.sibling_info(info, message.uuid)
    return int(found["sibling_count"]) if found is not None else 1


async def _siblings(
    message: Message, info: Info, first: int | None, after: str | None
) -> Connection[Message]:
    settings = info.context.settings
    limit = page_size(first, settings.page_size_default, settings.page_size_max)
    after_rank = decode_cursor(after, (as_int,))[0] if after else None
    if after_rank is not None and after_rank < 0:
        raise bad_input("Malformed cursor in `after`", argument="after")
    # Charged before the rows are read (a parent may have thousands of replies, and every message of a tree may
    # ask for its siblings): a response asking for too many is refused before it reads them.
    found = await branch_loaders.sibling_info(info, message.uuid)
    start = -1 if after_rank is None else after_rank
    own = sibling_rank(bytes(found["path"])) if found is not None else 0
    count = int(found["sibling_count"]) if found is not None else 1
    expected = max(0, min(limit, count - (start + 1) - (1 if own > start else 0)))
    budget.charge_messages(info, expected, 0, expected * len(message.path))
    rows = await branch_loaders.siblings(info, message.uuid, limit, after_rank)
    budget.charge_messages(info, 0, sum(len(r["content"]) for r in rows[:limit]), 0)
    ancestry = [decode_id(p, Kind.MESSAGE) for p in message.path[:-1]]

    async def total() -> int:
        return await _sibling_count(message, info) - 1

    return connection(
        rows,
        limit,
        lambda row: Message.from_row(row, [*ancestry, row["id"]]),
        lambda row: (sibling_rank(bytes(row["path"])),),
        total,
        has_previous=after_rank is not None,
    )


def _replies(message: Message, info: Info) -> list[Message] | Awaitable[list[Message]]:
    """Not a coroutine: once the thread is loaded (by the first `replies` of an operation), every nested
    `replies` is answered synchronously, without a coroutine and a task per node (~5x less CPU per message)."""
    if message.child_count == 0:
        return []
    children = loaders.loaded_thread_children(info, message.root_uuid)
    if children is None:
        return _replies_after_load(message, info)
    replies: list[Message] = children.get(message.uuid, [])
    if replies:
        # No hand-over here: returning an awaitable only defers this subtree while the synchronous pass goes on
        # elsewhere (measured: deferring every node after a hand-over tripled the CPU and did not free the loop).
        budget.charge_messages(
            info, len(replies), sum(len(m.content) for m in replies), sum(len(m.path) for m in replies)
        )
    return replies


async def _replies_after_load(message: Message, info: Info) -> list[Message]:
    await loaders.thread_children(info, message.root_uuid, tree_messages_in_slices)
    result = _replies(message, info)
    return await result if inspect.isawaitable(result) else result


async def tree_messages_in_slices(rows: Sequence[asyncpg.Record], top_path: list[UUID]) -> list[Message]:
    """Messages of a depth-first list of `repo.TREE_COLUMNS` rows, with path ids computed by a stack (no
    queries); `top_path` is the ancestor ids of the first row, ending with its own id. A big tree is built in
    slices, with the event loop handed to other requests in between."""
    builder = _TreeBuilder(rows, top_path)
    for start in range(0, len(rows), TREE_SLICE_ROWS):
        if start:
            await budget.hand_over()
        builder.build(rows[start : start + TREE_SLICE_ROWS])
    return builder.out


# Rows built between two hand-overs of the event loop (~10 ms of work here).
TREE_SLICE_ROWS = 2_000


class _TreeBuilder:
    """Builds Messages from consecutive slices of one depth-first list of rows.

    Rows are unpacked by position (~10,000 rows per large thread: named lookups were a third of the time), and
    each Message gets the attributes `Message.stored` gives it, set one by one on a new instance (a third of
    the dataclass constructor's time with its 19 keyword arguments); a caller reading masked content goes
    through `Message.stored`, the one place that masks.
    """

    __slots__ = ("conversation_id", "offset", "out", "stack")

    def __init__(self, rows: Sequence[asyncpg.Record], top_path: list[UUID]) -> None:
        self.out: list[Message] = []
        self.stack: list[strawberry.ID] = []
        self.offset = 0
        self.conversation_id = strawberry.ID("")
        if not rows:
            return
        if tuple(rows[0].keys()) != repo.TREE_FIELDS:
            raise AssertionError("tree rows must have repo.TREE_COLUMNS")
        # Encoded ids on the stack: each id is encoded once, not once per descendant.
        self.stack = [strawberry.ID(encode_id(Kind.MESSAGE, p)) for p in top_path[:-1]]
        self.offset = len(top_path) - 1 - rows[0]["depth"]
        self.conversation_id = strawberry.ID(encode_id(Kind.CONVERSATION, rows[0]["conversation_id"]))

    def build(self, rows: Sequence[asyncpg.Record]) -> None:
        if reading.active() is not None:
            self._build_stored(rows)
            return
        stack, offset, conversation_id = self.stack, self.offset, self.conversation_id
        prefix: Any = _MESSAGE_PREFIX  # + a UUID's hex: an encoded id (an ID is a str)
        roles = _ROLES
        usage_of = Usage.of
        new = object.__new__
        cls = Message
        append = self.out.append
        for (
            message_id, _, root_id, _, depth, child_count, role, content,
            author_id, model, prompt_tokens, completion_tokens, created_at, edited_at, deleted_at, usage_imported,
            _,
        ) in rows:  # fmt: skip
            del stack[offset + depth :]
            own = prefix + message_id.hex
            stack.append(own)
            # The attributes of `Message.stored`'s instances, in its order (tests/test_tree_building.py compares),
            # set one by one: an instance keeps its values inline (no dict of its own), built in a third of the
            # dataclass constructor's time.
            message = new(cls)
            message.id = own
            message.conversation_id = conversation_id
            message.root_id = stack[0]
            message.parent_id = stack[-2] if len(stack) > 1 else None
            message.depth = depth
            message.path = stack.copy()
            message.child_count = child_count
            message.role = roles.get(role) or MessageRole(role)
            message.content = content
            message.model = model
            message.usage = (
                None
                if prompt_tokens is None and completion_tokens is None
                else usage_of(prompt_tokens, completion_tokens, usage_imported or False)
            )
            message.created_at = created_at
            message.edited_at = edited_at
            message.deleted_at = deleted_at
            message.is_deleted = deleted_at is not None
            message.uuid = message_id
            message.root_uuid = root_id
            message.author_uuid = author_id
            message.masked_pii = None
            append(message)

    def _build_stored(self, rows: Sequence[asyncpg.Record]) -> None:
        stack, offset, conversation_id = self.stack, self.offset, self.conversation_id
        build = Message.stored
        append = self.out.append
        for (
            message_id, _, root_id, _, depth, child_count, role, content,
            author_id, model, prompt_tokens, completion_tokens, created_at, edited_at, deleted_at, usage_imported,
            stored_pii,
        ) in rows:  # fmt: skip
            del stack[offset + depth :]
            stack.append(encode_id(Kind.MESSAGE, message_id))  # type: ignore[arg-type]  # an ID is a str
            path = stack.copy()
            append(
                build(
                    path,
                    path[-1],
                    path[-2] if len(path) > 1 else None,
                    path[0],
                    conversation_id,
                    message_id,
                    root_id,
                    author_id,
                    depth,
                    child_count,
                    role,
                    content,
                    model,
                    prompt_tokens,
                    completion_tokens,
                    created_at,
                    edited_at,
                    deleted_at,
                    usage_imported,
                    stored_pii,
                )  # fmt: skip
            )


_MESSAGE_PREFIX = encode_id(Kind.MESSAGE, UUID(int=0))[:-32]  # what every message id starts with


@strawberry.type(description="A thread: a root message and everything under it.")
class Thread(Node):
    root: Message = strawberry.field(description="The root message.")
    reply_count: int = strawberry.field(description="Messages under the root.")
    last_activity_at: datetime = strawberry.field(description="Last reply, edit or delete.")
    unread_count: int = strawberry.field(
        description="Messages by others (not deleted) after the viewer's read marker."
    )

    @strawberry.field(
        description="The viewer's current branch of the thread, root first and `currentLeaf` last: the visible "
        "conversation, in one query. Tombstones on the way are included (isDeleted)."
    )
    async def current_path(self, info: Info) -> list[Message]:
        return await _current_path(self.root.uuid, info)

    @strawberry.field(
        description="The message the viewer is on in this thread (`threadSetCurrent`; a reply they write, or the "
        "answer of a run they start, moves them to it; deleting it moves them to its parent). Without a choice: "
        "the newest branch's leaf (the newest reply at every level, deleted ones left out)."
    )
    async def current_leaf(self, info: Info) -> Message:
        return (await _current_path(self.root.uuid, info))[-1]

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Thread:
        return cls(
            id=strawberry.ID(encode_id(Kind.THREAD, row["thread_id"])),
            root=Message.from_row(row, [row["id"]]),
            reply_count=row["reply_count"],
            last_activity_at=row["thread_last_activity_at"],
            unread_count=row["unread_count"],
        )


async def _current_path(root_id: UUID, info: Info) -> list[Message]:
    """The viewer's branch of a thread (one load per operation: `currentLeaf` is its last message)."""
    _, leaf_path = await branch_loaders.current_leaf(info, root_id)
    # Charged before the rows are read (a path is as long as the thread is deep): a response asking for many
    # threads' paths is refused before it reads them.
    count = len(segments(leaf_path)) + 1
    budget.charge_messages(info, count, 0, count * (count + 1) // 2)
    rows = await branch_loaders.path_rows(info, root_id, leaf_path)
    budget.charge_messages(info, 0, sum(len(r["content"]) for r in rows), 0)
    return await tree_messages_in_slices(rows, [root_id])


@strawberry.type(
    description="A depth-first snapshot of a thread or subtree, with ancestry hints on each node."
)
class ThreadTree:
    root: Message = strawberry.field(description="The node the snapshot starts at.")
    nodes: list[Message] = strawberry.field(
        description="Every node in depth-first order, siblings oldest first, root first."
    )
    total_count: int = strawberry.field(description="How many messages `nodes` holds.")


@strawberry.input(description="Token usage to record with a message.")
class UsageInput:
    prompt_tokens: int | None = strawberry.field(
        default=None, description="Tokens the model read (the prompt), as the provider reported them."
    )
    completion_tokens: int | None = strawberry.field(
        default=None, description="Tokens the model wrote, as the provider reported them."
    )


@strawberry.input(description="A message to post.")
class MessageInput:
    content: str = strawberry.field(
        default="",
        description="Text, non-empty, at most the configured size (1 MiB by default). With `parts` it may be "
        "omitted: it is then the parts' plain text (text parts and tool results), which search finds.",
    )
    role: MessageRole = strawberry.field(default=MessageRole.USER, description="Defaults to USER.")
    model: str | None = strawberry.field(default=None, description="Model that produced it, if any.")
    usage: UsageInput | None = strawberry.field(default=None, description="Token usage, if known.")
    metadata: JSON | None = strawberry.field(
        default=None,
        description="Key/value strings of your own: at most 16 keys (each 1 to 64 characters) with string values "
        "of at most 512 characters; BAD_USER_INPUT naming the bound otherwise.",
    )
    parts: list[MessagePartInput] | None = strawberry.field(
        default=None,
        description="Content parts (text, image, file, tool call, tool result, reasoning) instead of plain text: "
        "at most the configured count (64), within the message size limit, tool-call arguments nested at most "
        "the configured depth (32).",
    )
