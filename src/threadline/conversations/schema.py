"""Query and Mutation fields of conversations, participants and invites."""

from __future__ import annotations

import uuid
from typing import Annotated

import strawberry

from threadline.conversations import loaders, service
from threadline.conversations import repository as repo
from threadline.conversations.rules import normalise_tags
from threadline.conversations.service import ConversationFields
from threadline.conversations.types import (
    Conversation,
    ConversationCreateInput,
    ConversationStatus,
    ConversationUpdateInput,
    Invite,
    Participant,
    ParticipantRole,
)
from threadline.errors import bad_input
from threadline.graphql.context import Info
from threadline.graphql.node import register
from threadline.graphql.pagination import (
    PAGE_SIZE_LIMIT,
    After,
    Connection,
    First,
    as_datetime,
    as_int32,
    as_uuid,
    connection,
    decode_cursor,
    page_size,
)
from threadline.idempotency.schema import run_once
from threadline.idempotency.types import ClientMutationId
from threadline.ids import Kind, decode_id
from threadline.metadata import rules as metadata_rules
from threadline.metadata import service as metadata_service
from threadline.metadata.types import MetadataFilterInput
from threadline.organise import folders
from threadline.search import tag_service

# Arguments several fields share.
ConversationId = Annotated[
    strawberry.ID, strawberry.argument(description="The conversation's id (`Conversation.id`).")
]
UserId = Annotated[
    strawberry.ID, strawberry.argument(description="The user's id (`User.id`), of the same tenant.")
]


def _fields(input: ConversationCreateInput | ConversationUpdateInput) -> ConversationFields:
    return ConversationFields(
        title=input.title,
        description=input.description,
        tags=input.tags,
        ai_provider=input.ai_provider,
        model=input.model,
        session_id=input.session_id,
        max_history_messages=input.max_history_messages,
        metadata=input.metadata,
    )


@strawberry.type
class ConversationQuery:
    @strawberry.field(description="A conversation the caller may read (NOT_FOUND otherwise).")
    async def conversation(
        self,
        info: Info,
        id: Annotated[strawberry.ID, strawberry.argument(description="The conversation's id.")],
    ) -> Conversation | None:
        principal = await info.context.principal()
        row = await service.get(info.context.db, principal, decode_id(id, Kind.CONVERSATION))
        return Conversation.from_row(row)

    @strawberry.field(
        description="Conversations the caller may read, most recent activity first. `status` defaults to "
        "ACTIVE; `tags` keeps conversations carrying all of them; `metadata` those holding every given "
        "key/value pair (indexed)."
    )
    async def conversations(
        self,
        info: Info,
        first: First = None,
        after: After = None,
        status: Annotated[
            ConversationStatus | None,
            strawberry.argument(
                description="Only conversations in this state (ACTIVE by default); null for all."
            ),
        ] = ConversationStatus.ACTIVE,
        tags: Annotated[
            list[str] | None,
            strawberry.argument(
                description="Only conversations carrying every one of these tags (compared lower-case and trimmed, "
                "as stored)."
            ),
        ] = None,
        metadata: Annotated[
            list[MetadataFilterInput] | None,
            strawberry.argument(
                description="Only conversations whose metadata holds every one of these key/value pairs (exact "
                "match; one `{key, value}` object or a list)."
            ),
        ] = None,
        folder_id: Annotated[
            strawberry.ID | None,
            strawberry.argument(
                description="Only conversations the caller filed in this folder of theirs (`Folder.id`; not its "
                "subfolders). Another user's folder is NOT_FOUND."
            ),
        ] = None,
        pinned_first: Annotated[
            bool,
            strawberry.argument(
                description="The caller's pinned conversations first, in their pin order (`conversationPin`), "
                "then the others, most recent activity first. Cursors of one ordering do not fit the other."
            ),
        ] = False,
        unfiled: Annotated[
            bool,
            strawberry.argument(
                description="Only conversations the caller filed in none of their folders (the root of their "
                "folders view). Not with `folderId` (BAD_USER_INPUT)."
            ),
        ] = False,
    ) -> Connection[Conversation]:
        principal = await info.context.principal()
        settings = info.context.settings
        limit = page_size(first, settings.page_size_default, settings.page_size_max)
        shape = (as_int32, as_datetime, as_uuid) if pinned_first else (as_datetime, as_uuid)
        cursor = decode_cursor(after, shape) if after else None
        folder = decode_id(folder_id, Kind.FOLDER) if folder_id is not None else None
        if folder is not None:
            if unfiled:
                raise bad_input(
                    "`unfiled` lists conversations in no folder: not with `folderId`", argument="unfiled"
                )
            await folders.get(info.context.db, principal, folder)
        wanted_tags = normalise_tags(tags, settings) if tags else None
        status_value = status.value if status is not None else None
        pairs = metadata_rules.containment(((m.key, m.value) for m in metadata or []), "metadata")
        db = info.context.db
        wanted = await metadata_service.conversation_filter(db, principal, pairs)
        relations = loaders.page_relations(info)
        rows = await service.list_page(
            db,
            principal,
            status=status_value,
            tags=wanted_tags,
            limit=limit + 1,
            after=cursor,
            metadata=wanted,
            folder_id=folder,
            pinned_first=pinned_first,
            unfiled=unfiled,
            relations=relations,
        )
        await loaders.prefetch_page(info, rows[:limit], relations)
        return connection(
            rows,
            limit,
            Conversation.from_row,
            (lambda r: (r["pin_rank"], r["last_activity_at"], r["id"]))
            if pinned_first
            else (lambda r: (r["last_activity_at"], r["id"])),
            lambda: repo.count_conversations(
                db,
                principal,
                status=status_value,
                tags=wanted_tags,
                metadata=wanted,
                folder_id=folder,
                unfiled=unfiled,
            ),
            has_previous=cursor is not None,
        )

    @strawberry.field(description="The caller's most recently active conversations (ACTIVE only).")
    async def recent_conversations(
        self,
        info: Info,
        first: Annotated[
            int | None,
            strawberry.argument(
                description=f"How many conversations to return: 10 by default, {PAGE_SIZE_LIMIT}."
            ),
        ] = 10,
    ) -> list[Conversation]:
        principal = await info.context.principal()
        settings = info.context.settings
        limit = page_size(first, 10, settings.page_size_max)
        rows = await service.list_page(
            info.context.db, principal, status="ACTIVE", tags=None, limit=limit, after=None
        )
        return [Conversation.from_row(r) for r in rows]

    @strawberry.field(description="Invites waiting for the caller to accept.")
    async def viewer_invites(self, info: Info) -> list[Invite]:
        principal = await info.context.principal()
        rows = await repo.invites_for_user(info.context.db, principal.tenant_id, principal.user_id)
        return [Invite.from_row(r) for r in rows]


