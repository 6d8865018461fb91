"""GraphQL types of conversations, participants and invites."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any
from uuid import UUID

import asyncpg
import strawberry
from strawberry.scalars import JSON

from threadline.auth.types import User, load_user, loaded_user
from threadline.conversations import loaders
from threadline.graphql.context import Info
from threadline.graphql.describe import describe_values
from threadline.graphql.loaders import single_loader
from threadline.graphql.node import Node
from threadline.graphql.pagination import (
    PAGE_SIZE_LIMIT,
    After,
    Connection,
    First,
    as_datetime,
    as_uuid,
    connection,
    decode_cursor,
    page_size,
)
from threadline.graphql.ready import NOT_READY, loaded, when_ready
from threadline.ids import Kind, encode_id, id_prefix
from threadline.tiers.schema import warm

if TYPE_CHECKING:
    from threadline.enrich.types import EnrichmentJob, TitleSource
    from threadline.links.types import ConversationLink
    from threadline.organise.types import Folder
    from threadline.runs.types import Run, RunStatus
    from threadline.threads.types import Message, Thread
    from threadline.tiers.types import ConversationStorage


@strawberry.enum(description="Lifecycle of a conversation. DELETED is a soft delete that can be restored.")
class ConversationStatus(StrEnum):
    ACTIVE = "ACTIVE"
    ARCHIVED = "ARCHIVED"
    DELETED = "DELETED"


@strawberry.enum(description="OWNER manages, MEMBER reads and writes, VIEWER reads.")
class ParticipantRole(StrEnum):
    OWNER = "OWNER"
    MEMBER = "MEMBER"
    VIEWER = "VIEWER"


_ROLES = {role.value: role for role in ParticipantRole}  # a stored role to its member, without Enum.__call__
_STATUSES = {status.value: status for status in ConversationStatus}
_CONVERSATION_ID = id_prefix(Kind.CONVERSATION)
_PARTICIPANT_ID = id_prefix(Kind.PARTICIPANT)
_new = object.__new__  # an instance without its dataclass constructor (from_row sets every field, in order)


@strawberry.enum(description="State of an invite.")
class InviteStatus(StrEnum):
    PENDING = "PENDING"
    ACCEPTED = "ACCEPTED"
    REVOKED = "REVOKED"


describe_values(
    ConversationStatus,
    {
        "ACTIVE": "In use: readable and writable by its participants.",
        "ARCHIVED": "Read-only until restored (`conversationRestore`); writes are CONFLICT.",
        "DELETED": "Soft-deleted (`conversationDelete`): kept, but writes are CONFLICT; `conversationRestore` "
        "brings it back. Filter lists with `status: ACTIVE` to leave it out.",
    },
)
describe_values(
    ParticipantRole,
    {
        "OWNER": "Manages the conversation: everything a MEMBER does, plus inviting and removing participants, "
        "changing their roles, archiving and deleting. Each conversation has exactly one (its creator).",
        "MEMBER": "Reads and writes: starts threads, replies, edits and deletes own messages, starts runs.",
        "VIEWER": "Reads only.",
    },
)
describe_values(
    InviteStatus,
    {
        "PENDING": "Sent, waiting for the invitee to accept (`inviteAccept`).",
        "ACCEPTED": "Accepted: the invitee is a participant with the invite's role.",
        "REVOKED": "Withdrawn before it was accepted; it can no longer be accepted.",
    },
)


@strawberry.type(description="A user's membership in a conversation.")
class Participant(Node):
    role: ParticipantRole = strawberry.field(description="What the participant may do.")
    joined_at: datetime = strawberry.field(description="When they joined.")
    conversation_id: strawberry.ID = strawberry.field(description="The conversation's id.")
    user_uuid: strawberry.Private[UUID]

    @strawberry.field(description="The participating user.")
    @when_ready(lambda self, context: loaded_user(context, self.user_uuid))
    async def user(self, info: Info) -> User | None:
        return await load_user(info, self.user_uuid)

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Participant:
        # Built once per participant of every conversation of a page: no call per id or enum value, and the
        # dataclass's attributes set in its order without its keyword constructor (a third of the time;
        # tests/test_conversation_rows.py compares with the constructor's instance).
        participant = _new(cls)
        participant.id = _PARTICIPANT_ID + row["id"].hex
        participant.role = _ROLES[row["role"]]
        participant.joined_at = row["joined_at"]
        participant.conversation_id = _CONVERSATION_ID + row["conversation_id"].hex
        participant.user_uuid = row["user_id"]
        return participant


def _loaded_participants(context: Any, conversation_id: UUID) -> Any:
    """`Conversation.participants`' value when the request's loader already holds the rows (graphql.ready)."""
    rows = loaded(context, loaders.PARTICIPANTS, conversation_id)
    if rows is NOT_READY:
        return NOT_READY
    return [Participant.from_row(row) for row in rows]


@strawberry.type(description="An invitation for a user to join a conversation.")
class Invite(Node):
    role: ParticipantRole = strawberry.field(description="The role granted on acceptance.")
    status: InviteStatus = strawberry.field(description="PENDING until accepted.")
    created_at: datetime = strawberry.field(description="When the invite was made.")
    accepted_at: datetime | None = strawberry.field(description="When it was accepted.")
    conversation_id: strawberry.ID = strawberry.field(description="The conversation's id.")
    user_uuid: strawberry.Private[UUID]
    inviter_uuid: strawberry.Private[UUID | None]

    @strawberry.field(description="The invited user.")
    async def user(self, info: Info) -> User | None:
        return await load_user(info, self.user_uuid)

    @strawberry.field(description="Who sent the invite.")
    async def inviter(self, info: Info) -> User | None:
        return await load_user(info, self.inviter_uuid)

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Invite:
        return cls(
            id=strawberry.ID(encode_id(Kind.INVITE, row["id"])),
            role=ParticipantRole(row["role"]),
            status=InviteStatus(row["status"]),
            created_at=row["created_at"],
            accepted_at=row["accepted_at"],
            conversation_id=strawberry.ID(encode_id(Kind.CONVERSATION, row["conversation_id"])),
            user_uuid=row["user_id"],
            inviter_uuid=row["inviter_id"],
        )


@strawberry.type(description="Where an imported conversation came from (`Conversation.importedFrom`).")
class ImportOrigin:
    format: str = strawberry.field(
        description="The export format it was imported from, as `ConversationImportInput.format` names it "
        "(CHATGPT, CLAUDE, ...)."
    )
    source_id: str = strawberry.field(
        description="Its id in that export (the ChatGPT or Claude conversation id), which re-imports match."
    )
    imported_at: datetime = strawberry.field(
        description="When it was first imported (kept when a Threadline export of it is imported elsewhere)."
    )

    @classmethod
    def from_stored(cls, origin: dict[str, str]) -> ImportOrigin | None:
        """From `conversation.imported_from` ({format, source_id, imported_at}, written by porting/)."""
        try:
            return cls(
                format=str(origin["format"]).upper(),
                source_id=str(origin["source_id"]),
                imported_at=datetime.fromisoformat(str(origin["imported_at"])),
            )
        except (KeyError, TypeError, ValueError):
            return None


@strawberry.type(description="A conversation: participants and threads of messages.")
class Conversation(Node):
    title: str = strawberry.field(
        description="What the conversation is about, as shown in lists: 1 to 500 characters, trimmed; "
        '"New conversation" unless given.'
    )
    description: str = strawberry.field(
        description="Free text about the conversation, up to 10,000 characters; empty unless given."
    )
    tags: list[str] = strawberry.field(description="Normalised tags (lower-case, unique).")
    status: ConversationStatus = strawberry.field(description="ACTIVE, ARCHIVED or DELETED (soft).")
    ai_provider: str | None = strawberry.field(description="Default AI provider for runs.")
    model: str | None = strawberry.field(description="Default model for runs.")
    session_id: str | None = strawberry.field(description="Client-supplied session identifier.")
    max_history_messages: int = strawberry.field(
        description="Messages of context a run receives (default 20)."
    )
    message_count: int = strawberry.field(description="Messages in the conversation, tombstones included.")
    token_count: int = strawberry.field(
        description="Tokens used by the conversation's messages; usage read from imported files "
        "(`Usage.imported`) is not counted."
    )
    created_at: datetime = strawberry.field(description="When it was created.")
    updated_at: datetime = strawberry.field(description="When it last changed.")
    last_activity_at: datetime = strawberry.field(description="When the last message arrived.")
    metadata: JSON = strawberry.field(
        description="Key/value strings of the client's own (at most 16 keys of up to 64 characters, values of up to 512); {} when none. Filter lists by them with `conversations(metadata:)` and `search(metadata:)`."
    )
    uuid: strawberry.Private[UUID]
    owner_uuid: strawberry.Private[UUID | None]
    forked_from_uuids: strawberry.Private[tuple[UUID | None, UUID | None]] = (None, None)
    cold: strawberry.Private[bool] = False  # its content is in a cold document (tiers/)

    @strawberry.field(description="The user who created the conversation.")
    @when_ready(lambda self, context: loaded_user(context, self.owner_uuid))
    async def owner(self, info: Info) -> User | None:
        return await load_user(info, self.owner_uuid)

    @strawberry.field(description="Participants, in joining order.")
    @when_ready(lambda self, context: _loaded_participants(context, self.uuid))
    async def participants(self, info: Info) -> list[Participant]:
        return [Participant.from_row(row) for row in await loaders.participants(info, self.uuid)]

    @strawberry.field(description="Threads (one per root message), most recent activity first.")
    async def threads(
        self, info: Info, first: First = None, after: After = None
    ) -> Connection[Annotated[Thread, strawberry.lazy("threadline.threads.types")]]:
        from threadline.threads.resolvers import conversation_threads

        await warm(info, self.uuid, self.cold)
        return await conversation_threads(info, self.uuid, first, after)

    @strawberry.field(
        description="Messages of every thread, oldest first. Page with `first`/`after` (Relay) or "
        "`limit`/`offset` (default 50); not both."
    )
    async def messages(
        self,
        info: Info,
        first: Annotated[
            int | None,
            strawberry.argument(
                description=f"How many messages to return: 50 by default, {PAGE_SIZE_LIMIT}."
            ),
        ] = None,
        after: After = None,
        limit: Annotated[
            int | None,
            strawberry.argument(
                description=f"Page size for offset paging (with `offset`): 50 by default, {PAGE_SIZE_LIMIT}. "
                "Not with `first`/`after`."
            ),
        ] = None,
        offset: Annotated[
            int | None,
            strawberry.argument(
                description="Messages to skip from the oldest (0 by default, not negative), for offset paging. "
                "Not with `first`/`after`; prefer cursors, which stay right while messages arrive."
            ),
        ] = None,
    ) -> Connection[Annotated[Message, strawberry.lazy("threadline.threads.types")]]:
        from threadline.threads.resolvers import conversation_messages

        await warm(info, self.uuid, self.cold)
        return await conversation_messages(info, self.uuid, first, after, limit, offset)

    @strawberry.field(
        description="Runs on the conversation's messages, newest first; `status` keeps runs in that state."
    )
    async def runs(
        self,
        info: Info,
        first: First = None,
        after: After = None,
        status: Annotated[
            Annotated[RunStatus, strawberry.lazy("threadline.runs.types")] | None,  # type: ignore[valid-type]
            strawberry.argument(description="Only runs in this state; all runs when omitted."),
        ] = None,
    ) -> Connection[Annotated[Run, strawberry.lazy("threadline.runs.types")]]:
        from threadline.runs.schema import conversation_runs

        await warm(info, self.uuid, self.cold)
        return await conversation_runs(info, self.uuid, first, after, status)

    @strawberry.field(
        description="Conversations nearest to this one by meaning (the mean of its latest message embeddings), "
        "nearest first, among those the viewer may read that are not deleted. Empty without an embeddings provider "
        "and until the indexer has embedded some of its messages."
    )
    async def similar(
        self,
        info: Info,
        first: Annotated[
            int | None,
            strawberry.argument(description="How many: 10 by default, at most 50 (more is BAD_USER_INPUT)."),
        ] = None,
    ) -> list[Conversation]:
        from threadline.embeddings.service import (
            SIMILAR_FIRST_DEFAULT,
            SIMILAR_FIRST_MAX,
            similar_conversations,
        )

        limit = page_size(first, SIMILAR_FIRST_DEFAULT, SIMILAR_FIRST_MAX)
        principal = await info.context.principal()
        embeddings = getattr(info.context.services, "embeddings", None)
        rows = await similar_conversations(info.context.db, principal, embeddings, self.uuid, limit)
        return [Conversation.from_row(r) for r in rows]

    @strawberry.field(
        description="Where this conversation was forked from (`conversationFork`): the source conversation and "
        "message, each null if it was deleted or the viewer may not read it; null for a conversation that is no fork."
    )
    async def forked_from(self, info: Info) -> ForkedFrom | None:
        from threadline.forks import provenance
        from threadline.threads.types import Message

        source_id, message_id = self.forked_from_uuids
        if source_id is None:
            return None
        source = await provenance.readable_source(info, source_id)
        if source is None:
            return None
        found = await provenance.source_message(info, source_id, message_id) if message_id else None
        message = Message.from_row(*found) if found else None
        return ForkedFrom(conversation=Conversation.from_row(source), message=message)

    @strawberry.field(
        description="Conversations forked from this one (`conversationFork`), newest first: only those the viewer "
        "may read (whoever sees a fork here may read both)."
    )
    async def forks(self, info: Info, first: First = None, after: After = None) -> Connection[Conversation]:
        from threadline.forks import provenance

        settings = info.context.settings
        limit = page_size(first, settings.page_size_default, settings.page_size_max)
        cursor = decode_cursor(after, (as_datetime, as_uuid)) if after else None
        rows = await provenance.forks_page(info, self.uuid, limit + 1, cursor)
        return connection(
            rows,
            limit,
            Conversation.from_row,
            lambda r: (r["created_at"], r["id"]),
            lambda: provenance.count_forks(info, self.uuid),
            has_previous=cursor is not None,
        )

    @strawberry.field(
        description="Where this conversation was imported from (format, its id there, when): null for one that "
        "began here. Kept in Threadline exports and across a re-import of them elsewhere."
    )
    async def imported_from(self, info: Info) -> ImportOrigin | None:
        from threadline.porting import repository as porting_repo

        principal = await info.context.principal()
        db = info.context.db
        loader = single_loader(
            info,
            "import_origin",
            lambda ids: porting_repo.origins(db, principal.tenant_id, ids),
            key=lambda row: row["id"],
        )
        row = await loader.load(self.uuid)
        return ImportOrigin.from_stored(row["imported_from"]) if row is not None else None

    @strawberry.field(
        description="The caller's folder holding this conversation (`conversationFile`); null at the root. Each "
        "user files conversations in folders of their own. Loaded for every conversation of the response at once."
    )
    async def folder(
        self, info: Info
    ) -> Annotated[Folder, strawberry.lazy("threadline.organise.types")] | None:
        from threadline.organise.types import viewer_folder

        return await viewer_folder(info, self.uuid)

    @strawberry.field(
        description="Where the caller pinned this conversation among their pins (0 is first); null if they did "
        "not (`conversationPin`)."
    )
    async def pin_position(self, info: Info) -> int | None:
        from threadline.organise.loaders import pin_position

        return await pin_position(info, self.uuid)

    @strawberry.field(
        description="Where its content is stored (HOT, COLD, DEEP; tiers) and its latest restore from deep "
        "storage (`conversationRestore`), for every conversation of the response in one statement."
    )
    async def storage(
        self, info: Info
    ) -> Annotated[ConversationStorage, strawberry.lazy("threadline.tiers.types")]:
        from threadline.tiers.schema import conversation_storage

        return await conversation_storage(info, self.uuid)

    @strawberry.field(
        description="Links from this conversation to others (`conversationLink`), oldest first: only those whose "
        "target the caller may read. Loaded for every conversation of the response in one statement."
    )
    async def links(
        self, info: Info, first: First = None, after: After = None
    ) -> Connection[Annotated[ConversationLink, strawberry.lazy("threadline.links.types")]]:
        from threadline.links.types import link_connection

        return await link_connection(
            info, self.uuid, first, after, backwards=False, to_conversation=Conversation.from_row
        )

    @strawberry.field(
        description="Links from other conversations to this one, oldest first: only those whose source the "
        "caller may read. Loaded for every conversation of the response in one statement."
    )
    async def backlinks(
        self, info: Info, first: First = None, after: After = None
    ) -> Connection[Annotated[ConversationLink, strawberry.lazy("threadline.links.types")]]:
        from threadline.links.types import link_connection

        return await link_connection(
            info, self.uuid, first, after, backwards=True, to_conversation=Conversation.from_row
        )

    @strawberry.field(
        description="Who set `title`: DEFAULT (the placeholder; a title is generated after the first exchange), "
        "USER (never replaced by a generated one) or GENERATED."
    )
    async def title_source(
        self, info: Info
    ) -> Annotated[TitleSource, strawberry.lazy("threadline.enrich.types")]:
        from threadline.enrich import types as enrich

        return await enrich.title_source(info, self.uuid)

    @strawberry.field(
        description="A summary of the conversation (at most THREADLINE_ENRICHMENT_SUMMARY_MAX_CHARS characters, "
        "1,000), made in the background and again as it grows (`enrichmentJobs`); null until the first."
    )
    async def summary(self, info: Info) -> str | None:
        from threadline.enrich import types as enrich

        return await enrich.summary(info, self.uuid)

    @strawberry.field(
        description="Tags suggested from the owner's tag vocabulary and the content, at most 5, those already on "
        "the conversation left out. Never applied by themselves: apply them with `conversationUpdate(input: "
        "{tags})`."
    )
    async def suggested_tags(self, info: Info) -> list[str]:
        from threadline.enrich import types as enrich

        return await enrich.suggested_tags(info, self.uuid, self.tags)

    @strawberry.field(
        description="The background jobs that make this conversation's title, summary and tag suggestions (TITLE, "
        "SUMMARY, TAGS order; none before the first exchange): status, attempts, last error. "
        "`conversationEnrichmentRetry` queues one again."
    )
    async def enrichment_jobs(
        self, info: Info
    ) -> list[Annotated[EnrichmentJob, strawberry.lazy("threadline.enrich.types")]]:
        from threadline.enrich import types as enrich

        return await enrich.jobs(info, self.uuid)

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Conversation:
        # Built for every row of a page (50 by default): no call per id or enum value, and the dataclass's
        # attributes set in its field order without its keyword constructor (~1.2 us of ~2.2 us a row;
        # tests/test_conversation_rows.py compares with the constructor's instance).
        conversation = _new(cls)
        conversation.id = _CONVERSATION_ID + row["id"].hex
        conversation.title = row["title"]
        conversation.description = row["description"]
        conversation.tags = list(row["tags"] or [])
        conversation.status = _STATUSES[row["status"]]
        conversation.ai_provider = row["ai_provider"]
        conversation.model = row["model"]
        conversation.session_id = row["session_id"]
        conversation.max_history_messages = row["max_history_messages"]
        conversation.message_count = row["message_count"]
        conversation.token_count = row["token_count"]
        conversation.created_at = row["created_at"]
        conversation.updated_at = row["updated_at"]
        conversation.last_activity_at = row["last_activity_at"]
        conversation.metadata = JSON(row.get("metadata") or {})
        conversation.uuid = row["id"]
        conversation.owner_uuid = row["owner_id"]
        conversation.forked_from_uuids = (
            row.get("forked_from_conversation_id"),
            row.get("forked_from_message_id"),
        )
        conversation.cold = bool(row.get("cold"))
        return conversation


@strawberry.type(description="Where a forked conversation was copied from (`conversationFork`).")
class ForkedFrom:
    conversation: Conversation = strawberry.field(description="The source conversation.")
    message: Annotated[Message, strawberry.lazy("threadline.threads.types")] | None = strawberry.field(
        description="The message the fork was made at (its copy is in the fork); null if it is gone."
    )


@strawberry.input(description="A new conversation. Every field is optional.")
class ConversationCreateInput:
    title: str | None = strawberry.field(
        default=None, description='1 to 500 characters, trimmed; "New conversation" when omitted.'
    )
    description: str | None = strawberry.field(
        default=None, description="Free text, up to 10,000 characters."
    )
    tags: list[str] | None = strawberry.field(
        default=None,
        description="Labels to filter and search by: stored trimmed, lower-case and without duplicates; each at "
        "most 64 characters, at most 50 tags.",
    )
    ai_provider: str | None = strawberry.field(
        default=None,
        description="Provider runs use when `runCreate` names none (`echo`, `openai`); at most 64 characters.",
    )
    model: str | None = strawberry.field(
        default=None, description="Model runs use when `runCreate` names none; at most 128 characters."
    )
    session_id: str | None = strawberry.field(
        default=None,
        description="An identifier of the client's own (a chat session), stored as is; at most 255 characters.",
    )
    max_history_messages: int | None = strawberry.field(
        default=None,
        description="Messages of context a run sends to the model: 1 to 10,000, 20 when omitted.",
    )
    metadata: JSON | None = strawberry.field(
        default=None,
        description="Key/value strings of your own: a JSON object of at most 16 keys (each 1 to 64 characters) "
        "with string values of at most 512 characters; BAD_USER_INPUT naming the bound otherwise.",
    )


@strawberry.input(description="Changes to a conversation; omitted fields stay as they are.")
class ConversationUpdateInput:
    title: str | None = strawberry.field(
        default=None, description="The new title: 1 to 500 characters, trimmed."
    )
    description: str | None = strawberry.field(
        default=None, description="The new description, up to 10,000 characters (empty clears it)."
    )
    tags: list[str] | None = strawberry.field(
        default=None,
        description="Replaces all the tags (empty list: none); stored trimmed, lower-case, without duplicates; "
        "each at most 64 characters, at most 50.",
    )
    ai_provider: str | None = strawberry.field(
        default=None, description="Provider runs use when `runCreate` names none; empty string clears it."
    )
    model: str | None = strawberry.field(
        default=None, description="Model runs use when `runCreate` names none; empty string clears it."
    )
    session_id: str | None = strawberry.field(
        default=None, description="The client's own session identifier; empty string clears it."
    )
    max_history_messages: int | None = strawberry.field(
        default=None, description="Messages of context a run sends to the model: 1 to 10,000."
    )
    metadata: JSON | None = strawberry.field(
        default=None,
        description="Replaces all the metadata ({} clears it): at most 16 keys (each 1 to 64 characters) with "
        "string values of at most 512 characters.",
    )