@strawberry.type
class ConversationMutation:
    @strawberry.mutation(description="Create a conversation; the caller becomes its OWNER.")
    async def conversation_create(
        self,
        info: Info,
        input: Annotated[
            ConversationCreateInput, strawberry.argument(description="The new conversation's fields.")
        ],
        client_mutation_id: ClientMutationId = None,
    ) -> Conversation:
        principal = await info.context.principal()
        settings = info.context.settings
        done = await run_once(
            info,
            client_mutation_id,
            {"input": input},
            lambda db: service.create(db, settings, principal, _fields(input)),
            lambda row: [row["id"]],
        )
        row = (
            done.value
            if done.value is not None
            else await service.get(info.context.db, principal, done.ids[0])
        )
        return Conversation.from_row(row)

    @strawberry.mutation(description="Change a conversation's metadata (owner or admin).")
    async def conversation_update(
        self,
        info: Info,
        id: Annotated[strawberry.ID, strawberry.argument(description="The conversation to change.")],
        input: Annotated[
            ConversationUpdateInput,
            strawberry.argument(description="The new values; fields left out (or null) keep their value."),
        ],
    ) -> Conversation:
        principal = await info.context.principal()
        row = await service.update(
            info.context.db,
            info.context.settings,
            principal,
            decode_id(id, Kind.CONVERSATION),
            _fields(input),
        )
        return Conversation.from_row(row)

    @strawberry.mutation(description="Archive an ACTIVE conversation (owner or admin).")
    async def conversation_archive(
        self,
        info: Info,
        id: Annotated[strawberry.ID, strawberry.argument(description="The ACTIVE conversation to archive.")],
    ) -> Conversation:
        return await _set_status(info, id, "archive")

    @strawberry.mutation(
        description="Bring an ARCHIVED or DELETED conversation back to ACTIVE (owner or admin)."
    )
    async def conversation_restore(
        self,
        info: Info,
        id: Annotated[
            strawberry.ID, strawberry.argument(description="The ARCHIVED or DELETED conversation to restore.")
        ],
    ) -> Conversation:
        return await _set_status(info, id, "restore")

    @strawberry.mutation(
        description="Soft-delete a conversation: status DELETED, restorable (owner or admin)."
    )
    async def conversation_delete(
        self,
        info: Info,
        id: Annotated[strawberry.ID, strawberry.argument(description="The conversation to delete (softly).")],
    ) -> Conversation:
        return await _set_status(info, id, "delete")

    @strawberry.mutation(description="Invite a user of the tenant to a conversation (owner or admin).")
    async def participant_invite(
        self,
        info: Info,
        conversation_id: ConversationId,
        user_id: Annotated[
            strawberry.ID,
            strawberry.argument(description="The user to invite (`User.id`), of the same tenant."),
        ],
        role: Annotated[
            ParticipantRole | None,
            strawberry.argument(
                description="The role granted on acceptance: MEMBER (default) or VIEWER; OWNER is BAD_USER_INPUT."
            ),
        ] = ParticipantRole.MEMBER,
        client_mutation_id: ClientMutationId = None,
    ) -> Invite:
        principal = await info.context.principal()
        done = await run_once(
            info,
            client_mutation_id,
            {"conversationId": conversation_id, "userId": user_id, "role": role},
            lambda db: service.invite(
                db,
                principal,
                decode_id(conversation_id, Kind.CONVERSATION),
                decode_id(user_id, Kind.USER),
                (role or ParticipantRole.MEMBER).value,
            ),
            lambda row: [row["id"]],
        )
        row = done.value
        if row is None:
            row = await service.readable_invite(info.context.db, principal, done.ids[0])
        return Invite.from_row(row)

    @strawberry.mutation(description="Accept an invite addressed to the caller; returns the new participant.")
    async def invite_accept(
        self,
        info: Info,
        id: Annotated[
            strawberry.ID,
            strawberry.argument(description="The invite's id (`Invite.id`, see `viewerInvites`)."),
        ],
    ) -> Participant:
        principal = await info.context.principal()
        row = await service.accept_invite(info.context.db, principal, decode_id(id, Kind.INVITE))
        return Participant.from_row(row)

    @strawberry.mutation(
        description="Remove a participant (owner or admin), or leave (any participant, self)."
    )
    async def participant_remove(
        self,
        info: Info,
        conversation_id: ConversationId,
        user_id: Annotated[
            strawberry.ID,
            strawberry.argument(
                description="The participant to remove (`User.id`); the caller's own to leave."
            ),
        ],
    ) -> bool:
        principal = await info.context.principal()
        return await service.remove_participant(
            info.context.db,
            principal,
            decode_id(conversation_id, Kind.CONVERSATION),
            decode_id(user_id, Kind.USER),
        )

    @strawberry.mutation(description="Change a participant's role to MEMBER or VIEWER (owner or admin).")
    async def participant_role_set(
        self,
        info: Info,
        conversation_id: ConversationId,
        user_id: UserId,
        role: Annotated[
            ParticipantRole,
            strawberry.argument(description="The new role: MEMBER or VIEWER (the OWNER stays OWNER)."),
        ],
    ) -> Participant:
        principal = await info.context.principal()
        row = await service.set_participant_role(
            info.context.db,
            principal,
            decode_id(conversation_id, Kind.CONVERSATION),
            decode_id(user_id, Kind.USER),
            role.value,
        )
        return Participant.from_row(row)


async def _set_status(info: Info, id: strawberry.ID, action: str) -> Conversation:
    principal = await info.context.principal()
    row = await service.set_status(info.context.db, principal, decode_id(id, Kind.CONVERSATION), action)
    return Conversation.from_row(row)


@strawberry.type
class ConversationBulkMutation:
    """Changes to many conversations at once."""

    @strawberry.mutation(
        description="Add and remove tags on many conversations at once, atomically: all change or none does. "
        "NOT_FOUND if any conversation is not readable, FORBIDDEN if the caller does not manage one."
    )
    async def conversations_batch_tag(
        self,
        info: Info,
        ids: Annotated[
            list[strawberry.ID],
            strawberry.argument(
                description="The conversations to change: at least one, at most 100 (THREADLINE_PAGE_SIZE_MAX)."
            ),
        ],
        add: Annotated[
            list[str] | None,
            strawberry.argument(
                description="Tags to add (trimmed, lower-cased; each at most 64 characters, at most 50 tags per "
                "conversation)."
            ),
        ] = None,
        remove: Annotated[
            list[str] | None,
            strawberry.argument(
                description="Tags to remove; a tag both added and removed is BAD_USER_INPUT."
            ),
        ] = None,
    ) -> list[Conversation]:
        principal = await info.context.principal()
        rows = await tag_service.batch_tag(
            info.context.db,
            info.context.settings,
            principal,
            [decode_id(i, Kind.CONVERSATION) for i in ids],
            add or [],
            remove or [],
        )
        return [Conversation.from_row(r) for r in rows]

    @strawberry.mutation(
        description="Archive every ACTIVE conversation of the tenant with no activity for `days` days or more "
        "(admins only; done in batches). Returns how many were archived."
    )
    async def conversations_archive_older_than(
        self,
        info: Info,
        days: Annotated[
            int,
            strawberry.argument(
                description="Idle time in days (last activity at least this long ago): 1 to 36,500."
            ),
        ],
    ) -> int:
        principal = await info.context.principal()
        return await tag_service.archive_older_than(info.context.db, principal, days)


async def _conversation_node(info: Info, conversation_id: uuid.UUID) -> Conversation:
    principal = await info.context.principal()
    return Conversation.from_row(await service.get(info.context.db, principal, conversation_id))


async def _participant_node(info: Info, participant_id: uuid.UUID) -> Participant:
    principal = await info.context.principal()
    return Participant.from_row(
        await service.readable_participant(info.context.db, principal, participant_id)
    )


async def _invite_node(info: Info, invite_id: uuid.UUID) -> Invite:
    principal = await info.context.principal()
    return Invite.from_row(await service.readable_invite(info.context.db, principal, invite_id))


register(Kind.CONVERSATION, _conversation_node)
register(Kind.PARTICIPANT, _participant_node)
register(Kind.INVITE, _invite_node)
